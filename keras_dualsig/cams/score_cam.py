"""Score-CAM: channel weights from the target logit on channel-masked inputs."""

import numpy as np
from keras import ops

from keras_dualsig._errors import check_positive_int
from keras_dualsig.cams.base import BaseCAM

# pytorch-grad-cam's epsilon when min-max normalising each upsampled channel.
SCORE_CAM_MASK_EPSILON = 1e-8


class ScoreCAM(BaseCAM):
    """Score-CAM (Wang et al., CVPR-W 2020, arXiv:1910.01279).

    Each channel of A, upsampled to the input size (bilinear with aligned
    corners, as pytorch-grad-cam's `UpsamplingBilinear2d`) and min-max
    normalised, masks the input; the channel weights are the softmax over
    channels of the target logit on the masked inputs, `w = softmax_c(z_k(x *
    M_c))`, so they are positive already. The masked inputs run through the
    model in batches of `score_batch_size`, inside the compiled function.
    Gradient free. Oh & Noh (BMVC 2025, arXiv:2511.05590) score the masked
    inputs with the sigmoid branch's logit. See `BaseCAM` for the call.

    Args:
        model: a DualSigmoidModel or a plain Keras classifier.
        layer: feature layer name; default the head's input.
        max_channels: None scores every channel; an int k scores only the k
            channels of largest spatial variance of each image (most-varying
            first, "Faster Score-CAM"); the others get weight 0.
        score_batch_size: how many masked inputs run through the model at
            once.
        reshape: see `BaseCAM` (token sequences -> grid).

    Raises:
        ValueError: (Keras template) for a bad `max_channels` or
            `score_batch_size`, and as `BaseCAM`.

    Example:
    >>> cam = kd.cams.ScoreCAM(dual, max_channels=64, score_batch_size=128)
    >>> maps = cam(images)
    """

    uses_gradients = False

    def __init__(
        self,
        model,
        layer=None,
        *,
        max_channels=None,
        score_batch_size=16,
        reshape=None,
    ):
        super().__init__(model, layer, reshape=reshape)
        self.max_channels = check_positive_int(
            max_channels, "max_channels", allow_none=True
        )
        self.score_batch_size = check_positive_int(score_batch_size, "score_batch_size")

    def channel_weights(self, activations, gradients, request):
        num_channels = activations.shape[-1]
        if self.max_channels is None or self.max_channels >= num_channels:
            return ops.softmax(self._masked_scores(activations, request), axis=-1)
        # (B, h, w, c) -> (B, k): the most-varying channels of each image.
        variance = ops.var(activations, axis=(1, 2))
        _, channels = ops.top_k(variance, self.max_channels)
        selected = ops.take_along_axis(activations, channels[:, None, None, :], axis=3)
        weights = ops.softmax(self._masked_scores(selected, request), axis=-1)
        # (B, k) -> (B, c), zero for the channels not scored.
        one_hot = ops.one_hot(channels, num_channels, dtype=weights.dtype)
        return ops.einsum("bkc,bk->bc", one_hot, weights)

    def _masked_scores(self, maps, request):
        """Target logits of the images masked by each map: (B, h, w, k) -> (B, k)."""
        images = request.images
        batch, height, width, count = maps.shape
        size = images.shape[1:3]
        # One mask per (image, channel) pair, in image-major order, padded to
        # whole chunks of `score_batch_size` so that every step has one shape.
        total = batch * count
        step = min(self.score_batch_size, total)
        num_steps = -(-total // step)
        padding = num_steps * step - total
        pairs = ops.reshape(ops.transpose(maps, (0, 3, 1, 2)), (total, height, width))
        pairs = ops.pad(pairs, ((0, padding), (0, 0), (0, 0)))
        image_of_pair = ops.convert_to_tensor(
            np.minimum(np.arange(num_steps * step) // count, batch - 1), "int32"
        )
        class_of_pair = ops.pad(ops.repeat(request.class_index, count), ((0, padding),))
        # (H, h) and (W, w) interpolation matrices: bilinear with aligned
        # corners, as pytorch-grad-cam's `UpsamplingBilinear2d`.
        rows = ops.convert_to_tensor(_align_corners_matrix(size[0], height))
        columns = ops.convert_to_tensor(_align_corners_matrix(size[1], width))

        def body(index, scores):
            start = index * step
            chunk = ops.slice(pairs, (start, 0, 0), (step, height, width))
            # (n, h, w) -> (n, H, W), then min-max per mask.
            masks = ops.einsum("Hh,nhw,Ww->nHW", rows, chunk, columns)
            low = ops.min(masks, axis=(1, 2), keepdims=True)
            high = ops.max(masks, axis=(1, 2), keepdims=True)
            masks = (masks - low) / (high - low + SCORE_CAM_MASK_EPSILON)
            sources = ops.take(images, ops.slice(image_of_pair, (start,), (step,)), 0)
            classes = ops.slice(class_of_pair, (start,), (step,))
            score = self._score_masks(sources, masks, classes, request.branch)
            return ops.slice_update(scores, (start,), score)

        scores = ops.fori_loop(
            0, num_steps, body, ops.zeros((num_steps * step,), "float32")
        )
        return ops.reshape(scores[:total], (batch, count))

    def _score_masks(self, images, masks, classes, branch):
        """(n,) target logits of `images * masks`; SS-CAM and IS-CAM override it.

        Args:
            images: (n, H, W, channels) the source image of each mask.
            masks: float32 (n, H, W) min-max normalised upsampled channels.
            classes: int32 (n,) the class of each source image.
            branch: the head that scores.
        """
        return self._logit_at(
            images * ops.cast(masks[..., None], images.dtype), classes, branch
        )

    def _logit_at(self, images, classes, branch):
        """(n,) float32 logit of `classes` for a batch of (masked) images."""
        logits = ops.cast(self.class_logits(images, branch), "float32")
        return ops.take_along_axis(logits, classes[:, None], axis=1)[:, 0]


def _align_corners_matrix(size_out, size_in):
    """(size_out, size_in) float32 weights of bilinear resizing, aligned corners.

    Output pixel i samples input position `i * (size_in - 1) / (size_out - 1)`
    and mixes its two neighbours linearly (every row sums to 1).
    """
    matrix = np.zeros((size_out, size_in), np.float32)
    if size_in == 1 or size_out == 1:
        matrix[:, 0] = 1.0
        return matrix
    positions = np.arange(size_out) * (size_in - 1) / (size_out - 1)
    low = np.minimum(np.floor(positions).astype(int), size_in - 2)
    frac = (positions - low).astype(np.float32)
    matrix[np.arange(size_out), low] = 1.0 - frac
    matrix[np.arange(size_out), low + 1] += frac
    return matrix
