"""EigenGradCAM: the first principal component of g * A."""

from keras_dualsig.cams._pca import first_component
from keras_dualsig.cams.base import BaseCAM


class EigenGradCAM(BaseCAM):
    """EigenGradCAM (pytorch-grad-cam's `EigenGradCAM`).

    EigenCAM (Muhammad & Yeasin, IJCNN 2020, arXiv:2008.00299) applied to
    the element-wise products `g * A`, with g the gradient of the target
    logit: the map is the projection of the centred products on their first
    principal component, signed so that its largest-magnitude entry is
    positive (see `EigenCAM`). On the sigmoid branch g is the gradient of the
    class's pre-sigmoid logit (Oh & Noh, BMVC 2025, arXiv:2511.05590), so the
    map is class-specific; `positive_weights` and `eigen_smooth` have no
    effect. See `BaseCAM` for the arguments and the call.

    Example:
    >>> maps = kd.cams.EigenGradCAM(dual)(images)
    """

    def activation_map(self, activations, gradients, request):
        return first_component(gradients * activations)
