"""HiResCAM: element-wise gradients times activations."""

from keras import ops

from keras_dualsig.cams._pca import first_component
from keras_dualsig.cams.base import BaseCAM


class HiResCAM(BaseCAM):
    """HiResCAM (Draelos & Carin, 2020, arXiv:2011.08891).

    The map is element-wise, `sum_c g_c * A_c`, with g the gradient of the
    target logit with respect to A (no spatial averaging, so the map shows
    exactly the locations the score used): there are no channel weights, so
    `positive_weights` has no effect. See `BaseCAM` for the arguments and the
    call; Oh & Noh (BMVC 2025, arXiv:2511.05590) read g from the sigmoid
    branch.

    Example:
    >>> maps = kd.cams.HiResCAM(dual)(images)
    """

    def activation_map(self, activations, gradients, request):
        terms = gradients * activations
        if request.eigen_smooth:  # pytorch-grad-cam: PCA of the terms
            return first_component(terms)
        # (B, h, w, c) -> (B, h, w)
        return ops.sum(terms, axis=-1)
