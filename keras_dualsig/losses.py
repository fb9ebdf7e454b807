"""Class-balanced binary cross-entropy for the sigmoid branch."""

import keras
import numpy as np
from keras import ops

from keras_dualsig import _backend
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
        from_logits: whether `y_pred` holds logits (exact for any logit).
            When False, `y_pred` holds sigmoid probabilities, clipped to
            [1e-7, 1 - 1e-7] (so a saturated probability loses its gradient).
            `kd.DualSigmoidModel.compile()` with no loss uses
            `from_logits=True` and feeds it the branch's logits, on every
            backend.
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
        ValueError: for an unknown `pos_weight`, C < 2, or labels outside
            [0, C) or not integral, when the values can be read (eager
            execution, e.g. torch, or TensorFlow/JAX outside compiled
            functions). Inside a TensorFlow graph (`fit` on TensorFlow) a
            graph assertion fails at run time with the same message. Inside
            `jax.jit` (`fit` on JAX) labels cannot be checked: an
            out-of-range label gives an all-zero target row.

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
        y_pred = ops.convert_to_tensor(y_pred)
        num_classes = y_pred.shape[-1]
        if num_classes is None or num_classes < 2:
            raise invalid("y_pred", "scores of shape (batch, C) with C >= 2", y_pred)
        targets = _one_hot_targets(y_true, num_classes)  # (B, C) float32
        if self.from_logits:
            logits = ops.cast(y_pred, "float32")
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
    if _backend.is_traced(y_true):
        labels = _backend.assert_class_labels(y_true, num_classes)
    else:
        labels = check_labels(y_true, num_classes)
    return ops.one_hot(ops.cast(labels, "int32"), num_classes, dtype="float32")


def check_labels(y_true, num_classes, argument="y_true"):
    """Integral labels in [0, num_classes), checked on their values.

    Returns:
        int32 tensor of the labels.

    Raises:
        ValueError: (Keras template, naming `argument`) for fractional or
            non-numeric labels, or labels outside [0, num_classes).
    """
    values = ops.convert_to_numpy(y_true)
    if values.dtype.kind == "f":
        fractional = values[values != np.round(values)]
        if fractional.size:
            raise invalid(
                argument,
                "integer class labels (floats with a fractional part are "
                "not labels; one-hot labels need shape (batch, C))",
                received=f"labels including {fractional[:5].tolist()}",
            )
    elif values.dtype.kind not in "iu":
        raise invalid(argument, "integer class labels", y_true)
    # Keras casts labels to the loss dtype (float32) before `call`.
    values = values.astype(np.int64)
    bad = values[(values < 0) | (values >= num_classes)]
    if bad.size:
        raise invalid(
            argument,
            f"class labels in [0, {num_classes})",
            received=f"labels including {bad[:5].tolist()}",
        )
    return ops.convert_to_tensor(values.astype(np.int32))
