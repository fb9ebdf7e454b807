"""Tests for `cam_to_boxes`: hand-made golden maps and the reference.

The reference is clovaai/wsolevaluation's `compute_bboxes_from_scoremaps`
(evaluation.py) for one threshold, re-derived in tests/helpers/wsol_reference.py;
the golden boxes are worked out by hand with its conventions: box = (x, y,
x + w, y + h) of `cv2.boundingRect`, clipped to (W - 1, H - 1), i.e. one pixel
wider than the blob unless clipped.
"""

import doctest

import cv2
import numpy as np
import pytest
from helpers.errors import raises_invalid
from helpers.wsol_reference import threshold_boxes

from keras_dualsig.metrics import cam_to_boxes


def reference_boxes(scoremap, threshold, multi_contour):
    """wsolevaluation's boxes at one threshold, as `cam_to_boxes` returns them."""
    boxes, largest = threshold_boxes(scoremap, threshold)
    return np.asarray(boxes if multi_contour else [largest])


def random_maps(rng, count):
    """Smooth, quantised, noisy and plateaued maps of assorted sizes."""
    maps = []
    for index in range(count):
        height, width = (int(v) for v in rng.integers(6, 48, 2))
        kind = index % 4
        if kind == 0:  # Smooth: bicubic upsampling of a coarse random field.
            coarse = rng.random((int(rng.integers(2, 6)), int(rng.integers(2, 6))))
            scoremap = cv2.resize(
                coarse.astype(np.float32),
                (width, height),
                interpolation=cv2.INTER_CUBIC,
            )
            scoremap = (scoremap - scoremap.min()) / (np.ptp(scoremap) + 1e-6)
        elif kind == 1:  # Few levels: large plateaus, equal-area ties.
            scoremap = rng.integers(0, 4, (height, width)) / 3
        elif kind == 2:  # Noise: many contours, holes, 1-pixel shapes.
            scoremap = rng.random((height, width))
        else:  # CAM-like: rectified, so a zero background.
            coarse = np.maximum(rng.normal(0, 1, (4, 4)), 0).astype(np.float32)
            scoremap = cv2.resize(
                coarse, (width, height), interpolation=cv2.INTER_LINEAR
            )
            scoremap = scoremap / max(float(scoremap.max()), 1e-6)
        dtype = np.float32 if index % 3 else np.float64
        maps.append(np.clip(scoremap, 0, 1).astype(dtype))
    return maps


class TestGolden:
    def test_square_blob(self):
        scoremap = np.zeros((10, 10), np.float32)
        scoremap[2:5, 3:6] = 1.0  # rows 2..4, cols 3..5
        # boundingRect (3, 2, 3, 3) -> (3, 2, 3 + 3, 2 + 3).
        np.testing.assert_array_equal(cam_to_boxes(scoremap, 0.5), [[3, 2, 6, 5]])
        assert cam_to_boxes(scoremap, 0.5).dtype == np.int64

    def test_two_blobs_multi_and_single(self):
        scoremap = np.zeros((20, 20), np.float32)
        scoremap[2:8, 2:8] = 0.9  # 6x6
        scoremap[12:15, 12:15] = 1.0  # 3x3, brighter but smaller
        single = cam_to_boxes(scoremap, 0.5)
        multi = cam_to_boxes(scoremap, 0.5, multi_contour=True)
        np.testing.assert_array_equal(single, [[2, 2, 8, 8]])  # Largest area.
        assert sorted(multi.tolist()) == [[2, 2, 8, 8], [12, 12, 15, 15]]

    def test_threshold_is_relative_to_the_uint8_maximum(self):
        scoremap = np.zeros((10, 10), np.float32)
        scoremap[1:9, 1:9] = 0.25  # uint8 63
        scoremap[4:6, 4:6] = 0.5  # uint8 127, the maximum
        # 0.4 * 127 = 50.8 -> cut 50: every 63 pixel passes.
        np.testing.assert_array_equal(cam_to_boxes(scoremap, 0.4), [[1, 1, 9, 9]])
        # 0.5 * 127 = 63.5 -> cut 63: strictly greater, only the 127 pixels.
        np.testing.assert_array_equal(cam_to_boxes(scoremap, 0.5), [[4, 4, 6, 6]])

    def test_uint8_conversion_truncates(self):
        scoremap = np.zeros((6, 6), np.float64)
        scoremap[1, 1] = 1.0  # 255
        scoremap[3:5, 3:5] = 0.999  # 254.745 -> 254
        # 0.999 * 255 = 254.745 -> cut 254: only the 255 pixel.
        np.testing.assert_array_equal(cam_to_boxes(scoremap, 0.999), [[1, 1, 2, 2]])

    def test_empty_map(self):
        scoremap = np.zeros((8, 8), np.float32)
        for multi in (False, True):
            for threshold in (0.0, 0.5, 1.0):
                np.testing.assert_array_equal(
                    cam_to_boxes(scoremap, threshold, multi), [[0, 0, 0, 0]]
                )

    def test_threshold_one_is_empty(self):
        scoremap = np.ones((8, 8), np.float32)
        np.testing.assert_array_equal(cam_to_boxes(scoremap, 1.0), [[0, 0, 0, 0]])

    def test_border_blobs_are_clipped(self):
        scoremap = np.zeros((10, 12), np.float32)
        scoremap[0:3, :] = 1.0  # Full-width band at the top.
        scoremap[7:, 9:] = 0.8  # Bottom-right corner.
        multi = cam_to_boxes(scoremap, 0.5, multi_contour=True)
        # Band: boundingRect (0, 0, 12, 3) -> x1 = min(12, 11) = 11.
        # Corner: boundingRect (9, 7, 3, 3) -> (9, 7, min(12, 11), min(10, 9)).
        assert sorted(multi.tolist()) == [[0, 0, 11, 3], [9, 7, 11, 9]]
        full = cam_to_boxes(np.ones((10, 12), np.float32), 0.0)
        np.testing.assert_array_equal(full, [[0, 0, 11, 9]])

    def test_hole_gives_its_own_box(self):
        # RETR_TREE lists hole contours too: a ring yields two boxes.
        scoremap = np.zeros((11, 11), np.float32)
        scoremap[2:9, 2:9] = 1.0
        scoremap[4:7, 4:7] = 0.0
        multi = cam_to_boxes(scoremap, 0.5, multi_contour=True)
        # Outer: pixels 2..8 -> (2, 2, 9, 9). Hole border: the ring pixels
        # around the hole, 3..7 -> (3, 3, 8, 8).
        assert sorted(multi.tolist()) == [[2, 2, 9, 9], [3, 3, 8, 8]]
        np.testing.assert_array_equal(cam_to_boxes(scoremap, 0.5), [[2, 2, 9, 9]])

    def test_single_pixel(self):
        scoremap = np.zeros((5, 5), np.float32)
        scoremap[2, 3] = 1.0
        np.testing.assert_array_equal(cam_to_boxes(scoremap, 0.5), [[3, 2, 4, 3]])

    def test_equal_area_tie_follows_opencv_order(self):
        scoremap = np.zeros((10, 10), np.float32)
        scoremap[2:5, 2:5] = 1.0
        scoremap[6:9, 6:9] = 1.0
        np.testing.assert_array_equal(
            cam_to_boxes(scoremap, 0.5), reference_boxes(scoremap, 0.5, False)
        )


@pytest.mark.parametrize("multi_contour", [False, True])
def test_matches_wsolevaluation(multi_contour):
    rng = np.random.default_rng(7 + multi_contour)
    thresholds = np.arange(0, 1.001, 0.001)[::9]
    for scoremap in random_maps(rng, 48):
        for threshold in thresholds:
            np.testing.assert_array_equal(
                cam_to_boxes(scoremap, threshold, multi_contour),
                reference_boxes(scoremap, threshold, multi_contour),
            )


class TestValidation:
    @pytest.mark.parametrize(
        "scoremap, fragment",
        [
            (np.full((4, 4), 1.5, np.float32), "max=1.5"),
            (np.full((4, 4), -0.5, np.float32), "min=-0.5"),
            (np.full((4, 4), np.nan, np.float32), "nan_count=16"),
            (np.zeros((2, 4, 4), np.float32), "shape=(2, 4, 4)"),
            (np.zeros((0, 4), np.float32), "shape=(0, 4)"),
        ],
    )
    def test_bad_scoremap(self, scoremap, fragment):
        with raises_invalid(
            "scoremap",
            "Expected a float array of shape (height, width)",
            "Received: scoremap=<array",
            fragment,
        ):
            cam_to_boxes(scoremap, 0.5)

    @pytest.mark.parametrize("threshold", [1.5, -0.1, "0.5", None, True])
    def test_bad_threshold(self, threshold):
        with raises_invalid("threshold", "Expected a float"):
            cam_to_boxes(np.zeros((4, 4), np.float32), threshold)

    def test_accepts_nested_int_lists(self):
        boxes = cam_to_boxes([[0, 1], [0, 0]], 0.5)
        np.testing.assert_array_equal(boxes, [[1, 0, 1, 1]])


def test_docstring_examples():
    from keras_dualsig.metrics import boxes

    assert doctest.testmod(boxes).failed == 0
