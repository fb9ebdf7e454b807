"""Tests for kd.metrics.randomization_check and its similarity measures.

SSIM is checked against a loop over every 7x7 window (the formula of Wang et
al. with skimage's defaults), Spearman against Pearson's correlation of
ranks computed by argsort; the check itself against maps made by hand with
the same weights re-drawn, and the model's weights are compared bit for bit
afterwards.
"""

import keras
import numpy as np
import pytest
from helpers.errors import raises_invalid

import keras_dualsig as kd
from keras_dualsig.metrics import randomization_check
from keras_dualsig.metrics.randomization import spearman, ssim


def loop_ssim(a, b, size=7, data_range=1.0):
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    values = []
    for y in range(a.shape[0] - size + 1):
        for x in range(a.shape[1] - size + 1):
            wa = a[y : y + size, x : x + size].ravel()
            wb = b[y : y + size, x : x + size].ravel()
            ma, mb = wa.mean(), wb.mean()
            va, vb = wa.var(ddof=1), wb.var(ddof=1)
            cov = ((wa - ma) * (wb - mb)).sum() / (wa.size - 1)
            values.append(
                ((2 * ma * mb + c1) * (2 * cov + c2))
                / ((ma**2 + mb**2 + c1) * (va + vb + c2))
            )
    return float(np.mean(values))


def test_ssim_matches_the_window_formula():
    rng = np.random.default_rng(0)
    a = rng.random((12, 15))
    b = np.clip(a + rng.normal(0, 0.2, a.shape), 0, 1)
    assert ssim(a, b) == pytest.approx(loop_ssim(a, b), rel=1e-10)
    assert ssim(a, a) == pytest.approx(1.0)


def test_spearman_is_the_correlation_of_ranks():
    rng = np.random.default_rng(1)
    a, b = rng.random((6, 6)), rng.random((6, 6))
    ranks_a = np.argsort(np.argsort(a.ravel()))
    ranks_b = np.argsort(np.argsort(b.ravel()))
    assert spearman(a, b) == pytest.approx(np.corrcoef(ranks_a, ranks_b)[0, 1])
    assert spearman(a, a**3) == pytest.approx(1.0)
    zeros = np.zeros((6, 6))
    assert spearman(zeros, zeros) == 1.0 and spearman(zeros, a) == 0.0


@pytest.fixture(scope="module")
def dual():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    return kd.dual_sigmoid(keras.Model(inputs, outputs), seed=0)


def weights(model):
    return [keras.ops.convert_to_numpy(v.value).copy() for v in model.variables]


def test_maps_change_and_the_model_is_restored(dual):
    rng = np.random.default_rng(0)
    images = rng.random((4, 10, 10, 3)).astype(np.float32)
    before = weights(dual)
    cam = kd.cams.GradCAM(dual)
    maps = cam(images, branch="sigmoid")
    result, per_image = randomization_check(cam, images, seed=0, return_per_image=True)
    for old, new in zip(before, weights(dual), strict=True):
        np.testing.assert_array_equal(old, new)
    np.testing.assert_array_equal(cam(images, branch="sigmoid"), maps)
    assert list(result) == ["Spearman", "SSIM"]
    assert per_image["SSIM"].shape == (4,)
    assert result["SSIM"] == pytest.approx(per_image["SSIM"].mean())
    # Same seed, same new weights: the same numbers; the branch only.
    assert randomization_check(cam, images, seed=0) == result
    assert result["Spearman"] < 0.99
    # Re-drawing the head and the last trunk conv changes more of the map.
    deeper = randomization_check(cam, images, seed=0, randomize=1)
    assert deeper != result
    for old, new in zip(before, weights(dual), strict=True):
        np.testing.assert_array_equal(old, new)


def test_the_model_is_restored_when_the_call_fails(dual, monkeypatch):
    images = np.random.default_rng(1).random((2, 10, 10, 3)).astype(np.float32)
    before = weights(dual)
    cam = kd.cams.GradCAM(dual)
    calls = []
    real = type(cam).__call__

    def fail_second(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the maps after re-initialising
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(type(cam), "__call__", fail_second)
    with pytest.raises(KeyboardInterrupt):
        randomization_check(cam, images, seed=0)
    for old, new in zip(before, weights(dual), strict=True):
        np.testing.assert_array_equal(old, new)


def test_validation(dual):
    images = np.zeros((1, 10, 10, 3), np.float32)
    cam = kd.cams.GradCAM(dual)
    with raises_invalid("randomize", '"head" or an int'):
        randomization_check(cam, images, randomize="all")
    with raises_invalid("randomize", "at most the 2 trunk layers"):
        randomization_check(cam, images, randomize=3)
    with raises_invalid("cam", "kd.cams object"):
        randomization_check(dual, images)
    with raises_invalid("images", "at least 7x7"):
        randomization_check(kd.cams.GradCAM(dual), np.zeros((1, 5, 5, 3)))
    with raises_invalid("branch"):
        randomization_check(cam, images, branch="both")
