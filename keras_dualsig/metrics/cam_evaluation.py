"""`CAMEvaluation`: the paper's evaluation protocol, one streaming object.

Oh & Noh, "Beyond Softmax: Dual-Branch Sigmoid Architecture for Accurate
Class Activation Maps", BMVC 2025 (arXiv:2511.05590) score every CAM variant
on both heads of a dual model: WSOL metrics (clovaai/wsolevaluation) from
maps of the ground-truth class, explanation fidelity (Grad-CAM++'s Average
Drop and Increase in Confidence) from maps of the softmax head's predicted
class, and Top-1 classification accuracy per branch. The training script and
the evaluation notebook both run this one object, so their numbers cannot
drift apart. docs/method.md, section "Evaluation protocol".

Beyond the paper it keeps every image's outcome of every metric, for
bootstrap confidence intervals and paired sigmoid-minus-softmax differences
(`result(intervals=True)`, `_intervals`), and scores the class-discrimination
test on two-object images (`update_pairs`).
"""

import inspect
import os
import zipfile

import numpy as np

from keras_dualsig import cams
from keras_dualsig._classifier import classifier_of
from keras_dualsig._errors import (
    as_array,
    check_bool,
    check_class_index,
    check_int,
    invalid,
)
from keras_dualsig.metrics import (
    _intervals,
    _state,
    fidelity,
    pointing_game,
    road,
    wsol,
)

BRANCHES = ("softmax", "sigmoid")
# The metrics of one (method, branch) entry of `result()`, in order.
BOX_METRICS = ("Top-1 Loc", "GT-known Loc", "MaxBoxAccV2")
POINTING_METRICS = pointing_game.KEYS
MASK_METRICS = ("PxAP",)
FIDELITY_METRICS = ("Average Drop", "Increase in Confidence")
GAIN_METRIC = "Average Gain"
PAIR_METRICS = pointing_game.PAIR_KEYS
# Variants left out of the default `methods` (many forward passes per image).
COSTLY_METHODS = ("sscam", "iscam", "ablationcam")
# Optional causal metrics (`causal_metrics`), each with its result keys.
CAUSAL_METRICS = {
    "road": ("ROAD MoRF", "ROAD LeRF", "ROAD combined"),
    "deletion": ("Deletion AUC",),
    "insertion": ("Insertion AUC",),
}
_CAUSAL_FUNCTIONS = {
    "road": road.road,
    "deletion": fidelity.deletion_auc,
    "insertion": fidelity.insertion_auc,
}
# Arguments CAMEvaluation sets itself, not through `causal_options`.
_CAUSAL_RESERVED = ("class_index", "confidence", "return_per_image", "return_curves")
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


def _check_causal(causal_metrics, causal_options):
    """Names from CAUSAL_METRICS, and their options checked against each function."""
    expected = (
        f"a sequence of distinct names from {list(CAUSAL_METRICS)} (e.g. "
        '("road",)), or ()'
    )
    if (
        isinstance(causal_metrics, str)
        or not isinstance(causal_metrics, list | tuple)
        or len(set(causal_metrics)) != len(causal_metrics)
        or any(name not in CAUSAL_METRICS for name in causal_metrics)
    ):
        raise invalid("causal_metrics", expected, causal_metrics)
    options = {} if causal_options is None else causal_options
    if (
        not isinstance(options, dict)
        or any(key not in causal_metrics for key in options)
        or not all(isinstance(value, dict) for value in options.values())
    ):
        raise invalid(
            "causal_options",
            f"None or a dict from names in {list(causal_metrics)} (the "
            "`causal_metrics`) to dicts of keyword arguments, e.g. "
            "{'road': {'seed': 0}}",
            causal_options,
        )
    for name, kwargs in options.items():
        reserved = [key for key in kwargs if key in _CAUSAL_RESERVED]
        function = _CAUSAL_FUNCTIONS[name]
        try:
            if reserved:
                raise TypeError(f"{reserved} are set by CAMEvaluation")
            inspect.signature(function).bind(None, None, None, **kwargs)
        except TypeError as err:
            raise invalid(
                "causal_options",
                f"keyword arguments that kd.metrics.{function.__name__} accepts "
                f"({err})",
                options,
            ) from err
    return tuple(causal_metrics), options


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


class CAMEvaluation(_state.Saveable):
    """WSOL, fidelity and classification metrics of CAM variants on both branches.

    The protocol of Oh & Noh (BMVC 2025, arXiv:2511.05590), streamed batch by
    batch (docs/method.md, section "Evaluation protocol"). For each batch:

    1. one forward gives both heads' logits: Top-1 Cls per branch, and the
       softmax head's prediction k*;
    2. for each method and branch, maps of the ground-truth class feed
       `BoxEvaluator` (with `correct` = k* == label, for Top-1 Loc) and the
       pointing games (`kd.metrics.pointing_game`) and/or `MaskEvaluator`;
    3. the same maps, recomputed for the images where k* != label, are maps
       of k*: they give Average Drop, Increase in Confidence and Average Gain
       (confidence of k*, see `confidence`), and the optional
       `causal_metrics` (ROAD, deletion, insertion).

    `update_pairs` adds the class-discrimination test
    (`kd.metrics.pair_pointing_game`) on images of two objects of different
    classes, e.g. the "test_pairs" split of `kd.datasets.cluttered_mnist`.

    Every image's outcome of every metric is kept (bounded: a few bits per
    image and CAM threshold for the box metrics, two histograms per image
    for PxAP, one number per image otherwise), so that
    `result(intervals=True)` gives seeded bootstrap confidence intervals
    and, for two branches, the sigmoid-minus-softmax differences with
    paired-bootstrap intervals; `outcomes()` / `save_outcomes(path)` hand
    the per-image arrays over for any further analysis.

    Args:
        model: a `kd.DualSigmoidModel`, or a plain Keras classifier (then
            `branches=("softmax",)`).
        methods: CAM names of `kd.cams.get`; default None: every variant
            of `kd.cams.NAMES` except the costly "sscam", "iscam" and
            "ablationcam" (name them to get them). They are the keys of
            `result()["methods"]`.
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
        causal_metrics: optional names among "road" (`kd.metrics.road`),
            "deletion" and "insertion" (`kd.metrics.deletion_auc`,
            `insertion_auc`), computed on the maps of k* like Average Drop.
            They cost many model calls (and sparse solves for ROAD) per
            image. Default none.
        causal_options: optional dict from those names to their keyword
            arguments, e.g. `{"road": {"seed": 0}, "deletion": {"steps":
            96}}` (not `class_index`, `confidence` nor the return flags). A
            ROAD seed is combined with the batch's index, so batches get
            different noise.
        keep_outcomes: keep the per-image outcomes (default True; needed by
            `result(intervals=True)`, `outcomes()` and `save_outcomes`).
        fidelity_metrics: score Average Drop, Increase in Confidence and Average
            Gain (default True). False skips their model calls (the maps of
            k* are still made for `causal_metrics`).
        one_pass: make every method's maps with `kd.cams.compute`, one
            forward and one backward pass per branch shared by the gradient
            methods (default True); False calls each method separately (the
            same maps, slower: benchmarks/evaluate_speed.py).
        batch_offset: the index of this evaluation's first batch in a larger
            run of which it is one block (a shard, a device's or a worker's
            part), default 0: ROAD seeds each batch by its index in the
            whole run, so that merged blocks (`merge`) equal that run.

    Attributes:
        cams: dict method -> the CAM object.
        box_evaluators, mask_evaluators: dicts (method, branch) -> the
            `BoxEvaluator` / `MaskEvaluator` behind `result()` (for
            `accuracy_curves()` and the like).

    Raises:
        ValueError: (Keras template) for unknown or repeated methods or
            branches, "sigmoid" branches or confidences on a plain classifier,
            options a constructor or function does not accept, unknown
            causal metrics, or a model without a recognisable classifier
            head.

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
    evaluation.result(intervals=True)["methods"]["gradcam"]["delta"]
    # {'Top-1 Loc': {'value': 4.1, 'CI': [2.9, 5.3]}, ...}
    ```
    """

    def __init__(
        self,
        model,
        methods=None,
        *,
        branches=BRANCHES,
        confidence="softmax",
        cam_options=None,
        box_options=None,
        mask_options=None,
        causal_metrics=(),
        causal_options=None,
        keep_outcomes=True,
        fidelity_metrics=True,
        one_pass=True,
        batch_offset=0,
    ):
        self.model = model
        if methods is None:
            methods = [m for m in cams.NAMES if m not in COSTLY_METHODS]
        self.methods = _check_methods(methods)
        is_dual = classifier_of(model).is_dual
        self.branches = _check_branches(branches, is_dual)
        self._scorer = fidelity._Scorer(model, confidence, _SCORE_BATCH_SIZE)
        self.confidence = self._scorer.confidence
        cam_options = _check_options(cam_options, "cam_options", keys=self.methods)
        self._cam_options = cam_options
        self._box_options = _check_options(box_options, "box_options")
        self._mask_options = _check_options(mask_options, "mask_options")
        self.causal_metrics, self._causal_options = _check_causal(
            causal_metrics, causal_options
        )
        self.keep_outcomes = check_bool(keep_outcomes, "keep_outcomes")
        self.fidelity_metrics = check_bool(fidelity_metrics, "fidelity_metrics")
        self.one_pass = check_bool(one_pass, "one_pass")
        self.batch_offset = check_int(batch_offset, "batch_offset", minimum=0)
        for options in (self._box_options, self._mask_options):
            if "keep_outcomes" in options:
                raise invalid(
                    "box_options" if options is self._box_options else "mask_options",
                    "evaluator arguments other than keep_outcomes (set by "
                    "CAMEvaluation's own `keep_outcomes`)",
                    options,
                )
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

    def _metric_names(self):
        """The per-image metrics kept as plain arrays, in result order."""
        names = [*FIDELITY_METRICS, GAIN_METRIC] if self.fidelity_metrics else []
        for name in self.causal_metrics:
            names.extend(CAUSAL_METRICS[name])
        return names

    def reset(self):
        """Forgets every batch seen so far."""
        keep = {"keep_outcomes": self.keep_outcomes}
        self.box_evaluators = {
            key: wsol.BoxEvaluator(**self._box_options, **keep) for key in self._keys()
        }
        self.mask_evaluators = {
            key: wsol.MaskEvaluator(**self._mask_options, **keep)
            for key in self._keys()
        }
        self._num_images = 0
        self._num_batches = 0
        # Per image, one array per batch: labels, k*, and per branch
        # argmax == label.
        self._labels, self._predicted = [], []
        self._correct = {branch: [] for branch in self.branches}
        # Per image and (method, branch): max(0, Y - O) / Y, O > Y, the
        # Average Gain term, the pointing-game outcomes, the causal scores.
        names = [*self._metric_names(), *POINTING_METRICS]
        self._terms = {key: {name: [] for name in names} for key in self._keys()}
        # The pairs test: per pair image, (K,) outcomes per (method, branch).
        self._pair_labels = []
        self._pair_terms = {
            key: {name: [] for name in PAIR_METRICS} for key in self._keys()
        }
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
        regions = None
        if gt_boxes is not None:
            regions = np.stack(
                [pointing_game.box_region(b, height, width) for b in gt_boxes]
            )
        # Every method's maps from one forward and backward pass per branch
        # (`kd.cams.compute`): of the GT class, and of k* where k* != label.
        maps_out = self._maps(images, labels)
        maps_of_predicted = (
            self._maps(images[wrong], predicted[wrong]) if wrong.size else None
        )
        for method in self.methods:
            for branch in self.branches:
                key = (method, branch)
                maps = maps_out[method][branch]  # GT class, (B, H, W)
                if gt_boxes is not None:
                    self.box_evaluators[key].update(
                        maps, gt_boxes, correct=top1_correct
                    )
                    hit, energy = pointing_game.pointing_terms(maps, regions)
                    self._terms[key]["Pointing game"].append(hit)
                    self._terms[key]["Energy pointing game"].append(energy)
                if masks is not None:
                    self.mask_evaluators[key].update(maps, masks, ignore)
                if self.fidelity_metrics or self.causal_metrics:
                    redone = (
                        maps_of_predicted[method][branch]
                        if maps_of_predicted is not None
                        else None
                    )
                    self._add_fidelity(key, images, maps, redone, predicted, wrong, y)
        for branch in self.branches:
            self._correct[branch].append(np.argmax(logits[branch], axis=-1) == labels)
        self._labels.append(labels)
        self._predicted.append(predicted)
        self._num_images += batch
        self._num_batches += 1
        return maps_out

    def _maps(self, images, class_index):
        """{method: {branch: (B, H, W) maps}} of `class_index`, passes shared."""
        if not self.one_pass:
            return {
                method: {
                    branch: self.cams[method](images, class_index, branch=branch)
                    for branch in self.branches
                }
                for method in self.methods
            }
        return cams.compute(
            self.model,
            images,
            methods=list(self.methods),
            branches=list(self.branches),
            class_index=class_index,
            options=self._cam_options,
        )

    def _add_fidelity(self, key, images, maps, redone, predicted, wrong, y):
        """Fidelity terms of maps of k*: the GT maps, `redone` where k* != label."""
        if wrong.size:
            maps = maps.copy()
            maps[wrong] = redone
        terms = {}
        if self.fidelity_metrics:
            o = self._scorer.scores(images * maps[..., None], predicted)
            terms = dict(
                zip(
                    (*FIDELITY_METRICS, GAIN_METRIC),
                    fidelity._confidence_terms(y, o),
                    strict=True,
                )
            )
        for name in self.causal_metrics:
            terms.update(self._causal_terms(name, images, maps, predicted))
        for name, values in terms.items():
            self._terms[key][name].append(values)

    def _causal_terms(self, name, images, maps, predicted):
        """Per-image scores of one causal metric on maps of k*."""
        options = dict(self._causal_options.get(name, {}))
        function = _CAUSAL_FUNCTIONS[name]
        common = {"confidence": self.confidence}
        if name == "road":
            if options.get("seed") is not None:
                # Each batch its own noise, reproducibly.
                sequence = np.random.SeedSequence(
                    [options["seed"], self.batch_offset + self._num_batches]
                )
                options["seed"] = int(sequence.generate_state(1)[0])
            _, per_image = function(
                self.model,
                images,
                maps,
                predicted,
                **common,
                **options,
                return_per_image=True,
            )
            return per_image
        _, aucs, _ = function(
            self.model, images, maps, predicted, **common, **options, return_curves=True
        )
        return {CAUSAL_METRICS[name][0]: aucs}

    def update_pairs(self, images, labels, boxes):
        """Scores one batch of the class-discrimination test (two classes per image).

        For every image and each of its classes, every method's map of that
        class on every branch is scored against that class's own box with
        the pointing game and the energy-based pointing game
        (`kd.metrics.pair_pointing_game`). `result()` then has "Pointing
        game (pairs)" and "Energy pointing game (pairs)" per branch, and
        "num_pair_images". Independent of `update` (other images).

        Args:
            images: float (batch, height, width, channels), the model's
                inputs, e.g. `info.load_pairs()` batches of
                `kd.datasets.cluttered_mnist`.
            labels: int (batch, K), K >= 2 distinct classes per image.
            boxes: int (batch, K, 4): the box of each class's object,
                x0, y0, x1, y1 in image pixels, inclusive corners.

        Raises:
            ValueError: (Keras template) for bad images, labels or boxes;
                nothing is changed then.
        """
        images = fidelity._check_images(images)
        batch, height, width = images.shape[:3]
        labels, boxes = pointing_game._check_pairs(
            labels, boxes, batch, height, width, self._num_classes
        )
        if self._pair_labels and labels.shape[1] != self._pair_labels[0].shape[1]:
            raise invalid(
                "labels",
                f"{self._pair_labels[0].shape[1]} classes per image, as in "
                "earlier batches",
                labels,
            )
        for method in self.methods:
            for branch in self.branches:
                _, terms = pointing_game.pair_pointing_game(
                    self.cams[method],
                    images,
                    labels,
                    boxes,
                    branch=branch,
                    return_per_image=True,
                )
                for name, values in terms.items():
                    self._pair_terms[method, branch][name].append(values)
        self._pair_labels.append(labels)

    def result(self, intervals=False, *, level=0.95, num_resamples=1000, seed=0):
        """The metrics over every batch since the last reset.

        Args:
            intervals: also give bootstrap confidence intervals (needs
                `keep_outcomes`): the images are resampled with replacement
                `num_resamples` times (the same resamples for every metric,
                method and branch; the pairs test resamples its own
                images) and each metric is recomputed exactly from the
                per-image outcomes (`kd.metrics.bootstrap_interval`).
            level: the intervals' coverage, default 0.95.
            num_resamples: bootstrap resamples, default 1000.
            seed: the resamples' seed, default 0 (the same intervals every
                run).

        Returns:
            The structure training/evaluate.py writes to results.json (less
            its "dataset" name): `{"num_images": int, "top1_cls": {branch:
            float}, "methods": {method: {branch: {metric: float}}}}`. Each
            entry has "Top-1 Loc", "GT-known Loc", "MaxBoxAccV2", "Pointing
            game", "Energy pointing game" if boxes were given, "PxAP" if
            masks were given, then "Average Drop", "Increase in
            Confidence", "Average Gain", the keys of the `causal_metrics`
            ("ROAD MoRF", "ROAD LeRF", "ROAD combined", "Deletion AUC",
            "Insertion AUC"), and after `update_pairs` "Pointing game
            (pairs)" and "Energy pointing game (pairs)" (with a top-level
            "num_pair_images"). Percentages in [0, 100], except ROAD
            (confidence differences in [-1, 1]) and the AUCs ([0, 1]); NaN
            before the first update.

            With `intervals`, each entry also has "<metric> CI": [low, high]
            after each metric, the top level "top1_cls CI": {branch: [low,
            high]}, and with both branches each method has "delta":
            {metric: {"value": sigmoid - softmax, "CI": [low, high]}}, the
            paired-bootstrap interval of the difference (the same resampled
            images for both branches): a difference whose interval excludes
            0 is significant at 1 - level.

        Raises:
            ValueError: for `intervals` without `keep_outcomes`, or a bad
                `level`, `num_resamples` or `seed`.
        """
        intervals = check_bool(intervals, "intervals")
        results = {
            "num_images": self._num_images,
            "top1_cls": {
                branch: _percent(self._correct[branch]) for branch in self.branches
            },
            "methods": {},
        }
        if self._pair_labels:
            results["num_pair_images"] = int(sum(len(x) for x in self._pair_labels))
        for method in self.methods:
            results["methods"][method] = {
                branch: self._entry((method, branch)) for branch in self.branches
            }
        if not intervals:
            return results
        if not self.keep_outcomes:
            raise invalid(
                "intervals",
                "False when the evaluation does not keep outcomes "
                "(CAMEvaluation(..., keep_outcomes=True) is needed for intervals)",
                intervals,
            )
        return _intervals.with_intervals(
            results,
            self.outcomes,
            level=level,
            num_resamples=num_resamples,
            seed=seed,
        )

    def _entry(self, key):
        """One (method, branch) entry of `result()`."""
        entry = {}
        terms = self._terms[key]
        if self._given["boxes"]:
            boxes = self.box_evaluators[key].result()
            entry.update({k: float(boxes[k]) for k in BOX_METRICS})
            entry.update({k: _percent(terms[k]) for k in POINTING_METRICS})
        if self._given["masks"]:
            entry["PxAP"] = float(self.mask_evaluators[key].result()["PxAP"])
        for name in self._metric_names():
            scale = _intervals.SCALES.get(name, 100.0)
            entry[name] = _percent(terms[name], scale)
        if self._pair_labels:
            entry.update({k: _percent(self._pair_terms[key][k]) for k in PAIR_METRICS})
        return entry

    def _config(self):
        """The configuration part of `state()`: merged states must agree."""
        return {
            "config/methods": np.array(self.methods),
            "config/branches": np.array(self.branches),
            "config/confidence": np.array(self.confidence),
            "config/causal_metrics": np.array(self.causal_metrics, dtype=str),
            "config/fidelity_metrics": np.array(self.fidelity_metrics),
        }

    def state(self):
        """Everything accumulated since the last reset, as plain arrays.

        Integer counts and per-image outcomes only (the maps are never
        kept), so that states of consecutive parts of a data set merge into
        exactly the state of one run over it (`merge`).

        Returns:
            dict of NumPy arrays: "config/methods", "config/branches",
            "config/confidence", "config/causal_metrics" (str),
            "config/fidelity_metrics" (bool); "num_images",
            "num_batches"; "given_boxes", "given_masks" (int8: -1 before the
            first update); "labels", "predicted", "top1_cls/<branch>" (N,);
            per (method, branch) "terms/<m>/<b>/<metric>" (N,) per-image
            terms, "box/<m>/<b>/..." and "mask/<m>/<b>/..." the
            `BoxEvaluator` / `MaskEvaluator` states; "pair_labels" (P, K)
            and "pair_terms/<m>/<b>/<metric>" (P, K).
        """
        out = {
            **self._config(),
            "num_images": np.array(self._num_images, np.int64),
            "num_batches": np.array(self._num_batches, np.int64),
            "given_boxes": _state.encode_flag(self._given["boxes"]),
            "given_masks": _state.encode_flag(self._given["masks"]),
            "labels": _state.concatenated(self._labels, np.zeros(0, np.int64)),
            "predicted": _state.concatenated(self._predicted, np.zeros(0, np.int64)),
            "pair_labels": _state.concatenated(
                self._pair_labels, np.zeros((0, 2), np.int64)
            ),
        }
        for branch in self.branches:
            out[f"top1_cls/{branch}"] = _state.concatenated(
                self._correct[branch], np.zeros(0, bool)
            )
        for key in self._keys():
            suffix = "{}/{}/".format(*key)
            out.update(
                _state.prefixed(self.box_evaluators[key].state(), "box/" + suffix)
            )
            out.update(
                _state.prefixed(self.mask_evaluators[key].state(), "mask/" + suffix)
            )
            for group, terms in (
                ("terms/", self._terms[key]),
                ("pair_terms/", self._pair_terms[key]),
            ):
                for name, values in terms.items():
                    out[group + suffix + name] = _state.concatenated(
                        values, np.zeros(0)
                    )
        return out

    def load_state(self, state):
        """Replaces what was accumulated by a saved state; returns self.

        Args:
            state: a `state()` dict, another CAMEvaluation, or the path of
                a file written by `save`.

        Raises:
            ValueError: for a state of an evaluation with other methods,
                branches, confidence, causal metrics or evaluator options.
        """
        self.reset()
        return self.merge(state)

    def merge(self, others):
        """Adds the images of other evaluations (or states); returns self.

        Box and mask counts are summed (integers: exact), per-image
        outcomes appended after this evaluation's in the given order:
        merging the evaluations of consecutive parts of a data set, in
        order, gives the `result()` (intervals included) and `outcomes()`
        of one evaluation over the whole set, bit for bit (with a ROAD
        seed, give each part the `batch_offset` of its first batch).

        Args:
            others: a CAMEvaluation, a `state()` dict or a `save` path, or
                a list of them.

        Raises:
            ValueError: for states of another configuration, or when some
                had boxes (masks) and others did not.
        """
        config = self._config()
        for other in _state.many(others):
            theirs = _state.read(other, "others")
            _state.check_same(config, theirs, list(config), "others")
            for name in ("boxes", "masks"):
                self._given[name] = _state.combine_flags(
                    self._given[name], _state.decode_flag(theirs["given_" + name]), name
                )
            self._num_images += int(theirs["num_images"])
            self._num_batches += int(theirs["num_batches"])
            self._labels.extend(_state.parts(theirs["labels"]))
            self._predicted.extend(_state.parts(theirs["predicted"]))
            self._pair_labels.extend(_state.parts(theirs["pair_labels"]))
            for branch in self.branches:
                self._correct[branch].extend(_state.parts(theirs[f"top1_cls/{branch}"]))
            for key in self._keys():
                suffix = "{}/{}/".format(*key)
                self.box_evaluators[key].merge(
                    _state.unprefixed(theirs, "box/" + suffix)
                )
                self.mask_evaluators[key].merge(
                    _state.unprefixed(theirs, "mask/" + suffix)
                )
                for group, terms in (
                    ("terms/", self._terms[key]),
                    ("pair_terms/", self._pair_terms[key]),
                ):
                    for name, values in terms.items():
                        values.extend(_state.parts(theirs[group + suffix + name]))
        return self

    def outcomes(self, methods=None):
        """Every image's outcome of every metric, as plain arrays.

        Args:
            methods: None (every method), or the methods whose per-image
                arrays are given (the other keys are always there); the
                intervals read one method at a time, so that only one
                method's unpacked outcomes are in memory at once.

        Keys ("<m>/<b>" stands for "methods/<method>/<branch>"):

        - "labels", "predicted": int64 (N,) labels and the softmax head's
          prediction k*; "top1_cls/<branch>": bool (N,) argmax == label.
        - "<m>/<b>/Average Drop": float64 (N,) `max(0, Y - O) / Y`;
          "<m>/<b>/Increase in Confidence": bool (N,) `O > Y`;
          "<m>/<b>/Average Gain": float64 (N,) `max(0, O - Y) / (1 - Y)`;
          the causal metrics' per-image scores under their result keys.
          Each metric is 100 times the mean (ROAD and the AUCs: the mean).
        - With boxes: "cam_thresholds" (T,), "iou_thresholds" (D,),
          "<m>/<b>/BoxAcc@d" bool (N, T) per IoU threshold d and
          "<m>/<b>/BoxAcc" (largest contour, IoU 0.5) as
          `BoxEvaluator.outcomes`; "<m>/<b>/GT-known Loc", "<m>/<b>/Top-1
          Loc", "<m>/<b>/Pointing game" bool (N,), "<m>/<b>/Energy
          pointing game" float64 (N,) in [0, 1]. MaxBoxAccV2 is the mean
          over d of `100 * max_t mean_n BoxAcc@d`.
        - With masks: "pxap_bin_edges" and "<m>/<b>/PxAP histograms" (N, 2,
          bins), as `MaskEvaluator.outcomes`: PxAP is
          `kd.metrics.pxap(histograms.sum(axis=0))`.
        - After `update_pairs`: "pair_labels" int64 (P, K), "<m>/<b>/Pointing
          game (pairs)" bool (P, K) and "<m>/<b>/Energy pointing game
          (pairs)" float64 (P, K).

        Returns:
            dict of NumPy arrays (what `save_outcomes` writes).

        Raises:
            ValueError: when the evaluation does not keep outcomes.
        """
        if not self.keep_outcomes:
            raise invalid(
                "keep_outcomes",
                "True (CAMEvaluation(..., keep_outcomes=True)) to read outcomes()",
                self.keep_outcomes,
            )
        out = {
            "labels": _concatenate(self._labels, np.int64),
            "predicted": _concatenate(self._predicted, np.int64),
        }
        for branch in self.branches:
            out[f"top1_cls/{branch}"] = _concatenate(self._correct[branch], bool)
        for key in self._keys():
            if methods is not None and key[0] not in methods:
                continue
            prefix = "methods/{}/{}/".format(*key)
            names = list(self._metric_names())
            if self._given["boxes"]:
                names += list(POINTING_METRICS)
                box = self.box_evaluators[key].outcomes()
                out["cam_thresholds"] = box.pop("cam_thresholds")
                out["iou_thresholds"] = np.array(
                    self.box_evaluators[key].iou_thresholds, np.float64
                )
                out.update({prefix + name: values for name, values in box.items()})
            if self._given["masks"]:
                mask = self.mask_evaluators[key].outcomes()
                out["pxap_bin_edges"] = mask["bin_edges"]
                out[prefix + "PxAP histograms"] = mask["histograms"]
            for name in names:
                out[prefix + name] = _concatenate(self._terms[key][name], np.float64)
            if self._pair_labels:
                for name in PAIR_METRICS:
                    out[prefix + name] = np.concatenate(self._pair_terms[key][name])
        if self._pair_labels:
            out["pair_labels"] = np.concatenate(self._pair_labels)
        return out

    def save_outcomes(self, path):
        """Writes `outcomes()` to a compressed NumPy archive (.npz).

        `np.load(path)` reads it back, one array per key of `outcomes()`;
        `kd.metrics.bootstrap_interval` and `paired_bootstrap_interval` take
        those arrays.

        Args:
            path: the file to write (".npz" is added when the name lacks
                it, as np.savez_compressed does).

        Raises:
            ValueError: when the evaluation does not keep outcomes.
        """
        path = os.fspath(path)
        if not path.endswith(".npz"):
            path += ".npz"
        # One method's arrays at a time (the archive format of np.savez):
        # memory holds one method's unpacked outcomes, not every method's.
        groups = [(), *[(method,) for method in self.methods]]
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, allowZip64=True) as zf:
            written = set()
            for methods in groups:
                for key, array in self.outcomes(methods=methods).items():
                    if key in written:
                        continue
                    written.add(key)
                    with zf.open(key + ".npy", "w", force_zip64=True) as f:
                        np.lib.format.write_array(
                            f, np.asanyarray(array), allow_pickle=False
                        )


def _concatenate(parts, dtype):
    """The per-batch arrays as one; bools stay bools."""
    if not parts:
        return np.zeros((0,), dtype)
    array = np.concatenate(parts)
    return array if array.dtype == bool else array.astype(dtype)


def _percent(parts, scale=100.0):
    """`scale` * the mean of the concatenated per-batch arrays; NaN when empty."""
    if not parts:
        return float("nan")
    return float(scale * np.concatenate(parts).mean())
