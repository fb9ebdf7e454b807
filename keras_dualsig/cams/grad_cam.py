"""Grad-CAM: channel weights are the spatially averaged gradients."""

from keras import ops

from keras_dualsig.cams.base import BaseCAM


class GradCAM(BaseCAM):
    """Grad-CAM (Selvaraju et al., ICCV 2017, arXiv:1610.02391).

    Channel weights `w_c = mean_{i,j} g_cij`, with g the gradient of the
    target logit with respect to the feature map A; the map is
    `sum_c w_c A_c`. On the sigmoid branch the weights are rectified by default
    (Oh & Noh, BMVC 2025, arXiv:2511.05590). See `BaseCAM` for the arguments
    and the call.

    Example:
    >>> cam = kd.cams.GradCAM(dual)
    >>> sigmoid_maps = cam(images)                    # the paper's maps
    >>> softmax_maps = cam(images, branch="softmax")  # the baseline
    """

    def channel_weights(self, activations, gradients, request):
        # (B, h, w, c) -> (B, c)
        return ops.mean(gradients, axis=(1, 2))
