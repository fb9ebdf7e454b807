"""CAMs on token sequences (B, N, D): grids, the reshape, a NumPy golden map."""

import types

import keras
import numpy as np
import pytest
from helpers.errors import raises_invalid

import keras_dualsig as kd
from keras_dualsig import cams
from keras_dualsig.cams import _tokens

DIM, CLASSES = 6, 3


def test_token_grid_from_the_count():
    assert _tokens.token_grid(16, (32, 32)) == (0, 4, 4)
    assert _tokens.token_grid(17, (32, 32)) == (1, 4, 4)  # class token
    assert _tokens.token_grid(18, (32, 32)) == (2, 4, 4)  # + distillation
    assert _tokens.token_grid(9, (64, 32)) == (1, 4, 2)  # aspect ratio 2:1
    assert _tokens.token_grid(32, (32, 32)) is None  # 3 + 29 or 7 + 25: no


def test_known_grid_and_its_halvings():
    backbone = types.SimpleNamespace(image_shape=(32, 48, 3), patch_size=4)
    assert _tokens.known_grid(8 * 12 + 5, [backbone]) == (5, 8, 12)  # registers
    assert _tokens.known_grid(4 * 6, [backbone]) == (0, 4, 6)  # Swin stage
    assert _tokens.known_grid(2 * 3, [backbone]) == (0, 2, 3)
    assert _tokens.known_grid(7, [backbone]) is None  # no extras on halvings
    assert _tokens.known_grid(16, [object()]) is None


def _token_model():
    """Patches -> class token -> per-token Dense -> mean over tokens -> Dense."""
    keras.utils.set_random_seed(1)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(DIM, 4, strides=4, name="patches")(inputs)
    x = keras.layers.Reshape((16, DIM))(x)  # (B, 4, 4, D) -> (B, 16, D)
    token = keras.ops.zeros_like(x[:, :1]) + 0.5
    x = keras.ops.concatenate([token, x], axis=1)  # (B, 17, D)
    x = keras.layers.Dense(DIM, activation="tanh", name="tokens")(x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, outputs)


@pytest.fixture(scope="module")
def token_model():
    model = _token_model()
    images = np.random.default_rng(0).uniform(-1, 1, (2, 16, 16, 3)).astype("float32")
    return model, kd.dual_sigmoid(model, seed=0), images


def test_hirescam_on_tokens_matches_numpy(token_model):
    model, _, images = token_model
    # Mean over the N = 17 tokens -> Dense: dz_k/dA_n = W[:, k] / 17 at every
    # token, so HiResCAM's raw map is (A_n . W[:, k]) / 17 on the 16 patch
    # tokens (the class token dropped), laid out row by row on the 4 x 4 grid.
    tokens = np.asarray(
        keras.Model(model.inputs, model.get_layer("tokens").output)(images)
    )
    kernel = np.asarray(model.get_layer("predictions").kernel)
    expected = (tokens[:, 1:] @ kernel[:, 2]).reshape(2, 4, 4) / 17.0
    maps = cams.HiResCAM(model)(
        images, 2, branch="softmax", normalize=False, resize=False
    )
    np.testing.assert_allclose(maps, expected, rtol=1e-5, atol=1e-7)


def test_every_cam_and_cam_on_a_mean_head(token_model):
    _, dual, images = token_model
    for name in ("gradcam", "gradcam++", "xgradcam", "layercam", "scorecam"):
        maps = cams.get(name)(dual)(images)
        assert maps.shape == (2, 16, 16) and np.isfinite(maps).all(), name
    # Mean head: Grad-CAM's weights are CAM's divided by N.
    np.testing.assert_allclose(
        cams.CAM(dual)(images, 1), cams.GradCAM(dual)(images, 1), atol=1e-5
    )


def test_bad_reshape(token_model):
    _, dual, _ = token_model
    with raises_invalid("reshape", "callable"):
        cams.GradCAM(dual, reshape=3)
    with raises_invalid("reshape", "rank 4"):
        cams.GradCAM(dual, reshape=lambda tokens: tokens[:, 1:])
