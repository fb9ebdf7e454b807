"""Behaviour suite of every CAM variant (BaseCAM's contract), bad inputs, get()."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dualsig as kd
from keras_dualsig import cams

NAMES = ["cam", "gradcam", "gradcam++", "xgradcam", "layercam", "hirescam", "scorecam"]
# The pytorch-grad-cam / torchcam methods: a cheaper behaviour check each
# (their formulas are in golden_methods_test.py).
NEW_NAMES = [
    "gradcamelementwise",
    "eigencam",
    "eigengradcam",
    "ablationcam",
    "kpcacam",
    "shapleycam",
    "finercam",
    "fem",
    "randomcam",
    "sscam",
    "iscam",
]
NEW_OPTIONS = {"sscam": {"num_samples": 2}, "iscam": {"num_samples": 2}}
CLASSES = 5


def _classifier(policy, seed=0):
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(seed)
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="c1")(inputs)
        x = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="c2")(x)
        x = keras.layers.GlobalAveragePooling2D()(x)
        outputs = keras.layers.Dense(CLASSES, activation="softmax", name="predictions")(
            x
        )
        model = keras.Model(inputs, outputs, name=f"tiny_{policy}")
        return model, kd.dual_sigmoid(model, seed=1)
    finally:
        keras.config.set_dtype_policy("float32")


@pytest.fixture(scope="module")
def models():
    built = {policy: _classifier(policy) for policy in ("float32", "mixed_float16")}
    # Same weights in both precisions, so their maps can be compared.
    built["mixed_float16"][0].set_weights(built["float32"][0].get_weights())
    built["mixed_float16"][1].sigmoid_head[-1].set_weights(
        built["float32"][1].sigmoid_head[-1].get_weights()
    )
    return built


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).uniform(0, 1, (5, 32, 32, 3)).astype("float32")


def _min_max(maps):
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    return (maps - low) / np.where(high > low, high - low, 1.0)


@pytest.mark.parametrize("policy", ["float32", "mixed_float16"])
@pytest.mark.parametrize("branch", ["sigmoid", "softmax"])
@pytest.mark.parametrize("name", NAMES)
def test_behaviour(models, images, name, branch, policy):
    _, dual = models[policy]
    cam = cams.get(name)(dual)
    class_index = np.array([0, 1, 2, 3, 4])

    maps = cam(images, class_index, branch=branch)
    assert isinstance(maps, np.ndarray) and maps.dtype == np.float32
    assert maps.shape == (5, 32, 32)
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.allclose(maps.max(axis=(1, 2)), 1.0, atol=1e-6)

    # Chunks give the same maps as one batch.
    chunked = cam(images, class_index, branch=branch, batch_size=2)
    np.testing.assert_allclose(chunked, maps, atol=1e-5)
    # Per-sample class indices: row i is the map of image i for class_index[i].
    for i in (1, 4):
        single = cam(images[i : i + 1], int(class_index[i]), branch=branch)
        np.testing.assert_allclose(single[0], maps[i], atol=1e-5)

    # normalize=False: the raw signed map; normalising it gives the maps.
    raw = cam(images, class_index, branch=branch, normalize=False, resize=False)
    small = cam(images, class_index, branch=branch, resize=False)
    assert raw.shape == small.shape == (5, 7, 7) and raw.dtype == np.float32
    np.testing.assert_allclose(_min_max(np.maximum(raw, 0)), small, atol=1e-5)
    raw_big = cam(images, class_index, branch=branch, normalize=False)
    assert raw_big.shape == (5, 32, 32)

    if policy == "mixed_float16":
        # Float32 CAM math on float16 features/gradients: close to float32.
        reference = cams.get(name)(models["float32"][1])
        expected = reference(images, class_index, branch=branch)
        assert np.abs(maps - expected).mean() < 0.02


@pytest.mark.parametrize("name", NEW_NAMES)
def test_behaviour_new_methods(models, images, name):
    class_index = np.array([0, 1, 2, 3, 4])
    results = {}
    for policy, branch in (
        ("float32", "sigmoid"),
        ("float32", "softmax"),
        ("mixed_float16", "sigmoid"),
    ):
        cam = cams.get(name)(models[policy][1], layer="c2", **NEW_OPTIONS.get(name, {}))
        maps = cam(images, class_index, branch=branch)
        assert isinstance(maps, np.ndarray) and maps.dtype == np.float32
        assert maps.shape == (5, 32, 32) and np.isfinite(maps).all()
        assert maps.min() >= 0.0 and maps.max() <= 1.0
        peaks = maps.max(axis=(1, 2))
        assert np.all(np.isclose(peaks, 1.0, atol=1e-6) | (peaks == 0.0))
        assert peaks.max() == pytest.approx(1.0)
        results[policy, branch] = maps
    # Float32 CAM math on float16 features/gradients: close to float32
    # (SS-CAM's noise and the top channels of a ratio may differ more).
    gap = np.abs(results["mixed_float16", "sigmoid"] - results["float32", "sigmoid"])
    assert gap.mean() < (0.1 if name == "sscam" else 0.03)


@pytest.mark.parametrize("name", NAMES)
def test_plain_classifier_softmax_branch(models, images, name):
    model, dual = models["float32"]
    plain = cams.get(name)(model)(images, branch="softmax")
    np.testing.assert_allclose(
        plain, cams.get(name)(dual)(images, branch="softmax"), atol=1e-6
    )


def test_maps_differ_by_class_and_branch(models, images):
    _, dual = models["float32"]
    cam = cams.GradCAM(dual)
    a = cam(images, 0)
    assert np.abs(a - cam(images, 1)).max() > 0.1
    assert np.abs(a - cam(images, 0, branch="softmax")).max() > 0.1


def test_raw_maps_are_signed(models, images):
    _, dual = models["float32"]
    cam = cams.GradCAM(dual)
    raw = np.stack(
        [cam(images, k, branch="softmax", normalize=False) for k in range(CLASSES)]
    )
    assert raw.min() < 0 < raw.max()


def test_positive_weights_default_per_branch(models, images):
    _, dual = models["float32"]
    cam = cams.GradCAM(dual)
    for branch, positive in (("sigmoid", True), ("softmax", False)):
        np.testing.assert_array_equal(
            cam(images, 2, branch=branch),
            cam(images, 2, branch=branch, positive_weights=positive),
        )
    assert (
        np.abs(
            cam(images, 2, positive_weights=False)
            - cam(images, 2, positive_weights=True)
        ).max()
        > 0.01
    )


def test_constant_and_nan_maps_become_zeros(models):
    _, dual = models["float32"]
    cam = cams.GradCAM(dual)
    zeros = np.zeros((2, 32, 32, 3), "float32")  # Constant features: flat map.
    np.testing.assert_array_equal(cam(zeros), np.zeros((2, 32, 32)))
    nan = np.full((1, 32, 32, 3), np.nan, "float32")
    np.testing.assert_array_equal(cam(nan), np.zeros((1, 32, 32)))


class Counter(keras.layers.Layer):
    """Identity that counts the images passing through it (in graph mode too)."""

    def build(self, input_shape):
        self.seen = self.add_weight(
            shape=(), initializer="zeros", trainable=False, dtype="float32"
        )

    def call(self, x):
        self.seen.assign_add(tf.cast(tf.shape(x)[0], "float32"))
        return x


@pytest.mark.parametrize(
    "name,layer",
    # CAM explains the head's input only.
    [(n, layer) for n in NAMES for layer in (None, "inner") if n != "cam" or not layer],
)
def test_one_forward_per_batch(name, layer):
    inputs = keras.Input((16, 16, 3))
    counter = Counter(name="counter")
    x = counter(inputs)
    x = keras.layers.Conv2D(4, 3, activation="relu", name="inner")(x)
    x = keras.layers.Conv2D(6, 3, activation="relu", name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax")(x)
    dual = kd.dual_sigmoid(keras.Model(inputs, outputs))
    cam = cams.get(name)(dual, layer=layer)
    images = np.random.default_rng(0).uniform(0, 1, (5, 16, 16, 3)).astype("float32")
    before = float(counter.seen.numpy())
    cam(images, batch_size=2)
    seen = float(counter.seen.numpy()) - before
    channels = 4 if layer else 6
    # Gradient methods and CAM: exactly one forward of each image; Score-CAM
    # adds one forward per (image, channel) mask.
    expected = 5 + (5 * channels if name == "scorecam" else 0)
    assert seen == expected


# ------------------------------------------------------------- bad inputs


@pytest.fixture(scope="module")
def grad_cam(models):
    return cams.GradCAM(models["float32"][1])


@pytest.mark.parametrize(
    "images",
    [
        np.zeros((32, 32, 3), "float32"),  # rank 3
        np.zeros((2, 32, 32, 1), "float32"),  # channels
        np.zeros((2, 16, 16, 3), "float32"),  # size
        np.zeros((0, 32, 32, 3), "float32"),  # empty
        "not images",
    ],
)
def test_bad_images(grad_cam, images):
    with pytest.raises(ValueError, match="argument `images`"):
        grad_cam(images)


@pytest.mark.parametrize(
    "class_index",
    [5, -1, np.array([0, 1]), np.array([[0, 1, 2]]), 1.5, True, [0, 9, 1]],
)
def test_bad_class_index(grad_cam, images, class_index):
    with pytest.raises(ValueError, match="argument `class_index`"):
        grad_cam(images[:3], class_index)


@pytest.mark.parametrize(
    "kwargs,argument",
    [
        ({"branch": "logits"}, "branch"),
        ({"positive_weights": "yes"}, "positive_weights"),
        ({"normalize": 1}, "normalize"),
        ({"resize": None}, "resize"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 2.0}, "batch_size"),
    ],
)
def test_bad_flags(grad_cam, images, kwargs, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        grad_cam(images, **kwargs)


def test_sigmoid_branch_needs_dual_model(models, images):
    cam = cams.GradCAM(models["float32"][0])
    with pytest.raises(ValueError, match="argument `branch`.*dual_sigmoid"):
        cam(images)


def test_bad_layers(models):
    _, dual = models["float32"]
    with pytest.raises(ValueError, match="argument `layer`.*Received: layer='nope'"):
        cams.GradCAM(dual, layer="nope")
    with pytest.raises(ValueError, match="argument `layer`.*before the head"):
        cams.GradCAM(dual, layer="predictions")
    with pytest.raises(ValueError, match="argument `layer`"):
        cams.GradCAM(dual, layer=3)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)
    x = keras.layers.Reshape((32, 8), name="flat")(x)
    x = keras.layers.Reshape((8, 8, 4))(x)
    x = keras.layers.Conv2D(4, 3, name="features")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(x))
    # 32 "tokens" tile no square grid (after 0-2 leading tokens).
    with pytest.raises(ValueError, match="argument `reshape`.*Received: reshape=None"):
        cams.GradCAM(model, layer="flat")


def test_not_a_classifier():
    with pytest.raises(ValueError, match="argument `model`"):
        cams.GradCAM("model")


def test_get():
    assert cams.get("gradcam") is cams.GradCAM
    assert cams.get("Grad-CAM++") is cams.GradCAMPlusPlus
    assert cams.get("ScoreCAM") is cams.ScoreCAM
    assert cams.get(cams.LayerCAM) is cams.LayerCAM
    for name in NAMES:
        assert issubclass(cams.get(name), cams.BaseCAM)
    # The public list scripts loop over is exactly the documented names.
    assert cams.NAMES == tuple(NAMES + NEW_NAMES)
    with pytest.raises(ValueError, match="argument `name`.*'hirescam'"):
        cams.get("smoothgrad")
