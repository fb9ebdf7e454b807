"""SS-CAM: Score-CAM with noise added to the masks, averaged."""

import numpy as np
from keras import ops

from keras_dualsig._errors import check_positive_int, invalid
from keras_dualsig.cams.score_cam import ScoreCAM


class SSCAM(ScoreCAM):
    """Smoothed Score-CAM (Wang et al., arXiv:2006.14255), as torchcam's `SSCAM`.

    Channel weights `w = softmax_c( (1/N) sum_{n=1}^N z_k((M_c + d_n) * x) )`
    with M_c Score-CAM's normalised upsampled channel (see `ScoreCAM`) and
    `d_n ~ N(0, std^2)` per pixel, N = `num_samples` (torchcam's defaults:
    35 samples, std 2.0). torchcam subtracts the unmasked image's score
    before the softmax, a constant per image that the softmax removes. The
    noise images d_n (H, W) come from `numpy.random.default_rng(seed)` and
    are the same for every channel and image of a call (common random
    numbers: the channels' scores are compared under the same noise, and the
    maps are the same on every backend); torchcam draws them per channel.
    Costs N Score-CAMs.
    On the sigmoid branch z_k is the pre-sigmoid logit (as `ScoreCAM`).

    Args:
        model, layer, max_channels, score_batch_size: as `ScoreCAM`.
        num_samples: N, the noisy copies of each mask.
        std: the noise's standard deviation.
        seed: int seed of the noise.

    Example:
    >>> maps = kd.cams.SSCAM(dual, num_samples=8)(images)
    """

    def __init__(
        self,
        model,
        layer=None,
        *,
        num_samples=35,
        std=2.0,
        seed=0,
        max_channels=None,
        score_batch_size=16,
        reshape=None,
    ):
        super().__init__(
            model,
            layer,
            max_channels=max_channels,
            score_batch_size=score_batch_size,
            reshape=reshape,
        )
        self.num_samples = check_positive_int(num_samples, "num_samples")
        if isinstance(std, bool) or not isinstance(std, (int, float)) or std < 0:
            raise invalid("std", "a number >= 0", std)
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise invalid("seed", "an int", seed)
        self.std = float(std)
        self.seed = int(seed)

    def _score_masks(self, images, masks, classes, branch):
        height, width = masks.shape[1:]
        rng = np.random.default_rng(self.seed)
        noise = rng.normal(0.0, self.std, (self.num_samples, height, width))
        total = 0.0
        for sample in range(self.num_samples):
            noisy = masks + ops.convert_to_tensor(noise[sample].astype(np.float32))
            masked = images * ops.cast(noisy[..., None], images.dtype)
            total = total + self._logit_at(masked, classes, branch)
        return total / self.num_samples
