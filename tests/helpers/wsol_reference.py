"""The straightforward WSOL evaluation, the yardstick of `kd.metrics`.

An independent re-derivation of the box and mask evaluation of
clovaai/wsolevaluation (Choe et al., CVPR 2020, evaluation.py:
`resize_bbox`, `compute_bboxes_from_scoremaps`, `calculate_multiple_iou`,
`BoxEvaluator`, `MaskEvaluator`), with GT-known / Top-1 Loc as the code of
Oh & Noh (github finallyupper/beyond-softmax, evaluation.py) computes them.
It does the slow, obvious thing: one OpenCV `findContours` per CAM threshold
and image, nothing shared between thresholds, so that the library's fast
`BoxEvaluator` (at most one call per distinct uint8 level) can be checked
against it for exact equality. docs/method.md, section "WSOL metrics", states
the conventions in words.

Used by tests/metrics and benchmarks/wsol_speed.py (which puts tests/ on
sys.path); it imports no test framework.
"""

import cv2
import numpy as np

# wsolevaluation's curve, 0.000 ... 0.999, plus 1.000: the library's default.
THRESHOLDS = np.arange(0, 1.001, 0.001)


def resize_box(box, image_size, target_size):
    """A box in original pixels -> pixels of the resized image, as wsolevaluation.

    Each coordinate is `int(c * new / old)` in float64: truncated, never
    clipped, so a box that touches the right border of a W-pixel image
    (x1 = W) lands on x1 = target width, one past the last pixel.

    Args:
        box: (x0, y0, x1, y1) in original pixels.
        image_size: (width, height) of the original image.
        target_size: (width, height) of the score map.

    Returns:
        tuple of 4 ints.
    """
    old = [float(v) for v in image_size] * 2  # width, height, width, height
    new = [float(v) for v in target_size] * 2
    # c * new / old in this order (not c * (new / old)): the same float64
    # rounding, hence the same truncation, as wsolevaluation.
    return tuple(int(float(c) * n / o) for c, n, o in zip(box, new, old, strict=True))


def inclusive_iou(boxes_a, boxes_b):
    """IoU of every pair of (x0, y0, x1, y1) boxes, counting pixels inclusively.

    A box covers (x1 - x0 + 1) * (y1 - y0 + 1) pixels whatever the map size
    (GT boxes with x1 = width count a column past the map); a pair whose union
    is not positive has IoU 0.

    Returns:
        float64 (len(boxes_a), len(boxes_b)).
    """
    a = np.asarray(boxes_a, np.int64).reshape(-1, 1, 4)
    b = np.asarray(boxes_b, np.int64).reshape(1, -1, 4)

    def pixels(box):
        return (box[..., 2] - box[..., 0] + 1) * (box[..., 3] - box[..., 1] + 1)

    low = np.maximum(a[..., :2], b[..., :2])
    high = np.minimum(a[..., 2:], b[..., 2:])
    overlap = np.prod(np.clip(high - low + 1, 0, None), axis=-1)
    union = pixels(a) + pixels(b) - overlap
    return np.divide(
        overlap, union, out=np.zeros(union.shape, np.float64), where=union > 0
    )


def threshold_boxes(scoremap, threshold):
    """Every contour's box and the largest contour's box at one CAM threshold.

    The map becomes `levels = (s * 255).astype(uint8)` (in the map's own float
    type), the mask is `levels > int(threshold * max(levels))`, and each
    contour of `findContours(RETR_TREE, CHAIN_APPROX_SIMPLE)` gives
    `(x, y, min(x + w, W - 1), min(y + h, H - 1))` from its `boundingRect`.
    No contour gives the single box (0, 0, 0, 0).

    Returns:
        (boxes, largest): a list of (x0, y0, x1, y1) tuples in OpenCV's
        contour order, and the box of the first contour of largest
        `cv2.contourArea`.
    """
    height, width = scoremap.shape
    levels = (scoremap * 255).astype(np.uint8)
    cut = int(threshold * np.max(levels))
    mask = np.where(levels > cut, 255, 0).astype(np.uint8)
    contours = cv2.findContours(mask, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE)[0]
    if len(contours) == 0:
        return [(0, 0, 0, 0)], (0, 0, 0, 0)
    boxes = []
    for contour in contours:
        x, y, w, h = cv2.boundingRect(contour)
        boxes.append((x, y, min(x + w, width - 1), min(y + h, height - 1)))
    areas = [cv2.contourArea(contour) for contour in contours]
    return boxes, boxes[int(np.argmax(areas))]  # argmax: the first maximum.


class ReferenceBoxEvaluator:
    """Box accuracies the slow way, with `kd.metrics.BoxEvaluator`'s options.

    - MaxBoxAcc@d (and their mean, MaxBoxAccV2): best IoU over (boxes at t) x
      (all GT boxes) >= d / 100, best t; every contour if `multi_contour`.
    - MaxBoxAcc: largest contour, all GT boxes, IoU >= 0.5, best t.
    - GT-known Loc: the largest contour's box at `loc_threshold` has IoU >=
      0.5 with the best GT box ("any") or with the first one ("first", the
      authors' `iou_val[0]`); Top-1 Loc also needs `correct`.

    Example:
        reference = ReferenceBoxEvaluator(THRESHOLDS)
        reference.update(maps, gt_boxes, correct)
        reference.result()  # the dict of BoxEvaluator.result()
    """

    def __init__(
        self,
        cam_thresholds=THRESHOLDS,
        iou_thresholds=(30, 50, 70),
        loc_threshold=0.2,
        gt_box_mode="any",
        multi_contour=True,
    ):
        self.thresholds = [float(t) for t in cam_thresholds]
        self.iou_thresholds = tuple(iou_thresholds)
        self.loc_threshold = loc_threshold
        self.gt_box_mode = gt_box_mode
        self.multi_contour = multi_contour
        count = len(self.thresholds)
        self.hits = {d: np.zeros(count, np.int64) for d in self.iou_thresholds}
        self.hits_v1 = np.zeros(count, np.int64)
        self.gt_known = self.top1 = self.count = 0
        self.with_correct = False

    def accumulate(self, scoremap, gt, correct=None):
        """Scores one (H, W) map against its GT boxes (n, 4)."""
        gt = np.asarray(gt).reshape(-1, 4)
        boxes, counts, largest = [], [], []
        for threshold in self.thresholds:
            contour_boxes, big = threshold_boxes(scoremap, threshold)
            boxes += contour_boxes
            counts.append(len(contour_boxes))
            largest.append(big)
        # One IoU call over the boxes of all thresholds, then the best box of
        # each threshold's slice (wsolevaluation's `accumulate`).
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        best_any = np.maximum.reduceat(inclusive_iou(boxes, gt).max(axis=1), starts)
        best_largest = inclusive_iou(largest, gt).max(axis=1)
        best = best_any if self.multi_contour else best_largest
        for d in self.iou_thresholds:
            self.hits[d] += best >= d / 100
        self.hits_v1 += best_largest >= 0.5
        _, loc_box = threshold_boxes(scoremap, self.loc_threshold)
        loc_ious = inclusive_iou([loc_box], gt)[0]
        loc_iou = loc_ious[0] if self.gt_box_mode == "first" else loc_ious.max()
        hit = bool(loc_iou >= 0.5)
        self.gt_known += hit
        if correct is not None:
            self.with_correct = True
            self.top1 += hit and bool(correct)
        self.count += 1

    def update(self, scoremaps, gt_boxes, correct=None):
        """`accumulate` for each map of a batch."""
        for index, scoremap in enumerate(scoremaps):
            flag = None if correct is None else correct[index]
            self.accumulate(scoremap, gt_boxes[index], flag)

    def curves(self):
        """{"BoxAcc@d": (T,), "BoxAcc": (T,)} in percent."""
        curves = {
            f"BoxAcc@{d}": self.hits[d] * 100.0 / float(self.count)
            for d in self.iou_thresholds
        }
        curves["BoxAcc"] = self.hits_v1 * 100.0 / float(self.count)
        return curves

    def result(self):
        """The keys and values of `BoxEvaluator.result()`."""
        curves = self.curves()
        best = [float(curves[f"BoxAcc@{d}"].max()) for d in self.iou_thresholds]
        result = {"MaxBoxAccV2": float(np.mean(best))}
        result.update(
            {
                f"MaxBoxAcc@{d}": v
                for d, v in zip(self.iou_thresholds, best, strict=True)
            }
        )
        result["MaxBoxAcc"] = float(curves["BoxAcc"].max())
        result["GT-known Loc"] = self.gt_known * 100.0 / float(self.count)
        result["Top-1 Loc"] = (
            self.top1 * 100.0 / float(self.count) if self.with_correct else np.nan
        )
        return result


def coded_mask(gt_mask, ignore=None):
    """wsolevaluation's mask coding: 1 foreground, 255 ignored, 0 background.

    The ignore region is the ignore mask minus the foreground (`get_mask`).
    """
    gt_mask = np.asarray(gt_mask, bool)
    code = gt_mask.astype(np.uint8)
    if ignore is not None:
        code[np.asarray(ignore, bool) & ~gt_mask] = 255
    return code


class ReferenceMaskEvaluator:
    """PxAP as wsolevaluation computes it, map by map.

    Histograms of map values over foreground (code 1) and background (code 0)
    pixels with the bin edges 0, interval, 2 interval, ..., 1 - interval, 1,
    2, 3; true and false positives at each edge from the top down; precision
    and recall; PxAP = 100 * sum_i precision_i * (recall_i - recall_(i-1))
    over the edges where something is predicted positive.
    """

    def __init__(self, cam_curve_interval=0.001):
        edges = list(np.arange(0, 1, cam_curve_interval)) + [1.0, 2.0, 3.0]
        self.edges = np.array(edges)
        self.foreground = np.zeros(len(edges) - 1)
        self.background = np.zeros(len(edges) - 1)

    def accumulate(self, scoremap, code):
        """One (H, W) map and its coded (H, W) mask (see `coded_mask`)."""
        self.foreground += np.histogram(scoremap[code == 1], self.edges)[0]
        self.background += np.histogram(scoremap[code == 0], self.edges)[0]

    def result(self):
        """PxAP in percent (NaN without foreground pixels)."""
        positives = self.foreground.sum()
        if positives == 0:
            return np.nan
        true_pos = np.cumsum(self.foreground[::-1])
        false_pos = np.cumsum(self.background[::-1])
        predicted = true_pos + false_pos
        with np.errstate(divide="ignore", invalid="ignore"):
            precision = true_pos / predicted
        recall = true_pos / positives
        keep = predicted[1:] != 0
        return float((precision[1:] * np.diff(recall))[keep].sum() * 100)
