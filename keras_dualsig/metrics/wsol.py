"""WSOL evaluators: box accuracies (MaxBoxAcc, MaxBoxAccV2, Loc) and PxAP.

The protocol is the one of clovaai/wsolevaluation (Choe et al., "Evaluating
Weakly Supervised Object Localization Methods Right", CVPR 2020), used by
Oh & Noh, "Beyond Softmax: Dual-Branch Sigmoid Architecture for Accurate Class
Activation Maps", BMVC 2025 (arXiv:2511.05590) for their WSOL tables;
docs/method.md, section "WSOL metrics", states its conventions.
"""

import os
from concurrent import futures

import numpy as np

from keras_dualsig._errors import (
    as_array,
    check_bool,
    check_choice,
    check_fraction,
    check_positive_int,
    describe,
    invalid,
)
from keras_dualsig.metrics import _box_ops, _checks, _state

# wsolevaluation's curve: 0.000, 0.001, ..., in steps of 0.001, plus 1.000
# (1001 values, docs/method.md, section "CAM thresholds"); the first 1000 are
# bit-identical to wsolevaluation's `np.arange(0, 1, 0.001)`.
_DEFAULT_THRESHOLDS = np.arange(0, 1.001, 0.001)
_GT_BOX_MODES = ("any", "first")
# MaxBoxAcc (v1) and GT-known Loc use IoU >= 0.5 (wsolevaluation's
# `_IOU_THRESHOLD`), whatever `iou_thresholds` is.
_V1_IOU = 50


def _default_thresholds():
    return _DEFAULT_THRESHOLDS.copy()


def available_cores():
    """The CPU cores this process may run on (its affinity mask)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _check_num_workers(num_workers):
    if num_workers is None:
        return available_cores()
    return check_positive_int(num_workers, "num_workers")


def _check_iou_thresholds(iou_thresholds):
    expected = "a non-empty sequence of distinct IoU thresholds in percent, in (0, 100]"
    array = as_array(iou_thresholds, "iou_thresholds")
    if (
        array.ndim != 1
        or array.size == 0
        or array.dtype == bool
        or not np.issubdtype(array.dtype, np.number)
        or np.isnan(array).any()
        or array.min() <= 0
        or array.max() > 100
        or np.unique(array).size != array.size
    ):
        # Duplicates would weigh one threshold twice in MaxBoxAccV2 and share
        # one "MaxBoxAcc@d" key.
        raise invalid("iou_thresholds", expected, iou_thresholds)
    # Integral percentages stay ints so that the result keys read "@50".
    return tuple(int(d) if float(d).is_integer() else float(d) for d in array)


def _check_gt_boxes(gt_boxes, batch, height, width, argument="gt_boxes"):
    """Validates a batch of ground-truth boxes; returns a list of int64 (n, 4).

    Boxes are accepted exactly as wsolevaluation makes them (docs/method.md,
    section "Ground-truth boxes"): integer corners with 0 <= x0 <= x1 <= width
    and 0 <= y0 <= y1 <= height. Its `int()` rescaling puts a box that touches
    the image border at x1 = width (one past the last pixel); such boxes are
    scored as they are, never clipped.
    """
    if isinstance(gt_boxes, np.ndarray) and gt_boxes.ndim >= 2:
        gt_boxes = list(gt_boxes)
    if not isinstance(gt_boxes, list | tuple):
        try:
            gt_boxes = list(gt_boxes)
        except TypeError as err:
            raise invalid(
                argument,
                "a list with one int array (n_i, 4) of boxes per score map",
                gt_boxes,
            ) from err
    _checks.check_batch_size(len(gt_boxes), batch, argument)
    expected = (
        "a list with one array (n_i, 4) of boxes x0, y0, x1, y1 per score map, "
        "n_i >= 1, integer pixel coordinates with 0 <= x0 <= x1 <= "
        f"{width} and 0 <= y0 <= y1 <= {height} (the {height}x{width} map; "
        "x1 = width or y1 = height is the edge of a box touching the border)"
    )
    checked = []
    for index, image_boxes in enumerate(gt_boxes):
        array = as_array(image_boxes, argument)
        if array.ndim == 1 and array.size == 4:
            array = array[None]
        received = f"{describe(array)} at index {index}"
        if (
            array.ndim != 2
            or array.shape[0] == 0
            or array.shape[1] != 4
            or array.dtype == bool
            or not np.issubdtype(array.dtype, np.number)
            or not np.isfinite(array).all()
            or not np.array_equal(array, np.floor(array))
        ):
            raise invalid(argument, expected, received=received)
        array = array.astype(np.int64)
        x0, y0, x1, y1 = array.T
        if (
            (x0 < 0).any()
            or (y0 < 0).any()
            or (x1 < x0).any()
            or (y1 < y0).any()
            or (x1 > width).any()
            or (y1 > height).any()
        ):
            received = f"{array.tolist()[:4]} at index {index}"
            if (array == -1).all(axis=1).any():
                received += (
                    " (rows of -1 are the padding of kd.datasets.load_wsol: "
                    "keep boxes[i, :num_boxes[i]], or give both to "
                    "kd.metrics.CAMEvaluation)"
                )
            raise invalid(argument, expected, received=received)
        checked.append(array)
    return checked


def _check_correct(correct, batch):
    if correct is None:
        return None
    array = as_array(correct, "correct")
    expected = f"a bool array of shape ({batch},) (one flag per score map)"
    if array.ndim != 1 or array.dtype.kind not in "biuf":
        raise invalid("correct", expected, array)
    _checks.check_batch_size(array.shape[0], batch, "correct")
    if not np.isin(array, (0, 1)).all():
        raise invalid("correct", expected, array)
    return array.astype(bool)


def _check_masks(masks, shape, argument):
    """Validates binary masks of the score maps' shape; returns bool arrays."""
    array = as_array(masks, argument)
    expected = f"a binary (0/1 or bool) array of shape {shape}, like `scoremaps`"
    if (
        array.shape != shape
        or array.dtype.kind not in "biuf"
        or not np.isin(array, (0, 1)).all()
    ):
        raise invalid(argument, expected, array)
    return array.astype(bool)


class BoxEvaluator(_state.Saveable):
    """Box accuracies of score maps against ground-truth boxes (WSOL).

    Reproduces clovaai/wsolevaluation (Choe et al., CVPR 2020), the protocol
    of the WSOL tables of Oh & Noh (BMVC 2025, arXiv:2511.05590); the
    conventions are in docs/method.md, section "WSOL metrics":

    - MaxBoxAcc@d: for each CAM threshold t, the % of images whose best IoU
      over (boxes at t) x (all GT boxes) is >= d / 100; the best t is taken.
      Boxes come from `cam_to_boxes` (every contour if `multi_contour`).
    - MaxBoxAccV2: the mean of MaxBoxAcc@d over `iou_thresholds` (30, 50, 70).
    - MaxBoxAcc (v1): the largest contour only, IoU >= 0.5, all GT boxes.
    - GT-known Loc: % of images whose largest-contour box at the fixed
      `loc_threshold` has IoU >= 0.5 with a GT box (see `gt_box_mode`).
    - Top-1 Loc: GT-known Loc and the classifier's prediction correct.

    wsolevaluation has no fixed-threshold Loc metrics; GT-known and Top-1 Loc
    are those of the authors' code (their evaluation.py, a modified copy).

    The numbers equal those of the straightforward algorithm (contours at
    every threshold) exactly, computed faster: a uint8 map has at most 256
    values, so thresholds whose cut `int(t * max(m))` leaves the same pixels
    share one `findContours` call, and the IoUs are vectorised in NumPy.

    Args:
        cam_thresholds: float (T,) thresholds in [0, 1], relative to each
            map's maximum; default 0.000, 0.001, ..., 1.000 (1001 values).
        iou_thresholds: IoU thresholds in percent for MaxBoxAcc@d and
            MaxBoxAccV2; default (30, 50, 70).
        loc_threshold: float in [0, 1], the fixed CAM threshold of GT-known
            and Top-1 Loc; default 0.2.
        gt_box_mode: which GT boxes GT-known Loc and Top-1 Loc match: "any"
            (default, the usual definition) the best-matching one; "first"
            only the first GT box of each image, as the code of Oh & Noh does
            (`iou_val[0]` in their evaluation.py). MaxBoxAcc@d, MaxBoxAccV2
            and MaxBoxAcc take the best GT box in both modes, as both
            wsolevaluation and the authors' code do (`multiple_iou.max(1)`).
            docs/method.md, section "GT-known Loc and Top-1 Loc".
        multi_contour: True (default, MaxBoxAccV2's protocol) lets every
            contour's box count for MaxBoxAcc@d and MaxBoxAccV2; False keeps
            the largest contour only. MaxBoxAcc (v1) and the Loc metrics
            always use the largest contour.
        keep_outcomes: also keep each image's outcomes (`outcomes()`): per
            IoU threshold and CAM threshold whether the image's box passed,
            and the Loc flags, as bits (about (D + 1) * T / 8 bytes per
            image: 504 bytes at the defaults), so that every metric can be
            recomputed, or bootstrapped, over any subset of the images.
        num_workers: threads scoring the maps of a batch in parallel
            (OpenCV and NumPy release the GIL for part of the work); None:
            the cores available to the process. Default 1: on the 2-core
            development machine 2 threads were slower (0.83x,
            benchmarks/wsol_speed.py), since about 40% of the work holds the
            GIL; try more on machines with many free cores. The results do
            not depend on it.

    The state (`state()`, counts and per-image outcomes as plain arrays) can
    be saved (`save`), loaded (`load`, `from_state`) and merged (`merge`):
    evaluators of shards of a data set, merged in the data set's order, give
    exactly, bit for bit, the results and outcomes of one evaluator over it.

    Raises:
        ValueError: for thresholds outside [0, 1], IoU thresholds outside
            (0, 100] or repeated, an unknown `gt_box_mode`, a
            `multi_contour` or `keep_outcomes` that is not a bool, or a
            `num_workers` that is not a positive int.

    Example:

    >>> import numpy as np
    >>> evaluator = BoxEvaluator()
    >>> maps = np.zeros((1, 8, 8), "float32")
    >>> maps[0, 2:4, 3:6] = 1.0
    >>> evaluator.update(maps, [np.array([[3, 2, 6, 4]])], correct=[True])
    >>> evaluator.result()["MaxBoxAccV2"]
    100.0
    """

    def __init__(
        self,
        cam_thresholds=None,
        iou_thresholds=(30, 50, 70),
        loc_threshold=0.2,
        gt_box_mode="any",
        multi_contour=True,
        keep_outcomes=False,
        num_workers=1,
    ):
        self.cam_thresholds = _checks.check_thresholds(
            cam_thresholds, "cam_thresholds", _default_thresholds()
        )
        self.keep_outcomes = check_bool(keep_outcomes, "keep_outcomes")
        self.num_workers = _check_num_workers(num_workers)
        self.iou_thresholds = _check_iou_thresholds(iou_thresholds)
        self.loc_threshold = check_fraction(loc_threshold, "loc_threshold")
        self.gt_box_mode = check_choice(gt_box_mode, "gt_box_mode", _GT_BOX_MODES)
        self.multi_contour = check_bool(multi_contour, "multi_contour")
        # wsolevaluation compares `iou >= d / 100` with a Python division.
        self._iou_fractions = np.array([d / 100 for d in self.iou_thresholds])
        self._v1_fraction = _V1_IOU / 100
        self.reset()

    def reset(self):
        """Forgets every score map seen so far."""
        num_thresholds = self.cam_thresholds.shape[0]
        self._count = 0
        self._num_correct = np.zeros(
            (len(self.iou_thresholds), num_thresholds), np.int64
        )
        self._num_correct_v1 = np.zeros(num_thresholds, np.int64)
        self._num_gt_known = 0
        self._num_top1 = 0
        # None until the first update; then whether `correct` was given.
        self._with_correct = None
        # With keep_outcomes, per batch: uint8 (B, D + 1, ceil(T / 8)) packed
        # pass bits (rows: iou_thresholds, then MaxBoxAcc's v1 row), and
        # bool (B, 2) GT-known, Top-1 Loc.
        self._bits = []
        self._loc = []

    def update(self, scoremaps, gt_boxes, correct=None):
        """Adds a batch of score maps and their ground truth.

        Args:
            scoremaps: float (batch, height, width) in [0, 1], e.g. CAMs at
                the evaluation size (224x224 in the paper). float32 and
                float64 are used as given (the uint8 conversion is done in
                the map's float type, as wsolevaluation does).
            gt_boxes: a list of `batch` int arrays (n_i, 4), n_i >= 1, of
                boxes x0, y0, x1, y1 in map pixels, inclusive corners, as
                wsolevaluation rescales them: 0 <= x0 <= x1 <= width and
                0 <= y0 <= y1 <= height (x1 = width for a box touching the
                border; not clipped).
            correct: optional bool (batch,), whether the classifier's top-1
                prediction is right; needed for "Top-1 Loc". Give it for
                every batch or for none.

        Raises:
            ValueError: for maps with NaN or values outside [0, 1], boxes
                with x1 < x0 or y1 < y0, negative or beyond the map's width
                or height, or batch sizes that differ between the arguments.
        """
        scoremaps = _checks.check_scoremaps(scoremaps)
        batch, height, width = scoremaps.shape
        gt_boxes = _check_gt_boxes(gt_boxes, batch, height, width)
        correct = _check_correct(correct, batch)
        with_correct = correct is not None
        if self._with_correct is not None and with_correct != self._with_correct:
            raise invalid(
                "correct",
                "a value for every batch or for none (earlier batches "
                + ("had" if self._with_correct else "did not have")
                + " one)",
                correct,
            )
        self._with_correct = with_correct
        bits, loc = [], []
        for index, (multi_iou, single_iou, loc_iou) in enumerate(
            self._map_images(scoremaps, gt_boxes)
        ):
            best = multi_iou if self.multi_contour else single_iou
            # (D, 1) vs (1, T) -> (D, T): one row per IoU threshold.
            passed = best[None, :] >= self._iou_fractions[:, None]
            passed_v1 = single_iou >= self._v1_fraction
            self._num_correct += passed
            self._num_correct_v1 += passed_v1
            gt_known = bool(loc_iou >= self._v1_fraction)
            top1 = with_correct and gt_known and bool(correct[index])
            self._num_gt_known += gt_known
            self._num_top1 += top1
            self._count += 1
            if self.keep_outcomes:
                bits.append(np.packbits(np.vstack([passed, passed_v1]), axis=1))
                loc.append((gt_known, top1))
        if self.keep_outcomes:
            self._bits.append(np.stack(bits))
            self._loc.append(np.array(loc, bool).reshape(batch, 2))

    def _map_images(self, scoremaps, gt_boxes):
        """`_best_ious` of every map, in order, on `num_workers` threads."""
        workers = min(self.num_workers, len(gt_boxes))
        if workers <= 1:
            return [
                self._best_ious(m, g) for m, g in zip(scoremaps, gt_boxes, strict=True)
            ]
        # Threads, not processes: findContours and the NumPy work release
        # the GIL, and the maps need no copying. `map` keeps the order.
        with futures.ThreadPoolExecutor(workers) as pool:
            return list(pool.map(self._best_ious, scoremaps, gt_boxes))

    def _best_ious(self, scoremap, gt):
        """Best IoU per CAM threshold for one map.

        Returns:
            (multi, single, loc): float64 (T,) best IoU over all contour boxes
            x all GT boxes and over the largest-contour box x all GT boxes at
            each threshold, and the largest-contour box's IoU at
            `loc_threshold` with the best GT box ("any") or the first one
            ("first").
        """
        image = _box_ops.to_uint8(scoremap)
        max_value = image.max()
        cuts = _box_ops.cut_levels(
            np.append(self.cam_thresholds, self.loc_threshold), max_value
        )  # (T + 1,): the last one is the Loc cut.
        # rank[v] = number of distinct map values <= v. Two cuts with the same
        # rank leave the same pixels above them, hence the same contours.
        rank = np.cumsum(np.bincount(image.ravel(), minlength=256) > 0)
        _, first, inverse = np.unique(
            rank[cuts], return_index=True, return_inverse=True
        )
        level_boxes, starts, largest = _box_ops.contour_boxes(image, cuts[first])
        # (N, 4) boxes of all levels x (G, 4) GT -> (N, G) -> best per box (N,)
        # -> best per level (K,).
        ious = _box_ops.iou_matrix(level_boxes, gt)
        box_iou = ious.max(axis=1)
        multi_t = np.maximum.reduceat(box_iou, starts)[inverse]
        single_t = box_iou[largest][inverse]
        loc_box = largest[inverse[-1]]
        loc_iou = ious[loc_box, 0] if self.gt_box_mode == "first" else box_iou[loc_box]
        return multi_t[:-1], single_t[:-1], loc_iou

    # Configuration keys of `state()`: states merge only when they agree.
    _CONFIG_KEYS = (
        "cam_thresholds",
        "iou_thresholds",
        "loc_threshold",
        "gt_box_mode",
        "multi_contour",
        "keep_outcomes",
    )

    def state(self):
        """Everything accumulated since the last reset, as plain arrays.

        Returns:
            dict: the configuration ("cam_thresholds" (T,), "iou_thresholds"
            (D,), "loc_threshold", "gt_box_mode", "multi_contour",
            "keep_outcomes"), the counts ("count", "num_correct" int64 (D,
            T), "num_correct_v1" int64 (T,), "num_gt_known", "num_top1",
            "with_correct" int8: -1 before any update, else whether
            `correct` was given), and the per-image outcomes ("bits" uint8
            (N, D + 1, ceil(T / 8)) packed pass bits, "loc" bool (N, 2); N =
            0 without `keep_outcomes`).
        """
        rows, num_bytes = (
            len(self.iou_thresholds) + 1,
            -(-self.cam_thresholds.size // 8),
        )
        return {
            "cam_thresholds": self.cam_thresholds.copy(),
            "iou_thresholds": np.array(self.iou_thresholds, np.float64),
            "loc_threshold": np.array(self.loc_threshold, np.float64),
            "gt_box_mode": np.array(self.gt_box_mode),
            "multi_contour": np.array(self.multi_contour),
            "keep_outcomes": np.array(self.keep_outcomes),
            "count": np.array(self._count, np.int64),
            "num_correct": self._num_correct.copy(),
            "num_correct_v1": self._num_correct_v1.copy(),
            "num_gt_known": np.array(self._num_gt_known, np.int64),
            "num_top1": np.array(self._num_top1, np.int64),
            "with_correct": _state.encode_flag(self._with_correct),
            "bits": _state.concatenated(
                self._bits, np.zeros((0, rows, num_bytes), np.uint8)
            ),
            "loc": _state.concatenated(self._loc, np.zeros((0, 2), bool)),
        }

    def load_state(self, state):
        """Replaces what was accumulated by a saved state; returns self.

        Args:
            state: a `state()` dict, another BoxEvaluator, or the path of a
                file written by `save`.

        Raises:
            ValueError: for a state of an evaluator with another
                configuration (thresholds, modes, keep_outcomes).
        """
        self.reset()
        return self.merge(state)

    @classmethod
    def from_state(cls, state, num_workers=1):
        """A new BoxEvaluator with the configuration and counts of `state`.

        Args:
            state: a `state()` dict, a BoxEvaluator or the path of a file
                written by `save`.
            num_workers: as in the constructor (not part of the state).
        """
        state = _state.read(state)
        iou = state["iou_thresholds"]
        evaluator = cls(
            cam_thresholds=state["cam_thresholds"],
            iou_thresholds=tuple(iou.tolist()),
            loc_threshold=float(state["loc_threshold"]),
            gt_box_mode=str(state["gt_box_mode"]),
            multi_contour=bool(state["multi_contour"]),
            keep_outcomes=bool(state["keep_outcomes"]),
            num_workers=num_workers,
        )
        return evaluator.load_state(state)

    def merge(self, others):
        """Adds the images of other evaluators (or their states); returns self.

        Counts are summed (exactly: integers), per-image outcomes appended
        after this evaluator's in the given order. Merging the evaluators of
        consecutive parts of a data set, in order, gives the results and
        outcomes of one evaluator over the whole set, bit for bit.

        Args:
            others: a BoxEvaluator, a `state()` dict or a `save` path, or a
                list of them.

        Raises:
            ValueError: for states of another configuration, or when some
                gave `correct` and others did not.
        """
        mine = self.state()
        for other in _state.many(others):
            theirs = _state.read(other, "others")
            _state.check_same(mine, theirs, self._CONFIG_KEYS, "others")
            self._with_correct = _state.combine_flags(
                self._with_correct,
                _state.decode_flag(theirs["with_correct"]),
                "correct",
            )
            self._count += int(theirs["count"])
            self._num_correct += theirs["num_correct"].astype(np.int64)
            self._num_correct_v1 += theirs["num_correct_v1"].astype(np.int64)
            self._num_gt_known += int(theirs["num_gt_known"])
            self._num_top1 += int(theirs["num_top1"])
            self._bits.extend(_state.parts(theirs["bits"]))
            self._loc.extend(_state.parts(theirs["loc"]))
        return self

    def outcomes(self):
        """Each image's outcomes (needs `keep_outcomes=True`).

        Every metric of `result()` follows from these arrays: MaxBoxAcc@d is
        `100 * max over t of mean over images of outcomes["BoxAcc@d"]`,
        MaxBoxAccV2 the mean of those over d, MaxBoxAcc the same on
        "BoxAcc", GT-known Loc and Top-1 Loc `100 * mean`.

        Returns:
            dict: "cam_thresholds" float64 (T,); for each d in
            `iou_thresholds` "BoxAcc@d" bool (N, T): whether image n's best
            box at threshold t reached IoU d / 100; "BoxAcc" bool (N, T):
            the same for the largest contour at IoU 0.5 (MaxBoxAcc);
            "GT-known Loc" and "Top-1 Loc" bool (N,) (Top-1 Loc all False
            when `correct` was never given). N = images seen since the last
            reset, in order.

        Raises:
            ValueError: when the evaluator does not keep outcomes.
        """
        if not self.keep_outcomes:
            raise invalid(
                "keep_outcomes",
                "True (set when the BoxEvaluator is built) to read outcomes()",
                self.keep_outcomes,
            )
        num_thresholds = self.cam_thresholds.shape[0]
        rows = len(self.iou_thresholds) + 1
        if self._bits:
            bits = np.concatenate(self._bits)
            loc = np.concatenate(self._loc)
        else:
            bits = np.zeros((0, rows, -(-num_thresholds // 8)), np.uint8)
            loc = np.zeros((0, 2), bool)
        passed = np.unpackbits(bits, axis=2, count=num_thresholds).astype(bool)
        outcomes = {"cam_thresholds": self.cam_thresholds.copy()}
        for row, d in enumerate(self.iou_thresholds):
            outcomes[f"BoxAcc@{d}"] = passed[:, row]
        outcomes["BoxAcc"] = passed[:, -1]
        outcomes["GT-known Loc"] = loc[:, 0]
        outcomes["Top-1 Loc"] = loc[:, 1]
        return outcomes

    def accuracy_curves(self):
        """Box accuracy at every CAM threshold, for plots and the best t.

        Returns:
            dict: "cam_thresholds" float64 (T,), and for each d in
            `iou_thresholds` "BoxAcc@d" float64 (T,) in percent, plus
            "BoxAcc" (largest contour, IoU 50) float64 (T,) in percent.
            All NaN before any update.
        """
        curves = {"cam_thresholds": self.cam_thresholds.copy()}
        count = float(self._count) if self._count else np.nan
        for row, d in enumerate(self.iou_thresholds):
            curves[f"BoxAcc@{d}"] = self._num_correct[row] * 100.0 / count
        curves["BoxAcc"] = self._num_correct_v1 * 100.0 / count
        return curves

    def result(self):
        """The metrics over every score map seen since the last reset.

        Returns:
            dict of floats in percent [0, 100], keys "MaxBoxAccV2",
            "MaxBoxAcc@d" for each d in `iou_thresholds` (default @30, @50,
            @70), "MaxBoxAcc", "GT-known Loc", "Top-1 Loc". "Top-1 Loc" is
            NaN when `correct` was never given; every value is NaN before the
            first update.
        """
        curves = self.accuracy_curves()
        best = [float(np.max(curves[f"BoxAcc@{d}"])) for d in self.iou_thresholds]
        count = float(self._count) if self._count else np.nan
        results = {"MaxBoxAccV2": float(np.mean(best))}
        for d, value in zip(self.iou_thresholds, best, strict=True):
            results[f"MaxBoxAcc@{d}"] = value
        results["MaxBoxAcc"] = float(np.max(curves["BoxAcc"]))
        results["GT-known Loc"] = self._num_gt_known * 100.0 / count
        results["Top-1 Loc"] = (
            self._num_top1 * 100.0 / count if self._with_correct else float("nan")
        )
        return results


class MaskEvaluator(_state.Saveable):
    """Pixel average precision (PxAP) of score maps against masks.

    Reproduces wsolevaluation's MaskEvaluator (Choe et al., CVPR 2020), the
    PxAP of Oh & Noh (BMVC 2025) on OpenImages-30K (docs/method.md, section
    "PxAP"): histograms of map values
    over foreground and background pixels are accumulated over the data set,
    then precision and recall at every threshold t ("value >= t") give
    `PxAP = 100 * sum_i precision_i * (recall_i - recall_{i-1})`.

    Bin edges are the thresholds plus 0, 1, 2, 3 (as wsolevaluation's
    `threshold_list_right_edge`): with the default thresholds they are
    exactly wsolevaluation's 0.000, 0.001, ..., 0.999, 1, 2, 3. The extra 0
    makes every pixel count in the recall even for thresholds that start
    above 0.

    Args:
        cam_thresholds: float (T,) thresholds in [0, 1]; default 0.000,
            0.001, ..., 1.000. Order and duplicates do not matter.
        keep_outcomes: also keep each image's two histograms
            (`outcomes()`), so that PxAP can be recomputed, or bootstrapped,
            over any subset of the images: 2 * (T + 3) counts per image
            (uint16 for maps of at most 65,535 pixels, else uint32; 4 KB per
            image at the default thresholds).

    Like `BoxEvaluator`, its state (integer histograms) can be saved,
    loaded and merged exactly (`state`, `save`, `load`, `merge`).

    Raises:
        ValueError: for thresholds outside [0, 1], or a `keep_outcomes`
            that is not a bool.

    Example:

    >>> import numpy as np
    >>> evaluator = MaskEvaluator()
    >>> maps = np.array([[[0.9, 0.1]]], "float32")
    >>> evaluator.update(maps, np.array([[[1, 0]]]))
    >>> evaluator.result()
    {'PxAP': 100.0}
    """

    def __init__(self, cam_thresholds=None, keep_outcomes=False):
        self.cam_thresholds = _checks.check_thresholds(
            cam_thresholds, "cam_thresholds", _default_thresholds()
        )
        self.keep_outcomes = check_bool(keep_outcomes, "keep_outcomes")
        self._edges = np.unique(
            np.concatenate([[0.0], self.cam_thresholds, [1.0, 2.0, 3.0]])
        )
        self.reset()

    def reset(self):
        """Forgets every score map seen so far."""
        self._true_hist = np.zeros(self._edges.shape[0] - 1, np.int64)
        self._false_hist = np.zeros(self._edges.shape[0] - 1, np.int64)
        # With keep_outcomes, per batch: (B, 2, bins) foreground, background.
        self._histograms = []

    def update(self, scoremaps, gt_masks, ignore_masks=None):
        """Adds a batch of score maps and their ground-truth masks.

        Args:
            scoremaps: float (batch, height, width) in [0, 1].
            gt_masks: binary (batch, height, width), 1 on the object.
            ignore_masks: optional binary (batch, height, width), 1 where
                pixels are left out (OpenImages' ignore boxes). Foreground
                wins: as in wsolevaluation, only `ignore & ~gt` is left out.

        Raises:
            ValueError: for maps with NaN or values outside [0, 1], or masks
                that are not binary or not of the maps' shape.
        """
        scoremaps = _checks.check_scoremaps(scoremaps)
        gt_masks = _check_masks(gt_masks, scoremaps.shape, "gt_masks")
        if ignore_masks is None:
            background = ~gt_masks
        else:
            ignore = _check_masks(ignore_masks, scoremaps.shape, "ignore_masks")
            background = ~gt_masks & ~ignore
        if self.keep_outcomes:
            histograms = self._image_histograms(scoremaps, gt_masks, background)
            self._histograms.append(histograms)
            self._true_hist += histograms[:, 0].sum(axis=0, dtype=np.int64)
            self._false_hist += histograms[:, 1].sum(axis=0, dtype=np.int64)
            return
        self._true_hist += np.histogram(scoremaps[gt_masks], bins=self._edges)[0]
        self._false_hist += np.histogram(scoremaps[background], bins=self._edges)[0]

    def _image_histograms(self, scoremaps, gt_masks, background):
        """(B, 2, bins) per-image histograms of foreground / background values.

        The bins of `np.histogram(values, bins=edges)`: value v falls in bin
        i when edges[i] <= v < edges[i + 1] (the edges run to 3, so the
        closed last bin of np.histogram never matters for values <= 1).
        """
        batch = scoremaps.shape[0]
        num_bins = self._edges.shape[0] - 1
        pixels = scoremaps[0].size
        dtype = np.uint16 if pixels <= np.iinfo(np.uint16).max else np.uint32
        bins = (
            np.searchsorted(self._edges, scoremaps.reshape(batch, -1), side="right") - 1
        )
        histograms = np.zeros((batch, 2, num_bins), dtype)
        for slot, where in enumerate((gt_masks, background)):
            where = where.reshape(batch, -1)
            image = np.broadcast_to(np.arange(batch)[:, None], where.shape)[where]
            counts = np.bincount(
                image * num_bins + bins[where], minlength=batch * num_bins
            )
            histograms[:, slot] = counts.reshape(batch, num_bins)
        return histograms

    _CONFIG_KEYS = ("cam_thresholds", "keep_outcomes")

    def state(self):
        """Everything accumulated since the last reset, as plain arrays.

        Returns:
            dict: "cam_thresholds" (T,), "keep_outcomes", the summed
            histograms "true_hist" and "false_hist" int64 (bins,), and the
            per-image "histograms" (N, 2, bins) (N = 0 without
            `keep_outcomes`).
        """
        num_bins = self._edges.shape[0] - 1
        return {
            "cam_thresholds": self.cam_thresholds.copy(),
            "keep_outcomes": np.array(self.keep_outcomes),
            "true_hist": self._true_hist.copy(),
            "false_hist": self._false_hist.copy(),
            "histograms": _state.concatenated(
                self._histograms, np.zeros((0, 2, num_bins), np.uint32)
            ),
        }

    def load_state(self, state):
        """Replaces what was accumulated by a saved state; returns self.

        Args:
            state: a `state()` dict, another MaskEvaluator, or the path of
                a file written by `save`.

        Raises:
            ValueError: for a state with other thresholds or keep_outcomes.
        """
        self.reset()
        return self.merge(state)

    @classmethod
    def from_state(cls, state):
        """A new MaskEvaluator with the configuration and counts of `state`."""
        state = _state.read(state)
        evaluator = cls(
            cam_thresholds=state["cam_thresholds"],
            keep_outcomes=bool(state["keep_outcomes"]),
        )
        return evaluator.load_state(state)

    def merge(self, others):
        """Adds the pixels of other evaluators (or their states); returns self.

        Histograms are integer counts and add up exactly; per-image
        histograms are appended in the given order.

        Args:
            others: a MaskEvaluator, a `state()` dict or a `save` path, or a
                list of them.

        Raises:
            ValueError: for states with other thresholds or keep_outcomes.
        """
        mine = self.state()
        for other in _state.many(others):
            theirs = _state.read(other, "others")
            _state.check_same(mine, theirs, self._CONFIG_KEYS, "others")
            self._true_hist += theirs["true_hist"].astype(np.int64)
            self._false_hist += theirs["false_hist"].astype(np.int64)
            self._histograms.extend(_state.parts(theirs["histograms"]))
        return self

    def outcomes(self):
        """Each image's histograms (needs `keep_outcomes=True`).

        PxAP is `kd.metrics.pxap(histograms.sum(axis=0))`: the per-image
        histograms summed over any set of images give that set's PxAP.

        Returns:
            dict: "bin_edges" float64 (bins + 1,); "histograms" uint16 or
            uint32 (N, 2, bins): per image, the counts of foreground ([:, 0])
            and background ([:, 1], ignore regions left out) pixel values in
            each bin. N = images seen since the last reset, in order.

        Raises:
            ValueError: when the evaluator does not keep outcomes.
        """
        if not self.keep_outcomes:
            raise invalid(
                "keep_outcomes",
                "True (set when the MaskEvaluator is built) to read outcomes()",
                self.keep_outcomes,
            )
        num_bins = self._edges.shape[0] - 1
        histograms = (
            np.concatenate(self._histograms)
            if self._histograms
            else np.zeros((0, 2, num_bins), np.uint32)
        )
        return {"bin_edges": self._edges.copy(), "histograms": histograms}

    def result(self):
        """PxAP over every pixel seen since the last reset.

        Returns:
            {"PxAP": float in percent [0, 100]}; NaN when no foreground pixel
            has been seen (wsolevaluation raises instead).
        """
        histograms = np.stack([self._true_hist, self._false_hist])
        return {"PxAP": float(pxap(histograms))}


def pxap(histograms):
    """PxAP from foreground and background histograms, vectorised.

    wsolevaluation's computation (Choe et al., CVPR 2020): with the bins in
    descending order of value, tp and fp the cumulative counts of
    foreground and background pixels at or above each edge,
    precision = tp / (tp + fp), recall = tp / #foreground, and
    `PxAP = 100 * sum_i precision_i * (recall_i - recall_{i-1})` over the
    thresholds with a positive prediction.

    Args:
        histograms: counts (..., 2, bins): [..., 0, :] foreground,
            [..., 1, :] background, in the bins of `MaskEvaluator` (any
            counts or weighted counts, e.g. bootstrap resamples).

    Returns:
        float64 (...) in [0, 100]; NaN where there is no foreground.
    """
    histograms = np.asarray(histograms, np.float64)
    true, false = histograms[..., 0, :], histograms[..., 1, :]
    num_true = true.sum(axis=-1, keepdims=True)
    # Bins in descending order: tp[i] = #foreground >= the i-th edge from
    # the top (3, 2, 1, ..., 0): wsolevaluation's cumulative sums.
    tp = true[..., ::-1].cumsum(axis=-1)
    fp = false[..., ::-1].cumsum(axis=-1)
    predicted = tp + fp
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / predicted
        recall = tp / num_true
    # Thresholds with no positive prediction have no precision: skipped.
    terms = precision[..., 1:] * np.diff(recall, axis=-1)
    kept = predicted[..., 1:] != 0
    if terms.ndim == 1:
        # One pair of histograms: the sum of the kept terms alone, in
        # wsolevaluation's order (bit-identical to it).
        auc = terms[kept].sum()
    else:
        auc = np.where(kept, terms, 0.0).sum(axis=-1)
    return np.where(num_true[..., 0] > 0, auc * 100, np.nan)
