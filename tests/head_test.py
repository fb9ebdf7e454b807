"""The Head: running a classifier head and reading its logits."""

import keras
import numpy as np
import pytest
from helpers.errors import raises_invalid
from keras.ops import convert_to_numpy as to_numpy

from keras_dualsig import _head

L = keras.layers


class _RecordingDense(L.Dense):
    """A Dense layer that records the activation it runs with."""

    seen = []

    def call(self, inputs):
        activation = keras.activations.serialize(self.activation)
        _RecordingDense.seen.append((self.name, activation))
        return super().call(inputs)


def _classifier(last, trailing=()):
    inputs = keras.Input((6, 6, 3))
    x = L.Conv2D(4, 3, activation="relu", name="conv")(inputs)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = last(x)
    for layer in trailing:
        x = layer(x)
    return keras.Model(inputs, x, name="tiny")


def _features_and_images(model, seed=0):
    images = np.random.default_rng(seed).random((5, 6, 6, 3), dtype=np.float32)
    trunk, head = _head.split_classifier(model)
    return images, trunk, head, to_numpy(trunk(images))


def _numpy_logits(model, features):
    """x @ W + b after the global average pool, from the weights (NumPy)."""
    kernel, bias = model.get_layer("predictions").get_weights()
    return features.mean(axis=(1, 2)) @ kernel + bias


def test_logits_of_a_dense_softmax_head():
    model = _classifier(L.Dense(3, activation="softmax", name="predictions"))
    images, _, head, features = _features_and_images(model)
    output, logits = head(features)
    np.testing.assert_array_equal(to_numpy(output), to_numpy(model(images)))
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    np.testing.assert_allclose(
        to_numpy(logits), _numpy_logits(model, features), atol=1e-5
    )


def test_the_users_layer_is_never_modified():
    # A head whose last layer carries its softmax: the logits need that
    # layer without activation, which must not be done by switching the
    # user's layer's activation, even for the duration of a call.
    model = _classifier(_RecordingDense(3, activation="softmax", name="predictions"))
    images, _, head, features = _features_and_images(model)
    layer = model.get_layer("predictions")
    activation = layer.activation
    _RecordingDense.seen.clear()
    head(features)
    head(features, training=True)
    assert layer.activation is activation
    # The user's layer ran twice, with its softmax each time; the logits come
    # from a linear twin of it.
    ran = [
        activation for name, activation in _RecordingDense.seen if name == layer.name
    ]
    assert ran == ["softmax", "softmax"]
    twin = {
        activation for name, activation in _RecordingDense.seen if name != layer.name
    }
    assert twin == {"linear"}
    assert head.layers[-1] is layer


def test_logits_follow_weight_changes():
    # The twin reads the original layer's variables at call time.
    model = _classifier(L.Dense(3, activation="softmax", name="predictions"))
    _, _, head, features = _features_and_images(model)
    head(features)
    layer = model.get_layer("predictions")
    kernel, bias = layer.get_weights()
    layer.set_weights([kernel * 2.0, bias + 1.0])
    np.testing.assert_allclose(
        to_numpy(head(features)[1]), _numpy_logits(model, features), atol=1e-5
    )


def test_trailing_activation_layer_gives_its_input():
    model = _classifier(
        L.Dense(3, name="predictions"), trailing=[L.Softmax(name="probabilities")]
    )
    images, _, head, features = _features_and_images(model)
    assert head.num_logit_layers == 2 and head.logits == "pre_activation"
    output, logits = head(features)
    np.testing.assert_array_equal(to_numpy(output), to_numpy(model(images)))
    np.testing.assert_allclose(
        to_numpy(logits), _numpy_logits(model, features), atol=1e-5
    )


def test_opaque_lambda_softmax_gives_log_probabilities():
    model = _classifier(
        L.Dense(3, name="predictions"),
        trailing=[L.Lambda(lambda z: keras.ops.softmax(z), name="opaque")],
    )
    images, _, head, features = _features_and_images(model)
    assert head.logits == "log"
    probabilities = to_numpy(model(images)).astype(np.float64)
    np.testing.assert_allclose(
        to_numpy(head(features)[1]), np.log(probabilities), atol=1e-5
    )


def test_sigmoid_activation_is_applied_in_float32():
    layer = L.Dense(3, name="branch", dtype="mixed_float16")
    head = _head.Head([L.GlobalAveragePooling2D(), layer], activation="sigmoid")
    features = np.random.default_rng(1).random((2, 4, 4, 5), dtype=np.float32)
    output, logits = head(features)
    assert keras.backend.standardize_dtype(output.dtype) == "float32"
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    np.testing.assert_allclose(
        to_numpy(output), 1.0 / (1.0 + np.exp(-to_numpy(logits))), atol=1e-6
    )


def test_mixed_precision_logits_match_float32():
    keras.config.set_dtype_policy("mixed_float16")
    model = _classifier(L.Dense(3, activation="softmax", name="predictions"))
    images, _, head, features = _features_and_images(model)
    output, logits = head(features)
    np.testing.assert_array_equal(to_numpy(output), to_numpy(model(images)))
    assert keras.backend.standardize_dtype(logits.dtype) == "float32"
    np.testing.assert_allclose(
        to_numpy(logits),
        _numpy_logits(model, features.astype(np.float32)),
        atol=2e-2,
    )


def test_config_round_trip():
    model = _classifier(L.Dense(3, activation="softmax", name="predictions"))
    _, _, head, features = _features_and_images(model)
    config = keras.saving.serialize_keras_object(head)
    clone = keras.saving.deserialize_keras_object(config, safe_mode=True)
    assert isinstance(clone, _head.Head)
    assert [layer.name for layer in clone.layers] == ["gap", "predictions"]
    clone(features)  # Builds the clone's layers.
    for original, copy in zip(head.layers, clone.layers, strict=True):
        copy.set_weights(original.get_weights())
    for a, b in zip(head(features), clone(features), strict=True):
        np.testing.assert_array_equal(to_numpy(a), to_numpy(b))


def test_bad_arguments():
    with raises_invalid("call_kwargs", "one dict per head layer (1)"):
        _head.Head([L.Dense(2)], [{}, {}])
    with raises_invalid("logits", '"pre_activation"'):
        _head.Head([L.Dense(2)], logits="identity")
    with raises_invalid("activation", '"sigmoid"'):
        _head.Head([L.Dense(2)], activation="softmax")


@pytest.mark.parametrize(
    "activation, expected", [(None, "linear"), ("softmax", "softmax")]
)
def test_activation_name(activation, expected):
    assert _head.activation_name(keras.activations.get(activation)) == expected


def _nested_head_model(head_layers):
    inputs = keras.Input((8, 8, 3))
    x = L.Conv2D(4, 3, padding="same", name="features")(inputs)
    outputs = keras.Sequential(head_layers, name="nested_head")(x)
    return keras.Model(inputs, outputs)


def test_a_nested_head_is_walked_into():
    # As keras-hub's VGGImageClassifier: the head is a nested Sequential.
    images = np.random.default_rng(0).uniform(size=(2, 8, 8, 3)).astype("float32")
    model = _nested_head_model(
        [
            L.GlobalAveragePooling2D(name="gap"),
            L.Dense(3, activation="softmax", name="out"),
        ]
    )
    trunk, head = _head.split_classifier(model)
    assert [layer.name for layer in head.layers] == ["gap", "out"]
    assert trunk.outputs[0].shape == (None, 8, 8, 4)
    np.testing.assert_array_equal(
        to_numpy(head(trunk(images))[0]), to_numpy(model(images))
    )
    # The walk would stop inside it (at conv's 6x6 map): the head runs on to
    # the nested model's input, which the trunk can end at.
    model = _nested_head_model(
        [
            L.Conv2D(4, 3, name="conv"),
            L.GlobalAveragePooling2D(name="gap"),
            L.Dense(3, name="out"),
        ]
    )
    trunk, head = _head.split_classifier(model)
    assert [layer.name for layer in head.layers] == ["conv", "gap", "out"]
    assert trunk.outputs[0].shape == (None, 8, 8, 4)
    with raises_invalid("head_start", "nested model"):
        _head.split_classifier(model, head_start="gap")


def test_a_backbone_with_its_pooling_inside_is_refused():
    # keras.applications' include_top=False, pooling="avg" style: the head
    # would start inside the nested model, behind a pooling layer.
    backbone = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            L.Conv2D(4, 3, name="conv"),
            L.MaxPooling2D(name="pool"),
            L.Conv2D(4, 3, padding="same", name="last_conv"),
            L.GlobalAveragePooling2D(name="gap"),
        ],
        name="backbone",
    )
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, L.Dense(3, name="out")(backbone(inputs)))
    with raises_invalid("model", "nested model 'backbone'", "'pool'"):
        _head.split_classifier(model)
