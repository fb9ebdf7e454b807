"""The dual model on every backend: fit, exact loss, frozen trunk, compiled CAMs."""

import sys

import keras
import numpy as np
import pytest
from helpers.models import run_model_saving_test

import keras_dualsig as kd

L = keras.layers
SIZE, CLASSES = 8, 3


def _classifier():
    inputs = keras.Input((SIZE, SIZE, 3))
    x = L.Conv2D(4, 3, padding="same", activation="relu", name="features")(inputs)
    x = L.BatchNormalization(name="bn")(x)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    return keras.Model(inputs, L.Dense(CLASSES, activation="softmax", name="fc")(x))


def _data(n=8):
    rng = np.random.default_rng(0)
    return rng.random((n, SIZE, SIZE, 3), dtype=np.float32), rng.integers(0, CLASSES, n)


def _cbbce_from_logits(logits, labels):
    """Class-balanced BCE from logits in float64 (docs/method.md, "Loss")."""
    logits = np.asarray(logits, np.float64)
    onehot = np.eye(CLASSES)[labels]
    softplus = np.logaddexp(0.0, logits)  # -log(1 - sigmoid(z))
    positive = np.logaddexp(0.0, -logits)  # -log sigmoid(z)
    per_class = (CLASSES - 1) * onehot * positive + (1 - onehot) * softplus
    return per_class.mean()


def test_loss_is_exact_on_saturated_logits():
    images, labels = _data()
    dual = kd.dual_sigmoid(_classifier())
    kernel, _ = dual.sigmoid_head[-1].get_weights()
    # Logits of +-40 and more: the sigmoid saturates to exactly 0 or 1 in
    # float32, so a loss read from probabilities would be clipped.
    dual.sigmoid_head[-1].set_weights([np.sign(kernel) * 50.0, np.full(CLASSES, 40.0)])
    logits = keras.ops.convert_to_numpy(dual.logits(images)["sigmoid"])
    assert np.abs(logits).max() > 35.0
    expected = _cbbce_from_logits(logits, labels)
    dual.compile(optimizer=keras.optimizers.SGD(0.0))
    result = dual.evaluate(images, labels, batch_size=8, verbose=0, return_dict=True)
    assert result["loss"] == pytest.approx(expected, rel=1e-5)
    history = dual.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    assert history.history["loss"][0] == pytest.approx(expected, rel=1e-5)


def test_fit_trains_only_the_branch_and_keeps_the_softmax(tmp_path):
    images, labels = _data(16)
    model = _classifier()
    before = keras.ops.convert_to_numpy(model(images))
    dual = kd.dual_sigmoid(model)
    frozen = [keras.ops.convert_to_numpy(v) for v in model.weights]
    branch = [keras.ops.convert_to_numpy(v) for v in dual.sigmoid_head[-1].weights]
    dual.compile(optimizer=keras.optimizers.SGD(0.5))
    dual.fit(images, labels, batch_size=8, epochs=2, verbose=0)
    outputs = dual.predict(images, verbose=0)
    np.testing.assert_array_equal(outputs["softmax"], before)
    for old, variable in zip(frozen, model.weights, strict=True):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(variable), old)
    moved = [keras.ops.convert_to_numpy(v) for v in dual.sigmoid_head[-1].weights]
    assert any(not np.array_equal(a, b) for a, b in zip(branch, moved, strict=True))
    assert set(outputs) == {"softmax", "sigmoid"}
    run_model_saving_test(dual, images, tmp_path)


def test_compiled_cams_follow_new_weights():
    # A jax.jit closure over a model would freeze its weights as constants.
    images, _ = _data(4)
    dual = kd.dual_sigmoid(_classifier(), init="copy")
    for method in ("cam", "gradcam", "scorecam"):
        cam = kd.cams.get(method)(dual)
        first = cam(images, branch="sigmoid")
        layer = dual.sigmoid_head[-1]
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel[:, ::-1] * 3.0 - 0.5, bias])
        again = cam(images, branch="sigmoid")
        fresh = kd.cams.get(method)(dual)(images, branch="sigmoid")
        np.testing.assert_allclose(again, fresh, atol=1e-6)
        assert not np.allclose(again, first, atol=1e-3), method
        layer.set_weights([kernel, bias])


def test_tensorflow_is_not_imported():
    if keras.backend.backend() == "tensorflow":
        pytest.skip("The TensorFlow backend imports TensorFlow by design.")
    images, labels = _data()
    dual = kd.dual_sigmoid(_classifier())
    dual.compile(optimizer="sgd")
    dual.fit(images, labels, epochs=1, verbose=0)
    cheap = {"sscam": {"num_samples": 2}, "iscam": {"num_samples": 2}}
    for method in kd.cams.NAMES:
        kd.cams.get(method)(dual, **cheap.get(method, {}))(images)
    maps = kd.cams.GradCAM(dual)(images)
    kd.metrics.confidence_change(dual, images, maps)
    kd.metrics.BoxEvaluator().update(maps, [np.array([[0, 0, 3, 3]])] * len(maps))
    kd.vis.compare(images, {"m": maps})
    assert "tensorflow" not in sys.modules
