"""Head detection and surgery on real architectures (weights=None, small inputs)."""

import os

import keras
import numpy as np
import pytest

import keras_dualsig as kd

apps = keras.applications
L = keras.layers


def _fully_convolutional():
    inputs = keras.Input((32, 32, 3))
    x = L.Conv2D(16, 3, activation="relu", name="features")(inputs)
    x = L.Conv2D(5, 1, name="class_conv")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Softmax(name="probs")(x), name="fully_conv")


def _nested_backbone():
    backbone = apps.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    )
    return keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            backbone,
            L.GlobalAveragePooling2D(name="gap"),
            L.Dropout(0.2, name="drop"),
            L.Dense(5, activation="softmax", name="classifier"),
        ],
        name="transfer",
    )


def _nested_functional_with_preprocessing():
    backbone = apps.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    inputs = keras.Input((32, 32, 3))
    x = L.Rescaling(1 / 255.0)(inputs)
    x = backbone(x, training=False)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(5, name="logits")(x), name="functional_transfer")


# name -> (builder, input size, feature layer, head layer types, branch length)
CASES = {
    "ResNet50": (
        lambda: apps.ResNet50(weights=None, input_shape=(64, 64, 3), classes=5),
        64,
        "conv5_block3_out",
        ["GlobalAveragePooling2D", "Dense"],
    ),
    "VGG16": (
        lambda: apps.VGG16(weights=None, input_shape=(64, 64, 3), classes=5),
        64,
        "block5_pool",
        ["Flatten", "Dense", "Dense", "Dense"],
    ),
    "InceptionV3": (
        lambda: apps.InceptionV3(weights=None, input_shape=(75, 75, 3), classes=5),
        75,
        "mixed10",
        ["GlobalAveragePooling2D", "Dense"],
    ),
    "MobileNet": (
        lambda: apps.MobileNet(weights=None, input_shape=(64, 64, 3), classes=5),
        64,
        "conv_pw_13_relu",
        ["GlobalAveragePooling2D", "Dropout", "Conv2D", "Reshape", "Activation"],
    ),
    "MobileNetV2": (
        lambda: apps.MobileNetV2(weights=None, input_shape=(64, 64, 3), classes=5),
        64,
        "out_relu",
        ["GlobalAveragePooling2D", "Dense"],
    ),
    "EfficientNetB0": (
        lambda: apps.EfficientNetB0(weights=None, input_shape=(64, 64, 3), classes=5),
        64,
        "top_activation",
        ["GlobalAveragePooling2D", "Dropout", "Dense"],
    ),
    "DenseNet121": (
        lambda: apps.DenseNet121(weights=None, input_shape=(64, 64, 3), classes=5),
        64,
        "relu",
        ["GlobalAveragePooling2D", "Dense"],
    ),
    "ConvNeXtTiny": (
        lambda: apps.ConvNeXtTiny(weights=None, input_shape=(64, 64, 3), classes=5),
        64,
        None,  # auto-named Add layer
        ["GlobalAveragePooling2D", "LayerNormalization", "Dense"],
    ),
    "Xception": (
        lambda: apps.Xception(weights=None, input_shape=(75, 75, 3), classes=5),
        75,
        "block14_sepconv2_act",
        ["GlobalAveragePooling2D", "Dense"],
    ),
    "ResNet50-logits": (
        lambda: apps.ResNet50(
            weights=None, input_shape=(64, 64, 3), classes=5, classifier_activation=None
        ),
        64,
        "conv5_block3_out",
        ["GlobalAveragePooling2D", "Dense"],
    ),
    "fully-convolutional": (
        _fully_convolutional,
        32,
        "features",
        ["Conv2D", "GlobalAveragePooling2D", "Softmax"],
    ),
    "nested-sequential": (
        _nested_backbone,
        32,
        "mobilenetv2_1.00_32",
        ["GlobalAveragePooling2D", "Dropout", "Dense"],
    ),
    "nested-functional": (
        _nested_functional_with_preprocessing,
        32,
        "resnet50",
        ["GlobalAveragePooling2D", "Dense"],
    ),
}


def _check_surgery(model, size, feature_layer, head_types):
    images = np.random.default_rng(0).random((2, size, size, 3), dtype=np.float32)
    expected = np.asarray(model(images))
    dual = kd.dual_sigmoid(model)
    if feature_layer is not None:
        assert dual.feature_layer == feature_layer
    assert [type(layer).__name__ for layer in dual.softmax_head] == head_types
    num_branch = len(head_types) - (head_types[-1] in ("Activation", "Softmax"))
    assert [layer.name for layer in dual.sigmoid_head] == [
        layer.name + "_sigmoid" for layer in dual.softmax_head[:num_branch]
    ]
    outputs = dual(images)
    np.testing.assert_allclose(np.asarray(outputs["softmax"]), expected, atol=1e-6)
    assert outputs["sigmoid"].shape == (2, 5)
    assert dual.trainable_weights
    assert all(
        v.path.split("/")[0].endswith("_sigmoid") for v in dual.trainable_weights
    )
    branch_vars = {id(v) for layer in dual.sigmoid_head for v in layer.weights}
    assert all(id(v) in branch_vars for v in dual.trainable_weights)
    # The logits turn into the original output through its final activation.
    logits = np.asarray(dual.logits(images)["softmax"])
    if np.allclose(expected.sum(axis=1), 1.0, atol=1e-4):
        softmax = np.exp(logits - logits.max(1, keepdims=True))
        np.testing.assert_allclose(
            softmax / softmax.sum(1, keepdims=True), expected, atol=1e-5
        )
    else:
        np.testing.assert_allclose(logits, expected, atol=1e-5)
    return dual


@pytest.mark.parametrize("name", list(CASES))
def test_architecture(name):
    builder, size, feature_layer, head_types = CASES[name]
    _check_surgery(builder(), size, feature_layer, head_types)


def test_legacy_h5_model(tmp_path):
    model = _fully_convolutional()
    path = os.fspath(tmp_path / "legacy.h5")
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    _check_surgery(
        loaded, 32, "features", ["Conv2D", "GlobalAveragePooling2D", "Softmax"]
    )


def test_one_element_output_list():
    inputs = keras.Input((32, 32, 3))
    x = L.GlobalAveragePooling2D()(L.Conv2D(4, 3)(inputs))
    model = keras.Model([inputs], [L.Dense(5, activation="softmax")(x)])
    dual = kd.dual_sigmoid(model)
    assert dual.num_classes == 5


def test_mobilenet_with_1x1_feature_map():
    # At 32x32 the last map is 1x1: the head still starts at the global pooling.
    model = apps.MobileNet(weights=None, input_shape=(32, 32, 3), classes=5)
    dual = _check_surgery(
        model,
        32,
        "conv_pw_13_relu",
        ["GlobalAveragePooling2D", "Dropout", "Conv2D", "Reshape", "Activation"],
    )
    assert dual.trunk.output.shape[1:3] == (1, 1)
