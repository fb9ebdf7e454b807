"""Boxes from score maps, with the conventions of clovaai/wsolevaluation.

Choe et al., "Evaluating Weakly Supervised Object Localization Methods Right",
CVPR 2020 (github clovaai/wsolevaluation, `compute_bboxes_from_scoremaps` and
`calculate_multiple_iou` in evaluation.py) fixed how a box is read off a score
map; the WSOL numbers of Oh & Noh (BMVC 2025, arXiv:2511.05590) use that code.
This module reproduces it to the letter:

1. `m = (s * 255).astype(uint8)` (truncation, in the map's float type),
2. binary mask `m > int(t * max(m))` (OpenCV `THRESH_BINARY`),
3. `cv2.findContours(mask, RETR_TREE, CHAIN_APPROX_SIMPLE)`,
4. per contour `x, y, w, h = cv2.boundingRect(c)` and the box
   `(x, y, min(x + w, W - 1), min(y + h, H - 1))`: one pixel wider than the
   contour unless clipped, exactly as wsolevaluation does,
5. no contour: the single box `(0, 0, 0, 0)`; single-contour mode keeps the
   first contour of largest `cv2.contourArea` in OpenCV's order (OpenCV 4
   and 5 list later-found contours first, so equal-area ties go to the lower
   blob, exactly as wsolevaluation run with the same OpenCV).

IoU counts pixels inclusively: area = (x1 - x0 + 1) * (y1 - y0 + 1).
docs/method.md, sections "Boxes from a score map" and "IoU", states the same
conventions with the reasons.
"""

import numpy as np

from keras_dualsig._errors import check_bool, check_fraction
from keras_dualsig.metrics import _box_ops, _checks


def cam_to_boxes(scoremap, threshold, multi_contour=False):
    """Boxes around the regions of a score map above a relative threshold.

    Follows clovaai/wsolevaluation (Choe et al., CVPR 2020), the protocol of
    the WSOL results of Oh & Noh (BMVC 2025): the map is converted with
    `m = (s * 255).astype(uint8)`, thresholded as `m > int(threshold *
    max(m))`, and each OpenCV contour (`RETR_TREE`, so holes count too) gives
    its bounding rectangle `(x, y, x + w, y + h)` clipped to the map.

    Args:
        scoremap: float (height, width) in [0, 1], e.g. one CAM at the
            evaluation size.
        threshold: float in [0, 1], relative to the map's maximum.
        multi_contour: False keeps the contour of largest area (MaxBoxAcc,
            GT-known Loc); True keeps every contour (MaxBoxAccV2).

    Returns:
        int64 (n, 4) boxes x0, y0, x1, y1 in map pixels (inclusive corners,
        x1 <= width - 1, y1 <= height - 1); n = 1 unless `multi_contour`.
        An empty mask gives the single box (0, 0, 0, 0).

    Raises:
        ValueError: if `scoremap` is not 2-D, has NaN or values outside
            [0, 1], `threshold` is not in [0, 1], or `multi_contour` is not a
            bool.

    Example:

    >>> import numpy as np
    >>> scoremap = np.zeros((8, 8), "float32")
    >>> scoremap[2:4, 3:6] = 1.0
    >>> cam_to_boxes(scoremap, 0.5)
    array([[3, 2, 6, 4]])
    """
    scoremap = _checks.check_scoremaps(scoremap, "scoremap", ndim=2)
    threshold = check_fraction(threshold, "threshold")
    multi_contour = check_bool(multi_contour, "multi_contour")
    image = _box_ops.to_uint8(scoremap)
    cuts = _box_ops.cut_levels(np.array([threshold]), image.max())
    boxes, _, largest = _box_ops.contour_boxes(image, cuts)
    return boxes if multi_contour else boxes[largest]
