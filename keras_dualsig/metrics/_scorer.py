"""Batched class confidences of a model: one compiled call per chunk.

Every fidelity metric (Average Drop / Increase in Confidence / Average Gain,
deletion and insertion, ROAD) scores many modified images. They all go
through `Scorer`: the model's logits (read through its heads,
`_classifier.classifier_of`) are compiled once per model with
`_backend.compile` (tf.function, jax.jit; eager on torch), and images are
scored in chunks of `batch_size`, the last chunk padded to the full size so
that one compiled shape serves every call. docs/method.md, section
"Fidelity metrics", gives the confidence options.
"""

import weakref

import numpy as np
from keras import ops

from keras_dualsig import _backend
from keras_dualsig._classifier import classifier_of
from keras_dualsig._errors import (
    as_array,
    check_choice,
    check_class_index,
    check_positive_int,
    invalid,
)

CONFIDENCES = ("softmax", "sigmoid_softmax", "sigmoid")
# One compiled logits function per model (a new jax.jit per call would
# compile again each time); weak keys, so that a model is not kept alive.
_COMPILED = weakref.WeakKeyDictionary()


def _compiled_logits(model):
    """`classifier_of(model).logits`, compiled; it reads the current weights."""
    compiled = _COMPILED.get(model)
    if compiled is None:
        compiled = _backend.compile(classifier_of(model).logits, model.variables)
        _COMPILED[model] = compiled
    return compiled


def softmax(logits):
    """Numerically stable softmax over the last axis, float64."""
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


class Scorer:
    """Batched class confidences of one model.

    Reads the logits through the model's heads: "softmax" (the original
    head's pre-softmax logits) and, for a DualSigmoidModel, "sigmoid" (the
    branch's pre-sigmoid logits).

    Args:
        model: a DualSigmoidModel or a plain Keras classifier.
        confidence: "softmax", "sigmoid_softmax" or "sigmoid" (see
            `kd.metrics.confidence_change`).
        batch_size: images per compiled model call.
    """

    def __init__(self, model, confidence, batch_size):
        self.confidence = check_choice(confidence, "confidence", CONFIDENCES)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.classifier = classifier_of(model)
        self.model_name = getattr(model, "name", type(model).__name__)
        if self.confidence != "softmax" and not self.classifier.is_dual:
            raise invalid(
                "confidence",
                '"softmax" for a model without a sigmoid branch ("sigmoid_softmax" '
                'and "sigmoid" need a DualSigmoidModel, see `kd.dual_sigmoid`)',
                received=f"{self.confidence!r} with model {self.model_name!r}",
            )
        self._logits_fn = _compiled_logits(model)

    def logits(self, images):
        """dict branch -> float64 (N, C) logits, in chunks of `batch_size`.

        Args:
            images: float32 numpy (N, H, W, channels), N >= 1.
        """
        count = images.shape[0]
        size = self.batch_size
        parts = []
        for start in range(0, count, size):
            chunk = images[start : start + size]
            real = chunk.shape[0]
            if real < size and count > size:
                # Pad the last chunk: one compiled shape for every chunk.
                pad = np.zeros((size - real, *chunk.shape[1:]), chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            outputs = self._logits_fn(ops.convert_to_tensor(chunk))
            parts.append(
                {
                    key: as_array(value, key).astype(np.float64)[:real]
                    for key, value in outputs.items()
                }
            )
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}

    def probabilities(self, logits):
        """float64 (N, C) confidences per class from a `logits` dict."""
        if self.confidence == "softmax":
            return softmax(logits["softmax"])
        if self.confidence == "sigmoid_softmax":
            return softmax(logits["sigmoid"])
        return 1.0 / (1.0 + np.exp(-logits["sigmoid"]))

    def class_index(self, class_index, logits):
        """int64 (N,): the given classes, or the softmax head's argmax (k*)."""
        batch, num_classes = logits["softmax"].shape
        if class_index is None:
            return np.argmax(logits["softmax"], axis=-1)
        return check_class_index(class_index, batch, num_classes).astype(np.int64)

    def scores(self, images, class_index):
        """float64 (N,) confidence of class_index[i] on images[i]."""
        probabilities = self.probabilities(self.logits(images))
        return probabilities[np.arange(images.shape[0]), class_index]
