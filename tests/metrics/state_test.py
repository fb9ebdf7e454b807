"""Evaluator states: save, load and merge give one run's numbers bit for bit.

The data are split into consecutive parts, each part evaluated by its own
evaluator (with different `num_workers`), the states saved to .npz, loaded
and merged in order; the merged state, results, outcomes and bootstrap
intervals must equal those of one evaluator fed everything, exactly (`==`
on floats, `array_equal` on arrays), and `num_workers` must not change any
number.
"""

import math

import keras
import numpy as np
import pytest
from helpers.errors import raises_invalid
from helpers.maps import blob_maps, random_boxes

import keras_dualsig as kd
from keras_dualsig.metrics import BoxEvaluator, CAMEvaluation, MaskEvaluator

SIZE, CLASSES = 12, 3
THRESHOLDS = np.linspace(0, 1, 21)
SPLITS = (slice(0, 4), slice(4, 5), slice(5, 10))


def assert_same_state(a, b):
    assert sorted(a) == sorted(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def assert_same_numbers(a, b):
    """Nested dicts / lists of floats equal exactly (NaN equal to NaN)."""
    if isinstance(a, dict):
        assert sorted(a) == sorted(b)
        for key in a:
            assert_same_numbers(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same_numbers(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


@pytest.mark.parametrize("keep_outcomes", [False, True])
def test_box_shards_merge_exactly(tmp_path, keep_outcomes):
    rng = np.random.default_rng(0)
    maps = blob_maps(rng, 10, 24)
    boxes = random_boxes(rng, 10, 24)
    correct = rng.random(10) < 0.5
    options = {"cam_thresholds": THRESHOLDS, "keep_outcomes": keep_outcomes}
    whole = BoxEvaluator(**options, num_workers=1)
    whole.update(maps, boxes, correct)
    paths = []
    for index, part in enumerate(SPLITS):
        shard = BoxEvaluator(**options, num_workers=index + 1)
        shard.update(maps[part], boxes[part], correct[part])
        paths.append(tmp_path / f"box_{index}.npz")
        shard.save(paths[-1])
    merged = BoxEvaluator.from_state(paths[0]).merge(paths[1:])
    assert_same_state(merged.state(), whole.state())
    assert_same_numbers(merged.result(), whole.result())
    np.testing.assert_array_equal(
        merged.accuracy_curves()["BoxAcc@50"], whole.accuracy_curves()["BoxAcc@50"]
    )
    if keep_outcomes:
        for key, value in whole.outcomes().items():
            np.testing.assert_array_equal(merged.outcomes()[key], value)
    # A fresh evaluator merging everything into nothing; `load` replaces.
    fresh = BoxEvaluator(**options).merge([BoxEvaluator(**options), whole])
    assert_same_numbers(fresh.result(), whole.result())
    fresh.load(paths[1])
    assert fresh.state()["count"] == 1


def test_box_num_workers_change_nothing():
    rng = np.random.default_rng(1)
    maps = blob_maps(rng, 9, 20)
    boxes = random_boxes(rng, 9, 20)
    states = []
    for workers in (1, 2, 4):
        evaluator = BoxEvaluator(THRESHOLDS, keep_outcomes=True, num_workers=workers)
        evaluator.update(maps, boxes)
        states.append(evaluator.state())
    assert_same_state(states[0], states[1])
    assert_same_state(states[0], states[2])
    assert BoxEvaluator().num_workers == 1
    assert BoxEvaluator(num_workers=None).num_workers == (
        kd.metrics.wsol.available_cores()
    )


@pytest.mark.parametrize("keep_outcomes", [False, True])
def test_mask_shards_merge_exactly(tmp_path, keep_outcomes):
    rng = np.random.default_rng(2)
    maps = blob_maps(rng, 10, 16)
    masks = rng.random((10, 16, 16)) < 0.3
    ignore = rng.random((10, 16, 16)) < 0.1
    whole = MaskEvaluator(THRESHOLDS, keep_outcomes=keep_outcomes)
    whole.update(maps, masks, ignore)
    shards = []
    for index, part in enumerate(SPLITS):
        shard = MaskEvaluator(THRESHOLDS, keep_outcomes=keep_outcomes)
        shard.update(maps[part], masks[part], ignore[part])
        shard.save(tmp_path / f"mask_{index}.npz")
        shards.append(tmp_path / f"mask_{index}.npz")
    merged = MaskEvaluator.from_state(shards[0]).merge(shards[1:])
    assert_same_state(merged.state(), whole.state())
    assert merged.result() == whole.result()
    if keep_outcomes:
        histograms = whole.outcomes()["histograms"]
        assert merged.outcomes()["histograms"].dtype == histograms.dtype
        np.testing.assert_array_equal(merged.outcomes()["histograms"], histograms)


def test_merge_errors(tmp_path):
    rng = np.random.default_rng(3)
    maps = blob_maps(rng, 2, 12)
    boxes = random_boxes(rng, 2, 12)
    with_correct = BoxEvaluator(THRESHOLDS)
    with_correct.update(maps, boxes, [True, False])
    without = BoxEvaluator(THRESHOLDS)
    without.update(maps, boxes)
    with raises_invalid("correct", "agree"):
        with_correct.merge(without)
    with raises_invalid("others", "cam_thresholds"):
        BoxEvaluator().merge(without)
    with raises_invalid("others", "gt_box_mode"):
        BoxEvaluator(THRESHOLDS, gt_box_mode="first").merge(without.state())
    with raises_invalid("others", "keep_outcomes"):
        MaskEvaluator(keep_outcomes=True).merge(MaskEvaluator())
    with raises_invalid("others", "an evaluator"):
        without.merge(3)
    with raises_invalid("num_workers", "positive int"):
        BoxEvaluator(num_workers=0)


@pytest.fixture(scope="module")
def dual():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(x)
    return kd.dual_sigmoid(keras.Model(inputs, outputs), seed=0)


def test_cam_evaluation_shards_merge_exactly(dual, tmp_path):
    rng = np.random.default_rng(4)
    batches = []
    for _ in range(3):
        images = rng.random((4, SIZE, SIZE, 3)).astype(np.float32)
        labels = rng.integers(0, CLASSES, 4)
        masks = rng.random((4, SIZE, SIZE)) < 0.3
        batches.append((images, labels, random_boxes(rng, 4, SIZE), masks))
    pair_labels = np.stack([batches[0][1], (batches[0][1] + 1) % CLASSES], axis=1)
    pair_boxes = np.array([[[0, 0, 5, 5], [6, 6, SIZE, SIZE - 1]]] * 4)
    options = {"box_options": {"cam_thresholds": THRESHOLDS}}

    def evaluate(parts, pairs):
        evaluation = CAMEvaluation(dual, ["gradcam"], **options)
        for images, labels, boxes, masks in parts:
            evaluation.update(images, labels, boxes=boxes, masks=masks)
        if pairs:
            evaluation.update_pairs(batches[0][0], pair_labels, pair_boxes)
        return evaluation

    whole = evaluate(batches, pairs=True)
    evaluate(batches[:1], pairs=False).save(tmp_path / "shard_0.npz")
    evaluate(batches[1:], pairs=True).save(tmp_path / "shard_1.npz")
    merged = CAMEvaluation(dual, ["gradcam"], **options).load(tmp_path / "shard_0.npz")
    merged.merge(str(tmp_path / "shard_1.npz"))
    assert_same_state(merged.state(), whole.state())
    for key, value in whole.outcomes().items():
        np.testing.assert_array_equal(merged.outcomes()[key], value, err_msg=key)
    assert_same_numbers(
        merged.result(intervals=True, num_resamples=50),
        whole.result(intervals=True, num_resamples=50),
    )
    with raises_invalid("others", "config/methods"):
        CAMEvaluation(dual, ["cam"]).merge(whole)
    with raises_invalid("boxes", "agree"):
        no_boxes = CAMEvaluation(dual, ["gradcam"], **options)
        no_boxes.update(batches[0][0], batches[0][1])
        no_boxes.merge(whole)


def test_road_seeds_follow_the_batch_offset(dual):
    rng = np.random.default_rng(5)
    batches = [
        (rng.random((3, SIZE, SIZE, 3)).astype(np.float32), rng.integers(0, 3, 3))
        for _ in range(3)
    ]
    options = {
        "fidelity_metrics": False,
        "causal_metrics": ("road",),
        "causal_options": {"road": {"seed": 0, "percentiles": (50,)}},
    }

    def evaluate(parts, **extra):
        evaluation = CAMEvaluation(dual, ["cam"], **options, **extra)
        for images, labels in parts:
            evaluation.update(images, labels)
        return evaluation

    whole = evaluate(batches)
    merged = evaluate(batches[:1]).merge(evaluate(batches[1:], batch_offset=1))
    assert_same_state(merged.state(), whole.state())
    # Without the offset, the second part draws other noise.
    unaligned = evaluate(batches[:1]).merge(evaluate(batches[1:]))
    key = "terms/cam/sigmoid/ROAD MoRF"
    assert not np.array_equal(unaligned.state()[key], whole.state()[key])
    with raises_invalid("batch_offset", "int >= 0"):
        CAMEvaluation(dual, ["cam"], batch_offset=-1)
