"""Tests for BoxEvaluator and MaskEvaluator.

Golden values are worked out by hand; the fast BoxEvaluator is compared for
exact equality with the straightforward per-threshold algorithm of
clovaai/wsolevaluation, and MaskEvaluator with that repository's
MaskEvaluator (both re-derived in tests/helpers/wsol_reference.py).
"""

import doctest

import cv2
import numpy as np
import pytest
from helpers.errors import raises_invalid
from helpers.wsol_reference import (
    THRESHOLDS,
    ReferenceBoxEvaluator,
    ReferenceMaskEvaluator,
    coded_mask,
)

from keras_dualsig.metrics import BoxEvaluator, MaskEvaluator

KEYS = [
    "MaxBoxAccV2",
    "MaxBoxAcc@30",
    "MaxBoxAcc@50",
    "MaxBoxAcc@70",
    "MaxBoxAcc",
    "GT-known Loc",
    "Top-1 Loc",
]


# --- Random data -------------------------------------------------------------


def smooth_map(rng, height, width):
    """A smooth map with one to four bumps, maybe rectified (CAM-like)."""
    coarse = rng.normal(0, 1, (int(rng.integers(2, 8)), int(rng.integers(2, 8))))
    if rng.random() < 0.5:
        coarse = np.maximum(coarse, 0)
    interpolation = cv2.INTER_CUBIC if rng.random() < 0.5 else cv2.INTER_LINEAR
    scoremap = cv2.resize(
        coarse.astype(np.float32), (width, height), interpolation=interpolation
    )
    scoremap = np.clip(scoremap, 0, None)
    scoremap /= max(float(scoremap.max()), 1e-6)
    return np.clip(scoremap, 0, 1)


def random_gt(rng, height, width):
    count = int(rng.integers(1, 4))
    x0 = rng.integers(0, width, count)
    y0 = rng.integers(0, height, count)
    x1 = rng.integers(x0, width)
    y1 = rng.integers(y0, height)
    return np.stack([x0, y0, x1, y1], axis=1)


def random_dataset(seed, count):
    rng = np.random.default_rng(seed)
    maps, gts = [], []
    for index in range(count):
        height, width = (int(v) for v in rng.integers(12, 56, 2))
        scoremap = smooth_map(rng, height, width)
        if index % 10 == 9:  # Some unsmooth maps: noise, holes, ties.
            height, width = height // 4 + 4, width // 4 + 4  # Many contours.
            scoremap = rng.integers(0, 5, (height, width)) / 4.0
        maps.append(scoremap.astype(np.float32 if index % 4 else np.float64))
        gts.append(random_gt(rng, height, width))
    correct = rng.random(count) < 0.6
    return maps, gts, correct


# --- BoxEvaluator --------------------------------------------------------------


class TestBoxEvaluatorGolden:
    def blob(self):
        scoremap = np.zeros((1, 10, 10), np.float32)
        scoremap[0, 2:5, 3:6] = 1.0  # Boxes (3, 2, 6, 5) at every t < 1.
        return scoremap

    def test_iou_exactly_one_half(self):
        # (3, 2, 6, 5): 4x4 = 16 pixels; GT (3, 2, 6, 3): 4x2 = 8 pixels, all
        # inside: IoU = 8 / 16 = 0.5, which counts for IoU >= 50 only.
        evaluator = BoxEvaluator()
        evaluator.update(self.blob(), [np.array([[3, 2, 6, 3]])], correct=[True])
        assert evaluator.result() == {
            "MaxBoxAccV2": 200.0 / 3,
            "MaxBoxAcc@30": 100.0,
            "MaxBoxAcc@50": 100.0,
            "MaxBoxAcc@70": 0.0,
            "MaxBoxAcc": 100.0,
            "GT-known Loc": 100.0,
            "Top-1 Loc": 100.0,
        }

    def test_iou_just_below_one_half(self):
        # GT (4, 2, 6, 3): 3x2 = 6 pixels inside the 16: IoU 6 / 16 = 0.375.
        evaluator = BoxEvaluator()
        evaluator.update(self.blob(), [np.array([[4, 2, 6, 3]])], correct=[True])
        result = evaluator.result()
        assert result["MaxBoxAcc@30"] == 100.0
        assert result["MaxBoxAcc@50"] == 0.0
        assert result["GT-known Loc"] == 0.0

    def test_curve_is_zero_at_threshold_one(self):
        # t = 1.0 cuts at the maximum: empty mask, box (0, 0, 0, 0).
        evaluator = BoxEvaluator()
        evaluator.update(self.blob(), [np.array([[3, 2, 6, 5]])])
        curves = evaluator.accuracy_curves()
        assert curves["cam_thresholds"].shape == (1001,)
        assert curves["BoxAcc@70"][-1] == 0.0
        assert (curves["BoxAcc@70"][:-1] == 100.0).all()

    def test_two_blobs_multi_contour_beats_single(self):
        scoremap = np.zeros((1, 20, 20), np.float32)
        scoremap[0, 2:8, 2:8] = 0.9  # Large blob: box (2, 2, 8, 8).
        scoremap[0, 12:15, 12:15] = 1.0  # Small blob: box (12, 12, 15, 15).
        gt = [np.array([[12, 12, 15, 15]])]
        multi, single = BoxEvaluator(), BoxEvaluator(multi_contour=False)
        multi.update(scoremap, gt, correct=[False])
        single.update(scoremap, gt, correct=[False])
        # uint8 levels: large blob 229 (0.9 * 255 = 229.5), small blob 255; the
        # cut is int(t * 255). Multi: the small blob's box matches exactly at
        # every cut < 255.
        assert multi.result()["MaxBoxAccV2"] == 100.0
        # Single: while both blobs pass (cut <= 228) the largest contour is the
        # 6x6 blob (IoU 0); for 229 <= cut < 255 only the small blob is left.
        assert single.result()["MaxBoxAccV2"] == 100.0
        # GT-known Loc (t = 0.2, cut 51: both blobs, the largest wins) misses.
        assert multi.result()["GT-known Loc"] == 0.0
        assert multi.result()["Top-1 Loc"] == 0.0
        curves = single.accuracy_curves()
        cut = (THRESHOLDS * 255).astype(int)
        expected = np.where((cut >= 229) & (cut < 255), 100.0, 0.0)
        np.testing.assert_array_equal(curves["BoxAcc"], expected)

    def test_two_equal_blobs_single_contour_misses(self):
        # Same intensity: the blobs appear and vanish together, so the
        # largest-contour box never matches the small one, multi always does.
        scoremap = np.zeros((1, 20, 20), np.float32)
        scoremap[0, 2:8, 2:8] = 1.0
        scoremap[0, 12:15, 12:15] = 1.0
        gt = [np.array([[12, 12, 15, 15]])]
        evaluator = BoxEvaluator()
        evaluator.update(scoremap, gt)
        result = evaluator.result()
        assert result["MaxBoxAccV2"] == 100.0
        assert result["MaxBoxAcc"] == 0.0
        assert result["GT-known Loc"] == 0.0
        assert np.isnan(result["Top-1 Loc"])

    def test_empty_map(self):
        scoremap = np.zeros((2, 8, 8), np.float32)
        # Every threshold gives (0, 0, 0, 0): IoU 1 with a (0, 0, 0, 0) GT box,
        # 1/4 with (0, 0, 1, 1).
        gt = [np.array([[0, 0, 0, 0]]), np.array([[0, 0, 1, 1]])]
        evaluator = BoxEvaluator()
        evaluator.update(scoremap, gt)
        result = evaluator.result()
        assert result["MaxBoxAcc@30"] == 50.0
        assert result["MaxBoxAcc"] == 50.0
        assert result["GT-known Loc"] == 50.0

    def test_map_touching_the_border(self):
        scoremap = np.zeros((1, 10, 12), np.float32)
        scoremap[0, 7:, 9:] = 1.0  # boundingRect (9, 7, 3, 3) -> (9, 7, 11, 9).
        evaluator = BoxEvaluator()
        evaluator.update(scoremap, [np.array([[9, 7, 11, 9]])], correct=[True])
        assert evaluator.result()["MaxBoxAcc@70"] == 100.0
        # An unclipped (9, 7, 12, 10) would give IoU 9 / 16 < 0.7.

    def test_top1_loc_needs_correct_and_gt_known(self):
        scoremap = np.concatenate([self.blob()] * 4)
        hit, miss = np.array([[3, 2, 6, 5]]), np.array([[0, 8, 1, 9]])
        evaluator = BoxEvaluator()
        evaluator.update(scoremap, [hit, hit, miss, miss], correct=[1, 0, 1, 0])
        result = evaluator.result()
        assert result["GT-known Loc"] == 50.0
        assert result["Top-1 Loc"] == 25.0

    def test_result_keys_and_custom_iou_thresholds(self):
        evaluator = BoxEvaluator()
        assert list(evaluator.result()) == KEYS
        assert all(np.isnan(v) for v in evaluator.result().values())
        custom = BoxEvaluator(iou_thresholds=[50, 62.5])
        custom.update(self.blob(), [np.array([[3, 2, 6, 3]])])
        assert list(custom.result())[:3] == [
            "MaxBoxAccV2",
            "MaxBoxAcc@50",
            "MaxBoxAcc@62.5",
        ]
        assert custom.result()["MaxBoxAccV2"] == 50.0


@pytest.mark.parametrize(
    "chunk, options",
    [
        (0, {}),
        (1, {"gt_box_mode": "first"}),
        (2, {"multi_contour": False, "loc_threshold": 0.35}),
        (
            3,
            {
                "gt_box_mode": "first",
                "multi_contour": False,
                "iou_thresholds": (10, 90),
            },
        ),
    ],
)
def test_matches_reference_at_all_thresholds(chunk, options):
    """Fast == straightforward, exactly, on 4 x 75 random maps (1001 thresholds)."""
    maps, gts, correct = random_dataset(100 + chunk, 75)
    reference = ReferenceBoxEvaluator(THRESHOLDS, **options)
    reference.update(maps, gts, correct)
    evaluator = BoxEvaluator(**options)
    for index, (scoremap, gt) in enumerate(zip(maps, gts, strict=True)):
        evaluator.update(scoremap[None], [gt], correct[index : index + 1])
    fast_curves = evaluator.accuracy_curves()
    for key, curve in reference.curves().items():
        np.testing.assert_array_equal(fast_curves[key], curve, err_msg=key)
    assert evaluator.result() == reference.result()


def test_matches_reference_at_224():
    rng = np.random.default_rng(5)
    maps = np.stack([smooth_map(rng, 224, 224) for _ in range(3)])
    gts = [random_gt(rng, 224, 224) for _ in range(3)]
    reference = ReferenceBoxEvaluator(THRESHOLDS)
    reference.update(maps, gts, np.ones(3, bool))
    evaluator = BoxEvaluator()
    evaluator.update(maps, gts, correct=np.ones(3, bool))
    assert evaluator.result() == reference.result()


def test_streaming_and_reset():
    maps, gts, correct = random_dataset(3, 12)
    maps = np.stack([cv2.resize(m.astype(np.float32), (32, 24)) for m in maps])
    maps = np.clip(maps, 0, 1)
    gts = [np.minimum(g, [31, 23, 31, 23]) for g in gts]
    whole = BoxEvaluator()
    whole.update(maps, gts, correct)
    streamed = BoxEvaluator()
    for begin, end in [(0, 5), (5, 6), (6, 12)]:
        streamed.update(maps[begin:end], gts[begin:end], correct[begin:end])
    assert streamed.result() == whole.result()
    streamed.reset()
    assert all(np.isnan(v) for v in streamed.result().values())
    streamed.update(maps, gts)  # After reset `correct` may be left out.
    assert np.isnan(streamed.result()["Top-1 Loc"])


class TestBoxEvaluatorValidation:
    def setup_method(self):
        self.maps = np.zeros((2, 8, 8), np.float32)
        self.gts = [np.array([[0, 0, 3, 3]])] * 2

    def test_scoremaps_out_of_range(self):
        maps = self.maps.copy()
        maps[1, 2, 2] = 1.25
        with raises_invalid(
            "scoremaps", "values in [0, 1]", "shape=(2, 8, 8)", "max=1.25"
        ):
            BoxEvaluator().update(maps, self.gts)

    def test_scoremaps_nan(self):
        maps = self.maps.copy()
        maps[0, 0, 0] = np.nan
        with raises_invalid("scoremaps", "nan_count=1"):
            BoxEvaluator().update(maps, self.gts)

    def test_scoremaps_rank(self):
        with raises_invalid("scoremaps", "(batch, height, width)", "shape=(8, 8)"):
            BoxEvaluator().update(self.maps[0], self.gts)

    def test_box_x1_before_x0(self):
        gts = [np.array([[4, 0, 3, 3]]), self.gts[1]]
        with raises_invalid(
            "gt_boxes", "0 <= x0 <= x1 <= 8", "[[4, 0, 3, 3]] at index 0"
        ):
            BoxEvaluator().update(self.maps, gts)

    def test_box_outside_the_map(self):
        # x1 = 8 (the width) is wsolevaluation's edge of a border box; 9 is out.
        gts = [self.gts[0], np.array([[0, 0, 3, 3], [2, 2, 9, 5]])]
        with raises_invalid("gt_boxes", "the 8x8 map", "at index 1"):
            BoxEvaluator().update(self.maps, gts)

    def test_box_negative_or_fractional_or_empty(self):
        for bad in (
            np.array([[-1, 0, 3, 3]]),
            np.array([[0.5, 0, 3, 3]]),
            np.zeros((0, 4)),
        ):
            with raises_invalid("gt_boxes"):
                BoxEvaluator().update(self.maps, [bad, self.gts[1]])

    def test_batch_size_mismatch(self):
        with raises_invalid(
            "gt_boxes",
            "one entry per score map (2 in this batch)",
            "gt_boxes=1 entries",
        ):
            BoxEvaluator().update(self.maps, self.gts[:1])
        with raises_invalid("correct", "correct=1 entries"):
            BoxEvaluator().update(self.maps, self.gts, correct=[True])

    def test_correct_given_for_some_batches_only(self):
        evaluator = BoxEvaluator()
        evaluator.update(self.maps, self.gts, correct=[True, False])
        with raises_invalid("correct", "for every batch or for none"):
            evaluator.update(self.maps, self.gts)

    def test_unknown_gt_box_mode(self):
        with raises_invalid(
            "gt_box_mode", 'one of "any", "first"', "gt_box_mode='best'"
        ):
            BoxEvaluator(gt_box_mode="best")

    @pytest.mark.parametrize(
        "argument, kwargs",
        [
            ("cam_thresholds", {"cam_thresholds": [0.1, 1.2]}),
            ("cam_thresholds", {"cam_thresholds": []}),
            ("iou_thresholds", {"iou_thresholds": (0, 50)}),
            ("iou_thresholds", {"iou_thresholds": (50, 150)}),
            ("loc_threshold", {"loc_threshold": 2}),
        ],
    )
    def test_bad_thresholds(self, argument, kwargs):
        with raises_invalid(argument):
            BoxEvaluator(**kwargs)


# --- MaskEvaluator ----------------------------------------------------------


class TestMaskEvaluator:
    def test_hand_computed_with_ignore(self):
        scoremaps = np.array([[[0.9, 0.6, 0.3], [0.6, 0.3, 0.1]]], np.float32)
        gt_masks = np.array([[[1, 1, 0], [0, 0, 0]]])
        # (0, 2) is ignored; (0, 0) is marked too but foreground wins.
        ignore = np.array([[[1, 0, 1], [0, 0, 0]]])
        # Kept: foreground {0.9, 0.6}, background {0.6, 0.3, 0.1}. Going down
        # the thresholds: {0.9}: P = 1, R = 1/2; {0.9, 0.6, 0.6}: P = 2/3,
        # R = 1; lower thresholds add recall 0. PxAP = 1/2 + 2/3 * 1/2 = 5/6.
        evaluator = MaskEvaluator()
        evaluator.update(scoremaps, gt_masks, ignore)
        assert evaluator.result()["PxAP"] == pytest.approx(500 / 6, abs=1e-12)
        # Without the ignore mask the 0.3 pixel is background: same AP here,
        # since it only enters below full recall.
        plain = MaskEvaluator()
        plain.update(scoremaps, gt_masks)
        assert plain.result()["PxAP"] == pytest.approx(500 / 6, abs=1e-12)

    def test_ignore_changes_the_answer(self):
        scoremaps = np.array([[[0.9, 0.8, 0.2]]], np.float32)
        gt_masks = np.array([[[1, 0, 1]]])
        # All kept: {0.9}: P 1, R 1/2; {0.9, 0.8}: P 1/2, R 1/2;
        # {.., 0.2}: P 2/3, R 1 -> AP = 1/2 + 2/3 * 1/2 = 5/6.
        evaluator = MaskEvaluator()
        evaluator.update(scoremaps, gt_masks)
        assert evaluator.result()["PxAP"] == pytest.approx(500 / 6, abs=1e-12)
        # Ignoring the 0.8 background pixel: {0.9}: P 1, R 1/2; {0.9, 0.2}:
        # P 1, R 1 -> AP = 1.
        evaluator.reset()
        evaluator.update(scoremaps, gt_masks, np.array([[[0, 1, 0]]]))
        assert evaluator.result()["PxAP"] == pytest.approx(100.0, abs=1e-12)

    def test_perfect_and_empty(self):
        evaluator = MaskEvaluator()
        assert np.isnan(evaluator.result()["PxAP"])
        evaluator.update(np.array([[[0.5, 0.0]]]), np.array([[[0, 0]]]))
        assert np.isnan(evaluator.result()["PxAP"])  # No foreground pixel.
        # Foreground {0.7} above all background {0.5, 0.0, 0.2}: P = R = 1.
        evaluator.update(np.array([[[0.7, 0.2]]]), np.array([[[True, False]]]))
        assert evaluator.result()["PxAP"] == 100.0

    def test_matches_wsolevaluation(self):
        rng = np.random.default_rng(11)
        reference, evaluator = ReferenceMaskEvaluator(), MaskEvaluator()
        for _ in range(6):
            scoremaps = np.stack([smooth_map(rng, 40, 48) for _ in range(4)])
            scoremaps[0, :3, :3] = 1.0  # Exact 1.0 values: the [1, 2) bin.
            gt_masks = rng.random((4, 40, 48)) < scoremaps * 0.8
            ignore = rng.random((4, 40, 48)) < 0.1
            # wsolevaluation's mask: 1 foreground, 255 ignore (not foreground).
            for scoremap, mask, skip in zip(scoremaps, gt_masks, ignore, strict=True):
                reference.accumulate(scoremap, coded_mask(mask, skip))
            evaluator.update(scoremaps, gt_masks, ignore)
        assert evaluator.result()["PxAP"] == reference.result()

    def test_streaming(self):
        rng = np.random.default_rng(2)
        scoremaps = np.stack([smooth_map(rng, 16, 16) for _ in range(6)])
        gt_masks = scoremaps > 0.5
        whole, streamed = MaskEvaluator(), MaskEvaluator()
        whole.update(scoremaps, gt_masks)
        streamed.update(scoremaps[:2], gt_masks[:2])
        streamed.update(scoremaps[2:], gt_masks[2:])
        assert streamed.result() == whole.result()

    @pytest.mark.parametrize(
        "argument, kwargs",
        [
            ("gt_masks", {"gt_masks": np.zeros((2, 8, 7))}),
            ("gt_masks", {"gt_masks": np.full((2, 8, 8), 0.5)}),
            ("ignore_masks", {"ignore_masks": np.zeros((1, 8, 8))}),
            ("scoremaps", {"scoremaps": np.full((2, 8, 8), 2.0)}),
        ],
    )
    def test_validation(self, argument, kwargs):
        arguments = {
            "scoremaps": np.zeros((2, 8, 8)),
            "gt_masks": np.zeros((2, 8, 8)),
            **kwargs,
        }
        with raises_invalid(argument, f"Received: {argument}=<array shape="):
            MaskEvaluator().update(**arguments)

    def test_bad_thresholds(self):
        with raises_invalid("cam_thresholds"):
            MaskEvaluator(cam_thresholds=[[0.1]])


def test_docstring_examples():
    from keras_dualsig.metrics import wsol

    assert doctest.testmod(wsol).failed == 0
