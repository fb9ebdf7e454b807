"""IS-CAM: Score-CAM integrated along growing mask intensities."""

from keras import ops

from keras_dualsig._errors import check_positive_int
from keras_dualsig.cams.score_cam import ScoreCAM


class ISCAM(ScoreCAM):
    """Integrated Score-CAM (Naidu et al., arXiv:2010.03023), as torchcam's `ISCAM`.

    Channel weights `w = softmax_c( (1/N) sum_{i=1}^N z_k(s_i M_c * x) )`
    with M_c Score-CAM's normalised upsampled channel (see `ScoreCAM`),
    N = `num_samples` (torchcam's default 10) and the cumulative scales of
    torchcam's loop `s_i = sum_{j=1}^i j / N` (1/N, 3/N, ..., (N+1)/2).
    torchcam subtracts the unmasked image's score, a constant per image that
    the softmax removes. Costs N Score-CAMs. On the sigmoid branch z_k is
    the pre-sigmoid logit (as `ScoreCAM`).

    Args:
        model, layer, max_channels, score_batch_size: as `ScoreCAM`.
        num_samples: N, the number of scales.

    Example:
    >>> maps = kd.cams.ISCAM(dual)(images)
    """

    def __init__(
        self,
        model,
        layer=None,
        *,
        num_samples=10,
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

    def _score_masks(self, images, masks, classes, branch):
        masked = images * ops.cast(masks[..., None], images.dtype)
        total, scale = 0.0, 0.0
        for sample in range(self.num_samples):
            scale += (sample + 1) / self.num_samples
            total = total + self._logit_at(
                masked * ops.cast(scale, images.dtype), classes, branch
            )
        return total / self.num_samples
