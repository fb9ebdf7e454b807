"""CAM: which heads it reads, and the clear errors for the others."""

import keras
import numpy as np
import pytest

import keras_dualsig as kd
from keras_dualsig import cams


def _model(head):
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="features")(inputs)
    for layer in head:
        x = layer(x)
    return keras.Model(inputs, x)


L = keras.layers
SUPPORTED = {
    "gap_dense": [L.GlobalAveragePooling2D(), L.Dense(3, activation="softmax")],
    "gap_dropout_dense_logits": [
        L.GlobalAveragePooling2D(),
        L.Dropout(0.3),
        L.Dense(3),
    ],
    "gap_dense_activation": [
        L.GlobalAveragePooling2D(),
        L.Dense(3),
        L.Activation("softmax"),
    ],
    "mobilenet_conv_head": [
        L.GlobalAveragePooling2D(keepdims=True),
        L.Dropout(0.1),
        L.Conv2D(3, 1),
        L.Reshape((3,)),
        L.Activation("softmax"),
    ],
    "conv_class_head": [L.Conv2D(3, 1), L.GlobalAveragePooling2D(), L.Softmax()],
}
UNSUPPORTED = {
    "vgg_like": [
        L.Flatten(),
        L.Dense(8, activation="relu"),
        L.Dense(3, activation="softmax"),
    ],
    "two_dense": [
        L.GlobalAveragePooling2D(),
        L.Dense(8, activation="relu"),
        L.Dense(3, activation="softmax"),
    ],
    "layer_norm": [
        L.GlobalAveragePooling2D(),
        L.LayerNormalization(),
        L.Dense(3, activation="softmax"),
    ],
    "max_pool": [L.GlobalMaxPooling2D(), L.Dense(3, activation="softmax")],
    "conv_3x3_head": [L.Conv2D(3, 3), L.GlobalAveragePooling2D(), L.Softmax()],
}


@pytest.mark.parametrize("name", sorted(SUPPORTED))
def test_supported_heads_match_grad_cam(name):
    """Through GAP -> linear, Grad-CAM's weights are CAM's divided by h * w."""
    keras.utils.set_random_seed(0)
    dual = kd.dual_sigmoid(_model(SUPPORTED[name]), seed=0)
    images = np.random.default_rng(0).uniform(0, 1, (2, 16, 16, 3)).astype("float32")
    for branch in ("sigmoid", "softmax"):
        np.testing.assert_allclose(
            cams.CAM(dual)(images, branch=branch),
            cams.GradCAM(dual)(images, branch=branch),
            atol=1e-5,
        )


@pytest.mark.parametrize("name", sorted(UNSUPPORTED))
def test_unsupported_heads_raise(name):
    model = _model(UNSUPPORTED[name])
    with pytest.raises(ValueError, match="argument `model`.*GradCAM"):
        cams.CAM(kd.dual_sigmoid(model))
    with pytest.raises(ValueError, match="argument `model`.*GradCAM"):
        cams.CAM(model)
    cams.GradCAM(model)  # The gradient methods handle any head.


def test_cam_needs_the_head_input():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="inner")(inputs)
    x = keras.layers.Conv2D(6, 3, name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    assert cams.CAM(model, layer="features").layer == "features"
    with pytest.raises(ValueError, match="argument `layer`.*head's input"):
        cams.CAM(model, layer="inner")
