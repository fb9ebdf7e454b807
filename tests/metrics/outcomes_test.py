"""Per-image outcomes, bootstrap intervals and paired deltas of the evaluators.

`BoxEvaluator` / `MaskEvaluator` outcomes are checked image by image against
the threshold-by-threshold reference (tests/helpers/wsol_reference.py) run on
one image at a time; `CAMEvaluation.result(intervals=True)` against
`kd.metrics.bootstrap_interval` / `paired_bootstrap_interval` on the arrays
of `outcomes()`, whose means give back `result()`; `update_pairs` and the
causal metrics against the library functions called directly on maps from
fresh CAM objects.
"""

import keras
import numpy as np
import pytest
from helpers.errors import raises_invalid
from helpers.maps import blob_maps, random_boxes
from helpers.wsol_reference import (
    ReferenceBoxEvaluator,
    ReferenceMaskEvaluator,
    coded_mask,
)

import keras_dualsig as kd
from keras_dualsig.metrics import (
    BoxEvaluator,
    CAMEvaluation,
    MaskEvaluator,
    bootstrap_distribution,
    bootstrap_interval,
    paired_bootstrap_interval,
)

SIZE, CLASSES = 12, 3
THRESHOLDS = np.linspace(0, 1, 21)


def test_box_outcomes_image_by_image():
    rng = np.random.default_rng(0)
    maps = blob_maps(rng, 8, 24)
    boxes = random_boxes(rng, 8, 24)
    correct = rng.random(8) < 0.5
    kept = BoxEvaluator(THRESHOLDS, keep_outcomes=True)
    plain = BoxEvaluator(THRESHOLDS)
    for part in (slice(0, 5), slice(5, 8)):
        kept.update(maps[part], boxes[part], correct[part])
        plain.update(maps[part], boxes[part], correct[part])
    assert kept.result() == plain.result()
    outcomes = kept.outcomes()
    for index in range(8):
        reference = ReferenceBoxEvaluator(THRESHOLDS)
        reference.update(maps[index : index + 1], boxes[index : index + 1], correct)
        for name, curve in reference.curves().items():
            np.testing.assert_array_equal(outcomes[name][index], curve == 100.0)
        result = reference.result()
        assert outcomes["GT-known Loc"][index] == (result["GT-known Loc"] == 100.0)
        assert outcomes["Top-1 Loc"][index] == (result["Top-1 Loc"] == 100.0)
    result = kept.result()
    best = [100 * outcomes[f"BoxAcc@{d}"].mean(0).max() for d in (30, 50, 70)]
    assert result["MaxBoxAccV2"] == pytest.approx(np.mean(best))
    assert result["MaxBoxAcc"] == pytest.approx(100 * outcomes["BoxAcc"].mean(0).max())
    with raises_invalid("keep_outcomes", "True"):
        plain.outcomes()


def test_mask_outcomes_image_by_image():
    rng = np.random.default_rng(1)
    maps = blob_maps(rng, 6, 16)
    masks = rng.random((6, 16, 16)) < 0.3
    ignore = rng.random((6, 16, 16)) < 0.1
    kept, plain = MaskEvaluator(keep_outcomes=True), MaskEvaluator()
    kept.update(maps, masks, ignore)
    plain.update(maps, masks, ignore)
    assert kept.result() == plain.result()  # bit for bit
    histograms = kept.outcomes()["histograms"]
    assert histograms.dtype == np.uint16 and histograms.shape[:2] == (6, 2)
    for index in range(6):
        reference = ReferenceMaskEvaluator()
        reference.accumulate(maps[index], coded_mask(masks[index], ignore[index]))
        np.testing.assert_array_equal(histograms[index, 0], reference.foreground)
        np.testing.assert_array_equal(histograms[index, 1], reference.background)
    assert kd.metrics.pxap(histograms.sum(axis=0)) == pytest.approx(
        kept.result()["PxAP"], rel=1e-12
    )


@pytest.fixture(scope="module")
def dual():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((SIZE, SIZE, 3))
    x = keras.layers.Conv2D(6, 3, padding="same", activation="relu")(inputs)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(CLASSES, activation="softmax")(x)
    return kd.dual_sigmoid(keras.Model(inputs, outputs), seed=0)


@pytest.fixture(scope="module")
def batches():
    rng = np.random.default_rng(2)
    out = []
    for _ in range(2):
        images = rng.random((4, SIZE, SIZE, 3)).astype(np.float32)
        labels = rng.integers(0, CLASSES, 4)
        masks = rng.random((4, SIZE, SIZE)) < 0.3
        out.append((images, labels, random_boxes(rng, 4, SIZE), masks))
    return out


@pytest.fixture(scope="module")
def evaluation(dual, batches):
    evaluation = CAMEvaluation(
        dual,
        ["gradcam"],
        causal_metrics=("road", "deletion"),
        causal_options={
            "road": {"percentiles": (30, 70), "noise": 0.0},
            "deletion": {"steps": 4},
        },
    )
    for images, labels, boxes, masks in batches:
        evaluation.update(images, labels, boxes=boxes, masks=masks)
    return evaluation


KEYS = [
    "Top-1 Loc",
    "GT-known Loc",
    "MaxBoxAccV2",
    "Pointing game",
    "Energy pointing game",
    "PxAP",
    "Average Drop",
    "Increase in Confidence",
    "Average Gain",
    "ROAD MoRF",
    "ROAD LeRF",
    "ROAD combined",
    "Deletion AUC",
]


def test_outcomes_give_back_the_results(evaluation):
    result = evaluation.result()
    outcomes = evaluation.outcomes()
    assert outcomes["labels"].shape == (8,)
    for branch in ("softmax", "sigmoid"):
        entry = result["methods"]["gradcam"][branch]
        assert list(entry) == KEYS
        prefix = f"methods/gradcam/{branch}/"
        for name in KEYS:
            if name in ("MaxBoxAccV2", "PxAP"):
                continue
            scale = 1.0 if name.startswith(("ROAD", "Deletion")) else 100.0
            assert entry[name] == pytest.approx(
                scale * outcomes[prefix + name].mean()
            ), name
        boxes = np.stack([outcomes[prefix + f"BoxAcc@{d}"] for d in (30, 50, 70)], 1)
        assert entry["MaxBoxAccV2"] == pytest.approx(100 * boxes.mean(0).max(-1).mean())
        assert entry["PxAP"] == pytest.approx(
            kd.metrics.pxap(outcomes[prefix + "PxAP histograms"].sum(0))
        )
        assert result["top1_cls"][branch] == pytest.approx(
            100 * outcomes[f"top1_cls/{branch}"].mean()
        )


def test_causal_metrics_match_the_functions(dual, batches, evaluation):
    # Maps of k* (the softmax head's prediction) from a fresh CAM.
    cam = kd.cams.GradCAM(dual)
    road, deletion = [], []
    for images, _, _, _ in batches:
        k = dual.predict(images, verbose=0)["softmax"].argmax(-1)
        maps = cam(images, k, branch="sigmoid")
        road.append(
            kd.metrics.road(
                dual,
                images,
                maps,
                k,
                percentiles=(30, 70),
                noise=0.0,
                return_per_image=True,
            )[1]["ROAD combined"]
        )
        deletion.append(
            kd.metrics.deletion_auc(dual, images, maps, k, steps=4, return_curves=True)[
                1
            ]
        )
    entry = evaluation.result()["methods"]["gradcam"]["sigmoid"]
    assert entry["ROAD combined"] == pytest.approx(np.concatenate(road).mean())
    assert entry["Deletion AUC"] == pytest.approx(np.concatenate(deletion).mean())


def test_intervals_and_paired_deltas(evaluation, tmp_path):
    plain = evaluation.result()
    result = evaluation.result(intervals=True, num_resamples=200, seed=3)
    outcomes = evaluation.outcomes()
    assert list(result) == ["num_images", "top1_cls", "top1_cls CI", "methods"]
    assert result["num_images"] == plain["num_images"]
    assert list(result["top1_cls CI"]) == ["softmax", "sigmoid"]
    top1 = 100 * outcomes["top1_cls/sigmoid"]
    assert result["top1_cls CI"]["sigmoid"] == pytest.approx(
        bootstrap_interval(top1, num_resamples=200, seed=3)["CI"]
    )
    by_branch = result["methods"]["gradcam"]
    assert list(by_branch) == ["softmax", "sigmoid", "delta"]
    for branch in ("softmax", "sigmoid"):
        entry = by_branch[branch]
        assert list(entry) == [k for name in KEYS for k in (name, f"{name} CI")]
        for name in KEYS:
            assert entry[name] == plain["methods"]["gradcam"][branch][name]
    prefix = "methods/gradcam/{}/"
    drop = {
        b: 100 * outcomes[prefix.format(b) + "Average Drop"]
        for b in ("softmax", "sigmoid")
    }
    kwargs = {"num_resamples": 200, "seed": 3}
    assert by_branch["sigmoid"]["Average Drop CI"] == pytest.approx(
        bootstrap_interval(drop["sigmoid"], **kwargs)["CI"]
    )
    paired = paired_bootstrap_interval(drop["sigmoid"], drop["softmax"], **kwargs)
    delta = by_branch["delta"]["Average Drop"]
    assert delta["value"] == pytest.approx(paired["value"])
    assert delta["CI"] == pytest.approx(paired["CI"])
    assert list(by_branch["delta"]) == KEYS
    boxes = np.stack(
        [outcomes[prefix.format("softmax") + f"BoxAcc@{d}"] for d in (30, 50, 70)], 1
    )
    values = 100 * bootstrap_distribution(boxes, "mean_of_max", **kwargs)
    assert by_branch["softmax"]["MaxBoxAccV2 CI"] == pytest.approx(
        list(np.quantile(values, [0.025, 0.975]))
    )
    # The outcomes round-trip through one .npz file.
    evaluation.save_outcomes(tmp_path / "outcomes.npz")
    with np.load(tmp_path / "outcomes.npz") as saved:
        assert sorted(saved.files) == sorted(outcomes)
        for name, array in outcomes.items():
            np.testing.assert_array_equal(saved[name], array)


def test_pairs(dual, batches):
    images, labels, _, _ = batches[0]
    pair_labels = np.stack([labels, (labels + 1) % CLASSES], axis=1)
    pair_boxes = np.array([[[0, 0, 5, 5], [6, 6, SIZE, SIZE - 1]]] * 4)
    evaluation = CAMEvaluation(dual, ["gradcam"])
    evaluation.update(images, labels)
    evaluation.update_pairs(images, pair_labels, pair_boxes)
    result = evaluation.result(intervals=True, num_resamples=50)
    assert result["num_pair_images"] == 4
    for branch in ("softmax", "sigmoid"):
        expected = kd.metrics.pair_pointing_game(
            kd.cams.GradCAM(dual), images, pair_labels, pair_boxes, branch=branch
        )
        entry = result["methods"]["gradcam"][branch]
        for name, value in expected.items():
            assert entry[name] == pytest.approx(value)
            low, high = entry[f"{name} CI"]
            assert 0.0 <= low <= high <= 100.0
    assert "Pointing game (pairs)" in result["methods"]["gradcam"]["delta"]
    outcomes = evaluation.outcomes()
    assert outcomes["pair_labels"].shape == (4, 2)
    assert outcomes["methods/gradcam/sigmoid/Pointing game (pairs)"].shape == (4, 2)
    with raises_invalid("labels", "distinct classes"):
        evaluation.update_pairs(images, np.stack([labels, labels], 1), pair_boxes)
    with raises_invalid("labels", "2 classes per image"):
        evaluation.update_pairs(
            images,
            np.stack([labels, (labels + 1) % 3, (labels + 2) % 3], 1),
            np.concatenate([pair_boxes, pair_boxes[:, :1]], axis=1),
        )
    assert evaluation.result()["num_pair_images"] == 4


def test_options_and_errors(dual, batches):
    images, labels, boxes, _ = batches[0]
    plain = CAMEvaluation(dual, ["gradcam"], keep_outcomes=False)
    plain.update(images, labels, boxes=boxes)
    kept = CAMEvaluation(dual, ["gradcam"])
    kept.update(images, labels, boxes=boxes)
    assert plain.result() == kept.result()
    with raises_invalid("intervals", "keep_outcomes=True"):
        plain.result(intervals=True)
    with raises_invalid("keep_outcomes"):
        plain.outcomes()
    with raises_invalid("level", "(0, 1)"):
        kept.result(intervals=True, level=95)
    empty = CAMEvaluation(dual, ["gradcam"]).result(intervals=True)
    assert np.isnan(empty["methods"]["gradcam"]["delta"]["Average Drop"]["CI"]).all()
    cases = [
        ({"causal_metrics": "road"}, "causal_metrics", "distinct names"),
        ({"causal_metrics": ("rise",)}, "causal_metrics", "'road'"),
        (
            {"causal_metrics": ("road",), "causal_options": {"road": {"steps": 3}}},
            "causal_options",
            "kd.metrics.road accepts",
        ),
        (
            {
                "causal_metrics": ("deletion",),
                "causal_options": {"deletion": {"confidence": "sigmoid"}},
            },
            "causal_options",
            "set by CAMEvaluation",
        ),
        (
            {"causal_options": {"road": {}}},
            "causal_options",
            "from names in []",
        ),
        ({"box_options": {"keep_outcomes": True}}, "box_options", "keep_outcomes"),
        ({"keep_outcomes": 1}, "keep_outcomes", "True or False"),
    ]
    for kwargs, argument, fragment in cases:
        with raises_invalid(argument, fragment):
            CAMEvaluation(dual, ["gradcam"], **kwargs)


def test_intervals_from_a_saved_outcome_file_equal_the_evaluations(
    evaluation, tmp_path
):
    """The intervals read one method's outcomes at a time; a saved file gives all."""
    from keras_dualsig.metrics import _intervals

    path = tmp_path / "outcomes.npz"
    evaluation.save_outcomes(path)
    with np.load(path) as saved:
        # Written one method at a time: the same arrays as outcomes().
        every = evaluation.outcomes()
        assert sorted(saved.files) == sorted(every)
        for key, array in every.items():
            np.testing.assert_array_equal(saved[key], array)
            assert saved[key].dtype == array.dtype
        from_file = _intervals.with_intervals(
            evaluation.result(),
            dict(saved),
            level=0.95,
            num_resamples=100,
            seed=5,
        )
    assert from_file == evaluation.result(intervals=True, num_resamples=100, seed=5)
    # outcomes(methods=...) gives the chosen methods' per-image arrays only.
    only = evaluation.outcomes(methods=("gradcam",))
    every = evaluation.outcomes()
    assert set(only) == {
        k for k in every if not k.startswith("methods/") or "/gradcam/" in k
    }
    none = evaluation.outcomes(methods=())
    assert not any(k.startswith("methods/") for k in none)
