"""CAMs on keras.applications architectures (weights=None, small inputs)."""

import keras
import numpy as np
import pytest

import keras_dualsig as kd
from keras_dualsig import cams


def _image(size=64):
    return np.random.default_rng(0).uniform(-1, 1, (1, size, size, 3)).astype("float32")


def _check(maps, size=64):
    assert maps.shape == (1, size, size) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and 0.0 <= maps.min() and maps.max() <= 1.0


def test_resnet50():
    model = keras.applications.ResNet50(
        weights=None, input_shape=(64, 64, 3), classes=4
    )
    dual = kd.dual_sigmoid(model, seed=0)
    image = _image()
    # Each call compiles the whole network: one per method and branch kept.
    _check(cams.CAM(dual)(image))
    _check(cams.GradCAM(dual)(image, branch="softmax"))
    _check(cams.HiResCAM(dual)(image))
    _check(cams.LayerCAM(dual, layer="conv4_block6_out")(image))


def test_mobilenet_v1_conv_head():
    model = keras.applications.MobileNet(
        weights=None, input_shape=(64, 64, 3), classes=4, alpha=0.25
    )
    dual = kd.dual_sigmoid(model, seed=0)
    image = _image()
    cam_maps = cams.CAM(dual)(image, 2)
    _check(cam_maps)
    # GAP -> Dropout -> Conv2D(1x1) -> Reshape: CAM == Grad-CAM.
    np.testing.assert_allclose(cam_maps, cams.GradCAM(dual)(image, 2), atol=1e-5)
    _check(cams.XGradCAM(dual)(image, branch="softmax"))


@pytest.fixture(scope="module")
def nested():
    backbone = keras.applications.MobileNetV2(
        weights=None, include_top=False, input_shape=(64, 64, 3), alpha=0.35
    )
    model = keras.Sequential(
        [
            keras.Input((64, 64, 3)),
            backbone,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(4, activation="softmax"),
        ]
    )
    return backbone, model, kd.dual_sigmoid(model, seed=0)


def test_nested_backbone(nested):
    backbone, model, dual = nested
    image = _image()
    assert dual.feature_layer == backbone.name
    _check(cams.GradCAMPlusPlus(dual)(image))
    # The backbone's last layer is the same map as the backbone's output.
    np.testing.assert_allclose(
        cams.GradCAM(dual, layer=f"{backbone.name}/out_relu")(image),
        cams.GradCAM(dual)(image),
        atol=1e-6,
    )
    # An inner layer of the nested backbone, by unique name and by path.
    inner = cams.LayerCAM(dual, layer="block_6_expand_relu")
    by_path = cams.LayerCAM(dual, layer=f"{backbone.name}/block_6_expand_relu")
    small = inner(image, resize=False)
    assert small.shape == (1, 8, 8)
    np.testing.assert_allclose(by_path(image, resize=False), small, atol=1e-6)
    _check(inner(image))
    _check(cams.ScoreCAM(dual, layer="block_13_expand_relu", max_channels=4)(image))
    # Plain nested classifier, softmax branch.
    _check(cams.GradCAM(model, layer="block_6_expand_relu")(image, branch="softmax"))


def test_logits_output_model():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
    image = _image(32)
    features = keras.ops.convert_to_numpy(
        keras.Model(inputs, model.layers[1].output)(image)
    )
    kernel = model.get_layer("logits").get_weights()[0]
    k = int(model.predict(image, verbose=0).argmax())
    raw = cams.CAM(model)(image, branch="softmax", normalize=False, resize=False)
    np.testing.assert_allclose(raw[0], features[0] @ kernel[:, k], rtol=1e-5, atol=1e-6)
    dual = kd.dual_sigmoid(model, seed=0)
    for name in ("gradcam", "scorecam"):
        _check(cams.get(name)(dual)(image), 32)


def test_fully_convolutional_head():
    inputs = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="features")(inputs)
    x = keras.layers.Conv2D(4, 1, name="class_conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Softmax()(x))
    dual = kd.dual_sigmoid(model, seed=0)
    assert dual.feature_layer == "features"
    image = _image(32)
    for name in ("cam", "gradcam", "layercam"):
        _check(cams.get(name)(dual)(image), 32)
