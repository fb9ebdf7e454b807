"""Fixes of wrong results and unclear errors in `kd.metrics`, one test each.

Every test here failed on the code before its fix: options that took any
truthy value, `gt_box_mode="first"` restricting more than the authors' code
does, GT boxes as wsolevaluation makes them (x1 = width) refused, NaN inputs
turned into NaN metrics, duplicate IoU thresholds folded silently, and the
padding rows of `kd.datasets.load_wsol` reported without saying so.
"""

import keras
import numpy as np
import pytest
from helpers.errors import raises_invalid
from helpers.wsol_reference import THRESHOLDS, ReferenceBoxEvaluator, resize_box

from keras_dualsig.metrics import (
    BoxEvaluator,
    cam_to_boxes,
    confidence_change,
    deletion_auc,
    insertion_auc,
)


def blob(height=10, width=10):
    """One map with a 3x3 blob at rows 2..4, cols 3..5: box (3, 2, 6, 5)."""
    scoremap = np.zeros((1, height, width), np.float32)
    scoremap[0, 2:5, 3:6] = 1.0
    return scoremap


def tiny_classifier():
    inputs = keras.Input((4, 4, 1))
    x = keras.layers.Conv2D(2, 1)(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(2, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="tiny")


# --- Booleans: any truthy value was read as True ------------------------------


@pytest.mark.parametrize("value", ["no", 0, 1, None, np.array([True])])
def test_box_evaluator_multi_contour_must_be_a_bool(value):
    # Before: bool(value), so multi_contour="no" meant True.
    with raises_invalid("multi_contour", "True or False"):
        BoxEvaluator(multi_contour=value)


def test_cam_to_boxes_multi_contour_must_be_a_bool():
    # Before: "no" was truthy and returned every contour's box.
    with raises_invalid("multi_contour", "True or False", "multi_contour='no'"):
        cam_to_boxes(blob()[0], 0.5, multi_contour="no")
    assert cam_to_boxes(blob()[0], 0.5, multi_contour=np.bool_(False)).shape == (1, 4)


@pytest.mark.parametrize("function", [deletion_auc, insertion_auc])
def test_return_curves_must_be_a_bool(function):
    # Before: "no" was truthy and a tuple came back instead of the dict.
    images = np.ones((1, 4, 4, 1), np.float32)
    maps = np.zeros((1, 4, 4), np.float32)
    with raises_invalid("return_curves", "True or False"):
        function(tiny_classifier(), images, maps, 0, steps=2, return_curves="no")


# --- gt_box_mode="first": only the Loc metrics, as the authors' code ---------


def test_first_gt_box_restricts_only_the_loc_metrics():
    # The blob's box (3, 2, 6, 5) matches the SECOND GT box exactly; the first
    # is far away. The authors' evaluation.py takes `iou_val[0]` (first box)
    # for GT-known / Top-1 Loc only; MaxBoxAcc@d keep `multiple_iou.max(1)`.
    # Before: "first" dropped the second box everywhere (MaxBoxAccV2 = 0).
    gt = [np.array([[0, 8, 1, 9], [3, 2, 6, 5]])]
    results = {}
    for mode in ("any", "first"):
        evaluator = BoxEvaluator(gt_box_mode=mode)
        evaluator.update(blob(), gt, correct=[True])
        results[mode] = evaluator.result()
    assert results["any"] == {
        "MaxBoxAccV2": 100.0,
        "MaxBoxAcc@30": 100.0,
        "MaxBoxAcc@50": 100.0,
        "MaxBoxAcc@70": 100.0,
        "MaxBoxAcc": 100.0,
        "GT-known Loc": 100.0,
        "Top-1 Loc": 100.0,
    }
    assert results["first"] == {
        **results["any"],
        "GT-known Loc": 0.0,
        "Top-1 Loc": 0.0,
    }


# --- GT boxes as wsolevaluation rescales them: x1 = width ---------------------


def test_border_box_from_wsolevaluation_rescaling_is_scored_unclipped():
    # A box touching the border of a 24x20 image, rescaled to the 12x10 map
    # with int(c * new / old): (18, 14, 24, 20) -> (9, 7, 12, 10), one past
    # the last pixel. Before: refused ("inside the 10x12 map").
    gt = np.array([resize_box((18, 14, 24, 20), (24, 20), (12, 10))])
    assert gt.tolist() == [[9, 7, 12, 10]]
    scoremap = np.zeros((1, 10, 12), np.float32)
    scoremap[0, 7:, 9:] = 1.0  # Predicted box (9, 7, 11, 9), clipped.
    evaluator = BoxEvaluator()
    evaluator.update(scoremap, [gt], correct=[True])
    result = evaluator.result()
    # Inclusive IoU, GT unclipped: 3x3 = 9 pixels of the predicted box inside
    # the GT's 4x4 = 16: 9 / 16 = 0.5625 (clipping would have given 1).
    assert result["MaxBoxAcc@50"] == 100.0
    assert result["MaxBoxAcc@70"] == 0.0
    assert result["GT-known Loc"] == 100.0


def _border_dataset(seed, count):
    """Maps with GT boxes from wsolevaluation's rescaling, many on the border."""
    rng = np.random.default_rng(seed)
    maps, gts = [], []
    for _ in range(count):
        height, width = (int(v) for v in rng.integers(12, 40, 2))
        coarse = np.maximum(rng.normal(0, 1, (4, 4)), 0).astype(np.float32)
        scoremap = np.kron(coarse, np.ones((height // 4 + 1, width // 4 + 1)))
        scoremap = scoremap[:height, :width] / max(float(coarse.max()), 1e-6)
        maps.append(np.clip(scoremap, 0, 1).astype(np.float32))
        original = (int(rng.integers(50, 500)), int(rng.integers(50, 500)))
        boxes = []
        for _ in range(int(rng.integers(1, 4))):
            x0, y0 = (int(rng.integers(0, s // 2)) for s in original)
            # Half the boxes end on the image's right / bottom border.
            x1 = (
                original[0]
                if rng.random() < 0.5
                else int(rng.integers(x0, original[0]))
            )
            y1 = (
                original[1]
                if rng.random() < 0.5
                else int(rng.integers(y0, original[1]))
            )
            boxes.append(resize_box((x0, y0, x1, y1), original, (width, height)))
        gts.append(np.array(boxes))
    return maps, gts, rng.random(count) < 0.6


@pytest.mark.parametrize("gt_box_mode", ["any", "first"])
def test_border_boxes_match_the_reference(gt_box_mode):
    maps, gts, correct = _border_dataset(21, 24)
    assert any((g[:, 2] == m.shape[1]).any() for m, g in zip(maps, gts, strict=True))
    reference = ReferenceBoxEvaluator(THRESHOLDS, gt_box_mode=gt_box_mode)
    reference.update(maps, gts, correct)
    evaluator = BoxEvaluator(gt_box_mode=gt_box_mode)
    for index, (scoremap, gt) in enumerate(zip(maps, gts, strict=True)):
        evaluator.update(scoremap[None], [gt], correct[index : index + 1])
    assert evaluator.result() == reference.result()


def test_boxes_beyond_the_edge_are_still_refused():
    with raises_invalid("gt_boxes", "0 <= x0 <= x1 <= 10", "at index 0"):
        BoxEvaluator().update(blob(), [np.array([[0, 0, 11, 4]])])


# --- Clearer errors -----------------------------------------------------------


def test_load_wsol_padding_rows_are_named():
    # Before: "Expected ... 0 <= x0 ..." with no word on where the -1 came from.
    padded = np.array([[[3, 2, 6, 5], [-1, -1, -1, -1]]], np.float32)
    with raises_invalid("gt_boxes", "padding of kd.datasets.load_wsol", "num_boxes"):
        BoxEvaluator().update(blob(), padded)


def test_duplicate_iou_thresholds_are_refused():
    # Before: (50, 50, 70) counted IoU 50 twice in MaxBoxAccV2 and returned
    # one "MaxBoxAcc@50" key for two thresholds.
    with raises_invalid("iou_thresholds", "distinct"):
        BoxEvaluator(iou_thresholds=(50, 50, 70))
    with raises_invalid("iou_thresholds", "distinct"):
        BoxEvaluator(iou_thresholds=(50, 50.0))


# --- NaN inputs gave NaN metrics ------------------------------------------------


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_images_are_refused(bad):
    # Before: {"Average Drop": nan, ...}, a plausible-looking dict.
    images = np.ones((2, 4, 4, 1), np.float32)
    images[1, 0, 0, 0] = bad
    maps = np.full((2, 4, 4), 0.5, np.float32)
    with raises_invalid("images", "finite"):
        confidence_change(tiny_classifier(), images, maps, 0)
    with raises_invalid("images", "finite"):
        deletion_auc(tiny_classifier(), images, maps, 0, steps=2)


def test_non_finite_baseline_is_refused():
    # Before: NaN curves and a NaN AUC.
    images = np.ones((1, 4, 4, 1), np.float32)
    maps = np.full((1, 4, 4), 0.5, np.float32)
    with raises_invalid("baseline", "finite"):
        insertion_auc(tiny_classifier(), images, maps, 0, steps=2, baseline=np.nan)
