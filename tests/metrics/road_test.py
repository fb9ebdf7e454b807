"""Tests for kd.metrics.road and ROAD's noisy linear imputation.

The imputation is checked against a dense system assembled pixel by pixel
and solved with numpy.linalg.solve, and against the property that defines
it (each imputed pixel is the weighted mean of its neighbours inside the
image); ROAD scores against a "mean model" whose class-0 probability is
sigmoid(2 * mean(image)), on images imputed by that dense reference.
"""

import keras
import numpy as np
import pytest
from helpers.errors import raises_invalid

from keras_dualsig.metrics import _imputation, road
from keras_dualsig.metrics.road import removal_masks

# road_evaluation's weights: 1/6 for the 4 axial neighbours, 1/12 diagonal.
WEIGHTS = {
    (dy, dx): (1 / 12 if dy and dx else 1 / 6)
    for dy in (-1, 0, 1)
    for dx in (-1, 0, 1)
    if dy or dx
}


def dense_imputation(image, removed):
    """The imputed image from a dense system built one pixel at a time."""
    height, width, channels = image.shape
    unknown = [(y, x) for y in range(height) for x in range(width) if removed[y, x]]
    index = {pixel: i for i, pixel in enumerate(unknown)}
    matrix = np.zeros((len(unknown), len(unknown)))
    rhs = np.zeros((len(unknown), channels))
    for i, (y, x) in enumerate(unknown):
        for (dy, dx), weight in WEIGHTS.items():
            ny, nx = y + dy, x + dx
            if not (0 <= ny < height and 0 <= nx < width):
                continue
            matrix[i, i] += weight
            if removed[ny, nx]:
                matrix[i, index[ny, nx]] -= weight
            else:
                rhs[i] += weight * image[ny, nx]
    out = image.astype(np.float64).copy()
    if unknown:
        solution = np.linalg.solve(matrix, rhs)
        for i, (y, x) in enumerate(unknown):
            out[y, x] = solution[i]
    return out


def mean_model(size):
    """Class-0 probability sigmoid(2 * mean(x)): logits (mean(x), -mean(x))."""
    inputs = keras.Input((size, size, 1))
    x = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(
        2,
        activation="softmax",
        kernel_initializer=keras.initializers.Constant([[1.0, -1.0]]),
        bias_initializer="zeros",
    )(x)
    return keras.Model(inputs, outputs, name="mean_model")


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


class TestImputation:
    def test_matches_a_dense_solve(self):
        rng = np.random.default_rng(0)
        image = rng.random((7, 9, 2))
        removed = rng.random((7, 9)) < 0.6
        removed[0, 0] = removed[6, 8] = True  # corners: fewer neighbours
        imputed = _imputation.impute(image, removed, 0.0, rng)
        np.testing.assert_allclose(
            imputed, dense_imputation(image, removed), rtol=0, atol=1e-12
        )
        np.testing.assert_array_equal(imputed[~removed], image[~removed])

    def test_each_imputed_pixel_is_the_mean_of_its_neighbours(self):
        rng = np.random.default_rng(1)
        image = rng.random((6, 6, 3))
        removed = np.zeros((6, 6), bool)
        removed[1:5, 2:6] = True  # touches the right border
        imputed = _imputation.impute(image, removed, 0.0, rng)
        for y, x in zip(*np.nonzero(removed), strict=True):
            total, weights = np.zeros(3), 0.0
            for (dy, dx), weight in WEIGHTS.items():
                if 0 <= y + dy < 6 and 0 <= x + dx < 6:
                    total += weight * imputed[y + dy, x + dx]
                    weights += weight
            np.testing.assert_allclose(imputed[y, x], total / weights, atol=1e-12)

    def test_noise_and_edge_cases(self):
        rng = np.random.default_rng(2)
        image = rng.random((5, 5, 1))
        removed = rng.random((5, 5)) < 0.5
        exact = _imputation.impute(image, removed, 0.0, rng)
        noisy = _imputation.impute(image, removed, 0.5, np.random.default_rng(3))
        residual = (noisy - exact)[removed]
        assert residual.std() > 0.1 and np.abs(residual).max() < 3.0
        np.testing.assert_array_equal(noisy[~removed], image[~removed])
        # Nothing removed: the image itself. Everything: its channel mean.
        nothing = _imputation.impute(image, np.zeros((5, 5), bool), 0.0, rng)
        np.testing.assert_array_equal(nothing, image)
        everything = _imputation.impute(image, np.ones((5, 5), bool), 0.0, rng)
        np.testing.assert_allclose(everything, np.full_like(image, image.mean()))


def test_removal_masks_follow_pytorch_grad_cam():
    # MoRF at p removes map >= percentile(map, p); LeRF the same on 1 - map.
    scoremap = np.array([[0.1, 0.2], [0.3, 0.4]], np.float32)
    masks = removal_masks(scoremap, np.array([50.0]))
    np.testing.assert_array_equal(masks[0, 0], [[False, False], [True, True]])
    np.testing.assert_array_equal(masks[1, 0], [[True, True], [False, False]])
    rng = np.random.default_rng(0)
    scoremap = rng.random((6, 7)).astype(np.float32)
    percentiles = np.array([10.0, 35.0, 90.0])
    masks = removal_masks(scoremap, percentiles)
    for row, p in enumerate(percentiles):
        assert masks[0, row].sum() == np.sum(scoremap >= np.percentile(scoremap, p))
    assert masks[0, 0].mean() == pytest.approx(0.9, abs=0.03)


class TestRoad:
    image = np.array(
        [[[0.9], [0.1], [0.4]], [[0.3], [0.8], [0.2]], [[0.5], [0.7], [0.6]]],
        np.float32,
    )[None]
    scoremap = np.array(
        [[0.9, 0.1, 0.5], [0.2, 0.8, 0.3], [0.4, 0.7, 0.6]], np.float32
    )[None]
    percentiles = (25, 50, 75)

    def expected(self):
        """ROAD scores of class 0 from the dense imputation, by hand."""
        y = sigmoid(2 * self.image.mean())
        changes = []
        for values in (self.scoremap[0], 1 - self.scoremap[0]):
            row = []
            for p in self.percentiles:
                removed = values >= np.percentile(values, p)
                imputed = dense_imputation(self.image[0], removed)
                row.append(sigmoid(2 * imputed.mean()) - y)
            changes.append(np.mean(row))
        morf, lerf = changes
        return {
            "ROAD MoRF": morf,
            "ROAD LeRF": lerf,
            "ROAD combined": (lerf - morf) / 2,
        }

    def test_exact_run_matches_the_dense_reference(self):
        result = road(
            mean_model(3),
            self.image,
            self.scoremap,
            0,
            percentiles=self.percentiles,
            noise=0.0,
        )
        assert list(result) == ["ROAD MoRF", "ROAD LeRF", "ROAD combined"]
        for name, value in self.expected().items():
            assert result[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name

    def test_seeds_batches_and_per_image(self):
        model = mean_model(3)
        rng = np.random.default_rng(0)
        images = rng.random((5, 3, 3, 1)).astype(np.float32)
        maps = rng.random((5, 3, 3)).astype(np.float32)
        kwargs = {"percentiles": self.percentiles, "seed": 7}
        first, per_image = road(
            model, images, maps, 0, return_per_image=True, batch_size=4, **kwargs
        )
        again = road(model, images, maps, 0, batch_size=32, **kwargs)
        assert again == first  # the noise is drawn image by image
        other = road(model, images, maps, 0, percentiles=self.percentiles, seed=8)
        assert other != first
        for name, values in per_image.items():
            assert values.shape == (5,)
            assert values.mean() == pytest.approx(first[name])

    def test_constant_map_removes_everything(self):
        # Every pixel is removed in both orders: the image's mean is imputed,
        # which the mean model cannot tell from the image.
        result = road(
            mean_model(3),
            self.image,
            np.zeros((1, 3, 3), np.float32),
            0,
            noise=0.0,
        )
        assert result["ROAD MoRF"] == pytest.approx(0.0, abs=1e-6)
        assert result["ROAD combined"] == 0.0

    def test_validation(self):
        model = mean_model(3)
        cases = [
            ("percentiles", {"percentiles": []}, "[0, 100]"),
            ("percentiles", {"percentiles": [50, 120]}, "[0, 100]"),
            ("noise", {"noise": -0.1}, ">= 0"),
            ("noise", {"noise": True}, ">= 0"),
            ("seed", {"seed": 1.5}, "int"),
            ("return_per_image", {"return_per_image": "yes"}, "True or False"),
            ("maps", {"maps": self.scoremap * 2}, "[0, 1]"),
        ]
        for argument, kwargs, fragment in cases:
            arguments = {"maps": self.scoremap, **kwargs}
            maps = arguments.pop("maps")
            with raises_invalid(argument, fragment):
                road(model, self.image, maps, 0, **arguments)
