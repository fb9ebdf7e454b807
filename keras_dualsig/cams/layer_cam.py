"""LayerCAM: element-wise positive gradients times activations."""

from keras import ops

from keras_dualsig.cams._pca import first_component
from keras_dualsig.cams.base import BaseCAM


class LayerCAM(BaseCAM):
    """LayerCAM (Jiang et al., IEEE TIP 2021, doi:10.1109/TIP.2021.3089943).

    The map is element-wise, `sum_c relu(g_c) * A_c`, with g the gradient of
    the target logit with respect to A: there are no channel weights, so
    `positive_weights` has no effect. Suited to inner layers, where gradients
    vary in space. See `BaseCAM` for the arguments and the call; Oh & Noh
    (BMVC 2025, arXiv:2511.05590) read g from the sigmoid branch.

    Example:
    >>> maps = kd.cams.LayerCAM(dual, layer="conv4_block6_out")(images)
    """

    def activation_map(self, activations, gradients, request):
        terms = ops.relu(gradients) * activations
        if request.eigen_smooth:  # pytorch-grad-cam: PCA of the terms
            return first_component(terms)
        # (B, h, w, c) -> (B, h, w)
        return ops.sum(terms, axis=-1)
