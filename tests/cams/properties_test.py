"""The paper's motivating properties (Oh & Noh, BMVC 2025, arXiv:2511.05590).

1. Additive logit shift: adding the same vector to every class's weights of a
   softmax head leaves the softmax predictions unchanged but changes the
   softmax-branch Grad-CAM; the sigmoid-branch map does not move.
2. The positive clamp removes negative-weight channels from the map.
"""

import keras
import numpy as np
import pytest

import keras_dualsig as kd
from keras_dualsig import cams

CHANNELS, CLASSES = 6, 4


def _dual(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(CHANNELS, 3, activation="relu", name="features")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    dual = kd.dual_sigmoid(model, seed=seed)
    return model, dual


@pytest.fixture
def images():
    return np.random.default_rng(1).uniform(0, 1, (4, 16, 16, 3)).astype("float32")


def test_additive_shift_moves_softmax_map_not_sigmoid_map(images):
    model, dual = _dual()
    dense = model.get_layer("predictions")
    kernel, bias = dense.get_weights()
    cam = cams.GradCAM(dual)
    class_index = np.array([0, 1, 2, 3])
    before = model.predict(images, verbose=0)
    softmax_before = cam(images, class_index, branch="softmax")
    sigmoid_before = cam(images, class_index, branch="sigmoid")

    shift = np.random.default_rng(2).normal(0, 3, (CHANNELS, 1)).astype("float32")
    dense.set_weights([kernel + shift, bias])  # The same vector for every class.

    after = model.predict(images, verbose=0)
    np.testing.assert_allclose(after, before, atol=1e-5)
    np.testing.assert_array_equal(after.argmax(-1), before.argmax(-1))
    # The same CAM object reads the new weights (nothing baked into its trace).
    softmax_after = cam(images, class_index, branch="softmax")
    assert np.abs(softmax_after - softmax_before).max() > 0.2
    np.testing.assert_allclose(
        cam(images, class_index, branch="sigmoid"), sigmoid_before, atol=1e-6
    )


@pytest.mark.parametrize("name", ["cam", "gradcam", "xgradcam"])
def test_positive_clamp_removes_negative_channels(images, name):
    _, dual = _dual()
    branch = dual.sigmoid_head[-1]
    kernel, bias = branch.get_weights()
    rng = np.random.default_rng(3)
    # Class 0 weights: half positive, half negative channels.
    kernel[:, 0] = np.array([1.0, -2.0, 0.5, -1.0, 2.0, -0.5]) * rng.uniform(
        0.5, 1.5, CHANNELS
    )
    branch.set_weights([kernel, bias])
    features = keras.ops.convert_to_numpy(dual.trunk(images)).astype(np.float64)
    cam = cams.get(name)(dual)

    raw = cam(images, 0, normalize=False, resize=False)
    unclamped = cam(images, 0, positive_weights=False, normalize=False, resize=False)
    # Weights proportional to the kernel column (CAM: equal; Grad-CAM and
    # XGrad-CAM through GAP: kernel / (h * w)).
    scale = 1.0 if name == "cam" else 1.0 / (features.shape[1] * features.shape[2])
    positive = np.maximum(kernel[:, 0], 0) * scale
    expected = np.einsum("bhwc,c->bhw", features, positive)
    np.testing.assert_allclose(raw, expected, rtol=1e-4, atol=1e-6)
    assert np.abs(unclamped - raw).max() > 1e-3

    # Removing the negative channels from the branch does not change the map.
    clamped_maps = cam(images, 0)
    kernel[:, 0] = np.maximum(kernel[:, 0], 0)
    branch.set_weights([kernel, bias])
    np.testing.assert_allclose(cam(images, 0), clamped_maps, atol=1e-6)
