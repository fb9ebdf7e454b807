"""XGrad-CAM: activation-weighted gradients, normalised by the activation sum."""

from keras import ops

from keras_dualsig.cams.base import BaseCAM

# pytorch-grad-cam's epsilon in the denominator sum(A) + eps.
XGRAD_CAM_EPSILON = 1e-7


class XGradCAM(BaseCAM):
    """XGrad-CAM (Fu et al., BMVC 2020, arXiv:2008.02312).

    Channel weights `w_c = sum_{i,j} g_cij A_cij / (sum_{i,j} A_cij + 1e-7)`
    with g the gradient of the target logit with respect to A. See `BaseCAM`
    for the arguments and the call; Oh & Noh (BMVC 2025, arXiv:2511.05590)
    read g from the sigmoid branch and rectify w.

    Example:
    >>> maps = kd.cams.XGradCAM(dual)(images)
    """

    def channel_weights(self, activations, gradients, request):
        # (B, h, w, c) -> (B, c)
        sums = ops.sum(activations, axis=(1, 2))
        weighted = ops.sum(gradients * activations, axis=(1, 2))
        return weighted / (sums + XGRAD_CAM_EPSILON)
