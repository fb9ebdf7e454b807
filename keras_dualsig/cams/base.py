"""BaseCAM: everything the class activation map variants share.

The shared pipeline (Oh & Noh, BMVC 2025, arXiv:2511.05590; docs/method.md,
"CAM variants"): one compiled function per batch runs the model once, with a
zero "probe" added at the explained layer's output, so that the gradient of
the chosen head's target logit with respect to the probe is the gradient with
respect to the feature map A, on every Keras backend (`keras_dualsig._backend`
holds what differs: gradients and compilation). A variant turns A and the
gradients into a map; the base rectifies, min-max normalises, resizes
(bilinear) and min-max normalises again, in the order of pytorch-grad-cam's
`BaseCAM`. Variants override ONE hook: `channel_weights` (CAM, Grad-CAM,
Grad-CAM++, XGrad-CAM, Score-CAM) or `activation_map` (LayerCAM, HiResCAM).
All math is on `keras.ops`, in float32.
"""

import dataclasses
import functools

import keras
import numpy as np
from keras import ops

from keras_dualsig import _backend, _graph
from keras_dualsig._classifier import BRANCHES, classifier_of
from keras_dualsig._errors import (
    check_bool,
    check_class_index,
    check_positive_int,
    invalid,
)
from keras_dualsig.cams import _tokens
from keras_dualsig.cams._pca import first_component

__all__ = ["BRANCHES", "CONSTANT_MAP_TOLERANCE", "BaseCAM", "CamRequest"]

# A map whose range (max - min) is at most this fraction of its largest
# magnitude counts as constant (float32 rounding noise) and becomes zeros.
# pytorch-grad-cam instead divides by (max - min + 1e-7), which makes the
# result depend on the map's scale: maps of tiny magnitude (untrained models,
# small gradients) never reach 1. The relative rule keeps min-max exact and
# scale invariant (CAM and Grad-CAM agree through a GAP head).
CONSTANT_MAP_TOLERANCE = 1e-6
# pytorch-grad-cam's aug_smooth intensity factors (ttach Multiply), each
# with and without a horizontal flip.
AUG_SMOOTH_FACTORS = (0.9, 1.0, 1.1)


@dataclasses.dataclass
class CamRequest:
    """What is being explained: the images, their classes, the branch.

    Handed to every hook besides the activations and gradients.

    Attributes:
        images: the input batch as given to the model, (B, H, W, channels).
        class_index: int32 (B,), the class each map explains.
        branch: "sigmoid" or "softmax", the head whose logit is explained.
        positive_weights: whether channel weights are rectified (max(w, 0)).
        eigen_smooth: whether the map is the first principal component of
            the weighted activations instead of their channel sum.
        hessian_vector: float32 (B, h, w, c) Hessian-vector product
            `H A` of the target score (methods with `uses_hessian`), or None.
    """

    images: object
    class_index: object
    branch: str
    positive_weights: bool
    eigen_smooth: bool = False
    hessian_vector: object = None


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

    Maps are computed on the model's current weights at every call, also
    after further training of the model.

    Args:
        model: a `kd.DualSigmoidModel`, or a plain single-output Keras
            classifier (then only branch="softmax" is available).
        layer: name of the layer whose output feature map is explained;
            default the head's input (`model.feature_layer`). Any layer with a
            rank-4 output (batch, height, width, channels) before the head,
            including one inside a residual block or a nested backbone (a
            unique name or an "outer/inner" path). channels_first maps
            (batch, channels, height, width) are read in their layout.
            A token sequence (batch, tokens, channels) of a transformer is
            laid out on its patch grid (class, distillation and register
            tokens dropped; see `reshape`). For a class-token head
            (`x[:, 0] -> Dense`) the default is the input of the last
            token-mixing layer instead, since the gradient at the head's
            input is zero on every patch token.
        reshape: None, or a callable (batch, tokens, channels) ->
            (batch, h, w, channels) applied to the layer's output and its
            gradient (pytorch-grad-cam's `reshape_transform`). None infers
            the grid: from an enclosing backbone's `image_shape` and
            `patch_size` (keras-hub ViT, DeiT, Swin), else from the token
            count and the input's aspect ratio.

    Raises:
        ValueError: (Keras template) if `model` is not a classifier with a
            recognisable head, or `layer` is unknown, part of the head, or
            neither rank 4 nor a token sequence; if `reshape` is not a
            callable giving (batch, h, w, channels), or None where the token
            grid cannot be inferred.

    Example:
    >>> cam = kd.cams.GradCAM(dual)
    >>> maps = cam(images)  # sigmoid branch, softmax argmax class
    >>> maps.shape, maps.dtype
    ((B, H, W), dtype('float32'))
    """

    uses_gradients = True
    # ShapleyCAM: also the Hessian-vector product H A of the score.
    uses_hessian = False

    def __init__(self, model, layer=None, *, reshape=None):
        self.model = model
        self.classifier = classifier_of(model)
        self.is_dual = self.classifier.is_dual
        self.feature_layer = self.classifier.feature_layer
        self.num_classes = self.classifier.num_classes
        self._trunk = self.classifier.trunk
        if len(self._trunk.inputs) != 1:
            raise invalid(
                "model",
                "a classifier with one image input (CAMs mask, resize and "
                "compare maps with one image batch)",
                received=f"{model.name} with {len(self._trunk.inputs)} inputs",
            )
        self._last_hessian_vector = None
        names, self._layers = self._resolve_layers(layer, reshape)
        self._use_layer(0)
        # The name, or the list of names with `layer=[...]`.
        self.layer = names if isinstance(layer, (list, tuple)) else names[0]
        self._input_spec = self._trunk.inputs[0]
        # Every variable a compiled function may read: the model's own.
        self._variables = list(model.variables)
        # One compiled function per flag combination (branch, argmax, ...).
        self._compiled = {}

    # ------------------------------------------------------------------ hooks

    def channel_weights(self, activations, gradients, request):
        """Per-channel weights of the map; the hook most variants override.

        Args:
            activations: float32 (B, h, w, c) feature map A.
            gradients: float32 (B, h, w, c), d(target logit)/dA, or None for
                gradient-free methods.
            request: a `CamRequest`.

        Returns:
            float32 (B, c) channel weights w (before rectification).
        """
        raise NotImplementedError(
            f"{type(self).__name__} must override `channel_weights` or "
            "`activation_map`."
        )

    def activation_map(self, activations, gradients, request):
        """The raw signed map, before ReLU, normalisation and resize.

        The default is `sum_c w_c A_c` with w from `channel_weights`,
        rectified (max(w, 0)) when `request.positive_weights`. Element-wise
        variants override this hook instead.

        Args:
            activations: float32 (B, h, w, c).
            gradients: float32 (B, h, w, c) or None.
            request: a `CamRequest`.

        Returns:
            float32 (B, h, w).
        """
        weights = ops.cast(
            self.channel_weights(activations, gradients, request), "float32"
        )
        if request.positive_weights:
            weights = ops.relu(weights)
        if request.eigen_smooth:
            return first_component(activations * weights[:, None, None, :])
        # (B, h, w, c) x (B, c) -> (B, h, w)
        return ops.einsum("bhwc,bc->bhw", activations, weights)

    def target_scores(self, logits, target, branch):
        """(B,) scores whose gradients are explained; default the target logit.

        Args:
            logits: dict branch -> float (B, C) logits of both heads.
            target: int32 (B,) explained classes.
            branch: the explained head.

        Returns:
            (B,) one score per image (FinerCAM overrides this hook).
        """
        return ops.take_along_axis(logits[branch], ops.expand_dims(target, -1), axis=1)[
            :, 0
        ]

    # ---------------------------------------------------------- model access

    def class_logits(self, images, branch):
        """Float32 (N, C) logits of one head for a batch, in inference mode.

        Used by gradient-free variants that score modified inputs (Score-CAM);
        callable inside the compiled function.
        """
        return self.classifier.logits(images)[branch]

    def _resolve_layer(self, layer, reshape=None):
        """Validates `layer`; builds the probe model [images, d] -> (A, features).

        Sets how A is read: `_channels_first` for a rank-4 map, `_reshape`
        (tokens -> grid) for a token sequence.
        """
        head = self.classifier.heads["softmax"]
        class_token = _tokens.reads_class_token(head)
        if layer is None:
            layer = self.feature_layer
            if class_token:
                # The head reads only the class token: explain the input of
                # the last token mixing, where patch tokens get gradients.
                layer = _tokens.mixing_input(self._trunk) or layer
        if not isinstance(layer, str):
            raise invalid("layer", "None or a layer name (str)", layer)
        found, path = _graph.find_layer(self._trunk, layer)
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
        probe = _graph.probe_model(self._trunk, [layer])
        shape = tuple(probe.outputs[0].shape)
        self._reshape = None
        if reshape is not None:
            self._reshape = _tokens.check_reshape(reshape, shape, layer)
        elif len(shape) == 3:
            if class_token and layer == self.feature_layer:
                raise invalid(
                    "layer",
                    "a layer before the last token mixing (attention): this "
                    "head reads only the class token, so the gradient at its "
                    "input is zero on every patch token",
                    layer,
                )
            image_size = tuple(self._trunk.inputs[0].shape[1:3])
            owners = [found, *reversed(path or [])]
            self._reshape = _tokens.grid_reshape(shape[1], image_size, layer, owners)
        elif len(shape) != 4:
            raise invalid(
                "layer",
                "a layer whose output is a rank-4 feature map (batch, height, "
                "width, channels) or a token sequence (batch, tokens, channels)",
                received=f"{layer!r} (output shape {shape})",
            )
        self._probe = probe
        self._channels_first = self._reshape is None and self._is_channels_first(
            layer, found
        )
        return layer

    def _resolve_layers(self, layer, reshape=None):
        """(names, states): per explained layer what `_resolve_layer` sets.

        Every attribute that `_resolve_layer` sets (the probe model, the
        layout, ...) is recorded per layer, so that `_use_layer` can switch
        between them.
        """
        names = list(layer) if isinstance(layer, (list, tuple)) else [layer]
        if not names:
            raise invalid("layer", "None, a layer name or a non-empty list", layer)
        resolved_names, states = [], []
        for name in names:
            before = dict(vars(self))
            resolved = self._resolve_layer(name, reshape)
            state = {
                key: value
                for key, value in vars(self).items()
                if key not in before or before[key] is not value
            }
            state["_current_layer"] = resolved
            resolved_names.append(resolved)
            states.append(state)
        return resolved_names, states

    def _use_layer(self, index):
        """Makes layer `index` of `layer=[...]` the explained one."""
        for key, value in self._layers[index].items():
            setattr(self, key, value)

    def _is_channels_first(self, name, layer):
        """Whether the explained map is (B, c, h, w), from the layers' formats.

        The head's input takes its layout from the head (its pooling or
        convolution layers); an inner layer from its own `data_format`. When
        the layout cannot be told and the model has channels_first layers,
        the layer is refused rather than read in the wrong layout.
        """
        if name == self.feature_layer:
            candidates = self.classifier.heads["softmax"].layers
        else:
            candidates = [layer]
        formats = [getattr(c, "data_format", None) for c in candidates]
        known = [f for f in formats if f in ("channels_first", "channels_last")]
        if known:
            return known[0] == "channels_first"
        if any(
            getattr(other, "data_format", None) == "channels_first"
            for other in _graph.all_layers(self.model)
        ):
            raise invalid(
                "layer",
                "a layer whose layout can be told (a convolution or pooling "
                "layer, or the head's input): this model has channels_first "
                "layers",
                name,
            )
        return False

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
        aug_smooth=False,
        eigen_smooth=False,
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
                (docs/method.md, "Channel weights"). Applies to channel-weight methods only;
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
            aug_smooth: test-time augmentation as pytorch-grad-cam's
                `aug_smooth`: the maps of the 6 images {identity, horizontal
                flip} x {intensity 0.9, 1, 1.1}, each flipped back, averaged
                (with class_index=None each augmented image explains its own
                argmax class, as there).
            eigen_smooth: the map is the first principal component of the
                weighted activations `w_c A_c` (or of the element-wise terms)
                after centring each channel, instead of their channel sum
                (pytorch-grad-cam's `eigen_smooth`; sign: largest-magnitude
                entry positive). Methods that are a projection already
                (EigenCAM, KPCA-CAM) and FEM ignore it.

        With several layers (`layer=[...]`) each layer's map is computed as
        above, and the maps are averaged and min-max normalised again
        (pytorch-grad-cam's `aggregate_multi_layers`; without `normalize`
        they are only averaged).

        Returns:
            float32 numpy array (B, H, W) (or (B, h, w) when resize=False):
            in [0, 1] if normalize, raw signed values otherwise.

        Raises:
            ValueError: (Keras template) for images of the wrong rank,
                channel count or size, a class_index out of range or of the
                wrong shape, an unknown branch, branch="sigmoid" on a plain
                classifier, or a bad flag.
        """
        options = {
            "branch": branch,
            "positive_weights": positive_weights,
            "normalize": normalize,
            "resize": resize,
            "batch_size": batch_size,
            "eigen_smooth": eigen_smooth,
        }
        if check_bool(aug_smooth, "aug_smooth"):
            return self._augmentation_smoothing(images, class_index, options)
        images = self._check_images(images)
        batch = int(images.shape[0])
        self.classifier.check_branch(branch)
        if positive_weights is None:
            positive_weights = branch == "sigmoid"
        flags = {
            "use_argmax": class_index is None,
            "branch": branch,
            "positive_weights": check_bool(positive_weights, "positive_weights"),
            "normalize": check_bool(normalize, "normalize"),
            "resize": check_bool(resize, "resize"),
            "eigen_smooth": check_bool(eigen_smooth, "eigen_smooth"),
        }
        batch_size = check_positive_int(batch_size, "batch_size", allow_none=True)
        batch_size = batch if batch_size is None else batch_size
        indices = check_class_index(class_index, batch, self.num_classes)
        if indices is None:
            indices = np.zeros((batch,), np.int32)
        per_layer = []
        for layer_index in range(len(self._layers)):
            key = (*sorted(flags.items()), ("layer_index", layer_index))
            if key not in self._compiled:
                self._compiled[key] = _backend.compile(
                    functools.partial(
                        self._compute_batch, layer_index=layer_index, **flags
                    ),
                    self._variables,
                )
            compiled = self._compiled[key]
            maps = [
                ops.convert_to_numpy(
                    compiled(
                        images[start : start + batch_size],
                        indices[start : start + batch_size],
                    )
                )
                for start in range(0, batch, batch_size)
            ]
            per_layer.append(maps[0] if len(maps) == 1 else np.concatenate(maps))
        maps = _aggregate_layers(per_layer, flags["normalize"])
        return maps.astype(np.float32, copy=False)

    def _augmentation_smoothing(self, images, class_index, options):
        """Mean map over {identity, hflip} x {0.9, 1, 1.1} (see __call__)."""
        images = ops.convert_to_numpy(self._check_images(images))
        total = None
        for flip in (False, True):
            for factor in AUG_SMOOTH_FACTORS:
                augmented = images[:, :, ::-1] if flip else images
                augmented = (augmented * factor).astype(images.dtype)
                maps = self(augmented, class_index, **options)
                maps = maps[:, :, ::-1] if flip else maps
                total = maps if total is None else total + maps
        return (total / (2 * len(AUG_SMOOTH_FACTORS))).astype(np.float32)

    def _compute_batch(
        self,
        images,
        class_index,
        *,
        use_argmax,
        branch,
        positive_weights,
        eigen_smooth=False,
        layer_index=0,
        **post,
    ):
        """One batch, compiled once per flag combination (see __call__)."""
        self._use_layer(layer_index)
        images = ops.convert_to_tensor(images)
        class_index = ops.convert_to_tensor(class_index, "int32")
        activations, gradients, class_index = self._explain(
            images, class_index, use_argmax, branch
        )
        request = CamRequest(
            images,
            class_index,
            branch,
            positive_weights,
            eigen_smooth,
            self._last_hessian_vector,
        )
        maps = ops.cast(self.activation_map(activations, gradients, request), "float32")
        return _postprocess(maps, tuple(images.shape[1:3]), **post)

    def _explain(self, images, class_index, use_argmax, branch):
        """(A, dz/dA or None, explained classes) from one forward pass.

        A zero probe d is added to A inside the model; the gradient of the
        summed target logits with respect to d is the gradient with respect
        to A (each image's logit depends on its own A only).
        """
        probe_spec = self._probe.inputs[-1]
        zeros = ops.zeros(
            (images.shape[0], *probe_spec.shape[1:]), dtype=probe_spec.dtype
        )

        def score(delta):
            activations, features = self._probe([images, delta], training=False)
            logits = self.classifier.head_logits(features)
            if use_argmax:
                # The paper explains the frozen softmax head's prediction k*.
                target = ops.cast(ops.argmax(logits["softmax"], axis=-1), "int32")
            else:
                target = class_index
            picked = self.target_scores(logits, target, branch)
            return ops.sum(picked), (activations, target)

        self._last_hessian_vector = None
        if self.uses_hessian:
            # ShapleyCAM: H A, the Hessian of the score applied to A.
            (activations, target), gradients, hessian = _backend.value_grad_and_hvp(
                score, zeros, lambda aux: aux[0]
            )
            self._last_hessian_vector = self._channels_last(hessian)
            return (
                self._channels_last(activations),
                self._channels_last(gradients),
                target,
            )
        if not self.uses_gradients:
            _, (activations, target) = score(zeros)
            return self._channels_last(activations), None, target
        (activations, target), gradients = _backend.value_and_grad(score, zeros)
        if gradients is None:
            raise invalid(
                "layer",
                "a layer on the path from the images to the output, with "
                "floating-point inputs (no gradient reached it)",
                self.layer,
            )
        return self._channels_last(activations), self._channels_last(gradients), target

    def _channels_last(self, tensor):
        """float32 (B, h, w, c), whatever the layer's layout (or tokens)."""
        tensor = ops.cast(tensor, "float32")
        if self._reshape is not None:
            return self._reshape(tensor)  # (B, N, c) -> (B, h, w, c)
        if self._channels_first:
            tensor = ops.transpose(tensor, (0, 2, 3, 1))  # (B, c, h, w) -> (B, h, w, c)
        return tensor

    # ---------------------------------------------------------- validation

    def _check_images(self, images):
        """Images as a backend tensor of the model's input dtype, validated."""
        spec = self._input_spec
        expected_shape = ("batch", *tuple(spec.shape[1:]))
        try:
            images = ops.convert_to_tensor(images)
        except (TypeError, ValueError) as err:
            raise invalid(
                "images", f"an array of shape {expected_shape}", images
            ) from err
        if len(images.shape) != len(spec.shape):
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
        dtype = keras.backend.standardize_dtype(spec.dtype)
        if keras.backend.standardize_dtype(images.dtype) != dtype and (
            "float" in dtype
        ):
            images = ops.cast(images, dtype)
        return images

    def __repr__(self):
        return f"{type(self).__name__}(model={self.model.name!r}, layer={self.layer!r})"


def _aggregate_layers(per_layer, normalize):
    """Mean of the maps of several layers; min-max again when normalised."""
    if len(per_layer) == 1:
        return per_layer[0]
    shapes = {maps.shape for maps in per_layer}
    if len(shapes) != 1:
        raise invalid(
            "resize",
            "True when the layers of `layer=[...]` have maps of different sizes",
            f"False (map shapes {sorted(shapes)})",
        )
    mean = np.mean(np.stack(per_layer), axis=0)
    if not normalize:
        return mean
    return ops.convert_to_numpy(_min_max(ops.convert_to_tensor(np.maximum(mean, 0))))


def _postprocess(maps, size, *, normalize, resize):
    """ReLU, min-max, bilinear resize, min-max (pytorch-grad-cam order)."""
    if normalize:
        maps = _min_max(ops.relu(maps))
    if resize:
        # (B, h, w) -> (B, H, W); half-pixel bilinear == cv2 INTER_LINEAR.
        maps = ops.image.resize(
            maps[..., None], size, interpolation="bilinear", antialias=False
        )[..., 0]
    if normalize:
        maps = _min_max(maps)
        finite = ops.all(ops.isfinite(maps), axis=(1, 2), keepdims=True)
        maps = ops.where(finite, maps, ops.zeros_like(maps))
    return maps


def _min_max(maps):
    """Per-image min-max of (B, h, w) maps to [0, 1]; constant or NaN -> 0."""
    low = ops.min(maps, axis=(1, 2), keepdims=True)
    high = ops.max(maps, axis=(1, 2), keepdims=True)
    span = high - low
    scale = ops.maximum(ops.abs(low), ops.abs(high))
    # False for NaN/inf too, so those maps become zeros.
    varies = span > CONSTANT_MAP_TOLERANCE * scale
    return ops.where(varies, (maps - low) / ops.where(varies, span, 1.0), 0.0)
