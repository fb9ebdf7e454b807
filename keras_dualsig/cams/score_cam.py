"""Score-CAM: channel weights from the target logit on channel-masked inputs."""

import tensorflow as tf

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

    Raises:
        ValueError: (Keras template) for a bad `max_channels` or
            `score_batch_size`, and as `BaseCAM`.

    Example:
    >>> cam = kd.cams.ScoreCAM(dual, max_channels=64, score_batch_size=128)
    >>> maps = cam(images)
    """

    uses_gradients = False

    def __init__(self, model, layer=None, *, max_channels=None, score_batch_size=16):
        super().__init__(model, layer)
        self.max_channels = check_positive_int(
            max_channels, "max_channels", allow_none=True
        )
        self.score_batch_size = check_positive_int(score_batch_size, "score_batch_size")

    def channel_weights(self, activations, gradients, target):
        num_channels = activations.shape[-1]
        selected, channels = activations, None
        if self.max_channels is not None and self.max_channels < num_channels:
            # (B, h, w, c) -> (B, k): the most-varying channels of each image.
            variance = tf.math.reduce_variance(activations, axis=[1, 2])
            channels = tf.math.top_k(variance, self.max_channels).indices
            selected = tf.gather(activations, channels, axis=3, batch_dims=1)
        weights = tf.nn.softmax(self._masked_scores(selected, target), axis=-1)
        if channels is None:
            return weights
        # (B, k) -> (B, c), zero for the channels not scored.
        one_hot = tf.one_hot(channels, num_channels, dtype=weights.dtype)
        return tf.einsum("bkc,bk->bc", one_hot, weights)

    def _masked_scores(self, maps, target):
        """Target logits of the images masked by each map: (B, h, w, k) -> (B, k)."""
        images = target.images
        shape = tf.shape(maps)
        batch, height, width, count = shape[0], shape[1], shape[2], shape[3]
        total = batch * count
        # One mask per (image, channel) pair, in image-major order.
        pairs = tf.reshape(tf.transpose(maps, [0, 3, 1, 2]), [-1, height, width, 1])
        image_of_pair = tf.repeat(tf.range(batch), count)
        class_of_pair = tf.repeat(target.class_index, count)
        step = self.score_batch_size
        num_steps = (total + step - 1) // step

        def body(index, scores):
            start = index * step
            stop = tf.minimum(start + step, total)
            masks = tf.raw_ops.ResizeBilinear(
                images=pairs[start:stop],
                size=tf.shape(images)[1:3],
                align_corners=True,
                half_pixel_centers=False,
            )
            low = tf.reduce_min(masks, axis=[1, 2, 3], keepdims=True)
            high = tf.reduce_max(masks, axis=[1, 2, 3], keepdims=True)
            masks = (masks - low) / (high - low + SCORE_CAM_MASK_EPSILON)
            masked = tf.gather(images, image_of_pair[start:stop]) * tf.cast(
                masks, images.dtype
            )
            logits = self.class_logits(masked, target.branch)
            score = tf.gather(logits, class_of_pair[start:stop], axis=1, batch_dims=1)
            return index + 1, scores.write(index, score)

        scores = tf.TensorArray(
            tf.float32, size=num_steps, infer_shape=False, element_shape=[None]
        )
        _, scores = tf.while_loop(
            lambda index, _: index < num_steps,
            body,
            (tf.constant(0), scores),
            parallel_iterations=1,
        )
        return tf.reshape(scores.concat(), [batch, count])
