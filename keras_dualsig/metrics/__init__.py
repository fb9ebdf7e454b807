"""WSOL and explanation-fidelity metrics (`kd.metrics`).

Box and mask localisation follow clovaai/wsolevaluation (Choe et al., CVPR
2020) exactly, as used by Oh & Noh, "Beyond Softmax: Dual-Branch Sigmoid
Architecture for Accurate Class Activation Maps", BMVC 2025
(arXiv:2511.05590); fidelity is Average Drop / Increase in Confidence
(Grad-CAM++), Average Gain (Opti-CAM), the deletion / insertion AUCs of RISE
and ROAD (Rong et al., ICML 2022); the pointing games (Zhang et al., ECCV
2016; Score-CAM) measure localisation and, on two-object images, class
discrimination; `randomization_check` is the sanity check of Adebayo et al.
(NeurIPS 2018). `bootstrap_interval` and `paired_bootstrap_interval` give
confidence intervals from per-image outcomes. `CAMEvaluation` runs the
paper's whole protocol (WSOL from maps of the ground-truth class, fidelity
from maps of the predicted class, Top-1 Cls, for every CAM variant on both
branches), with intervals and paired differences. The conventions are in
docs/method.md.
"""

from keras_dualsig.metrics.bootstrap import (
    bootstrap_distribution,
    bootstrap_interval,
    paired_bootstrap_interval,
)
from keras_dualsig.metrics.boxes import cam_to_boxes
from keras_dualsig.metrics.cam_evaluation import CAMEvaluation
from keras_dualsig.metrics.fidelity import (
    confidence_change,
    deletion_auc,
    insertion_auc,
)
from keras_dualsig.metrics.pointing_game import pair_pointing_game, pointing_game
from keras_dualsig.metrics.randomization import randomization_check
from keras_dualsig.metrics.road import road
from keras_dualsig.metrics.wsol import BoxEvaluator, MaskEvaluator, pxap

__all__ = [
    "BoxEvaluator",
    "CAMEvaluation",
    "MaskEvaluator",
    "bootstrap_distribution",
    "bootstrap_interval",
    "cam_to_boxes",
    "confidence_change",
    "deletion_auc",
    "insertion_auc",
    "pair_pointing_game",
    "paired_bootstrap_interval",
    "pointing_game",
    "pxap",
    "randomization_check",
    "road",
]
