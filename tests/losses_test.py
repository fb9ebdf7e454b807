import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import keras_dualsig as kd


def _reference(logits, labels, pos_weight=None):
    """Independent NumPy re-derivation of the per-sample formula (docs/method.md, "Loss")."""
    logits = np.asarray(logits, np.float64)
    num_classes = logits.shape[1]
    weight = num_classes - 1 if pos_weight is None else pos_weight
    out = []
    for z, y in zip(logits, labels, strict=True):
        # softplus(x) = log(1 + exp(x)), written stably.
        pos = np.logaddexp(0.0, -z[y])
        neg = sum(np.logaddexp(0.0, z[k]) for k in range(num_classes) if k != y)
        out.append((weight * pos + neg) / num_classes)
    return float(np.mean(out))


def test_hand_computed_two_classes():
    # C = 2, z = (0, 0), y = 0: (1/2) * (1 * log 2 + log 2) = log 2.
    loss = kd.ClassBalancedBinaryCrossentropy(from_logits=True)
    assert float(loss([0], [[0.0, 0.0]])) == pytest.approx(math.log(2.0), rel=1e-6)
    # z = (2, -1), y = 1: (1/2) * (softplus(1) + softplus(2)).
    expected = 0.5 * (math.log1p(math.exp(1.0)) + math.log1p(math.exp(2.0)))
    assert float(loss([1], [[2.0, -1.0]])) == pytest.approx(expected, rel=1e-6)


def test_balanced_weight_equalises_positive_and_negatives():
    # All logits 0: positive term (C-1) log 2 equals the C-1 negatives' log 2.
    num_classes = 5
    loss = kd.ClassBalancedBinaryCrossentropy(from_logits=True, reduction=None)
    value = loss([3], np.zeros((1, num_classes), "float32"))
    assert float(value[0]) == pytest.approx(2 * 4 * math.log(2.0) / 5, rel=1e-6)


@pytest.mark.parametrize("num_classes", [2, 10, 1000])
def test_matches_numpy_reference(num_classes):
    rng = np.random.default_rng(num_classes)
    logits = rng.normal(0, 3, (8, num_classes)).astype("float32")
    labels = rng.integers(0, num_classes, 8)
    loss = kd.ClassBalancedBinaryCrossentropy(from_logits=True)
    assert float(loss(labels, logits)) == pytest.approx(
        _reference(logits, labels), rel=1e-5
    )
    one_hot = np.eye(num_classes, dtype="float32")[labels]
    assert float(loss(one_hot, logits)) == pytest.approx(
        _reference(logits, labels), rel=1e-5
    )
    assert float(loss(labels[:, None], logits)) == pytest.approx(
        _reference(logits, labels), rel=1e-5
    )


def test_probabilities_match_logits_away_from_saturation():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, (6, 7)).astype("float32")
    labels = rng.integers(0, 7, 6)
    probs = (1.0 / (1.0 + np.exp(-logits))).astype("float32")
    loss = kd.ClassBalancedBinaryCrossentropy()
    assert float(loss(labels, probs)) == pytest.approx(
        _reference(logits, labels), rel=1e-4
    )


def test_saturated_probabilities_are_clipped_not_read_from_attributes():
    # Probabilities saturate to exactly 1.0 at z = 40. The loss never reads
    # logits hidden on a tensor (compilation drops them on some backends):
    # probabilities are clipped to 1 - 1e-7 on every backend, and the exact
    # value needs from_logits=True (what DualSigmoidModel.compile uses).
    logits = tf.constant([[40.0, -3.0, 1.0]])
    probs = keras.activations.sigmoid(logits)
    clipped = np.clip(probs.numpy().astype(np.float64), 1e-7, 1 - 1e-7)
    # Label 0: positive term on class 0 (weight C - 1 = 2), negatives on 1, 2.
    expected = (
        2.0 * -np.log(clipped[0, 0])
        - np.log(1 - clipped[0, 1])
        - np.log(1 - clipped[0, 2])
    ) / 3
    loss = kd.ClassBalancedBinaryCrossentropy()
    assert float(loss([0], probs)) == pytest.approx(expected, rel=1e-5)
    exact = kd.ClassBalancedBinaryCrossentropy(from_logits=True)
    assert float(exact([0], logits)) == pytest.approx(
        _reference(logits.numpy(), [0]), rel=1e-5
    )


@pytest.mark.parametrize("from_logits", [True, False])
def test_extreme_values_are_finite(from_logits):
    if from_logits:
        y_pred = np.array([[1e4, -1e4, 80.0], [-80.0, 0.0, 1e30]], "float32")
    else:
        y_pred = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 1.0]], "float32")
    loss = kd.ClassBalancedBinaryCrossentropy(from_logits=from_logits)
    value = float(loss([1, 0], y_pred))
    assert np.isfinite(value)
    assert value > 0


def test_extreme_logits_exact():
    logits = np.array([[100.0, -100.0]], "float32")
    loss = kd.ClassBalancedBinaryCrossentropy(from_logits=True)
    # y = 1: softplus(100) for the positive (weight 1) + softplus(100) negative.
    assert float(loss([1], logits)) == pytest.approx(100.0, rel=1e-6)


def test_float16_inputs_computed_in_float32():
    logits = np.array([[30.0, -30.0, 0.5]], "float16")
    loss = kd.ClassBalancedBinaryCrossentropy(from_logits=True)
    value = loss([0], logits)
    assert value.dtype == tf.float32
    assert float(value) == pytest.approx(_reference(logits, [0]), rel=1e-3)


def test_custom_pos_weight():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(4, 3)).astype("float32")
    labels = [0, 1, 2, 1]
    loss = kd.ClassBalancedBinaryCrossentropy(from_logits=True, pos_weight=1.0)
    assert float(loss(labels, logits)) == pytest.approx(
        _reference(logits, labels, pos_weight=1.0), rel=1e-5
    )


def test_labels_out_of_range_eager():
    loss = kd.ClassBalancedBinaryCrossentropy(from_logits=True)
    with pytest.raises(ValueError, match=r"argument `y_true`.*\[0, 3\).*\[3\]"):
        loss([0, 3], np.zeros((2, 3), "float32"))
    with pytest.raises(ValueError, match="argument `y_true`"):
        loss([-1, 0], np.zeros((2, 3), "float32"))


def test_labels_out_of_range_in_graph():
    loss = kd.ClassBalancedBinaryCrossentropy(from_logits=True)

    @tf.function
    def run(labels, logits):
        return loss(labels, logits)

    with pytest.raises(tf.errors.InvalidArgumentError, match="y_true"):
        run(tf.constant([0, 5]), tf.zeros((2, 3)))


def test_bad_arguments():
    with pytest.raises(ValueError, match="argument `pos_weight`.*pos_weight='half'"):
        kd.ClassBalancedBinaryCrossentropy(pos_weight="half")
    loss = kd.ClassBalancedBinaryCrossentropy(from_logits=True)
    with pytest.raises(ValueError, match="argument `y_pred`"):
        loss([0], np.zeros((1, 1), "float32"))
    with pytest.raises(ValueError, match="argument `y_true`"):
        loss(np.zeros((1, 2, 2)), np.zeros((1, 4), "float32"))


def test_serialization_round_trip():
    loss = kd.ClassBalancedBinaryCrossentropy(from_logits=True, pos_weight=2.5)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert isinstance(restored, kd.ClassBalancedBinaryCrossentropy)
    assert restored.from_logits and restored.pos_weight == 2.5
