"""Grad-CAM++: second-order weighting of the positive gradients."""

from keras import ops

from keras_dualsig.cams.base import BaseCAM

# pytorch-grad-cam's epsilon in the alpha denominator. It matters: gradients
# through a global average pool are small, so the cubic term is tiny.
GRAD_CAM_PLUS_PLUS_EPSILON = 1e-6


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++ (Chattopadhyay et al., WACV 2018, arXiv:1710.11063).

    With g the gradient of the target logit with respect to A and
    `S_c = sum_{i,j} A_cij`:
    `a = g^2 / (2 g^2 + S_c g^3 + 1e-6)`, `a = 0` where `g = 0`, and
    `w_c = sum_{i,j} relu(g_cij) a_cij` (Equation 19, as pytorch-grad-cam
    computes it, on the logit without the exponential). See `BaseCAM` for the
    arguments and the call; Oh & Noh (BMVC 2025, arXiv:2511.05590) read g
    from the sigmoid branch.

    Example:
    >>> maps = kd.cams.GradCAMPlusPlus(dual)(images)
    """

    def channel_weights(self, activations, gradients, request):
        grads_2 = ops.square(gradients)
        grads_3 = grads_2 * gradients
        # (B, h, w, c) -> (B, 1, 1, c)
        sums = ops.sum(activations, axis=(1, 2), keepdims=True)
        alpha = grads_2 / (2.0 * grads_2 + sums * grads_3 + GRAD_CAM_PLUS_PLUS_EPSILON)
        alpha = ops.where(gradients != 0.0, alpha, ops.zeros_like(alpha))
        # (B, h, w, c) -> (B, c)
        return ops.sum(ops.relu(gradients) * alpha, axis=(1, 2))
