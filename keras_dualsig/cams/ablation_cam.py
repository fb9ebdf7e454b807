"""AblationCAM: channel weights from the drop of the logit without the channel."""

import numpy as np
from keras import ops

from keras_dualsig._errors import check_positive_int, invalid
from keras_dualsig.cams.base import BaseCAM


class AblationCAM(BaseCAM):
    """Ablation-CAM (Desai & Ramaswamy, WACV 2020, doi:10.1109/WACV45572.2020.9093360).

    Channel weights `w_c = (z_k - z_k^(c)) / z_k`: the relative drop of the
    target logit when channel c of A is set to zero, as pytorch-grad-cam's
    `AblationCAM` (which zeroes the channel when A's minimum is 0, as after a
    ReLU; here it is always zeroed). The map is `sum_c w_c A_c`. The ablated
    copies of A run through the rest of the network (only the head when A is
    the head's input) in chunks of `ablation_batch_size` inside the compiled
    function. A logit z_k = 0 gives non-finite weights, and such maps become
    zeros. On the sigmoid branch z_k is the pre-sigmoid logit (Oh & Noh, BMVC
    2025, arXiv:2511.05590): a negative z_k (the class judged absent) flips
    the sign of the relative drop, which `positive_weights` then rectifies.
    Gradient free. See `BaseCAM` for the call.

    Args:
        model: a DualSigmoidModel or a plain Keras classifier.
        layer: feature layer name(s); default the head's input.
        reshape: the token-grid layout of a transformer layer, as `BaseCAM`.
        ratio_channels_to_ablate: in (0, 1]; below 1 only the
            `max(1, int(ratio * c))` channels of largest spatial mean
            activation of each image are ablated, the others get weight 0
            (pytorch-grad-cam also gives skipped channels weight 0, but picks
            them by their overlap with the EigenCAM map).
        ablation_batch_size: how many ablated copies run at once.

    Example:
    >>> maps = kd.cams.AblationCAM(dual, ratio_channels_to_ablate=0.25)(images)
    """

    uses_gradients = False

    def __init__(
        self,
        model,
        layer=None,
        *,
        ratio_channels_to_ablate=1.0,
        ablation_batch_size=32,
        reshape=None,
    ):
        ratio = ratio_channels_to_ablate
        if (
            isinstance(ratio, bool)
            or not isinstance(ratio, (int, float))
            or not 0.0 < ratio <= 1.0
        ):
            raise invalid("ratio_channels_to_ablate", "a number in (0, 1]", ratio)
        super().__init__(model, layer, reshape=reshape)
        self.ratio_channels_to_ablate = float(ratio)
        self.ablation_batch_size = check_positive_int(
            ablation_batch_size, "ablation_batch_size"
        )

    def _logits_of(self, images, activations, original, branch):
        """Logits (n, C) when A (channels last) replaces `original` (n, h, w, c)."""
        if self._current_layer == self.feature_layer:
            return self.classifier.head_logits(self._layout(activations))[branch]
        delta = self._layout(activations - original)
        probe_dtype = self._probe.inputs[-1].dtype
        _, features = self._probe(
            [images, ops.cast(delta, probe_dtype)], training=False
        )
        return self.classifier.head_logits(features)[branch]

    def _layout(self, tensor):
        """Channels-last (n, h, w, c) back to the layer's own layout."""
        if self._channels_first:
            tensor = ops.transpose(tensor, (0, 3, 1, 2))
        return tensor

    def channel_weights(self, activations, gradients, request):
        images, target, branch = request.images, request.class_index, request.branch
        batch, height, width, channels = activations.shape
        count = max(1, int(self.ratio_channels_to_ablate * channels))
        count = min(count, channels)
        if count == channels:
            picked = ops.broadcast_to(
                ops.arange(channels, dtype="int32")[None], (batch, channels)
            )
        else:
            _, picked = ops.top_k(ops.mean(activations, axis=(1, 2)), count)
            picked = ops.cast(picked, "int32")
        logits = self._logits_of(images, activations, activations, branch)
        original = ops.take_along_axis(
            ops.cast(logits, "float32"), target[:, None], axis=1
        )
        ablated = self._ablated_scores(activations, picked, request)
        relative = (original - ablated) / original
        # (B, k) -> (B, c); channels not ablated keep weight 0.
        one_hot = ops.one_hot(picked, channels, dtype="float32")
        return ops.einsum("bkc,bk->bc", one_hot, relative)

    def _ablated_scores(self, activations, picked, request):
        """(B, k) target logits with channel picked[b, j] of image b zeroed."""
        images = request.images
        batch, height, width, channels = activations.shape
        count = picked.shape[1]
        total = batch * count
        step = min(self.ablation_batch_size, total)
        num_steps = -(-total // step)
        padding = num_steps * step - total
        image_of_pair = ops.convert_to_tensor(
            np.minimum(np.arange(num_steps * step) // count, batch - 1), "int32"
        )
        channel_of_pair = ops.pad(ops.reshape(picked, (total,)), ((0, padding),))
        class_of_pair = ops.pad(ops.repeat(request.class_index, count), ((0, padding),))

        def body(index, scores):
            start = index * step
            rows = ops.slice(image_of_pair, (start,), (step,))
            source = ops.take(activations, rows, axis=0)
            keep = 1.0 - ops.one_hot(
                ops.slice(channel_of_pair, (start,), (step,)), channels, dtype="float32"
            )
            ablated = source * keep[:, None, None, :]
            logits = self._logits_of(
                ops.take(images, rows, axis=0), ablated, source, request.branch
            )
            classes = ops.slice(class_of_pair, (start,), (step,))
            score = ops.take_along_axis(
                ops.cast(logits, "float32"), classes[:, None], axis=1
            )[:, 0]
            return ops.slice_update(scores, (start,), score)

        scores = ops.fori_loop(
            0, num_steps, body, ops.zeros((num_steps * step,), "float32")
        )
        return ops.reshape(scores[:total], (batch, count))
