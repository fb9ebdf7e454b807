"""Accuracy that takes integer or one-hot labels against (B, C) class scores."""

import keras
from keras import ops


def label_accuracy(y_true, y_pred):
    """1.0 where argmax(y_pred) equals the label, per sample.

    Args:
        y_true: integer labels (B,) or (B, 1), or one-hot (B, C).
        y_pred: class scores (B, C).

    Returns:
        float32 (B,).
    """
    num_classes = y_pred.shape[-1]
    y_true = ops.convert_to_tensor(y_true)
    if len(y_true.shape) == 2 and y_true.shape[-1] == num_classes and num_classes > 1:
        labels = ops.argmax(y_true, axis=-1)
    else:
        labels = ops.reshape(y_true, (-1,))
    labels = ops.cast(ops.round(ops.cast(labels, "float32")), "int32")
    predicted = ops.cast(ops.argmax(y_pred, axis=-1), "int32")
    return ops.cast(ops.equal(labels, predicted), "float32")


@keras.saving.register_keras_serializable(package="keras_dualsig")
class LabelAccuracy(keras.metrics.MeanMetricWrapper):
    """Top-1 accuracy for integer or one-hot labels (B,) / (B, C)."""

    def __init__(self, name="accuracy", dtype=None):
        super().__init__(fn=label_accuracy, name=name, dtype=dtype)

    def get_config(self):
        return {"name": self.name, "dtype": self.dtype}
