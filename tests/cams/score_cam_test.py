"""Score-CAM: the channel cap (most-varying first) and its arguments."""

import keras
import numpy as np
import pytest

import keras_dualsig as kd
from keras_dualsig import cams


@pytest.fixture(scope="module")
def dual():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="features")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return kd.dual_sigmoid(keras.Model(inputs, outputs), seed=0)


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 1, (3, 16, 16, 3)).astype("float32")


def test_cap_scores_the_most_varying_channels(dual, images):
    features = keras.ops.convert_to_numpy(dual.trunk(images)).astype(np.float64)
    variance = features.var(axis=(1, 2))  # (B, c)
    capped = cams.ScoreCAM(dual, max_channels=3, score_batch_size=4)
    raw = capped(images, 1, normalize=False, resize=False)
    assert raw.shape == (3, 14, 14)
    for b in range(3):
        # The map is a combination of the 3 most-varying channels only, with
        # softmax weights (positive, summing to one).
        keep = np.argsort(-variance[b])[:3]
        basis = features[b][..., keep].reshape(-1, 3)
        weights, *_ = np.linalg.lstsq(basis, raw[b].reshape(-1), rcond=None)
        np.testing.assert_allclose(basis @ weights, raw[b].reshape(-1), atol=1e-5)
        assert np.all(weights > 0)
        np.testing.assert_allclose(weights.sum(), 1.0, atol=1e-4)


def test_cap_and_batch_size_equivalences(dual, images):
    full = cams.ScoreCAM(dual)
    expected = full(images, 1)
    assert not np.allclose(cams.ScoreCAM(dual, max_channels=3)(images, 1), expected)
    # A cap of all channels is the uncapped method.
    np.testing.assert_allclose(
        cams.ScoreCAM(dual, max_channels=8)(images, 1), expected, atol=1e-6
    )
    # The score batch size only changes the chunking.
    np.testing.assert_allclose(
        cams.ScoreCAM(dual, score_batch_size=5)(images, 1), expected, atol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"max_channels": 0}, "max_channels"),
        ({"max_channels": 2.5}, "max_channels"),
        ({"score_batch_size": 0}, "score_batch_size"),
        ({"score_batch_size": None}, "score_batch_size"),
    ],
)
def test_bad_arguments(dual, kwargs, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        cams.ScoreCAM(dual, **kwargs)
