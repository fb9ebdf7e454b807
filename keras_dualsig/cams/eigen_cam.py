"""EigenCAM: the first principal component of the feature map."""

from keras_dualsig.cams._pca import first_component
from keras_dualsig.cams.base import BaseCAM


class EigenCAM(BaseCAM):
    """EigenCAM (Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299).

    Per image, the h*w positions of A are samples of c features; after
    centring each channel over the positions (X = A - mean), the map is the
    projection `X v_1` on the first right singular vector of X, as
    pytorch-grad-cam's `get_2d_projection`. The sign of v_1 is arbitrary
    (LAPACK); here the map is flipped so that its largest-magnitude entry is
    positive (scikit-learn's `svd_flip`, pytorch-grad-cam's
    `get_2d_projection_with_sign_correction`), which makes the map
    deterministic across backends.

    Class agnostic: neither the class nor the head is used, so the map is the
    same for `branch="sigmoid"` and `branch="softmax"` (the argument is
    accepted and harmless) and `positive_weights` / `eigen_smooth` have no
    effect. See `BaseCAM` for the arguments and the call.

    Example:
    >>> maps = kd.cams.EigenCAM(dual)(images)
    """

    uses_gradients = False

    def activation_map(self, activations, gradients, request):
        return first_component(activations)
