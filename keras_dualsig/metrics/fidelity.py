"""Explanation fidelity: does the model still see the class in the map?

- `confidence_change`: Average Drop and Increase in Confidence of Chattopadhay
  et al., "Grad-CAM++", WACV 2018, the fidelity metrics of Oh & Noh, "Beyond
  Softmax: Dual-Branch Sigmoid Architecture for Accurate Class Activation
  Maps", BMVC 2025 (arXiv:2511.05590).
- `deletion_auc`, `insertion_auc`: the causal metrics of Petsiuk et al.,
  "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC
  2018 (beyond the paper).

Every model call is batched; confidences are computed in float64 from the
model's float32 logits. docs/method.md, section "Fidelity metrics", gives the
formulas and the confidence options.
"""

import weakref

import cv2
import numpy as np

from keras_dualsig import _backend
from keras_dualsig._classifier import classifier_of
from keras_dualsig._errors import (
    as_array,
    check_bool,
    check_choice,
    check_class_index,
    check_positive_int,
    invalid,
)
from keras_dualsig.metrics import _checks

CONFIDENCES = ("softmax", "sigmoid_softmax", "sigmoid")
_BASELINES = ("zeros", "blur")
# RISE's insertion substrate: an 11x11 Gaussian kernel with sigma 5.
_BLUR_KERNEL = 11
_BLUR_SIGMA = 5.0


def _check_images(images):
    """Validates (B, H, W, C) real, finite images; returns float32 numpy.

    NaN or infinite pixels would give NaN confidences and NaN metrics that
    look like a result; they are refused instead.
    """
    images = as_array(images, "images")
    if (
        images.ndim != 4
        or images.shape[0] == 0
        or images.dtype == bool
        or not np.issubdtype(images.dtype, np.number)
        or images.dtype.kind == "c"
        or not np.isfinite(images).all()
    ):
        raise invalid(
            "images",
            "a real array of shape (batch, height, width, channels) with finite values",
            images,
        )
    return images.astype(np.float32)


def _check_images_and_maps(images, maps):
    """Validates (B, H, W, C) images and (B, H, W) maps in [0, 1]."""
    images = _check_images(images)
    maps = _checks.check_scoremaps(maps, "maps")
    if maps.shape != images.shape[:3]:
        raise invalid(
            "maps",
            f"one map per image at the image size, shape {images.shape[:3]}",
            maps,
        )
    return images, maps.astype(np.float32)


def _check_steps(steps, num_pixels):
    """A positive int, capped at the number of pixels (one pixel per step)."""
    return min(check_positive_int(steps, "steps"), num_pixels)


def _drops_and_increases(y, o):
    """Per-image terms of Average Drop and Increase in Confidence.

    Args:
        y: float64 (B,), the class confidence on the images, in [0, 1].
        o: float64 (B,), the same class's confidence on the explanation
            images `images * maps[..., None]`.

    Returns:
        (drop, increase): float64 (B,) `max(0, y - o) / y` (0 where y = 0,
        a float underflow) and bool (B,) `o > y`. Their means times 100 are
        Average Drop and Increase in Confidence (docs/method.md, section
        "Average Drop and Increase in Confidence").
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        drop = np.where(y > 0, np.maximum(0.0, y - o) / y, 0.0)
    return drop, o > y


def _softmax(logits):
    """Numerically stable softmax over the last axis, float64."""
    logits = np.asarray(logits, np.float64)
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


# One compiled logits function per model, reused by every metric call (a new
# compilation per call would cost more than the model's forward pass).
_COMPILED_LOGITS = weakref.WeakKeyDictionary()


def _compiled_logits(model):
    """Compiled `images -> {branch: float32 logits}` of a model (inference)."""
    if model not in _COMPILED_LOGITS:
        classifier = classifier_of(model)
        _COMPILED_LOGITS[model] = _backend.compile(classifier.logits, model.variables)
    return _COMPILED_LOGITS[model]


class _Scorer:
    """Batched class confidences of one model.

    Reads the logits through the model's heads (`_classifier.classifier_of`):
    "softmax" (the original head's pre-softmax logits) and, for a
    DualSigmoidModel, "sigmoid" (the branch's pre-sigmoid logits).
    """

    def __init__(self, model, confidence, batch_size):
        self.confidence = check_choice(confidence, "confidence", CONFIDENCES)
        self.batch_size = check_positive_int(batch_size, "batch_size")
        self.logits_fn = _compiled_logits(model)
        self.model_name = getattr(model, "name", type(model).__name__)

    def logits(self, images):
        """dict of float64 (B, C) logits, in batches of `batch_size`."""
        parts = []
        for start in range(0, images.shape[0], self.batch_size):
            outputs = self.logits_fn(images[start : start + self.batch_size])
            parts.append(
                {k: as_array(v, k).astype(np.float64) for k, v in outputs.items()}
            )
        logits = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if self.confidence != "softmax" and "sigmoid" not in logits:
            raise invalid(
                "confidence",
                '"softmax" for a model without a sigmoid branch ("sigmoid_softmax" '
                'and "sigmoid" need a DualSigmoidModel, see `kd.dual_sigmoid`)',
                received=f"{self.confidence!r} with model {self.model_name!r}",
            )
        return logits

    def probabilities(self, logits):
        """float64 (B, C) confidences per class from a `logits` dict."""
        if self.confidence == "softmax":
            return _softmax(logits["softmax"])
        if self.confidence == "sigmoid_softmax":
            return _softmax(logits["sigmoid"])
        return 1.0 / (1.0 + np.exp(-logits["sigmoid"]))

    def class_index(self, class_index, logits):
        """int64 (B,): the given classes, or the softmax head's argmax (k*)."""
        batch, num_classes = logits["softmax"].shape
        if class_index is None:
            return np.argmax(logits["softmax"], axis=-1)
        return check_class_index(class_index, batch, num_classes).astype(np.int64)

    def scores(self, images, class_index):
        """float64 (B,) confidence of class_index[i] on images[i]."""
        probabilities = self.probabilities(self.logits(images))
        return probabilities[np.arange(images.shape[0]), class_index]


def confidence_change(
    model, images, maps, class_index=None, *, confidence="softmax", batch_size=32
):
    """Average Drop and Increase in Confidence of explanation images.

    The explanation image keeps each pixel in proportion to the map:
    `images * maps[..., None]` (all channels). With Y the confidence of the
    class on the image and O on the explanation image (Chattopadhay et al.,
    WACV 2018; Oh & Noh, BMVC 2025):

    - Average Drop = 100 * mean(max(0, Y - O) / Y), lower is better;
    - Increase in Confidence = 100 * mean(O > Y), higher is better.

    An image with Y = 0 (float underflow) adds 0 to the Average Drop.

    Args:
        model: a DualSigmoidModel or a plain Keras classifier.
        images: float (batch, height, width, channels), the model's inputs
            (whatever preprocessing the model expects, already applied).
        maps: float (batch, height, width) in [0, 1], one map per image at
            the image size (e.g. `cam(images)`).
        class_index: None (the softmax head's prediction k* on the images,
            docs/method.md, section "Evaluation protocol"), an int, or an int
            array (batch,).
        confidence: "softmax" (default, the original head's probability),
            "sigmoid_softmax" (softmax over the sigmoid branch's logits: the
            authors' code for their "+Ours" rows) or "sigmoid" (the branch's
            own sigmoid probability). The last two need a DualSigmoidModel.
        batch_size: images per model call.

    Returns:
        {"Average Drop": float, "Increase in Confidence": float}, percent in
        [0, 100].

    Raises:
        ValueError: for images with NaN or infinite values, maps outside
            [0, 1] or with NaN, maps whose shape is not the images' (batch,
            height, width), an unknown `confidence`
            (or one that needs a sigmoid branch the model lacks), a bad
            `class_index` or `batch_size`.

    Example:

    ```python
    dual = kd.dual_sigmoid(classifier)
    maps = kd.cams.GradCAM(dual)(images)
    kd.metrics.confidence_change(dual, images, maps)
    # {'Average Drop': 31.2, 'Increase in Confidence': 18.0}
    ```
    """
    images, maps = _check_images_and_maps(images, maps)
    scorer = _Scorer(model, confidence, batch_size)
    logits = scorer.logits(images)
    class_index = scorer.class_index(class_index, logits)
    rows = np.arange(images.shape[0])
    y = scorer.probabilities(logits)[rows, class_index]
    o = scorer.scores(images * maps[..., None], class_index)
    drop, increase = _drops_and_increases(y, o)
    return {
        "Average Drop": float(100.0 * drop.mean()),
        "Increase in Confidence": float(100.0 * increase.mean()),
    }


def _baseline_images(images, baseline, argument="baseline"):
    """The substrate that replaces (deletion) or precedes (insertion) pixels."""
    if isinstance(baseline, str):
        check_choice(baseline, argument, _BASELINES)
        if baseline == "zeros":
            return np.zeros_like(images)
        # RISE blurs with an 11x11, sigma-5 Gaussian; borders are reflected
        # here (RISE pads with zeros, which darkens the edges).
        return np.stack(
            [
                cv2.GaussianBlur(
                    image, (_BLUR_KERNEL, _BLUR_KERNEL), _BLUR_SIGMA
                ).reshape(image.shape)
                for image in images
            ]
        )
    array = as_array(baseline, argument)
    try:
        if (
            array.dtype == bool
            or not np.issubdtype(array.dtype, np.number)
            or array.dtype.kind == "c"
            or not np.isfinite(array).all()
        ):
            raise ValueError
        return np.broadcast_to(array.astype(np.float32), images.shape)
    except ValueError as err:
        raise invalid(
            argument,
            '"zeros", "blur", or a finite number or array broadcastable to '
            f"`images` {images.shape}",
            baseline,
        ) from err


def _causal_auc(
    model, images, maps, class_index, steps, baseline, confidence, batch_size, mode
):
    """Shared loop of deletion and insertion: float64 (B,) AUCs, (B, steps+1)."""
    images, maps = _check_images_and_maps(images, maps)
    batch, height, width = maps.shape
    num_pixels = height * width
    steps = _check_steps(steps, num_pixels)
    scorer = _Scorer(model, confidence, batch_size)
    substrate = _baseline_images(images, baseline)
    class_index = scorer.class_index(class_index, scorer.logits(images))
    # rank[b, p] = position of pixel p when sorted by decreasing map value
    # (ties in row-major order): pixel p is changed once rank < counts[i].
    order = np.argsort(-maps.reshape(batch, -1), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(num_pixels)[None], axis=1)
    rank = rank.reshape(batch, height, width)
    counts = np.arange(steps + 1) * num_pixels // steps  # 0 ... all pixels.
    # Every (image, step) pair is one model input; build them batch by batch.
    pairs = np.stack(np.meshgrid(np.arange(batch), counts, indexing="ij"), -1)
    pairs = pairs.reshape(-1, 2)
    curves = np.empty(pairs.shape[0], np.float64)
    for start in range(0, pairs.shape[0], scorer.batch_size):
        index, count = pairs[start : start + scorer.batch_size].T
        changed = (rank[index] < count[:, None, None])[..., None]  # (n, H, W, 1)
        if mode == "deletion":
            inputs = np.where(changed, substrate[index], images[index])
        else:
            inputs = np.where(changed, images[index], substrate[index])
        curves[start : start + index.shape[0]] = scorer.scores(
            inputs.astype(np.float32), class_index[index]
        )
    curves = curves.reshape(batch, steps + 1)
    # Trapezoid rule on [0, 1] with equal steps (RISE's `auc`).
    aucs = (curves.sum(axis=1) - (curves[:, 0] + curves[:, -1]) / 2) / steps
    return aucs, curves


def deletion_auc(
    model,
    images,
    maps,
    class_index=None,
    *,
    steps=100,
    baseline="zeros",
    confidence="softmax",
    batch_size=32,
    return_curves=False,
):
    """Deletion AUC (RISE): confidence as the most salient pixels are removed.

    Pixels are replaced by `baseline`, in order of decreasing map value, in
    `steps` equal steps; the class confidence after each step traces a curve
    on [0, 1] whose area (trapezoid rule) is the score: a faithful map makes
    the confidence fall fast, so LOWER is better (Petsiuk et al., BMVC 2018).

    Args:
        model: a DualSigmoidModel or a plain Keras classifier.
        images: float (batch, height, width, channels), the model's inputs.
        maps: float (batch, height, width) in [0, 1], at the image size.
        class_index: None (the softmax head's prediction on the images), an
            int, or an int array (batch,).
        steps: number of steps, capped at H * W; step i has removed
            `i * H * W // steps` pixels (ties in map value are taken in
            row-major order). The model runs on `batch * (steps + 1)` images.
        baseline: "zeros" (default, RISE's deletion substrate), "blur" (an
            11x11, sigma-5 Gaussian blur of the image, reflected borders), or
            a number / array broadcastable to `images`.
        confidence: "softmax", "sigmoid_softmax" or "sigmoid", as in
            `confidence_change`.
        batch_size: images per model call.
        return_curves: also return the per-image AUCs and curves.

    Returns:
        {"Deletion AUC": float in [0, 1]} (mean over images); with
        `return_curves`, a tuple (that dict, float64 (batch,) AUCs, float64
        (batch, steps + 1) confidences).

    Raises:
        ValueError: as `confidence_change`, and for a bad `steps`,
            `baseline` (not finite, or not broadcastable) or
            `return_curves` (not a bool).

    Example:

    ```python
    maps = kd.cams.GradCAM(dual)(images)
    kd.metrics.deletion_auc(dual, images, maps, steps=50)
    # {'Deletion AUC': 0.12}
    ```
    """
    return_curves = check_bool(return_curves, "return_curves")
    aucs, curves = _causal_auc(
        model,
        images,
        maps,
        class_index,
        steps,
        baseline,
        confidence,
        batch_size,
        "deletion",
    )
    result = {"Deletion AUC": float(aucs.mean())}
    return (result, aucs, curves) if return_curves else result


def insertion_auc(
    model,
    images,
    maps,
    class_index=None,
    *,
    steps=100,
    baseline="blur",
    confidence="softmax",
    batch_size=32,
    return_curves=False,
):
    """Insertion AUC (RISE): confidence as the most salient pixels come back.

    Starts from `baseline` and restores the image's pixels in order of
    decreasing map value, in `steps` equal steps; the area under the class
    confidence curve on [0, 1] is the score: a faithful map makes the
    confidence rise fast, so HIGHER is better (Petsiuk et al., BMVC 2018).

    Args:
        model: a DualSigmoidModel or a plain Keras classifier.
        images: float (batch, height, width, channels), the model's inputs.
        maps: float (batch, height, width) in [0, 1], at the image size.
        class_index: None (the softmax head's prediction on the images), an
            int, or an int array (batch,).
        steps: number of steps, capped at H * W; step i has restored
            `i * H * W // steps` pixels (ties in row-major order). The model
            runs on `batch * (steps + 1)` images.
        baseline: "blur" (default, RISE's insertion substrate: an 11x11,
            sigma-5 Gaussian blur of the image, reflected borders), "zeros",
            or a number / array broadcastable to `images`.
        confidence: "softmax", "sigmoid_softmax" or "sigmoid", as in
            `confidence_change`.
        batch_size: images per model call.
        return_curves: also return the per-image AUCs and curves.

    Returns:
        {"Insertion AUC": float in [0, 1]} (mean over images); with
        `return_curves`, a tuple (that dict, float64 (batch,) AUCs, float64
        (batch, steps + 1) confidences).

    Raises:
        ValueError: as `confidence_change`, and for a bad `steps`,
            `baseline` (not finite, or not broadcastable) or
            `return_curves` (not a bool).

    Example:

    ```python
    kd.metrics.insertion_auc(dual, images, maps, steps=50)
    # {'Insertion AUC': 0.61}
    ```
    """
    return_curves = check_bool(return_curves, "return_curves")
    aucs, curves = _causal_auc(
        model,
        images,
        maps,
        class_index,
        steps,
        baseline,
        confidence,
        batch_size,
        "insertion",
    )
    result = {"Insertion AUC": float(aucs.mean())}
    return (result, aucs, curves) if return_curves else result
