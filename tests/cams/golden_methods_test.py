"""Golden tests of the pytorch-grad-cam / torchcam methods against NumPy.

The tiny model of tests/helpers/cam_reference.py (1x1 convolutions, a 2x2
average pool, a tanh, GAP, Dense) is re-derived in float64 NumPy there; each
method's raw map (normalize=False, resize=False) is compared on both
branches at the head's input ("features", 4x4) and, where the method reads
gradients that vary in space or a Hessian, at the inner layer (8x8). The
post-processing (ReLU, min-max, bilinear resize, min-max) is checked once
per method; golden_test.py checks it in depth. Also checked: eigen_smooth,
aug_smooth and `layer=[...]` against pytorch-grad-cam's definitions.
"""

import keras
import numpy as np
import pytest
from helpers import cam_reference as ref
from helpers.errors import raises_invalid

import keras_dualsig as kd
from keras_dualsig import cams

# Worst gaps seen against the float64 reference (TF, JAX, torch): 6.6e-7
# absolute (aug_smooth maps), 1.9e-6 relative to the map's largest magnitude
# (KPCA-CAM raw map, JAX); room for other CPUs' summation orders.
RTOL, ATOL = 1e-4, 2e-5
# method -> (constructor options, layers checked)
METHODS = {
    "gradcamelementwise": ({}, ("features", "inner")),
    "eigencam": ({}, ("inner",)),
    "eigengradcam": ({}, ("inner",)),
    "kpcacam": ({}, ("features",)),
    "fem": ({}, ("inner",)),
    "randomcam": ({"seed": 3}, ("features",)),
    "ablationcam": ({}, ("features", "inner")),
    "shapleycam": ({}, ("inner",)),
    "finercam": ({}, ("features",)),
    "sscam": ({"num_samples": 2, "std": 0.5, "seed": 4}, ("features",)),
    "iscam": ({"num_samples": 3}, ("features",)),
}
CASES = [(method, layer) for method, (_, layers) in METHODS.items() for layer in layers]
CLASSES = np.array([0, 1, 3])
# Class agnostic: one branch is enough (test_class_agnostic_... checks it).
AGNOSTIC = ("eigencam", "kpcacam", "fem", "randomcam")


def _build(params):
    inputs = keras.Input((ref.SIZE, ref.SIZE, ref.IN_CHANNELS))
    x = keras.layers.Conv2D(ref.INNER, 1, activation="relu", name="inner")(inputs)
    x = keras.layers.AveragePooling2D(2)(x)
    x = keras.layers.Conv2D(ref.FEATURES, 1, activation="tanh", name="features")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(ref.CLASSES, activation="softmax", name="predictions")(
        x
    )
    model = keras.Model(inputs, outputs)
    model.get_layer("inner").set_weights([params["k1"][None, None], params["b1"]])
    model.get_layer("features").set_weights([params["k2"][None, None], params["b2"]])
    model.get_layer("predictions").set_weights(list(params["softmax"]))
    dual = kd.dual_sigmoid(model)
    dual.sigmoid_head[-1].set_weights(list(params["sigmoid"]))
    return dual


@pytest.fixture(scope="module")
def setup():
    keras.config.set_dtype_policy("float32")
    params = ref.weights(5)
    x = np.random.default_rng(1).uniform(0, 1, (3, ref.SIZE, ref.SIZE, ref.IN_CHANNELS))
    return params, _build(params), x


def _check(got, expected):
    """Max abs gap relative to the map's scale; asserts it is small."""
    scale = max(float(np.abs(expected).max()), 1e-12)
    np.testing.assert_allclose(got, expected, rtol=RTOL, atol=ATOL * scale)
    return float(np.abs(got - expected).max()) / scale


@pytest.mark.parametrize("method,layer", CASES)
def test_matches_numpy_reference(setup, method, layer):
    params, dual, x = setup
    options, _ = METHODS[method]
    cam = cams.get(method)(
        dual, layer=None if layer == "features" else layer, **options
    )
    branches = ("sigmoid",) if method in AGNOSTIC else ("sigmoid", "softmax")
    for branch in branches:
        positive = branch == "sigmoid"
        raw = ref.raw_map(
            method, params, x, layer, branch, CLASSES, positive, **options
        )
        # Informative references only: some signal in every map.
        assert np.ptp(raw, axis=(1, 2)).min() > 1e-4, (method, branch)
        got = cam(
            x.astype("float32"), CLASSES, branch=branch, normalize=False, resize=False
        )
        assert got.dtype == np.float32 and got.shape == raw.shape
        _check(got, raw)


def test_postprocessed_maps(setup):
    """Normalised, resized maps of one method of each kind (hook, score)."""
    params, dual, x = setup
    for method, layer in (("eigengradcam", "inner"), ("ablationcam", "features")):
        cam = cams.get(method)(dual, layer=layer)
        maps = cam(x.astype("float32"), CLASSES)
        assert maps.shape == (3, ref.SIZE, ref.SIZE) and maps.dtype == np.float32
        raw = ref.raw_map(method, params, x, layer, "sigmoid", CLASSES, True)
        _check(maps, ref.postprocess(raw))


def test_hessian_vector_product_is_not_zero(setup):
    """The ShapleyCAM check above is meaningful: H A differs from zero."""
    params, _, x = setup
    h = ref.hessian_vector(params, x, "inner", "sigmoid", ref.one_hot(CLASSES))
    g = ref.gradients(params, x, "inner", "sigmoid", ref.one_hot(CLASSES))
    assert np.abs(h.mean(axis=(1, 2))).max() > 0.05 * np.abs(g.mean(axis=(1, 2))).max()


def test_class_agnostic_methods_ignore_the_branch(setup):
    _, dual, x = setup
    cam = cams.EigenCAM(dual)
    np.testing.assert_array_equal(cam(x, CLASSES), cam(x, CLASSES, branch="softmax"))


def test_eigen_smooth(setup):
    params, dual, x = setup
    cam = cams.GradCAM(dual, layer="inner")
    got = cam(x, CLASSES, normalize=False, resize=False, eigen_smooth=True)
    raw = ref.raw_map(
        "gradcam", params, x, "inner", "sigmoid", CLASSES, True, eigen_smooth=True
    )
    _check(got, raw)
    # Element-wise methods: the PCA of their terms relu(g) A (LayerCAM).
    layer_cam = cams.LayerCAM(dual, layer="inner")
    got = layer_cam(x, CLASSES, normalize=False, resize=False, eigen_smooth=True)
    g = ref.gradients(params, x, "inner", "sigmoid", ref.one_hot(CLASSES))
    a = ref.activations(params, x, "inner")
    _check(got, ref.first_component(np.maximum(g, 0) * a))


def test_aug_smooth_and_several_layers(setup):
    params, dual, x = setup
    cam = cams.GradCAMElementWise(dual, layer="inner")
    got = cam(x, CLASSES, aug_smooth=True)
    expected = ref.aug_smooth(
        "gradcamelementwise", params, x, "inner", "sigmoid", CLASSES, True
    )
    _check(got, expected)

    multi = cams.GradCAMElementWise(dual, layer=["inner", "features"])
    assert multi.layer == ["inner", "features"]
    per_layer = [
        ref.postprocess(
            ref.raw_map("gradcamelementwise", params, x, name, "sigmoid", CLASSES, True)
        )
        for name in ("inner", "features")
    ]
    _check(multi(x, CLASSES), ref.multi_layer(per_layer))


def test_bad_options_are_refused(setup):
    _, dual, _ = setup
    with raises_invalid("ratio_channels_to_ablate", "(0, 1]"):
        cams.AblationCAM(dual, ratio_channels_to_ablate=0)
    with raises_invalid("kernel", "cubic"):
        cams.KPCACAM(dual, kernel="cubic")
    with raises_invalid("layer", "non-empty"):
        cams.GradCAM(dual, layer=[])


def test_compute_equals_separate_calls(setup):
    _, dual, x = setup
    methods = ["gradcam", "eigencam", "finercam"]
    got = cams.compute(dual, x, methods=methods, class_index=CLASSES, batch_size=2)
    assert sorted(got) == sorted(methods)
    for name in methods:
        assert sorted(got[name]) == ["sigmoid", "softmax"]
        for branch in ("sigmoid", "softmax"):
            expected = cams.get(name)(dual)(x, CLASSES, branch=branch)
            assert got[name][branch].dtype == np.float32
            np.testing.assert_allclose(got[name][branch], expected, atol=1e-6)
    # The CAM objects and compiled functions are reused.
    again = cams.compute(dual, x, methods=methods, class_index=CLASSES, batch_size=2)
    np.testing.assert_array_equal(
        again["gradcam"]["sigmoid"], got["gradcam"]["sigmoid"]
    )
    with raises_invalid("methods", "non-empty"):
        cams.compute(dual, x, methods=[])
