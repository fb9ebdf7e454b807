"""Explanation fidelity: does the model still see the class in the map?

- `confidence_change`: Average Drop and Increase in Confidence of Chattopadhay
  et al., "Grad-CAM++", WACV 2018, the fidelity metrics of Oh & Noh, "Beyond
  Softmax: Dual-Branch Sigmoid Architecture for Accurate Class Activation
  Maps", BMVC 2025 (arXiv:2511.05590), and the Average Gain of Zhang et al.,
  "Opti-CAM: Optimizing saliency maps for interpretability", CVIU 2024
  (arXiv:2301.07002).
- `deletion_auc`, `insertion_auc`: the causal metrics of Petsiuk et al.,
  "RISE: Randomized Input Sampling for Explanation of Black-box Models", BMVC
  2018 (beyond the paper): one shared loop (`_CausalMetric`), the two
  metrics differing in one parameter, as xplique's `Deletion` and
  `Insertion` share `CausalFidelity`.

Every model call is batched and compiled (`_scorer.Scorer`); confidences are
computed in float64 from the model's float32 logits. docs/method.md, section
"Fidelity metrics", gives the formulas and the confidence options.
"""

import dataclasses

import cv2
import numpy as np

from keras_dualsig._errors import (
    as_array,
    check_bool,
    check_choice,
    check_positive_int,
    invalid,
)
from keras_dualsig.metrics import _checks, _scorer

CONFIDENCES = _scorer.CONFIDENCES
_BASELINES = ("zeros", "blur", "mean")
# RISE's insertion substrate: an 11x11 Gaussian kernel with sigma 5.
_BLUR_KERNEL = 11
_BLUR_SIGMA = 5.0
# The model scorer, shared with CAMEvaluation and ROAD.
_Scorer = _scorer.Scorer


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


def _confidence_terms(y, o):
    """Per-image terms of Average Drop, Increase in Confidence, Average Gain.

    Args:
        y: float64 (B,), the class confidence on the images, in [0, 1].
        o: float64 (B,), the same class's confidence on the explanation
            images `images * maps[..., None]`.

    Returns:
        (drop, increase, gain): float64 (B,) `max(0, y - o) / y` (0 where
        y = 0, a float underflow), bool (B,) `o > y`, and float64 (B,)
        `max(0, o - y) / (1 - y)` (0 where y = 1, where o cannot exceed y).
        Their means times 100 are Average Drop, Increase in Confidence and
        Average Gain (docs/method.md, section "Average Drop and Increase in
        Confidence").
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        drop = np.where(y > 0, np.maximum(0.0, y - o) / y, 0.0)
        gain = np.where(y < 1, np.maximum(0.0, o - y) / (1.0 - y), 0.0)
    return drop, o > y, gain


def confidence_change(
    model,
    images,
    maps,
    class_index=None,
    *,
    confidence="softmax",
    batch_size=32,
    return_per_image=False,
):
    """Average Drop, Increase in Confidence and Average Gain of explanation images.

    The explanation image keeps each pixel in proportion to the map:
    `images * maps[..., None]` (all channels). With Y the confidence of the
    class on the image and O on the explanation image:

    - Average Drop = 100 * mean(max(0, Y - O) / Y), lower is better
      (Chattopadhay et al., WACV 2018; Oh & Noh, BMVC 2025);
    - Increase in Confidence = 100 * mean(O > Y), higher is better (same);
    - Average Gain = 100 * mean(max(0, O - Y) / (1 - Y)), higher is better
      (Zhang et al., "Opti-CAM", CVIU 2024): how much of the room left
      above Y the explanation image gains; the counterpart of Average Drop.

    An image with Y = 0 (float underflow) adds 0 to the Average Drop, one
    with Y = 1 adds 0 to the Average Gain.

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
        batch_size: images per compiled model call.
        return_per_image: also return the per-image terms (for
            `kd.metrics.bootstrap_interval`).

    Returns:
        {"Average Drop": float, "Increase in Confidence": float,
        "Average Gain": float}, percent in [0, 100]. With `return_per_image`,
        a tuple (that dict, {"Average Drop": float64 (batch,) in [0, 100],
        "Increase in Confidence": float64 (batch,) 0 or 100, "Average Gain":
        float64 (batch,) in [0, 100]}): each metric is the mean of its array.

    Raises:
        ValueError: for images with NaN or infinite values, maps outside
            [0, 1] or with NaN, maps whose shape is not the images' (batch,
            height, width), an unknown `confidence`
            (or one that needs a sigmoid branch the model lacks), a bad
            `class_index`, `batch_size` or `return_per_image`.

    Example:

    ```python
    dual = kd.dual_sigmoid(classifier)
    maps = kd.cams.GradCAM(dual)(images)
    kd.metrics.confidence_change(dual, images, maps)
    # {'Average Drop': 31.2, 'Increase in Confidence': 18.0, 'Average Gain': 9.4}
    ```
    """
    images, maps = _check_images_and_maps(images, maps)
    return_per_image = check_bool(return_per_image, "return_per_image")
    scorer = _Scorer(model, confidence, batch_size)
    logits = scorer.logits(images)
    class_index = scorer.class_index(class_index, logits)
    rows = np.arange(images.shape[0])
    y = scorer.probabilities(logits)[rows, class_index]
    o = scorer.scores(images * maps[..., None], class_index)
    terms = dict(
        zip(
            ("Average Drop", "Increase in Confidence", "Average Gain"),
            (100.0 * np.asarray(t, np.float64) for t in _confidence_terms(y, o)),
            strict=True,
        )
    )
    result = {name: float(values.mean()) for name, values in terms.items()}
    return (result, terms) if return_per_image else result


def _baseline_images(images, baseline, argument="baseline"):
    """The substrate that replaces (deletion) or precedes (insertion) pixels.

    Returns:
        float32 (B, H, W, C), possibly a broadcast view.
    """
    if isinstance(baseline, str):
        check_choice(baseline, argument, _BASELINES)
        if baseline == "zeros":
            return np.zeros_like(images)
        if baseline == "mean":
            # Each image's own per-channel mean: no edge, no colour cast.
            return np.broadcast_to(
                images.mean(axis=(1, 2), keepdims=True), images.shape
            )
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
            '"zeros", "blur", "mean", or a finite number or array broadcastable '
            f"to `images` {images.shape}",
            baseline,
        ) from err


def _pixel_ranks(maps):
    """int (B, H, W): each pixel's position by decreasing map value.

    Ties are taken in row-major order (a stable sort), as torchcam does.
    """
    batch, height, width = maps.shape
    order = np.argsort(-maps.reshape(batch, -1), axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(height * width)[None], axis=1)
    return rank.reshape(batch, height, width)


@dataclasses.dataclass(frozen=True)
class _CausalMetric:
    """Deletion or insertion: the shared loop, one parameter apart.

    Attributes:
        key: the result's key ("Deletion AUC" / "Insertion AUC").
        deletes: True: the map's most salient pixels are replaced by the
            baseline (deletion); False: they are restored onto the baseline
            (insertion).
    """

    key: str
    deletes: bool

    def __call__(
        self,
        model,
        images,
        maps,
        class_index,
        *,
        steps,
        baseline,
        confidence,
        batch_size,
        return_curves,
    ):
        return_curves = check_bool(return_curves, "return_curves")
        images, maps = _check_images_and_maps(images, maps)
        batch, height, width = maps.shape
        num_pixels = height * width
        steps = _check_steps(steps, num_pixels)
        scorer = _Scorer(model, confidence, batch_size)
        substrate = _baseline_images(images, baseline)
        class_index = scorer.class_index(class_index, scorer.logits(images))
        rank = _pixel_ranks(maps)
        # Step i has changed the counts[i] most salient pixels: 0 ... all.
        counts = np.arange(steps + 1) * num_pixels // steps
        # Every (image, step) pair is one model input; the pairs are packed
        # into full chunks, one compiled model call each (as torchcam does).
        pairs = np.stack(np.meshgrid(np.arange(batch), counts, indexing="ij"), -1)
        pairs = pairs.reshape(-1, 2)
        # Enough pairs per chunk for a few model calls, built in one go.
        chunk = scorer.batch_size * 4
        curves = np.empty(pairs.shape[0], np.float64)
        for start in range(0, pairs.shape[0], chunk):
            index, count = pairs[start : start + chunk].T
            changed = (rank[index] < count[:, None, None])[..., None]  # (n, H, W, 1)
            first, second = substrate[index], images[index]
            if self.deletes:
                first, second = second, first
            # Unchanged pixels come from `first`, changed ones from `second`.
            inputs = np.where(changed, second, first).astype(np.float32)
            curves[start : start + index.shape[0]] = scorer.scores(
                inputs, class_index[index]
            )
        curves = curves.reshape(batch, steps + 1)
        # Trapezoid rule on [0, 1] with equal steps (RISE's `auc`).
        aucs = (curves.sum(axis=1) - (curves[:, 0] + curves[:, -1]) / 2) / steps
        result = {self.key: float(aucs.mean())}
        return (result, aucs, curves) if return_curves else result


_DELETION = _CausalMetric("Deletion AUC", deletes=True)
_INSERTION = _CausalMetric("Insertion AUC", deletes=False)


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

    Conventions (docs/method.md, section "Deletion and insertion"). With
    N = H * W, step i (i = 0 ... steps) has changed the `i * N // steps`
    most salient pixels (ties in row-major order), and the AUC is the
    trapezoid rule with equal spacing, `(sum(c) - (c[0] + c[-1]) / 2) /
    steps`, averaged over images. These are xplique's checkpoints
    (`np.linspace(0, N, steps + 1, dtype=int32)`, the same integers up to
    float rounding) and AUC rule (`mean(s[:-1] + s[1:]) / 2`, on scores
    averaged over images first: the same mean). torchcam changes
    `ceil(N / steps)` pixels per step (the last step fewer) and integrates
    over the fractions actually changed (`torch.trapezoid`); RISE changes a
    fixed number of pixels per step, with equal-weight trapezoids. All give
    these numbers when `steps` divides N (e.g. 96 on 96x96 images, 224 on
    224x224). The score is a confidence (default the softmax probability),
    as torchcam with `logits_fn=softmax` and xplique with
    `activation="softmax"`.

    Args:
        model: a DualSigmoidModel or a plain Keras classifier.
        images: float (batch, height, width, channels), the model's inputs.
        maps: float (batch, height, width) in [0, 1], at the image size.
        class_index: None (the softmax head's prediction on the images), an
            int, or an int array (batch,).
        steps: number of steps, capped at H * W. The model runs on
            `batch * (steps + 1)` images, packed into chunks of `batch_size`.
        baseline: "zeros" (default, RISE's deletion substrate), "blur" (an
            11x11, sigma-5 Gaussian blur of the image, reflected borders),
            "mean" (each image's per-channel mean), or a number / array
            broadcastable to `images`.
        confidence: "softmax", "sigmoid_softmax" or "sigmoid", as in
            `confidence_change`.
        batch_size: images per compiled model call.
        return_curves: also return the per-image AUCs and curves.

    Returns:
        {"Deletion AUC": float in [0, 1]} (mean over images); with
        `return_curves`, a tuple (that dict, float64 (batch,) AUCs, float64
        (batch, steps + 1) confidences).

    Raises:
        ValueError: as `confidence_change`, and for a bad `steps`,
            `baseline` (unknown, not finite, or not broadcastable) or
            `return_curves` (not a bool).

    Example:

    ```python
    maps = kd.cams.GradCAM(dual)(images)
    kd.metrics.deletion_auc(dual, images, maps, steps=96)
    # {'Deletion AUC': 0.12}
    ```
    """
    return _DELETION(
        model,
        images,
        maps,
        class_index,
        steps=steps,
        baseline=baseline,
        confidence=confidence,
        batch_size=batch_size,
        return_curves=return_curves,
    )


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
    Checkpoints and AUC rule as `deletion_auc` (the same loop, restoring
    instead of removing), hence the same relation to torchcam and xplique.

    Args:
        model: a DualSigmoidModel or a plain Keras classifier.
        images: float (batch, height, width, channels), the model's inputs.
        maps: float (batch, height, width) in [0, 1], at the image size.
        class_index: None (the softmax head's prediction on the images), an
            int, or an int array (batch,).
        steps: number of steps, capped at H * W. The model runs on
            `batch * (steps + 1)` images, packed into chunks of `batch_size`.
        baseline: "blur" (default, RISE's insertion substrate: an 11x11,
            sigma-5 Gaussian blur of the image, reflected borders), "zeros",
            "mean" (each image's per-channel mean), or a number / array
            broadcastable to `images`.
        confidence: "softmax", "sigmoid_softmax" or "sigmoid", as in
            `confidence_change`.
        batch_size: images per compiled model call.
        return_curves: also return the per-image AUCs and curves.

    Returns:
        {"Insertion AUC": float in [0, 1]} (mean over images); with
        `return_curves`, a tuple (that dict, float64 (batch,) AUCs, float64
        (batch, steps + 1) confidences).

    Raises:
        ValueError: as `deletion_auc`.

    Example:

    ```python
    kd.metrics.insertion_auc(dual, images, maps, steps=96)
    # {'Insertion AUC': 0.61}
    ```
    """
    return _INSERTION(
        model,
        images,
        maps,
        class_index,
        steps=steps,
        baseline=baseline,
        confidence=confidence,
        batch_size=batch_size,
        return_curves=return_curves,
    )
