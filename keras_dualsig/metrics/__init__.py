"""WSOL and explanation-fidelity metrics (`kd.metrics`).

Box and mask localisation follow clovaai/wsolevaluation (Choe et al., CVPR
2020) exactly, as used by Oh & Noh, "Beyond Softmax: Dual-Branch Sigmoid
Architecture for Accurate Class Activation Maps", BMVC 2025
(arXiv:2511.05590); fidelity is Average Drop / Increase in Confidence
(Grad-CAM++) and the deletion / insertion AUCs of RISE. `CAMEvaluation` runs
the paper's whole protocol (WSOL from maps of the ground-truth class, fidelity
from maps of the predicted class, Top-1 Cls, for every CAM variant on both
branches). The conventions are in docs/method.md.
"""

from keras_dualsig.metrics.boxes import cam_to_boxes
from keras_dualsig.metrics.cam_evaluation import CAMEvaluation
from keras_dualsig.metrics.fidelity import (
    confidence_change,
    deletion_auc,
    insertion_auc,
)
from keras_dualsig.metrics.wsol import BoxEvaluator, MaskEvaluator

__all__ = [
    "BoxEvaluator",
    "CAMEvaluation",
    "MaskEvaluator",
    "cam_to_boxes",
    "confidence_change",
    "deletion_auc",
    "insertion_auc",
]
