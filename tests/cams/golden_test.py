"""Golden tests: every variant against an independent NumPy reference.

The tiny model `inner (1x1 conv, relu) -> 2x2 average pool -> features (3x3
conv, relu) -> GAP -> Dense` is run forward AND differentiated by hand in
float64 NumPy below (no TensorFlow), and each map is computed from the
formula of docs/method.md ("Channel weights"), then post-processed as pytorch-grad-cam does: ReLU, min-max,
`cv2.resize` (bilinear), min-max (exact min-max, see CONSTANT_MAP_TOLERANCE). The maps are checked at the
head's input (gradients constant in space, 4x4 -> 8x8 resize) and at the inner
layer (gradients vary in space through the relu masks, padding and pooling).
"""

import cv2
import keras
import numpy as np
import pytest

import keras_dualsig as kd
from keras_dualsig import cams

SIZE, IN_CHANNELS, INNER, FEATURES, CLASSES = 8, 2, 3, 6, 3
# Worst gaps seen (float32 implementation vs float64 reference) are a few
# 1e-7; the tolerance leaves room for other CPUs' summation orders.
ATOL = 2e-5


# ------------------------------------------------------------------ model


def _weights(seed):
    rng = np.random.default_rng(seed)
    return {
        "k1": rng.normal(0, 1, (1, 1, IN_CHANNELS, INNER)),
        "b1": rng.normal(0, 0.1, INNER),
        "k2": rng.normal(0, 0.6, (3, 3, INNER, FEATURES)),
        "b2": rng.normal(0.5, 0.1, FEATURES),
        "w": rng.normal(0, 1, (FEATURES, CLASSES)),
        "b": rng.normal(0, 0.1, CLASSES),
        "ws": rng.normal(0, 1, (FEATURES, CLASSES)),
        "bs": rng.normal(0, 0.1, CLASSES),
    }


def _build(params):
    inputs = keras.Input((SIZE, SIZE, IN_CHANNELS))
    x = keras.layers.Conv2D(INNER, 1, activation="relu", name="inner")(inputs)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Conv2D(
        FEATURES, 3, padding="same", activation="relu", name="features"
    )(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax", name="predictions")(x)
    model = keras.Model(inputs, outputs)
    model.get_layer("inner").set_weights([params["k1"], params["b1"]])
    model.get_layer("features").set_weights([params["k2"], params["b2"]])
    model.get_layer("predictions").set_weights([params["w"], params["b"]])
    dual = kd.dual_sigmoid(model)
    dual.sigmoid_head[-1].set_weights([params["ws"], params["bs"]])
    return dual


# -------------------------------------------------------- NumPy reference


def _conv_same(x, kernel, bias):
    """'same' convolution (cross-correlation), x (B, H, W, I), k (kh, kw, I, O)."""
    kh, kw = kernel.shape[:2]
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    height, width = x.shape[1:3]
    out = np.zeros((*x.shape[:3], kernel.shape[3]))
    for di in range(kh):
        for dj in range(kw):
            window = padded[:, di : di + height, dj : dj + width]
            out += np.einsum("bhwi,io->bhwo", window, kernel[di, dj])
    return out + bias


def _conv_same_backward(grad_out, kernel):
    """d loss / d input of `_conv_same` given d loss / d output."""
    kh, kw = kernel.shape[:2]
    batch, height, width, _ = grad_out.shape
    padded = np.zeros((batch, height + kh - 1, width + kw - 1, kernel.shape[2]))
    for di in range(kh):
        for dj in range(kw):
            padded[:, di : di + height, dj : dj + width] += np.einsum(
                "bhwo,io->bhwi", grad_out, kernel[di, dj]
            )
    return padded[:, kh // 2 : kh // 2 + height, kw // 2 : kw // 2 + width]


def _forward(params, x):
    """Every intermediate of the model, float64."""
    pre1 = _conv_same(x, params["k1"], params["b1"])
    a1 = np.maximum(pre1, 0)
    b, h, w, c = a1.shape
    pooled = a1.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))
    pre2 = _conv_same(pooled, params["k2"], params["b2"])
    a2 = np.maximum(pre2, 0)
    f = a2.mean(axis=(1, 2))
    return {
        "pre1": pre1,
        "inner": a1,
        "pre2": pre2,
        "features": a2,
        "softmax": f @ params["w"] + params["b"],
        "sigmoid": f @ params["ws"] + params["bs"],
    }


def _gradients(params, cache, branch, class_index, layer):
    """d logit_k / dA by hand (chain rule through GAP, relu, conv, pool)."""
    kernel = params["w" if branch == "softmax" else "ws"][:, class_index]  # (c,)
    a2 = cache["features"]
    hw = a2.shape[1] * a2.shape[2]
    # GAP -> Dense: constant in space.
    g2 = np.broadcast_to(kernel / hw, a2.shape).copy()
    if layer == "features":
        return g2
    g_pre2 = g2 * (cache["pre2"] > 0)
    g_pooled = _conv_same_backward(g_pre2, params["k2"])
    # 2x2 average pool: each input gets a quarter of its output's gradient.
    return np.repeat(np.repeat(g_pooled, 2, axis=1), 2, axis=2) / 4.0


def _min_max(maps):
    """Exact min-max; a range <= 1e-6 of the largest magnitude is constant."""
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    span = high - low
    varies = span > 1e-6 * np.maximum(np.abs(low), np.abs(high))
    return np.where(varies, (maps - low) / np.where(varies, span, 1.0), 0.0)


def _postprocess(maps, size):
    maps = _min_max(np.maximum(maps, 0))
    resized = np.stack(
        [
            cv2.resize(m.astype(np.float32), size, interpolation=cv2.INTER_LINEAR)
            for m in maps
        ]
    ).astype(np.float64)
    return _min_max(resized)


def _upsample_align_corners(maps, size):
    """Bilinear, corners aligned (torch UpsamplingBilinear2d): (N, h, w)."""

    def axis_weights(n_in, n_out):
        src = np.arange(n_out) * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0)
        low = np.floor(src).astype(int)
        high = np.minimum(low + 1, n_in - 1)
        matrix = np.zeros((n_out, n_in))
        matrix[np.arange(n_out), low] += 1 - (src - low)
        matrix[np.arange(n_out), high] += src - low
        return matrix

    rows = axis_weights(maps.shape[1], size[0])
    cols = axis_weights(maps.shape[2], size[1])
    return np.einsum("Hh,nhw,Ww->nHW", rows, maps, cols)


def _score_cam_weights(params, x, activations, branch, class_index):
    weights = np.zeros((x.shape[0], activations.shape[-1]))
    for b in range(x.shape[0]):
        masks = _upsample_align_corners(
            np.moveaxis(activations[b], -1, 0), x.shape[1:3]
        )
        low = masks.min(axis=(1, 2), keepdims=True)
        high = masks.max(axis=(1, 2), keepdims=True)
        masks = (masks - low) / (high - low + 1e-8)
        masked = x[b][None] * masks[..., None]
        scores = _forward(params, masked)[branch][:, class_index[b]]
        weights[b] = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    return weights


def _reference(variant, params, x, class_index, branch, layer, positive):
    """Raw (pre-ReLU) map from the docs/method.md formula ("Channel weights"), float64 (B, h, w)."""
    cache = _forward(params, x)
    a = cache[layer]
    g = np.stack(
        [
            _gradients(params, _slice(cache, b), branch, class_index[b], layer)[0]
            for b in range(x.shape[0])
        ]
    )
    if variant == "layercam":
        return np.sum(np.maximum(g, 0) * a, axis=-1)
    if variant == "hirescam":
        return np.sum(g * a, axis=-1)
    if variant == "cam":
        w = params["w" if branch == "softmax" else "ws"][:, class_index].T
    elif variant == "gradcam":
        w = g.mean(axis=(1, 2))
    elif variant == "gradcam++":
        sums = a.sum(axis=(1, 2), keepdims=True)
        alpha = g**2 / (2 * g**2 + sums * g**3 + 1e-6)
        alpha = np.where(g != 0, alpha, 0)
        w = np.sum(np.maximum(g, 0) * alpha, axis=(1, 2))
    elif variant == "xgradcam":
        w = np.sum(g * a, axis=(1, 2)) / (a.sum(axis=(1, 2)) + 1e-7)
    elif variant == "scorecam":
        w = _score_cam_weights(params, x, a, branch, class_index)
    if positive:
        w = np.maximum(w, 0)
    return np.einsum("bhwc,bc->bhw", a, w)


def _slice(cache, b):
    return {key: value[b : b + 1] for key, value in cache.items()}


# ------------------------------------------------------------------ tests

VARIANTS = [
    "cam",
    "gradcam",
    "gradcam++",
    "xgradcam",
    "layercam",
    "hirescam",
    "scorecam",
]
CASES = [
    (variant, layer)
    for variant in VARIANTS
    for layer in ("features", "inner")
    if not (variant == "cam" and layer == "inner")
]


@pytest.fixture(scope="module")
def setup():
    params = _weights(16)  # Every map informative (checked below).
    keras.config.set_dtype_policy("float32")
    dual = _build(params)
    x = np.random.default_rng(3).uniform(0, 1, (3, SIZE, SIZE, IN_CHANNELS))
    return params, dual, x


def _gap(actual, expected):
    return float(np.max(np.abs(actual.astype(np.float64) - expected)))


@pytest.mark.parametrize("variant,layer", CASES)
@pytest.mark.parametrize("branch", ["sigmoid", "softmax"])
def test_matches_numpy_reference(setup, variant, layer, branch):
    params, dual, x = setup
    class_index = np.array([0, 1, 2])
    positive = branch == "sigmoid"
    cam = cams.get(variant)(dual, layer=None if layer == "features" else layer)
    raw = _reference(variant, params, x, class_index, branch, layer, positive)
    # The reference maps must be informative for the comparison to mean much.
    assert np.ptp(np.maximum(raw, 0), axis=(1, 2)).min() > 1e-3

    got_raw = cam(
        x.astype("float32"), class_index, branch=branch, normalize=False, resize=False
    )
    np.testing.assert_allclose(got_raw, raw, rtol=1e-4, atol=ATOL * np.abs(raw).max())

    got = cam(x.astype("float32"), class_index, branch=branch)
    expected = _postprocess(raw, (SIZE, SIZE))
    assert got.shape == (3, SIZE, SIZE) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, atol=ATOL)

    got_small = cam(x.astype("float32"), class_index, branch=branch, resize=False)
    np.testing.assert_allclose(got_small, _min_max(np.maximum(raw, 0)), atol=ATOL)


def test_default_class_is_softmax_argmax(setup):
    params, dual, x = setup
    argmax = _forward(params, x)["softmax"].argmax(axis=-1)
    cam = cams.GradCAM(dual, layer="inner")
    np.testing.assert_allclose(cam(x), cam(x, argmax), atol=1e-7)


def test_cam_on_conv_class_head():
    """Fully convolutional Conv2D(C, 1x1) -> GAP -> Softmax: w = conv kernel."""
    rng = np.random.default_rng(0)
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.Conv2D(4, 3, activation="relu", name="features")(inputs)
    z = keras.layers.Conv2D(CLASSES, 1, name="class_conv")(a)
    z = keras.layers.GlobalAveragePooling2D()(z)
    outputs = keras.layers.Softmax()(z)
    model = keras.Model(inputs, outputs)
    kernel = rng.normal(0, 1, (1, 1, 4, CLASSES))
    model.get_layer("class_conv").set_weights([kernel, np.zeros(CLASSES)])
    dual = kd.dual_sigmoid(model)
    branch_kernel = rng.normal(0, 1, (1, 1, 4, CLASSES))
    dual.sigmoid_head[0].set_weights([branch_kernel, np.zeros(CLASSES)])
    x = rng.uniform(0, 1, (2, 6, 6, 2)).astype("float32")
    features = keras.ops.convert_to_numpy(keras.Model(inputs, a)(x)).astype(np.float64)
    class_index = np.array([2, 0])
    cam = cams.CAM(dual)
    for branch, k, positive in (
        ("softmax", kernel, False),
        ("sigmoid", branch_kernel, True),
    ):
        w = k[0, 0][:, class_index].T
        w = np.maximum(w, 0) if positive else w
        raw = np.einsum("bhwc,bc->bhw", features, w)
        got = cam(x, class_index, branch=branch, normalize=False, resize=False)
        np.testing.assert_allclose(got, raw, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            cam(x, class_index, branch=branch), _postprocess(raw, (6, 6)), atol=ATOL
        )
