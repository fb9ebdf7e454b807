"""Class activation maps that read the sigmoid branch (or the softmax head).

Oh & Noh, "Beyond Softmax: Dual-Branch Sigmoid Architecture for Accurate Class
Activation Maps", BMVC 2025 (arXiv:2511.05590): every variant explains the
logit of a class; on a `kd.DualSigmoidModel` the default is the sigmoid
branch's logit with rectified channel weights, the softmax head is the
baseline. All share `BaseCAM`'s call:
`cam(images, class_index=None, *, branch="sigmoid", positive_weights=None,
normalize=True, resize=True, batch_size=None, aug_smooth=False,
eigen_smooth=False)`; `layer=[...]` explains several layers at once, and
`compute` many methods from one forward and backward pass.
"""

from keras_dualsig._errors import invalid
from keras_dualsig.cams.ablation_cam import AblationCAM
from keras_dualsig.cams.base import BaseCAM
from keras_dualsig.cams.cam import CAM
from keras_dualsig.cams.compute import compute
from keras_dualsig.cams.eigen_cam import EigenCAM
from keras_dualsig.cams.eigen_grad_cam import EigenGradCAM
from keras_dualsig.cams.fem import FEM
from keras_dualsig.cams.finer_cam import FinerCAM
from keras_dualsig.cams.grad_cam import GradCAM
from keras_dualsig.cams.grad_cam_elementwise import GradCAMElementWise
from keras_dualsig.cams.grad_cam_plus_plus import GradCAMPlusPlus
from keras_dualsig.cams.hires_cam import HiResCAM
from keras_dualsig.cams.iscam import ISCAM
from keras_dualsig.cams.kpca_cam import KPCACAM
from keras_dualsig.cams.layer_cam import LayerCAM
from keras_dualsig.cams.random_cam import RandomCAM
from keras_dualsig.cams.score_cam import ScoreCAM
from keras_dualsig.cams.shapley_cam import ShapleyCAM
from keras_dualsig.cams.sscam import SSCAM
from keras_dualsig.cams.xgrad_cam import XGradCAM

_BY_NAME = {
    "cam": CAM,
    "gradcam": GradCAM,
    "gradcam++": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "layercam": LayerCAM,
    "hirescam": HiResCAM,
    "scorecam": ScoreCAM,
    "gradcamelementwise": GradCAMElementWise,
    "eigencam": EigenCAM,
    "eigengradcam": EigenGradCAM,
    "ablationcam": AblationCAM,
    "kpcacam": KPCACAM,
    "shapleycam": ShapleyCAM,
    "finercam": FinerCAM,
    "fem": FEM,
    "randomcam": RandomCAM,
    "sscam": SSCAM,
    "iscam": ISCAM,
}
_ALIASES = {
    "gradcamplusplus": "gradcam++",
    "gradcampp": "gradcam++",
    "kpca": "kpcacam",
    "smoothedscorecam": "sscam",
    "integratedscorecam": "iscam",
}
# The names `get` accepts, in a stable order (scripts and benchmarks loop over it).
NAMES = tuple(_BY_NAME)


def get(name):
    """Returns a CAM class by name.

    Args:
        name: one of `NAMES` ("cam", "gradcam", "gradcam++", "xgradcam",
            "layercam", "hirescam", "scorecam", "gradcamelementwise",
            "eigencam", "eigengradcam", "ablationcam", "kpcacam",
            "shapleycam", "finercam", "fem", "randomcam", "sscam", "iscam").
            Case, "-", "_" and spaces are ignored
            ("Grad-CAM++" works); a BaseCAM subclass is returned as is.

    Returns:
        The class, e.g. `kd.cams.GradCAM`.

    Raises:
        ValueError: (Keras template) for an unknown name; the message lists
            the known names.

    Example:
    >>> cam = kd.cams.get("gradcam++")(dual)
    """
    if isinstance(name, type) and issubclass(name, BaseCAM):
        return name
    if isinstance(name, str):
        key = name.lower().replace("-", "").replace("_", "").replace(" ", "")
        key = _ALIASES.get(key, key)
        if key in _BY_NAME:
            return _BY_NAME[key]
    raise invalid("name", f"one of {list(_BY_NAME)}", name)


__all__ = [
    "CAM",
    "FEM",
    "ISCAM",
    "KPCACAM",
    "NAMES",
    "SSCAM",
    "AblationCAM",
    "BaseCAM",
    "EigenCAM",
    "EigenGradCAM",
    "FinerCAM",
    "GradCAM",
    "GradCAMElementWise",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "RandomCAM",
    "ScoreCAM",
    "ShapleyCAM",
    "XGradCAM",
    "compute",
    "get",
]
