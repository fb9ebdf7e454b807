"""Box operations with the conventions of clovaai/wsolevaluation.

Private helpers of `cam_to_boxes` and `BoxEvaluator`; see `boxes.py` and
docs/method.md, section "Boxes from a score map", for the conventions (Choe et
al., CVPR 2020, `compute_bboxes_from_scoremaps` and `calculate_multiple_iou`
in evaluation.py).
"""

import cv2
import numpy as np


def to_uint8(scoremap):
    """wsolevaluation's `(scoremap * 255).astype(np.uint8)`, kept verbatim.

    The product is taken in the map's own float type (float32 maps multiply in
    float32), so the truncation matches the reference bit for bit.
    """
    return (scoremap * 255).astype(np.uint8)


def cut_levels(thresholds, max_value):
    """`int(t * max(m))` for every threshold t, as wsolevaluation computes it.

    Args:
        thresholds: float64 (T,) in [0, 1].
        max_value: the uint8 map's maximum.

    Returns:
        int64 (T,) in [0, max_value]. wsolevaluation multiplies a float64
        threshold by a NumPy uint8 scalar (a float64 product) and truncates
        with `int()`; the products are non-negative, so `astype` truncates the
        same way.
    """
    return (thresholds * float(max_value)).astype(np.int64)


def crop_bounds(image, cuts):
    """Bounding rectangle of the pixels above each cut, vectorised over cuts.

    Args:
        image: uint8 (height, width).
        cuts: int (K,) levels.

    Returns:
        int64 (K, 4) y0, y1, x0, x1 (half-open) of `image > cut`; y0 == height
        when no pixel exceeds the cut.
    """
    height, width = image.shape
    row_max, col_max = image.max(axis=1), image.max(axis=0)
    # The first row with a pixel above c is the first index whose running
    # maximum (from the top) exceeds c; likewise from the bottom, left, right.
    y0 = np.searchsorted(np.maximum.accumulate(row_max), cuts, side="right")
    y1 = height - np.searchsorted(
        np.maximum.accumulate(row_max[::-1]), cuts, side="right"
    )
    x0 = np.searchsorted(np.maximum.accumulate(col_max), cuts, side="right")
    x1 = width - np.searchsorted(
        np.maximum.accumulate(col_max[::-1]), cuts, side="right"
    )
    return np.stack([y0, y1, x0, x1], axis=1).astype(np.int64)


def contour_boxes(image, cuts):
    """The contours' boxes of `image > cut` for each cut, in findContours order.

    Only the bounding rectangle of the mask's pixels is handed to OpenCV (the
    pixels outside it are all zero, and findContours pads the image with
    zeros anyway), with `offset` restoring map coordinates: the contours,
    their order, boxes and areas are those of the full map, while the small
    masks of high thresholds cost little. `cv2.contourArea` is only evaluated
    where a level has several contours (one contour is the largest).

    Args:
        image: uint8 (height, width), the map after `to_uint8`.
        cuts: int (K,) levels in [0, 255].

    Returns:
        (boxes, starts, largest): int64 (N, 4) boxes x0, y0, x1, y1 of every
        contour of every level, clipped to (width - 1, height - 1), a level
        without contour contributing the single box (0, 0, 0, 0); int64 (K,)
        the row of each level's first box; int64 (K,) the row of each level's
        first box of largest `cv2.contourArea` (wsolevaluation's
        `max(contours, key=cv2.contourArea)`).
    """
    height, width = image.shape
    rects, starts, largest = [], [], []
    for cut, (y0, y1, x0, x1) in zip(
        np.asarray(cuts).tolist(), crop_bounds(image, cuts).tolist(), strict=True
    ):
        starts.append(len(rects))
        if y0 >= y1:
            largest.append(len(rects))
            rects.append((0, 0, 0, 0))  # No contour: wsolevaluation's box.
            continue
        _, binary = cv2.threshold(image[y0:y1, x0:x1], cut, 255, cv2.THRESH_BINARY)
        contours, _ = cv2.findContours(
            binary, cv2.RETR_TREE, cv2.CHAIN_APPROX_SIMPLE, offset=(x0, y0)
        )
        if len(contours) == 1:
            largest.append(len(rects))
        else:
            areas = list(map(cv2.contourArea, contours))
            # list.index(max) is the first maximum, as Python's max(key=...).
            largest.append(len(rects) + areas.index(max(areas)))
        rects.extend(map(cv2.boundingRect, contours))
    boxes = np.array(rects, dtype=np.int64).reshape(-1, 4)
    # (x, y, w, h) -> (x, y, x + w, y + h), clipped as wsolevaluation does.
    boxes[:, 2] = np.minimum(boxes[:, 0] + boxes[:, 2], width - 1)
    boxes[:, 3] = np.minimum(boxes[:, 1] + boxes[:, 3], height - 1)
    return boxes, np.array(starts, np.int64), np.array(largest, np.int64)


def iou_matrix(boxes_a, boxes_b):
    """IoU of every pair of boxes, counting pixels inclusively.

    Same arithmetic as wsolevaluation's `calculate_multiple_iou`: integer
    areas `(x1 - x0 + 1) * (y1 - y0 + 1)`, float64 ratio, and 0 where the
    union is not positive. Boxes are not clipped: a GT box with x1 = width
    counts the column past the map, as in wsolevaluation (docs/method.md,
    section "IoU").

    Args:
        boxes_a: int (n, 4) x0, y0, x1, y1.
        boxes_b: int (m, 4) x0, y0, x1, y1.

    Returns:
        float64 (n, m) in [0, 1].
    """
    a = np.asarray(boxes_a, dtype=np.int64)[:, None, :]  # (n, 1, 4)
    b = np.asarray(boxes_b, dtype=np.int64)[None, :, :]  # (1, m, 4)
    width = np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]) + 1
    height = np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]) + 1
    intersection = np.maximum(0, width) * np.maximum(0, height)
    area_a = (a[..., 2] - a[..., 0] + 1) * (a[..., 3] - a[..., 1] + 1)
    area_b = (b[..., 2] - b[..., 0] + 1) * (b[..., 3] - b[..., 1] + 1)
    union = area_a + area_b - intersection
    degenerate = union <= 0
    iou = intersection / np.where(degenerate, 1, union)
    iou[degenerate] = 0.0
    return iou
