"""Tests for confidence_change, deletion_auc and insertion_auc.

Golden values come from a "mean model" whose class-0 probability is
sigmoid(2 * mean(image)) (logits (mean, -mean)), so every confidence is
computed by hand, and from an independent NumPy computation on the outputs
of `model.predict` for a small random CNN.
"""

import keras
import numpy as np
import pytest
from helpers.errors import raises_invalid

import keras_dualsig as kd
from keras_dualsig.metrics import confidence_change, deletion_auc, insertion_auc


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))


def mean_model(size=2):
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


def small_cnn(num_classes=4):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="small_cnn")


@pytest.fixture(scope="module")
def cnn():
    keras.utils.set_random_seed(3)
    return small_cnn()


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    images = rng.normal(0, 1, (7, 8, 8, 3)).astype(np.float32)
    maps = rng.random((7, 8, 8)).astype(np.float32)
    maps[0] = 1.0  # O == Y: no drop, no increase.
    return images, maps


def numpy_ad_ic(y, o):
    drop = np.maximum(0.0, y - o) / y
    gain = np.maximum(0.0, o - y) / (1.0 - y)
    return {
        "Average Drop": 100.0 * drop.mean(),
        "Increase in Confidence": 100.0 * (o > y).mean(),
        "Average Gain": 100.0 * gain.mean(),
    }


class TestConfidenceChange:
    def test_hand_computed(self):
        model = mean_model()
        images = np.stack(
            [np.ones((2, 2, 1)), np.ones((2, 2, 1)), -np.ones((2, 2, 1))]
        ).astype(np.float32)
        maps = np.array([np.full((2, 2), 0.5), np.ones((2, 2)), np.full((2, 2), 0.5)])
        # Class 0: Y = sigmoid(2 * mean). Image 0: Y = s(2), O = s(1), a drop.
        # Image 1: map 1 keeps the image, O = Y. Image 2: Y = s(-2) < O = s(-1).
        result = confidence_change(model, images, maps, 0)
        drop = (sigmoid(2) - sigmoid(1)) / sigmoid(2)
        assert result["Average Drop"] == pytest.approx(100 * drop / 3, rel=1e-5)
        assert result["Increase in Confidence"] == pytest.approx(100 / 3)
        # Only image 2 gains: (s(-1) - s(-2)) / (1 - s(-2)) (Opti-CAM).
        gain = (sigmoid(-1) - sigmoid(-2)) / (1 - sigmoid(-2))
        assert result["Average Gain"] == pytest.approx(100 * gain / 3, rel=1e-5)
        _, per_image = confidence_change(model, images, maps, 0, return_per_image=True)
        np.testing.assert_allclose(
            per_image["Average Gain"], [0, 0, 100 * gain], rtol=1e-5, atol=1e-9
        )
        np.testing.assert_array_equal(
            per_image["Increase in Confidence"], [0.0, 0.0, 100.0]
        )

    def test_matches_numpy(self, cnn, data):
        images, maps = data
        probs = cnn.predict(images, verbose=0).astype(np.float64)
        explained = cnn.predict(images * maps[..., None], verbose=0)
        rows = np.arange(len(images))
        for class_index in (None, 2, np.array([0, 1, 2, 3, 0, 1, 2])):
            k = probs.argmax(1) if class_index is None else class_index
            k = np.broadcast_to(k, rows.shape)
            expected = numpy_ad_ic(probs[rows, k], explained[rows, k])
            for batch_size in (1, 3, 32):
                result = confidence_change(
                    cnn, images, maps, class_index, batch_size=batch_size
                )
                assert list(result) == [
                    "Average Drop",
                    "Increase in Confidence",
                    "Average Gain",
                ]
                assert result["Average Drop"] == pytest.approx(
                    expected["Average Drop"], rel=1e-4, abs=1e-6
                )
                assert result["Average Gain"] == pytest.approx(
                    expected["Average Gain"], rel=1e-4, abs=1e-6
                )
                assert result["Increase in Confidence"] == pytest.approx(
                    expected["Increase in Confidence"]
                )

    def test_sigmoid_softmax_matches_numpy(self, cnn, data):
        images, maps = data
        dual = kd.dual_sigmoid(cnn, init="copy")
        # Make the branch differ from the softmax head.
        rng = np.random.default_rng(1)
        for layer in dual.sigmoid_head:
            if layer.weights:
                layer.set_weights(
                    [rng.normal(0, 1, w.shape).astype("float32") for w in layer.weights]
                )

        def branch_softmax(x):
            p = np.asarray(dual.predict(x, verbose=0)["sigmoid"], np.float64)
            logits = np.log(p) - np.log1p(-p)
            e = np.exp(logits - logits.max(1, keepdims=True))
            return e / e.sum(1, keepdims=True)

        rows = np.arange(len(images))
        k = cnn.predict(images, verbose=0).argmax(1)  # k* from the softmax head.
        y = branch_softmax(images)[rows, k]
        o = branch_softmax(images * maps[..., None])[rows, k]
        expected = numpy_ad_ic(y, o)
        result = confidence_change(dual, images, maps, confidence="sigmoid_softmax")
        assert result["Average Drop"] == pytest.approx(
            expected["Average Drop"], rel=1e-3
        )
        assert result["Increase in Confidence"] == pytest.approx(
            expected["Increase in Confidence"]
        )
        # The default still reads the untouched softmax head.
        plain = confidence_change(cnn, images, maps)
        assert confidence_change(dual, images, maps) == pytest.approx(plain)

    def test_copied_branch_gives_the_softmax_numbers(self, cnn, data):
        # init="copy": the branch's logits are the head's, so a softmax over
        # them is the head's softmax.
        images, maps = data
        dual = kd.dual_sigmoid(cnn, init="copy")
        expected = confidence_change(cnn, images, maps)
        result = confidence_change(dual, images, maps, confidence="sigmoid_softmax")
        assert result == pytest.approx(expected, rel=1e-5)


class TestCausalMetrics:
    # Mean model, image [[4, 0], [2, 3]], map order (0,0), (1,1), (1,0), (0,1):
    # pixel values removed / inserted in the order 4, 3, 2, 0.
    image = np.array([[[4.0], [0.0]], [[2.0], [3.0]]], np.float32)[None]
    scoremap = np.array([[0.9, 0.1], [0.5, 0.7]], np.float32)[None]

    @staticmethod
    def trapezoid(curve):
        curve = np.asarray(curve)
        return (curve.sum() - (curve[0] + curve[-1]) / 2) / (len(curve) - 1)

    def test_deletion_hand_computed(self):
        # Means after 0..4 deletions (zeros): 9/4, 5/4, 2/4, 0, 0.
        expected = sigmoid(2 * np.array([9, 5, 2, 0, 0]) / 4)
        result, aucs, curves = deletion_auc(
            mean_model(),
            self.image,
            self.scoremap,
            0,
            steps=4,
            return_curves=True,
        )
        np.testing.assert_allclose(curves[0], expected, rtol=1e-5)
        assert result["Deletion AUC"] == pytest.approx(
            self.trapezoid(expected), rel=1e-5
        )
        assert aucs.shape == (1,)

    def test_insertion_hand_computed(self):
        # From zeros, means after 0..4 insertions: 0, 4/4, 7/4, 9/4, 9/4.
        expected = sigmoid(2 * np.array([0, 4, 7, 9, 9]) / 4)
        result, _, curves = insertion_auc(
            mean_model(),
            self.image,
            self.scoremap,
            0,
            steps=4,
            baseline="zeros",
            return_curves=True,
        )
        np.testing.assert_allclose(curves[0], expected, rtol=1e-5)
        assert result["Insertion AUC"] == pytest.approx(
            self.trapezoid(expected), rel=1e-5
        )

    def test_steps_are_capped_at_the_pixel_count(self):
        _, _, curves = deletion_auc(
            mean_model(), self.image, self.scoremap, 0, steps=100, return_curves=True
        )
        assert curves.shape == (1, 5)

    def test_steps_split_pixels_evenly(self):
        # steps=2: 0, 2, 4 pixels deleted -> means 9/4, 2/4, 0.
        expected = sigmoid(2 * np.array([9, 2, 0]) / 4)
        _, _, curves = deletion_auc(
            mean_model(), self.image, self.scoremap, 0, steps=2, return_curves=True
        )
        np.testing.assert_allclose(curves[0], expected, rtol=1e-5)

    def test_ties_in_row_major_order(self):
        # A constant map deletes (0,0), (0,1), (1,0), (1,1): 4, 0, 2, 3.
        expected = sigmoid(2 * np.array([9, 5, 5, 3, 0]) / 4)
        _, _, curves = deletion_auc(
            mean_model(),
            self.image,
            np.zeros((1, 2, 2)),
            0,
            steps=4,
            return_curves=True,
        )
        np.testing.assert_allclose(curves[0], expected, rtol=1e-5)

    def test_mean_baseline_hand_computed(self):
        # Deleted pixels become the image mean 9/4, in the order 4, 3, 2, 0:
        # pixel sums 9, 0 + 2 + 3 + 9/4, 0 + 2 + 2 * 9/4, 0 + 3 * 9/4, 9.
        expected = sigmoid(2 * np.array([9, 7.25, 6.5, 6.75, 9]) / 4)
        _, _, curves = deletion_auc(
            mean_model(),
            self.image,
            self.scoremap,
            0,
            steps=4,
            baseline="mean",
            return_curves=True,
        )
        np.testing.assert_allclose(curves[0], expected, rtol=1e-5)

    def test_torchcam_and_xplique_rules_agree_when_steps_divide(self, cnn, data):
        # Independent re-derivations of both libraries' deletion AUC on 8x8
        # images (N = 64): torchcam (ceil(N / steps) pixels per step, trapezoid
        # over the fractions changed) and xplique (linspace checkpoints,
        # mean of adjacent pairs).
        images, maps = data
        n = 64
        k = cnn.predict(images, verbose=0).argmax(1)
        order = np.argsort(-maps.reshape(7, -1), axis=1, kind="stable")

        def curve(counts):
            rows = []
            for count in counts:
                x = images.reshape(7, n, 3).copy()
                for i in range(7):
                    x[i, order[i, :count]] = 0.0
                p = cnn.predict(x.reshape(images.shape), verbose=0)
                rows.append(p[np.arange(7), k])
            return np.array(rows).T  # (7, points)

        steps = 16
        size = -(-n // steps)
        torch_counts = [*range(0, n, size), n]
        torch_auc = np.trapezoid(curve(torch_counts), np.array(torch_counts) / n)
        xplique_counts = np.linspace(0, n, steps + 1, dtype=np.int32)
        scores = curve(xplique_counts).mean(axis=0)
        xplique_auc = np.mean(scores[:-1] + scores[1:]) * 0.5
        ours = deletion_auc(cnn, images, maps, steps=steps)["Deletion AUC"]
        assert ours == pytest.approx(torch_auc.mean(), rel=1e-4)
        assert ours == pytest.approx(xplique_auc, rel=1e-4)

    def test_pairs_are_packed_into_full_compiled_calls(self, cnn, data):
        # 7 images x 6 steps = 42 (image, step) inputs in chunks of 16: three
        # calls of one shape (the last one padded), besides the first call
        # on the images themselves.
        from keras_dualsig.metrics import _scorer

        images, maps = data
        reference = deletion_auc(cnn, images, maps, steps=5, batch_size=16)
        compiled = _scorer._COMPILED[cnn]
        shapes = []

        def spy(x):
            shapes.append(tuple(x.shape))
            return compiled(x)

        _scorer._COMPILED[cnn] = spy
        try:
            again = deletion_auc(cnn, images, maps, steps=5, batch_size=16)
        finally:
            _scorer._COMPILED[cnn] = compiled
        assert again == reference
        assert shapes == [(7, 8, 8, 3)] + [(16, 8, 8, 3)] * 3

    def test_baselines_and_endpoints(self, cnn, data):
        images, maps = data
        probs = cnn.predict(images, verbose=0).astype(np.float64)
        rows = np.arange(len(images))
        k = probs.argmax(1)
        constant = 0.25
        on_constant = cnn.predict(np.full_like(images, constant), verbose=0)
        for function, first, last in (
            (deletion_auc, probs[rows, k], on_constant[rows, k]),
            (insertion_auc, on_constant[rows, k], probs[rows, k]),
        ):
            _, _, curves = function(
                cnn, images, maps, steps=5, baseline=constant, return_curves=True
            )
            assert curves.shape == (7, 6)
            np.testing.assert_allclose(curves[:, 0], first, rtol=1e-4)
            np.testing.assert_allclose(curves[:, -1], last, rtol=1e-4)
        # Blur: the insertion curve starts on the blurred image. RISE blurs with
        # an 11x11 Gaussian, sigma 5; a constant image stays constant.
        flat = np.full((1, 8, 8, 3), 0.5, np.float32)
        _, _, curves = insertion_auc(
            cnn, flat, maps[:1], steps=3, baseline="blur", return_curves=True
        )
        np.testing.assert_allclose(curves[0], curves[0, -1], rtol=1e-5)

    def test_batch_size_does_not_change_the_curves(self, cnn, data):
        images, maps = data
        reference = deletion_auc(cnn, images, maps, steps=6, batch_size=1)
        assert deletion_auc(cnn, images, maps, steps=6, batch_size=5) == pytest.approx(
            reference, rel=1e-6
        )
        assert insertion_auc(
            cnn, images, maps, steps=6, batch_size=64
        ) == pytest.approx(insertion_auc(cnn, images, maps, steps=6, batch_size=4))


class TestValidation:
    def test_unknown_confidence(self, cnn, data):
        images, maps = data
        with raises_invalid(
            "confidence", 'one of "softmax", "sigmoid_softmax", "sigmoid"'
        ):
            confidence_change(cnn, images, maps, confidence="logit")

    @pytest.mark.parametrize("confidence", ["sigmoid_softmax", "sigmoid"])
    def test_sigmoid_confidence_needs_a_dual_model(self, cnn, data, confidence):
        images, maps = data
        with raises_invalid("confidence", "DualSigmoidModel", "'small_cnn'"):
            confidence_change(cnn, images, maps, confidence=confidence)
        with raises_invalid("confidence"):
            deletion_auc(cnn, images, maps, confidence=confidence)

    def test_maps(self, cnn, data):
        images, maps = data
        with raises_invalid("maps", "shape (7, 8, 8)"):
            confidence_change(cnn, images, maps[:, :4])
        with raises_invalid("maps", "values in [0, 1]"):
            confidence_change(cnn, images, maps * 2)
        bad = maps.copy()
        bad[0, 0, 0] = np.nan
        with raises_invalid("maps", "nan_count=1"):
            insertion_auc(cnn, images, bad)
        with raises_invalid("maps"):
            deletion_auc(cnn, images, maps[:3])

    def test_images(self, cnn, data):
        images, maps = data
        with raises_invalid("images", "(batch, height, width, channels)"):
            confidence_change(cnn, images[..., 0], maps)

    @pytest.mark.parametrize("class_index", [4, [0, 1], 0.5])
    def test_class_index(self, cnn, data, class_index):
        images, maps = data
        with raises_invalid("class_index"):
            confidence_change(cnn, images, maps, class_index)

    def test_steps_baseline_batch_size(self, cnn, data):
        images, maps = data
        with raises_invalid("steps"):
            deletion_auc(cnn, images, maps, steps=0)
        with raises_invalid("steps"):
            deletion_auc(cnn, images, maps, steps=2.5)
        with raises_invalid("baseline", '"zeros", "blur", "mean"'):
            insertion_auc(cnn, images, maps, baseline="noise")
        with raises_invalid("baseline"):
            insertion_auc(cnn, images, maps, baseline=np.zeros((2, 3)))
        with raises_invalid("batch_size"):
            confidence_change(cnn, images, maps, batch_size=0)
