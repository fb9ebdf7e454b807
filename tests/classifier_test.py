"""classifier_of: every supported model as a trunk and its heads."""

import keras
import numpy as np
from helpers.errors import raises_invalid
from keras.ops import convert_to_numpy as to_numpy

import keras_dualsig as kd
from keras_dualsig._classifier import classifier_of

L = keras.layers


def _model():
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, activation="relu", name="features")(inputs)
    x = L.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, L.Dense(3, activation="softmax")(x), name="tiny")


def test_plain_and_dual_models():
    model = _model()
    images = np.random.default_rng(0).random((4, 8, 8, 3), dtype=np.float32)
    plain = classifier_of(model)
    assert not plain.is_dual and set(plain.heads) == {"softmax"}
    assert plain.feature_layer == "features" and plain.num_classes == 3
    dual_model = kd.dual_sigmoid(model)
    dual = classifier_of(dual_model)
    assert dual.is_dual and set(dual.heads) == {"softmax", "sigmoid"}
    assert dual.heads["sigmoid"] is dual_model.heads["sigmoid"]
    assert dual.feature_layer == "features" and dual.num_classes == 3
    # Both see the same softmax logits; the dual's sigmoid logits are the model's.
    expected = dual_model.logits(images)
    for branch, logits in dual.logits(images).items():
        np.testing.assert_array_equal(to_numpy(logits), to_numpy(expected[branch]))
    np.testing.assert_allclose(
        to_numpy(plain.logits(images)["softmax"]),
        to_numpy(expected["softmax"]),
        atol=1e-6,
    )


def test_branch_checks():
    plain = classifier_of(_model())
    assert plain.check_branch("softmax") == "softmax"
    with raises_invalid("branch", '"softmax" for a plain classifier'):
        plain.check_branch("sigmoid")
    with raises_invalid("branch", "one of ('sigmoid', 'softmax')", "'both'"):
        plain.check_branch("both")


def test_refuses_what_is_not_a_model():
    with raises_invalid("model", "a keras.Model", "'resnet'"):
        classifier_of("resnet")
