"""Class-balanced binary cross-entropy for the sigmoid branch."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from keras_dualsig._errors import invalid

# Probabilities are clipped this far from 0 and 1 when no logits are available.
_PROB_EPSILON = 1e-7


@keras.saving.register_keras_serializable(package="keras_dualsig")
class ClassBalancedBinaryCrossentropy(keras.losses.Loss):
    """Binary cross-entropy with the positive class weighted by `C - 1`.

    Trains the per-class sigmoid branch of Oh & Noh, "Beyond Softmax: Dual-Branch
    Sigmoid Architecture for Accurate Class Activation Maps" (BMVC 2025). With
    one-hot targets over C classes, each sample has one positive and C - 1
    negatives; weighting the positive term by `C - 1` gives both sides equal
    total weight. Per sample, with logits z and label y:

        loss = (1 / C) * [(C - 1) * softplus(-z_y) + sum_{k != y} softplus(z_k)]

    and the batch loss is the mean over samples (so over batch x classes).
    Computed in float32 whatever the inputs' dtype.

    Args:
        from_logits: whether `y_pred` holds logits. When False, `y_pred` holds
            sigmoid probabilities; if they come straight from a Keras sigmoid
            (as the DualSigmoidModel's "sigmoid" output does on TensorFlow), the
            logits attached to them are used for exactness, otherwise the
            probabilities are clipped to [1e-7, 1 - 1e-7].
        pos_weight: "balanced" (C - 1) or a non-negative float.
        reduction: Keras loss reduction, default "sum_over_batch_size".
        name: loss name.
        **kwargs: other `keras.losses.Loss` arguments (e.g. `dtype`).

    Call arguments:
        y_true: integer labels (batch,) or (batch, 1), or one-hot (batch, C).
        y_pred: float (batch, C) logits or probabilities.

    Returns:
        float32 scalar (or (batch,) with reduction=None).

    Raises:
        ValueError: for an unknown `pos_weight`, C < 2, or (in eager mode)
            labels outside [0, C).

    Example:
    >>> loss = ClassBalancedBinaryCrossentropy(from_logits=True)
    >>> float(loss([0], [[0.0, 0.0]]))  # (1/2) * (1 * log 2 + log 2)
    0.693...
    """

    def __init__(
        self,
        from_logits=False,
        pos_weight="balanced",
        reduction="sum_over_batch_size",
        name="class_balanced_binary_crossentropy",
        **kwargs,
    ):
        if not (
            pos_weight == "balanced"
            or (isinstance(pos_weight, int | float) and pos_weight >= 0)
        ):
            raise invalid(
                "pos_weight", '"balanced" or a non-negative number', pos_weight
            )
        super().__init__(name=name, reduction=reduction, **kwargs)
        self.from_logits = bool(from_logits)
        self.pos_weight = pos_weight

    def call(self, y_true, y_pred):
        logits = None
        if self.from_logits:
            logits = y_pred
        else:
            # Keras' TensorFlow sigmoid keeps its input on the output tensor.
            logits = getattr(y_pred, "_keras_logits", None)
        y_pred = ops.convert_to_tensor(y_pred)
        num_classes = y_pred.shape[-1]
        if num_classes is None or num_classes < 2:
            raise invalid("y_pred", "scores of shape (batch, C) with C >= 2", y_pred)
        targets = _one_hot_targets(y_true, num_classes)  # (B, C) float32
        if logits is not None:
            logits = ops.cast(logits, "float32")
            positive = ops.softplus(-logits)  # -log sigmoid(z)
            negative = ops.softplus(logits)  # -log (1 - sigmoid(z))
        else:
            probs = ops.clip(
                ops.cast(y_pred, "float32"), _PROB_EPSILON, 1.0 - _PROB_EPSILON
            )
            positive = -ops.log(probs)
            negative = -ops.log(1.0 - probs)
        pos_weight = (
            float(num_classes - 1) if self.pos_weight == "balanced" else self.pos_weight
        )
        per_class = pos_weight * targets * positive + (1.0 - targets) * negative
        return ops.mean(per_class, axis=-1)  # (B, C) -> (B,)

    def get_config(self):
        config = super().get_config()
        config.update({"from_logits": self.from_logits, "pos_weight": self.pos_weight})
        return config


def _one_hot_targets(y_true, num_classes):
    """Integer (B,) / (B, 1) or one-hot (B, C) labels -> float32 (B, C)."""
    y_true = ops.convert_to_tensor(y_true)
    rank = len(y_true.shape)
    if rank == 2 and y_true.shape[-1] == num_classes and num_classes > 1:
        return ops.cast(y_true, "float32")
    if rank == 2 and y_true.shape[-1] == 1:
        y_true = ops.squeeze(y_true, axis=-1)
        rank = 1
    if rank != 1:
        raise invalid(
            "y_true",
            f"integer labels (batch,) or one-hot labels (batch, {num_classes})",
            y_true,
        )
    labels = ops.cast(ops.round(ops.cast(y_true, "float32")), "int32")
    if tf.executing_eagerly():
        values = np.asarray(labels)
        bad = values[(values < 0) | (values >= num_classes)]
        if bad.size:
            raise invalid(
                "y_true",
                f"class labels in [0, {num_classes})",
                received=f"labels including {bad[:5].tolist()}",
            )
    else:
        # In graphs (fit), out-of-range labels would one-hot to all zeros.
        checks = [
            tf.debugging.assert_non_negative(
                labels, message="Invalid value received for argument `y_true`."
            ),
            tf.debugging.assert_less(
                labels,
                num_classes,
                message=(
                    "Invalid value received for argument `y_true`. Expected "
                    f"class labels in [0, {num_classes})."
                ),
            ),
        ]
        with tf.control_dependencies(checks):
            labels = tf.identity(labels)
    return ops.one_hot(labels, num_classes, dtype="float32")
