"""keras_dualsig: dual-branch sigmoid heads for honest class activation maps.

Implements Oh & Noh, "Beyond Softmax: Dual-Branch Sigmoid Architecture for
Accurate Class Activation Maps", BMVC 2025 (arXiv:2511.05590) for Keras 3.
"""

from keras_dualsig import cams, datasets, interop, metrics, vis
from keras_dualsig.dual_sigmoid import DualSigmoidModel, dual_sigmoid
from keras_dualsig.losses import ClassBalancedBinaryCrossentropy
from keras_dualsig.small_cnn import small_cnn

__version__ = "0.1.0"

__all__ = [
    "ClassBalancedBinaryCrossentropy",
    "DualSigmoidModel",
    "__version__",
    "cams",
    "datasets",
    "dual_sigmoid",
    "interop",
    "metrics",
    "small_cnn",
    "vis",
]
