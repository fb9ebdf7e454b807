"""Tests for kd.metrics.pointing_game and kd.metrics.pair_pointing_game.

Golden values by hand, and for the pairs test an independent NumPy scoring of
maps made by a separate CAM object, one class at a time.
"""

import keras
import numpy as np
import pytest
from helpers.errors import raises_invalid

import keras_dualsig as kd
from keras_dualsig.metrics import pair_pointing_game, pointing_game


def numpy_pointing(scoremap, boxes):
    """(hit, energy) of one map: a maximum in a box (constant maps miss)."""
    inside = np.zeros(scoremap.shape, bool)
    for x0, y0, x1, y1 in boxes:
        inside[y0 : y1 + 1, x0 : x1 + 1] = True  # Slicing clips x1 = width.
    top = scoremap == scoremap.max()
    hit = bool((top & inside).any()) and scoremap.min() < scoremap.max()
    total = float(scoremap.astype(np.float64).sum())
    energy = float(scoremap[inside].astype(np.float64).sum()) / total if total else 0.0
    return hit, energy


class TestPointingGame:
    def test_hand_computed(self):
        maps = np.zeros((3, 6, 8), np.float32)
        maps[0, 1, 2], maps[0, 4, 6] = 1.0, 0.5  # max inside, 2/3 of the energy
        maps[1, 4, 6], maps[1, 1, 2] = 1.0, 0.25  # max outside, 1/5 inside
        maps[2] = 0.0  # constant: points nowhere, no energy
        boxes = [np.array([[2, 1, 3, 2]])] * 3
        result, per_image = pointing_game(maps, boxes, return_per_image=True)
        np.testing.assert_array_equal(per_image["Pointing game"], [True, False, False])
        np.testing.assert_allclose(per_image["Energy pointing game"], [2 / 3, 0.2, 0.0])
        assert result == {
            "Pointing game": pytest.approx(100 / 3),
            "Energy pointing game": pytest.approx(100 * (2 / 3 + 0.2) / 3),
        }

    def test_ties_border_boxes_and_overlaps(self):
        # Two tied maxima, one inside: a hit (Quantus's rule).
        maps = np.zeros((2, 4, 4), np.float32)
        maps[0, 0, 0] = maps[0, 3, 3] = 1.0
        # A box ending at x1 = width (wsolevaluation's border boxes) and an
        # overlapping second box: the union counts once.
        maps[1] = np.arange(16, dtype=np.float32).reshape(4, 4) / 15
        boxes = [np.array([[3, 3, 4, 4]]), np.array([[2, 0, 4, 1], [3, 0, 3, 3]])]
        _, per_image = pointing_game(maps, boxes, return_per_image=True)
        assert per_image["Pointing game"].tolist() == [True, True]
        union = [2, 3, 6, 7, 11, 15]  # flat indices of the boxes' union
        assert per_image["Energy pointing game"][1] == pytest.approx(
            sum(union) / sum(range(16))
        )
        for scoremap, b, e in zip(
            maps, boxes, per_image["Energy pointing game"], strict=True
        ):
            assert numpy_pointing(scoremap, b)[1] == pytest.approx(e)

    def test_validation(self):
        maps = np.zeros((1, 4, 4), np.float32)
        with raises_invalid("maps", "[0, 1]"):
            pointing_game(maps + 2, [np.array([[0, 0, 1, 1]])])
        with raises_invalid("gt_boxes", "x1 <= 4"):
            pointing_game(maps, [np.array([[0, 0, 5, 1]])])
        with raises_invalid("gt_boxes", "one entry per score map"):
            pointing_game(maps, [np.array([[0, 0, 1, 1]])] * 2)
        with raises_invalid("return_per_image"):
            pointing_game(maps, [np.array([[0, 0, 1, 1]])], return_per_image=1)


@pytest.fixture(scope="module")
def dual():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(4, activation="softmax")(x)
    return kd.dual_sigmoid(keras.Model(inputs, outputs), seed=0)


def test_pairs_score_each_class_against_its_own_box(dual):
    rng = np.random.default_rng(0)
    images = rng.random((5, 12, 12, 3)).astype(np.float32)
    labels = np.array([[0, 1], [2, 3], [1, 0], [3, 2], [0, 3]])
    boxes = np.array([[[0, 0, 5, 5], [6, 6, 12, 11]]] * 5)
    cam = kd.cams.GradCAM(dual)
    result, per_image = pair_pointing_game(
        cam, images, labels, boxes, return_per_image=True
    )
    fresh = kd.cams.GradCAM(dual)
    for slot in range(2):
        maps = fresh(images, labels[:, slot], branch="sigmoid")
        for i in range(5):
            hit, energy = numpy_pointing(maps[i], [boxes[i, slot]])
            assert per_image["Pointing game (pairs)"][i, slot] == hit
            assert per_image["Energy pointing game (pairs)"][i, slot] == (
                pytest.approx(energy, rel=1e-6)
            )
    assert result["Pointing game (pairs)"] == pytest.approx(
        100 * per_image["Pointing game (pairs)"].mean()
    )
    assert list(result) == ["Pointing game (pairs)", "Energy pointing game (pairs)"]
    with raises_invalid("labels", "distinct classes"):
        pair_pointing_game(cam, images, np.array([[0, 0]] * 5), boxes)
    with raises_invalid("labels", "distinct classes"):
        pair_pointing_game(cam, images, labels + 2, boxes)
    with raises_invalid("boxes", "(5, 2, 4)"):
        pair_pointing_game(cam, images, labels, boxes[:, :1])
    with raises_invalid("cam", "kd.cams object"):
        pair_pointing_game(dual, images, labels, boxes)
