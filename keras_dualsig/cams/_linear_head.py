"""Finds the one class-weight layer of a `pooling -> linear` head (for CAM)."""

import keras

from keras_dualsig import _head
from keras_dualsig._errors import invalid

# Identity at inference time, so they do not change the CAM weights.
_PASSTHROUGH = (
    keras.layers.Dropout,
    keras.layers.SpatialDropout1D,
    keras.layers.SpatialDropout2D,
    keras.layers.GaussianDropout,
    keras.layers.GaussianNoise,
    keras.layers.AlphaDropout,
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.Identity,
    keras.layers.ActivityRegularization,
)


def _is_linear(layer, final_allowed):
    name = _head.activation_name(getattr(layer, "activation", None))
    return name == "linear" or (final_allowed and name in _head.FINAL_ACTIVATIONS)


def _is_pointwise_conv(layer):
    return (
        isinstance(layer, keras.layers.Conv2D)
        and tuple(layer.kernel_size) == (1, 1)
        and tuple(layer.strides) == (1, 1)
        and getattr(layer, "groups", 1) == 1
    )


def class_weight_layer(model_name, head):
    """Index of the layer whose kernel holds the per-channel class weights.

    Accepts heads that compute `logit_k = mean_{i,j} sum_c W_ck A_cij + b_k`:
    one GlobalAveragePooling2D (or a mean over tokens: GlobalAveragePooling1D,
    `ops.mean(x, axis=1)`), one Dense or 1x1 Conv2D (before or after the
    pooling, e.g. MobileNet's `GAP -> Dropout -> Conv2D(1x1) -> Reshape` or a
    fully convolutional `Conv2D(C, 1x1) -> GAP`), Dropout/Reshape/Flatten
    between them, and final softmax/sigmoid activations.

    Raises:
        ValueError: (Keras template, argument `model`) for any other head,
            e.g. VGG's `Flatten -> fc1 -> fc2 -> predictions`, several weighted
            layers (ConvNeXt's LayerNorm), max pooling or a non-linear class
            layer.
    """
    index = _find(head.logit_layers)
    if index is not None:
        return index
    names = [layer.name for layer in head.layers]
    raise invalid(
        "model",
        "a classifier whose head is global average pooling and ONE linear "
        "Dense or 1x1 Conv2D class layer (CAM reads the class weights of each "
        "channel; use kd.cams.GradCAM or another gradient method for other "
        "heads)",
        received=f"{model_name} with head {names}",
    )


def _find(logit_layers):
    """The weighted layer's index, or None if the chain is not linear."""
    pools, weighted = 0, []
    for index, layer in enumerate(logit_layers):
        # The last logit layer may carry the final softmax/sigmoid activation:
        # the logits enter it.
        final_allowed = index == len(logit_layers) - 1
        if isinstance(
            layer,
            keras.layers.GlobalAveragePooling2D | keras.layers.GlobalAveragePooling1D,
        ) or (isinstance(layer, _head.TokenPooling) and layer.mode == "mean"):
            pools += 1
        elif (isinstance(layer, keras.layers.Dense) and pools) or _is_pointwise_conv(
            layer
        ):
            if not _is_linear(layer, final_allowed):
                return None
            weighted.append(index)
        elif isinstance(layer, keras.layers.Flatten) and not pools:
            return None  # Flatten of a spatial map: per-position weights.
        elif isinstance(layer, _PASSTHROUGH):
            continue
        elif not (
            isinstance(layer, keras.layers.Activation)
            and _is_linear(layer, final_allowed)
        ):
            return None
    return weighted[0] if pools == 1 and len(weighted) == 1 else None
