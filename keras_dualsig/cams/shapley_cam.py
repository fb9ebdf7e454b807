"""ShapleyCAM: gradient minus half the Hessian-vector product."""

from keras import ops

from keras_dualsig.cams.base import BaseCAM


class ShapleyCAM(BaseCAM):
    """ShapleyCAM (Cai, arXiv:2501.06261), as pytorch-grad-cam computes it.

    Channel weights `w_c = mean_{i,j} (g - 0.5 H A)_cij`, with g the gradient
    of the target logit with respect to A and `H A` the Hessian of the logit
    (with respect to A) applied to A itself: a second-order estimate of the
    channel's Shapley value. Where the logit is linear (or piecewise linear,
    ReLU networks) in A, `H A = 0` and the weights are Grad-CAM's. The
    Hessian-vector product is a second backward pass
    (`keras_dualsig._backend.value_grad_and_hvp`). On the sigmoid branch
    both derivatives are of the pre-sigmoid logit (Oh & Noh, BMVC 2025,
    arXiv:2511.05590). See `BaseCAM` for the arguments and the call.

    Example:
    >>> maps = kd.cams.ShapleyCAM(dual, layer="conv4_block6_out")(images)
    """

    uses_hessian = True

    def channel_weights(self, activations, gradients, request):
        # (B, h, w, c) -> (B, c)
        return ops.mean(gradients - 0.5 * request.hessian_vector, axis=(1, 2))
