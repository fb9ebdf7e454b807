"""FEM: channels weighted by how often they exceed mean + k std."""

from keras import ops

from keras_dualsig._errors import invalid
from keras_dualsig.cams.base import BaseCAM


class FEM(BaseCAM):
    """Feature Explanation Method (Fuad et al., IPTA 2020, hal-02963298).

    As pytorch-grad-cam's `FEM`: per image and channel, the threshold
    `t_c = mean_{ij} A_cij + k std_{ij} A_cij` (population std), the binary
    mask `B_c = A_c > t_c`, the weight `w_c = mean_{ij} B_cij` (the fraction
    of positions above it), and the map `sum_c w_c A_c`.

    Class agnostic: the map does not depend on the class or the head, so
    `branch=` is accepted and harmless, and `positive_weights` and
    `eigen_smooth` have no effect (the weights are >= 0). See `BaseCAM`.

    Args:
        model: a DualSigmoidModel or a plain Keras classifier.
        layer: feature layer name(s); default the head's input.
        reshape: the token-grid layout of a transformer layer, as `BaseCAM`.
        k: the number of standard deviations of the threshold (2).

    Example:
    >>> maps = kd.cams.FEM(dual)(images)
    """

    uses_gradients = False

    def __init__(self, model, layer=None, *, k=2.0, reshape=None):
        if isinstance(k, bool) or not isinstance(k, (int, float)):
            raise invalid("k", "a number", k)
        super().__init__(model, layer, reshape=reshape)
        self.k = float(k)

    def activation_map(self, activations, gradients, request):
        # (B, h, w, c) -> (B, 1, 1, c)
        mean = ops.mean(activations, axis=(1, 2), keepdims=True)
        std = ops.std(activations, axis=(1, 2), keepdims=True)
        above = ops.cast(activations > mean + self.k * std, "float32")
        weights = ops.mean(above, axis=(1, 2), keepdims=True)
        return ops.sum(weights * activations, axis=-1)
