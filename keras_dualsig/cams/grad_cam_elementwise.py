"""Grad-CAM element-wise: rectified element-wise products of g and A."""

from keras import ops

from keras_dualsig.cams._pca import first_component
from keras_dualsig.cams.base import BaseCAM


class GradCAMElementWise(BaseCAM):
    """Grad-CAM element-wise (pytorch-grad-cam's `GradCAMElementWise`).

    The map is `sum_c relu(g_c * A_c)`, with g the gradient of the target
    logit with respect to A: each product is rectified before the channel
    sum (Grad-CAM averages g first, HiResCAM sums the unrectified products).
    There are no channel weights, so `positive_weights` has no effect; with
    `eigen_smooth` the map is the first principal component of the rectified
    products. On the sigmoid branch g is the gradient of the pre-sigmoid
    logit (Oh & Noh, BMVC 2025, arXiv:2511.05590): positive terms are where
    raising A raises the class's own evidence, independent of the other
    classes. See `BaseCAM` for the arguments and the call.

    Example:
    >>> maps = kd.cams.GradCAMElementWise(dual)(images)
    """

    def activation_map(self, activations, gradients, request):
        terms = ops.relu(gradients * activations)
        if request.eigen_smooth:
            return first_component(terms)
        # (B, h, w, c) -> (B, h, w)
        return ops.sum(terms, axis=-1)
