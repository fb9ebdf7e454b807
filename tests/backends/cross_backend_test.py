"""The same `.keras` file gives the same maps on TensorFlow, JAX and PyTorch.

The TensorFlow run writes two dual models (a residual CNN and a nested
backbone) and every map of every CAM method, both branches and three kinds of
layer, into `KD_BACKEND_REFERENCE_DIR`; the JAX and PyTorch runs load those
files (so `.keras` files cross-load) and compare their maps with
TensorFlow's. `.ci/run` sets the folder and `KD_REQUIRE_BACKEND_REFERENCE=1`,
so in CI a missing reference fails instead of skipping.
"""

import json
import os

import keras
import numpy as np
import pytest

import keras_dualsig as kd

L = keras.layers
# Maps are in [0, 1]; float32 on different kernels agrees far closer.
ATOL = 1e-5
# Principal components come from each backend's own float32 SVD / eigen
# solver (LAPACK, Eigen, XLA): their maps agree to a few 1e-5.
PROJECTIONS, PROJECTION_ATOL = ("eigencam", "eigengradcam", "kpcacam"), 2e-4
SIZE = 16
# The costly Score-CAM relatives with few samples (their maps still compare).
OPTIONS = {"sscam": {"num_samples": 2}, "iscam": {"num_samples": 2}}


def _residual_cnn():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="stem")(inputs)
    y = L.Conv2D(6, 3, padding="same", activation="relu", name="inner")(x)
    x = L.Add(name="residual")([x, y])
    x = L.BatchNormalization(name="bn")(x)
    x = L.Conv2D(8, 3, padding="same", activation="relu", name="features")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(4, activation="softmax", name="fc")(x))


def _nested():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = L.Conv2D(6, 3, padding="same", activation="relu", name="conv_a")(inputs)
    x = L.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv_b")(x)
    backbone = keras.Model(inputs, x, name="backbone")
    outer_in = keras.Input((SIZE, SIZE, 3))
    x = L.GlobalAveragePooling2D()(backbone(outer_in))
    return keras.Model(outer_in, L.Dense(4, activation="softmax", name="fc")(x))


# model -> the three kinds of layer: the head's input, inside the trunk (a
# residual block for the CNN), inside a nested backbone.
LAYERS = {"residual_cnn": [None, "inner"], "nested": [None, "backbone/conv_a"]}
BUILDERS = {"residual_cnn": _residual_cnn, "nested": _nested}


def _images():
    return np.random.default_rng(7).random((3, SIZE, SIZE, 3), dtype=np.float32)


def _randomised_dual(name):
    """A dual model with every weight (BN statistics too) random, seeded."""
    keras.utils.set_random_seed(3)
    dual = kd.dual_sigmoid(BUILDERS[name]())
    rng = np.random.default_rng(11)
    for variable in dual.weights:
        value = rng.normal(0.0, 0.5, variable.shape).astype("float32")
        if "variance" in variable.path:
            value = np.abs(value) + 0.5
        variable.assign(value)
    return dual


# Methods whose inner-layer maps add no backend path beyond Grad-CAM's.
SHARED_PATH_METHODS = (
    "gradcamelementwise",
    "eigencam",
    "eigengradcam",
    "kpcacam",
    "fem",
    "randomcam",
    "sscam",
    "iscam",
)


def _all_maps(dual, name):
    images = _images()
    maps = {}
    for method in kd.cams.NAMES:
        for layer in LAYERS[name]:
            if method == "cam" and layer is not None:
                continue  # CAM reads the head's weights: its input only.
            if method in SHARED_PATH_METHODS and layer is not None:
                # Same probe and gradient path as Grad-CAM at inner layers;
                # their own math is checked at the head's input (CI time).
                continue
            cam = kd.cams.get(method)(dual, layer=layer, **OPTIONS.get(method, {}))
            for branch in ("softmax", "sigmoid"):
                maps[f"{method}|{layer}|{branch}"] = cam(images, branch=branch)
    return maps


def _reference_dir():
    folder = os.environ.get("KD_BACKEND_REFERENCE_DIR")
    required = os.environ.get("KD_REQUIRE_BACKEND_REFERENCE") == "1"
    return folder, required


@pytest.mark.parametrize("name", list(BUILDERS))
def test_maps_equal_tensorflows(name, tmp_path):
    folder, required = _reference_dir()
    backend = keras.backend.backend()
    if backend == "tensorflow":
        folder = folder or os.fspath(tmp_path)
        dual = _randomised_dual(name)
        dual.save(os.path.join(folder, f"{name}.keras"))
        np.savez(os.path.join(folder, f"{name}_maps.npz"), **_all_maps(dual, name))
        return
    model_path = os.path.join(folder or "", f"{name}.keras")
    if not folder or not os.path.exists(model_path):
        if required:
            pytest.fail(
                f"No TensorFlow reference in KD_BACKEND_REFERENCE_DIR={folder!r}"
            )
        pytest.skip("Run the TensorFlow suite with KD_BACKEND_REFERENCE_DIR first.")
    dual = keras.models.load_model(model_path, safe_mode=True)
    expected = np.load(os.path.join(folder, f"{name}_maps.npz"))
    maps = _all_maps(dual, name)
    assert sorted(maps) == sorted(expected.files)
    gaps = {key: float(np.abs(maps[key] - expected[key]).max()) for key in maps}
    for key, gap in gaps.items():
        if key.split("|")[0] in PROJECTIONS:
            gaps[key] = gap * ATOL / PROJECTION_ATOL  # on the ATOL scale
    worst = max(gaps, key=gaps.get)
    # The largest gap, for `.ci/run` to print (README, "Backends").
    with open(os.path.join(folder, f"gap_{backend}_{name}.json"), "w") as f:
        json.dump({"worst": worst, "gap": gaps[worst]}, f)
    assert gaps[worst] <= ATOL, (worst, gaps[worst])
