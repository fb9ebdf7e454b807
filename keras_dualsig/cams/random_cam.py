"""RandomCAM: random channel weights, a sanity-check baseline."""

import numpy as np

from keras_dualsig._errors import invalid
from keras_dualsig.cams.base import BaseCAM


class RandomCAM(BaseCAM):
    """RandomCAM (pytorch-grad-cam's `RandomCAM`): `w_c ~ U(-1, 1)`.

    The map is `sum_c w_c A_c` with channel weights drawn uniformly in
    [-1, 1], one per (image, channel): a baseline that any explanation
    method should beat on the metrics (Adebayo et al., NeurIPS 2018,
    arXiv:1810.03292). The weights come from `numpy.random.default_rng(seed)`
    when the function is built for a batch shape, so they are the same on
    every backend and call (within a call, chunks of `batch_size` reuse the
    draws of the first chunk's rows). Class agnostic: `branch=` is accepted
    and harmless; `positive_weights` rectifies the random weights as for any
    channel-weight method.

    Args:
        model: a DualSigmoidModel or a plain Keras classifier.
        layer: feature layer name(s); default the head's input.
        reshape: the token-grid layout of a transformer layer, as `BaseCAM`.
        seed: int seed of the weights.

    Example:
    >>> maps = kd.cams.RandomCAM(dual, seed=0)(images)
    """

    uses_gradients = False

    def __init__(self, model, layer=None, *, seed=0, reshape=None):
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise invalid("seed", "an int", seed)
        super().__init__(model, layer, reshape=reshape)
        self.seed = int(seed)

    def channel_weights(self, activations, gradients, request):
        batch, channels = activations.shape[0], activations.shape[-1]
        rng = np.random.default_rng(self.seed)
        return rng.uniform(-1.0, 1.0, (batch, channels)).astype(np.float32)
