"""BaseCAM: everything the class activation map variants share.

The shared pipeline (Oh & Noh, BMVC 2025, arXiv:2511.05590, METHOD.md
"Inference"): one compiled forward computes the feature map and both heads;
a `GradientTape` differentiates the chosen head's target logit with respect to
the feature map; a variant turns activations and gradients into a map; the
base rectifies, min-max normalises, resizes (bilinear) and min-max normalises
again, in the order of pytorch-grad-cam's `BaseCAM`. Variants override ONE
hook: `channel_weights` (CAM, Grad-CAM, Grad-CAM++, XGrad-CAM, Score-CAM) or
`activation_map` (LayerCAM, HiResCAM).
"""

import dataclasses
import functools

import numpy as np
import tensorflow as tf

from keras_dualsig import _graph
from keras_dualsig._classifier import classifier_of
from keras_dualsig._errors import (
    check_bool,
    check_class_index,
    check_positive_int,
    invalid,
)

# A map whose range (max - min) is at most this fraction of its largest
# magnitude counts as constant (float32 rounding noise) and becomes zeros.
# pytorch-grad-cam instead divides by (max - min + 1e-7), which makes the
# result depend on the map's scale: maps of tiny magnitude (untrained models,
# small gradients) never reach 1. The relative rule keeps min-max exact and
# scale invariant (CAM and Grad-CAM agree through a GAP head).
CONSTANT_MAP_TOLERANCE = 1e-6


@dataclasses.dataclass
class CamRequest:
    """What is being explained: the images, their classes, the branch.

    Handed to every hook besides the activations and gradients.

    Attributes:
        images: the input batch as given to the model, (B, H, W, channels).
        class_index: int32 (B,), the class each map explains.
        branch: "sigmoid" or "softmax", the head whose logit is explained.
        positive_weights: whether channel weights are rectified (max(w, 0)).
    """

    images: tf.Tensor
    class_index: tf.Tensor
    branch: str
    positive_weights: bool


class BaseCAM:
    """Base class of the class activation map (CAM) variants.

    Subclasses override one hook: `channel_weights` (per-channel weights, the
    map is then `sum_c w_c A_c`) or `activation_map` (the map itself, for
    element-wise methods). Gradient-free methods set `uses_gradients = False`.

    The explained score is the LOGIT of class k: the pre-sigmoid logit of the
    dual model's sigmoid branch (branch="sigmoid", the paper's method) or the
    pre-softmax logit of the original head (branch="softmax", the baseline).
    When a classifier has no separate logits (e.g. an opaque `Lambda`
    softmax), the softmax branch falls back to the log-probability
    `log p_k = z_k - logsumexp(z)`, whose gradient is
    `dz_k/dA - sum_j p_j dz_j/dA`, not the logit's.

    Args:
        model: a `kd.DualSigmoidModel`, or a plain single-output Keras
            classifier (then only branch="softmax" is available).
        layer: name of the layer whose output feature map is explained;
            default the head's input (`model.feature_layer`). Any layer with a
            rank-4 output (batch, height, width, channels) before the head,
            including one inside a nested backbone (a unique name or an
            "outer/inner" path).

    Raises:
        ValueError: (Keras template) if `model` is not a classifier with a
            recognisable head, or `layer` is unknown, part of the head, or
            not rank 4.

    Example:
    >>> cam = kd.cams.GradCAM(dual)
    >>> maps = cam(images)  # sigmoid branch, softmax argmax class
    >>> maps.shape, maps.dtype
    ((B, H, W), dtype('float32'))
    """

    uses_gradients = True

    def __init__(self, model, layer=None):
        self.model = model
        self.classifier = classifier_of(model)
        self.is_dual = self.classifier.is_dual
        self.feature_layer = self.classifier.feature_layer
        self.num_classes = self.classifier.num_classes
        self._trunk = self.classifier.trunk
        self.layer = self._resolve_layer(layer)
        self._input_spec = self._trunk.inputs[0]
        # One compiled function per flag combination (branch, argmax, ...), so
        # each traces once and batch sizes share a trace (reduce_retracing).
        self._compiled = {}

    # ------------------------------------------------------------------ hooks

    def channel_weights(self, activations, gradients, target):
        """Per-channel weights of the map; the hook most variants override.

        Args:
            activations: float32 (B, h, w, c) feature map A.
            gradients: float32 (B, h, w, c), d(target logit)/dA, or None for
                gradient-free methods.
            target: a `CamRequest`.

        Returns:
            float32 (B, c) channel weights w (before rectification).
        """
        raise NotImplementedError(
            f"{type(self).__name__} must override `channel_weights` or "
            "`activation_map`."
        )

    def activation_map(self, activations, gradients, target):
        """The raw signed map, before ReLU, normalisation and resize.

        The default is `sum_c w_c A_c` with w from `channel_weights`,
        rectified (max(w, 0)) when `target.positive_weights`. Element-wise
        variants override this hook instead.

        Args:
            activations: float32 (B, h, w, c).
            gradients: float32 (B, h, w, c) or None.
            target: a `CamRequest`.

        Returns:
            float32 (B, h, w).
        """
        weights = self.channel_weights(activations, gradients, target)
        weights = tf.cast(weights, tf.float32)
        if target.positive_weights:
            weights = tf.nn.relu(weights)
        # (B, h, w, c) x (B, c) -> (B, h, w)
        return tf.einsum("bhwc,bc->bhw", activations, weights)

    # ---------------------------------------------------------- model access

    def class_logits(self, images, branch):
        """Float32 (N, C) logits of one head for a batch, in inference mode.

        Used by gradient-free variants that score modified inputs (Score-CAM).
        """
        return self.classifier.logits(images)[branch]

    def _resolve_layer(self, layer):
        """Validates `layer`; builds the model images -> (A, features)."""
        if layer is None or layer == self.feature_layer:
            self._tapped = None
            return self.feature_layer
        if not isinstance(layer, str):
            raise invalid("layer", "None or a layer name (str)", layer)
        found, _ = _graph.find_layer(self._trunk, layer)
        if found is None:
            in_model, _ = _graph.find_layer(self.model, layer)
            expected = (
                "a layer before the head (the head starts after "
                f"{self.feature_layer!r})"
                if in_model is not None
                else "the name of a layer of the model (one of "
                f"{_graph.all_layer_names(self._trunk)[-30:]}, nested layers as "
                "'outer/inner')"
            )
            raise invalid("layer", expected, layer)
        tapped = _graph.tap_model(self._trunk, [layer])
        shape = tapped.outputs[0].shape
        if len(shape) != 4:
            raise invalid(
                "layer",
                "a layer whose output is a rank-4 feature map (batch, height, "
                "width, channels)",
                received=f"{layer!r} (output shape {tuple(shape)})",
            )
        self._tapped = tapped
        return layer

    # ------------------------------------------------------------- the call

    def __call__(
        self,
        images,
        class_index=None,
        *,
        branch="sigmoid",
        positive_weights=None,
        normalize=True,
        resize=True,
        batch_size=None,
    ):
        """Computes class activation maps for a batch of images.

        Args:
            images: array or tensor (B, H, W, channels) the model accepts.
            class_index: None (the softmax head's argmax, as in the paper),
                an int, or an int array (B,), each in [0, num_classes).
            branch: "sigmoid" differentiates the sigmoid branch's pre-sigmoid
                logit (needs a DualSigmoidModel); "softmax" the original
                head's pre-softmax logit (the baseline).
            positive_weights: rectify channel weights, w <- max(w, 0). None
                means True for branch="sigmoid" and False for "softmax"
                (METHOD.md step 3). Applies to channel-weight methods only;
                LayerCAM and HiResCAM ignore it, Score-CAM weights are
                positive already.
            normalize: True: ReLU, per-image min-max to [0, 1], and after the
                resize min-max again. The min-max is exact and scale
                invariant; maps whose range is at most
                `CONSTANT_MAP_TOLERANCE` (1e-6) of their largest magnitude,
                and non-finite maps, become all zeros. False: the raw signed
                map `sum_c w_c A_c` (or the element-wise sum), with the
                `positive_weights` rectification but no ReLU and no min-max
                (still resized when resize=True).
            resize: resize the maps to the input size (H, W) with bilinear
                interpolation, half-pixel centres, no antialiasing (the same
                as `cv2.resize(..., interpolation=cv2.INTER_LINEAR)`, which
                pytorch-grad-cam uses). False keeps the feature map size.
            batch_size: None runs the whole batch at once; an int processes
                the images in chunks of that size (same maps, less memory).

        Returns:
            float32 numpy array (B, H, W) (or (B, h, w) when resize=False):
            in [0, 1] if normalize, raw signed values otherwise.

        Raises:
            ValueError: (Keras template) for images of the wrong rank,
                channel count or size, a class_index out of range or of the
                wrong shape, an unknown branch, branch="sigmoid" on a plain
                classifier, or a bad flag.
        """
        images = self._check_images(images)
        batch = int(images.shape[0])
        self.classifier.check_branch(branch)
        if positive_weights is None:
            positive_weights = branch == "sigmoid"
        positive_weights = check_bool(positive_weights, "positive_weights")
        normalize = check_bool(normalize, "normalize")
        resize = check_bool(resize, "resize")
        batch_size = check_positive_int(batch_size, "batch_size", allow_none=True)
        batch_size = batch if batch_size is None else batch_size
        indices = check_class_index(class_index, batch, self.num_classes)
        use_argmax = indices is None
        indices = tf.zeros((batch,), tf.int32) if use_argmax else tf.constant(indices)
        flags = {
            "use_argmax": use_argmax,
            "branch": branch,
            "positive_weights": bool(positive_weights),
            "normalize": bool(normalize),
            "resize": bool(resize),
        }
        key = tuple(sorted(flags.items()))
        if key not in self._compiled:
            self._compiled[key] = tf.function(
                functools.partial(self._compute_batch, **flags), reduce_retracing=True
            )
        compiled = self._compiled[key]
        maps = []
        for start in range(0, batch, int(batch_size)):
            stop = min(start + int(batch_size), batch)
            maps.append(compiled(images[start:stop], indices[start:stop]))
        maps = maps[0] if len(maps) == 1 else tf.concat(maps, axis=0)
        return maps.numpy().astype(np.float32, copy=False)

    def _compute_batch(
        self, images, class_index, *, use_argmax, branch, positive_weights, **post
    ):
        """One batch, traced once per flag combination (see __call__)."""
        if self.uses_gradients:
            # Only A is a source: no variable (frozen or not) needs watching.
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                activations, logits = self._forward(images, tape)
                class_index = self._targets(logits, class_index, use_argmax)
                score = tf.reduce_sum(
                    tf.gather(logits[branch], class_index, axis=1, batch_dims=1)
                )
            gradients = tape.gradient(score, activations)
            if gradients is None:
                raise invalid(
                    "layer",
                    "a layer on the path from the images to the output, with "
                    "floating-point inputs (no gradient reached it)",
                    self.layer,
                )
            gradients = tf.cast(gradients, tf.float32)
        else:
            activations, logits = self._forward(images)
            class_index = self._targets(logits, class_index, use_argmax)
            gradients = None
        target = CamRequest(images, class_index, branch, positive_weights)
        activations = tf.cast(activations, tf.float32)
        maps = tf.cast(self.activation_map(activations, gradients, target), tf.float32)
        return self._postprocess(maps, tf.shape(images)[1:3], **post)

    def _forward(self, images, tape=None):
        """(A, {branch: logits}) from one trunk run; A is watched by `tape`."""
        if self._tapped is None:
            activations = features = self._trunk(images, training=False)
            if tape is not None:
                tape.watch(features)
        else:
            if tape is not None:
                # A lies inside the trunk: record the trunk from the images
                # so that d score / dA exists, still in one forward.
                tape.watch(images)
            activations, features = self._tapped(images, training=False)
        return activations, self.classifier.head_logits(features)

    def _targets(self, logits, class_index, use_argmax):
        if not use_argmax:
            return class_index
        # The paper explains the frozen softmax head's prediction k*.
        return tf.argmax(logits["softmax"], axis=-1, output_type=tf.int32)

    @staticmethod
    def _postprocess(maps, size, *, normalize, resize):
        """ReLU, min-max, bilinear resize, min-max (pytorch-grad-cam order)."""
        if normalize:
            maps = _min_max(tf.nn.relu(maps))
        if resize:
            # (B, h, w) -> (B, H, W); half-pixel bilinear == cv2 INTER_LINEAR.
            maps = tf.image.resize(
                maps[..., None], size, method="bilinear", antialias=False
            )[..., 0]
        if normalize:
            maps = _min_max(maps)
            finite = tf.reduce_all(tf.math.is_finite(maps), axis=[1, 2], keepdims=True)
            maps = tf.where(finite, maps, tf.zeros_like(maps))
        return maps

    # ---------------------------------------------------------- validation

    def _check_images(self, images):
        spec = self._input_spec
        expected_shape = ("batch", *tuple(spec.shape[1:]))
        try:
            images = tf.convert_to_tensor(images)
        except (TypeError, ValueError) as err:
            raise invalid(
                "images", f"an array of shape {expected_shape}", images
            ) from err
        if images.shape.rank != len(spec.shape):
            raise invalid(
                "images",
                f"a batch of rank {len(spec.shape)} with shape {expected_shape}",
                images,
            )
        for axis in range(1, len(spec.shape)):
            if spec.shape[axis] is not None and images.shape[axis] != spec.shape[axis]:
                what = "channels" if axis == len(spec.shape) - 1 else "size"
                raise invalid(
                    "images",
                    f"a batch of shape {expected_shape} (wrong {what})",
                    images,
                )
        if images.shape[0] == 0:
            raise invalid("images", "a non-empty batch", images)
        dtype = tf.as_dtype(spec.dtype)
        if images.dtype != dtype and dtype.is_floating:
            images = tf.cast(images, dtype)
        return images

    def __repr__(self):
        return f"{type(self).__name__}(model={self.model.name!r}, layer={self.layer!r})"


def _min_max(maps):
    """Per-image min-max of (B, h, w) maps to [0, 1]; constant or NaN -> 0."""
    low = tf.reduce_min(maps, axis=[1, 2], keepdims=True)
    high = tf.reduce_max(maps, axis=[1, 2], keepdims=True)
    span = high - low
    scale = tf.maximum(tf.abs(low), tf.abs(high))
    # False for NaN/inf too, so those maps become zeros.
    varies = span > CONSTANT_MAP_TOLERANCE * scale
    return tf.where(varies, (maps - low) / tf.where(varies, span, 1.0), 0.0)
