"""`CAMEvaluation`: the paper's evaluation protocol, one streaming object.

Oh & Noh, "Beyond Softmax: Dual-Branch Sigmoid Architecture for Accurate
Class Activation Maps", BMVC 2025 (arXiv:2511.05590) score every CAM variant
on both heads of a dual model: WSOL metrics (clovaai/wsolevaluation) from
maps of the ground-truth class, explanation fidelity (Grad-CAM++'s Average
Drop and Increase in Confidence) from maps of the softmax head's predicted
class, and Top-1 classification accuracy per branch. The training script and
the evaluation notebook both run this one object, so their numbers cannot
drift apart. docs/method.md, section "Evaluation protocol".
"""

import inspect

import numpy as np

from keras_dualsig import cams
from keras_dualsig._classifier import classifier_of
from keras_dualsig._errors import as_array, check_class_index, invalid
from keras_dualsig.metrics import fidelity, wsol

BRANCHES = ("softmax", "sigmoid")
# The metrics of one (method, branch) entry of `result()`, in order.
BOX_METRICS = ("Top-1 Loc", "GT-known Loc", "MaxBoxAccV2")
MASK_METRICS = ("PxAP",)
FIDELITY_METRICS = ("Average Drop", "Increase in Confidence")
# Images per model call when scoring explanation images (confidence_change's
# default).
_SCORE_BATCH_SIZE = 32


def _check_methods(methods):
    """A non-empty sequence of distinct names that `kd.cams.get` knows."""
    expected = (
        f"a non-empty sequence of distinct CAM names of kd.cams.get (from "
        f"{list(cams.NAMES)})"
    )
    if isinstance(methods, str) or not isinstance(methods, list | tuple):
        raise invalid("methods", expected, methods)
    if not methods or len(set(methods)) != len(methods):
        raise invalid("methods", expected, methods)
    for name in methods:
        if not isinstance(name, str):
            raise invalid("methods", expected, methods)
        try:
            cams.get(name)
        except ValueError as err:
            raise invalid("methods", expected, methods) from err
    return tuple(methods)


def _check_branches(branches, is_dual):
    """A non-empty sequence of distinct branches; "sigmoid" needs a dual model."""
    expected = 'a non-empty sequence of distinct branches from ("softmax", "sigmoid")'
    if (
        isinstance(branches, str)
        or not isinstance(branches, list | tuple)
        or not branches
        or len(set(branches)) != len(branches)
        or any(branch not in BRANCHES for branch in branches)
    ):
        raise invalid("branches", expected, branches)
    if "sigmoid" in branches and not is_dual:
        raise invalid(
            "branches",
            '("softmax",) for a plain classifier ("sigmoid" needs a model built '
            "by kd.dual_sigmoid)",
            branches,
        )
    return tuple(branches)


def _check_options(options, argument, keys=None):
    """None or a dict of keyword-argument dicts (keys among `keys`) / kwargs."""
    if options is None:
        return {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise invalid(argument, "None or a dict of keyword arguments", options)
    if keys is not None:
        unknown = [key for key in options if key not in keys]
        if unknown or not all(isinstance(v, dict) for v in options.values()):
            raise invalid(
                argument,
                f"None or a dict from methods in {list(keys)} to dicts of "
                "constructor arguments, e.g. {'scorecam': {'max_channels': 32}}",
                options,
            )
    return dict(options)


def _build(cls, args, options, argument):
    """`cls(*args, **options)`; options it does not take fail on `argument`."""
    try:
        inspect.signature(cls).bind(*args, **options)
    except TypeError as err:
        raise invalid(
            argument, f"keyword arguments that {cls.__name__} accepts ({err})", options
        ) from err
    return cls(*args, **options)


def _check_labels(labels, batch, num_classes):
    """int64 (B,) class labels in [0, C)."""
    array = as_array(labels, "labels")
    if array.ndim != 1:
        raise invalid(
            "labels",
            f"an int array of shape ({batch},) with values in [0, {num_classes})",
            labels,
        )
    return check_class_index(array, batch, num_classes, "labels").astype(np.int64)


def _unpad_boxes(boxes, num_boxes, batch):
    """Padded (B, max_boxes, 4) boxes + num_boxes (B,) -> a list of (n_i, 4)."""
    array = as_array(boxes, "boxes")
    if array.ndim != 3 or array.shape[0] != batch or array.shape[2] != 4:
        raise invalid(
            "boxes",
            f"a padded array ({batch}, max_boxes, 4) when `num_boxes` is given "
            "(as kd.datasets.load_wsol yields them)",
            array,
        )
    counts = as_array(num_boxes, "num_boxes")
    max_boxes = array.shape[1]
    if (
        counts.shape != (batch,)
        or counts.dtype.kind not in "iu"
        or counts.min() < 1
        or counts.max() > max_boxes
    ):
        raise invalid(
            "num_boxes",
            f"an int array of shape ({batch},) with values in [1, {max_boxes}] "
            "(the real rows of each image's boxes)",
            counts,
        )
    real = np.arange(max_boxes)[None, :] < counts[:, None]  # (B, max_boxes)
    padding = array[~real]
    if padding.size and not (padding == -1).all():
        raise invalid(
            "num_boxes",
            "the number of real rows of each image's boxes (the rows after "
            "them must be the -1 padding; a smaller count would drop boxes)",
            counts,
        )
    return [array[index, : counts[index]] for index in range(batch)]


def _check_boxes(boxes, num_boxes, batch, height, width):
    """None, or the GT boxes as a list of int64 (n_i, 4) in map pixels."""
    if boxes is None:
        if num_boxes is not None:
            raise invalid("num_boxes", "None when `boxes` is None", num_boxes)
        return None
    if num_boxes is not None:
        boxes = _unpad_boxes(boxes, num_boxes, batch)
    elif not isinstance(boxes, list | tuple):
        boxes = as_array(boxes, "boxes")
    return wsol._check_gt_boxes(boxes, batch, height, width, argument="boxes")


def _check_masks(masks, ignore, shape):
    """(masks, ignore): bool (B, H, W) arrays or None."""
    if masks is None:
        if ignore is not None:
            raise invalid("ignore", "None when `masks` is None", ignore)
        return None, None
    masks = wsol._check_masks(masks, shape, "masks")
    if ignore is not None:
        ignore = wsol._check_masks(ignore, shape, "ignore")
    return masks, ignore


class CAMEvaluation:
    """WSOL, fidelity and classification metrics of CAM variants on both branches.

    The protocol of Oh & Noh (BMVC 2025, arXiv:2511.05590), streamed batch by
    batch (docs/method.md, section "Evaluation protocol"). For each batch:

    1. one forward gives both heads' logits: Top-1 Cls per branch, and the
       softmax head's prediction k*;
    2. for each method and branch, maps of the ground-truth class feed
       `BoxEvaluator` (with `correct` = k* == label, for Top-1 Loc) and/or
       `MaskEvaluator`;
    3. the same maps, recomputed for the images where k* != label, are maps
       of k*: they give Average Drop and Increase in Confidence (confidence
       of k*, see `confidence`).

    State is plain arrays: per-branch correctness and per-image fidelity terms
    (concatenated over batches), and the evaluators' counters and histograms.

    Args:
        model: a `kd.DualSigmoidModel`, or a plain Keras classifier (then
            `branches=("softmax",)`).
        methods: CAM names of `kd.cams.get`; default every variant
            (`kd.cams.NAMES`). They are the keys of `result()["methods"]`.
        branches: the heads whose maps are scored, default ("softmax",
            "sigmoid"): the baseline and the paper's branch.
        confidence: the fidelity confidence, as in
            `kd.metrics.confidence_change`: "softmax" (default), or for a
            dual model "sigmoid_softmax" (the authors' code) or "sigmoid".
        cam_options: optional dict from a method name to its constructor
            arguments, e.g. `{"scorecam": {"max_channels": 32}}`.
        box_options: optional `kd.metrics.BoxEvaluator` arguments, e.g.
            `{"gt_box_mode": "first"}`.
        mask_options: optional `kd.metrics.MaskEvaluator` arguments.

    Attributes:
        cams: dict method -> the CAM object.
        box_evaluators, mask_evaluators: dicts (method, branch) -> the
            `BoxEvaluator` / `MaskEvaluator` behind `result()` (for
            `accuracy_curves()` and the like).

    Raises:
        ValueError: (Keras template) for unknown or repeated methods or
            branches, "sigmoid" branches or confidences on a plain classifier,
            options a constructor does not accept, or a model without a
            recognisable classifier head.

    Example:

    ```python
    evaluation = kd.metrics.CAMEvaluation(dual, ["gradcam", "layercam"])
    for batch in kd.datasets.load_wsol(data_root, metadata_root, "test",
                                       batch_size=32):
        maps = evaluation.update(batch["image"], batch["label"],
                                 boxes=batch["boxes"],
                                 num_boxes=batch["num_boxes"])
        # maps["gradcam"]["sigmoid"]: (32, H, W) maps of the GT class
    evaluation.result()
    # {'num_images': 5794, 'top1_cls': {'softmax': ..., 'sigmoid': ...},
    #  'methods': {'gradcam': {'softmax': {'Top-1 Loc': ..., ...}, ...}}}
    ```
    """

    def __init__(
        self,
        model,
        methods=cams.NAMES,
        *,
        branches=BRANCHES,
        confidence="softmax",
        cam_options=None,
        box_options=None,
        mask_options=None,
    ):
        self.model = model
        self.methods = _check_methods(methods)
        is_dual = classifier_of(model).is_dual
        self.branches = _check_branches(branches, is_dual)
        self._scorer = fidelity._Scorer(model, confidence, _SCORE_BATCH_SIZE)
        self.confidence = self._scorer.confidence
        if self.confidence != "softmax" and not is_dual:
            raise invalid(
                "confidence",
                '"softmax" for a model without a sigmoid branch '
                '("sigmoid_softmax" and "sigmoid" need a DualSigmoidModel)',
                self.confidence,
            )
        cam_options = _check_options(cam_options, "cam_options", keys=self.methods)
        self._box_options = _check_options(box_options, "box_options")
        self._mask_options = _check_options(mask_options, "mask_options")
        self.cams = {
            name: _build(
                cams.get(name), (model,), cam_options.get(name, {}), "cam_options"
            )
            for name in self.methods
        }
        self._num_classes = self.cams[self.methods[0]].num_classes
        # Built once here so that bad options fail now, not at the first batch.
        _build(wsol.BoxEvaluator, (), self._box_options, "box_options")
        _build(wsol.MaskEvaluator, (), self._mask_options, "mask_options")
        self.reset()

    def _keys(self):
        return [(method, branch) for method in self.methods for branch in self.branches]

    def reset(self):
        """Forgets every batch seen so far."""
        self.box_evaluators = {
            key: wsol.BoxEvaluator(**self._box_options) for key in self._keys()
        }
        self.mask_evaluators = {
            key: wsol.MaskEvaluator(**self._mask_options) for key in self._keys()
        }
        self._num_images = 0
        # Per image, one array per batch: the branch's argmax == label.
        self._correct = {branch: [] for branch in self.branches}
        # Per image and (method, branch): max(0, Y - O) / Y and O > Y.
        self._drops = {key: [] for key in self._keys()}
        self._increases = {key: [] for key in self._keys()}
        # None until the first update; then whether boxes / masks were given.
        self._given = {"boxes": None, "masks": None}

    def _check_every_batch(self, argument, given):
        """Boxes (masks) must come with every batch or with none."""
        before = self._given[argument]
        if before is not None and before != given:
            raise invalid(
                argument,
                "a value for every batch or for none (earlier batches "
                + ("had" if before else "did not have")
                + " one)",
                received="a value" if given else "None",
            )

    def update(
        self, images, labels, *, boxes=None, num_boxes=None, masks=None, ignore=None
    ):
        """Scores one batch with every method on every branch.

        Every input is checked before any state changes.

        Args:
            images: float (batch, height, width, channels), the model's
                inputs (arrays or tensors), finite.
            labels: int (batch,) ground-truth classes in [0, num_classes).
            boxes: optional GT boxes x0, y0, x1, y1 in pixels of the images
                (= of the maps), inclusive corners, as wsolevaluation rescales
                them (x1 = width allowed, see `BoxEvaluator.update`): either
                padded float or int (batch, max_boxes, 4) with `num_boxes`, as
                `kd.datasets.load_wsol` yields them, or a list of (n_i, 4)
                arrays. Give them for every batch or for none.
            num_boxes: int (batch,) real rows of padded `boxes` (the other
                rows must be -1).
            masks: optional binary (batch, height, width) object masks, for
                PxAP. Give them for every batch or for none.
            ignore: optional binary (batch, height, width) ignore regions
                (only with `masks`).

        Returns:
            dict method -> branch -> float32 (batch, height, width) maps in
            [0, 1] of the ground-truth class (e.g. for figures).

        Raises:
            ValueError: (Keras template) for images that are not a finite
                (batch, height, width, channels) array, labels of the wrong
                shape or outside [0, C), boxes or masks that do not fit the
                images, `num_boxes` or `ignore` without `boxes` or `masks`,
                padded boxes whose padding rows are not -1, or boxes / masks
                given for some batches only.
        """
        images = fidelity._check_images(images)
        batch, height, width = images.shape[:3]
        labels = _check_labels(labels, batch, self._num_classes)
        gt_boxes = _check_boxes(boxes, num_boxes, batch, height, width)
        masks, ignore = _check_masks(masks, ignore, (batch, height, width))
        self._check_every_batch("boxes", gt_boxes is not None)
        self._check_every_batch("masks", masks is not None)
        self._given = {"boxes": gt_boxes is not None, "masks": masks is not None}

        logits = self._scorer.logits(images)  # {"softmax", "sigmoid"}: (B, C)

        predicted = np.argmax(logits["softmax"], axis=-1)  # k*, (B,)
        top1_correct = predicted == labels
        wrong = np.flatnonzero(~top1_correct)
        rows = np.arange(batch)
        # Y: the confidence of k* on the images, shared by every method.
        y = self._scorer.probabilities(logits)[rows, predicted]
        maps_out = {}
        for method in self.methods:
            cam = self.cams[method]
            maps_out[method] = {}
            for branch in self.branches:
                key = (method, branch)
                maps = cam(images, labels, branch=branch)  # GT class, (B, H, W)
                maps_out[method][branch] = maps
                if gt_boxes is not None:
                    self.box_evaluators[key].update(
                        maps, gt_boxes, correct=top1_correct
                    )
                if masks is not None:
                    self.mask_evaluators[key].update(maps, masks, ignore)
                self._add_fidelity(key, cam, images, maps, predicted, wrong, y)
        for branch in self.branches:
            self._correct[branch].append(np.argmax(logits[branch], axis=-1) == labels)
        self._num_images += batch
        return maps_out

    def _add_fidelity(self, key, cam, images, maps, predicted, wrong, y):
        """Fidelity terms of maps of k*: the GT maps, redone where k* != label."""
        if wrong.size:
            maps = maps.copy()
            maps[wrong] = cam(images[wrong], predicted[wrong], branch=key[1])
        o = self._scorer.scores(images * maps[..., None], predicted)
        drop, increase = fidelity._drops_and_increases(y, o)
        self._drops[key].append(drop)
        self._increases[key].append(increase)

    def result(self):
        """The metrics over every batch since the last reset.

        Returns:
            The structure training/evaluate.py writes to results.json (less
            its "dataset" name): `{"num_images": int, "top1_cls": {branch:
            float}, "methods": {method: {branch: {metric: float}}}}`. Each
            entry has "Top-1 Loc", "GT-known Loc", "MaxBoxAccV2" if boxes
            were given, "PxAP" if masks were given, then "Average Drop" and
            "Increase in Confidence". Percentages in [0, 100]; NaN before the
            first update.
        """
        count = self._num_images
        results = {
            "num_images": count,
            "top1_cls": {
                branch: _percent(self._correct[branch]) for branch in self.branches
            },
            "methods": {},
        }
        for method in self.methods:
            results["methods"][method] = {}
            for branch in self.branches:
                key = (method, branch)
                entry = {}
                if self._given["boxes"]:
                    boxes = self.box_evaluators[key].result()
                    entry.update({k: float(boxes[k]) for k in BOX_METRICS})
                if self._given["masks"]:
                    entry["PxAP"] = float(self.mask_evaluators[key].result()["PxAP"])
                entry["Average Drop"] = _percent(self._drops[key])
                entry["Increase in Confidence"] = _percent(self._increases[key])
                results["methods"][method][branch] = entry
        return results


def _percent(parts):
    """100 * the mean of the concatenated per-batch arrays; NaN when empty."""
    if not parts:
        return float("nan")
    return float(100.0 * np.concatenate(parts).mean())
