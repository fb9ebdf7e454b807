"""Tests of training/evaluate.py on a tiny real dataset."""

import json

import keras
import numpy as np
import pytest
from helpers.errors import raises_invalid

import keras_dualsig as kd
from training import evaluate
from training import flags as flags_lib

METHODS = ["cam", "gradcam", "scorecam"]


@pytest.fixture(scope="module")
def setup(evaluate_setup):
    return evaluate_setup  # tests/training/conftest.py


def _run(setup, tmp_path, localization, **overrides):
    info, model = setup
    metadata = (
        info.metadata_root if localization == "boxes" else info.mask_metadata_root
    )
    flags = flags_lib.config(
        evaluate.SPEC,
        dataset="custom",
        data_root=info.data_root,
        metadata_root=metadata,
        num_classes=10,
        batch_size=5,  # 12 images: batches of 5, 5 and 2.
        model=model,
        output_dir=str(tmp_path),
        methods=METHODS,
        scorecam_channels=4,
        num_figure_images=3,
    )
    for name, value in overrides.items():
        setattr(flags, name, value)
    return evaluate.run(flags)


def test_boxes_results_report_and_figures(setup, tmp_path):
    results = _run(setup, tmp_path, "boxes")
    with open(tmp_path / "results.json") as f:
        assert json.load(f) == results
    assert results["dataset"] == "custom"
    assert results["num_images"] == 12
    assert set(results["methods"]) == set(METHODS)
    expected_keys = {
        "Top-1 Loc",
        "GT-known Loc",
        "MaxBoxAccV2",
        "Pointing game",
        "Energy pointing game",
        "Average Drop",
        "Increase in Confidence",
        "Average Gain",
    }
    for by_branch in results["methods"].values():
        assert set(by_branch) == {"softmax", "sigmoid", "delta"}
        for branch in ("softmax", "sigmoid"):
            metrics = by_branch[branch]
            # --intervals (default): every metric with its bootstrap interval.
            assert set(metrics) == expected_keys | {f"{k} CI" for k in expected_keys}
            for key in expected_keys:
                low, high = metrics[f"{key} CI"]
                assert 0.0 <= low <= metrics[key] <= high <= 100.0
        for key in expected_keys:
            delta = by_branch["delta"][key]
            difference = by_branch["sigmoid"][key] - by_branch["softmax"][key]
            assert delta["value"] == pytest.approx(difference)
            assert delta["CI"][0] <= delta["CI"][1]
    outcomes = np.load(tmp_path / "outcomes.npz")
    assert outcomes["labels"].shape == (12,)
    assert outcomes["methods/gradcam/sigmoid/Average Drop"].shape == (12,)
    # Top-1 Cls against an independent prediction of the same images.
    info, model_path = setup
    model = keras.models.load_model(model_path)
    images, labels = [], []
    for element in info.load("test"):
        images.append(element["image"].numpy())
        labels.append(int(element["label"]))
    predicted = model.predict(np.stack(images), verbose=0)
    for branch in ("softmax", "sigmoid"):
        accuracy = 100.0 * np.mean(np.argmax(predicted[branch], -1) == labels)
        assert results["top1_cls"][branch] == pytest.approx(accuracy)
    report = (tmp_path / "report.md").read_text()
    assert report.count("| + sigmoid branch |") == len(METHODS)
    for method in METHODS:
        figure = tmp_path / "figures" / f"{method}.png"
        assert figure.stat().st_size > 1000


def test_masks_give_pxap(setup, tmp_path):
    results = _run(setup, tmp_path, "masks")
    metrics = results["methods"]["gradcam"]["sigmoid"]
    assert "PxAP" in metrics and "MaxBoxAccV2" not in metrics
    assert 0.0 <= metrics["PxAP"] <= 100.0


def test_metric_families_choose_the_columns(setup, tmp_path):
    """Deletion only: no WSOL nor fidelity columns, the deletion AUC."""
    results = _run(
        setup,
        tmp_path,
        "boxes",
        metrics=["deletion"],
        intervals=False,
        methods=["gradcam"],
        max_images=5,
        num_figure_images=0,
    )
    metrics = results["methods"]["gradcam"]["sigmoid"]
    assert set(metrics) == {"Deletion AUC"}
    assert 0.0 <= metrics["Deletion AUC"] <= 1.0
    report = (tmp_path / "report.md").read_text()
    assert "Deletion AUC ↓" in report and "MaxBoxAccV2" not in report


def test_format_report_by_hand():
    results = {
        "dataset": "toy",
        "num_images": 4,
        "top1_cls": {"softmax": 75.0, "sigmoid": 50.0},
        "methods": {
            "gradcam": {
                "softmax": {"MaxBoxAccV2": 50.0, "Average Drop": 30.0},
                "sigmoid": {"MaxBoxAccV2": 60.25, "Average Drop": 20.0},
            }
        },
    }
    report = evaluate.format_report(results)
    assert "| Method | MaxBoxAccV2 ↑ | Average Drop ↓ |" in report
    assert "| Grad-CAM | 50.00 | 30.00 |" in report
    assert "| + sigmoid branch | 60.25 (+10.25) | 20.00 (-10.00) |" in report
    assert "softmax 75.00%" in report and "sigmoid branch 50.00%" in report
    # A delta whose paired interval excludes 0 is starred; one that holds 0 not.
    results["methods"]["gradcam"]["delta"] = {
        "MaxBoxAccV2": {"value": 10.25, "CI": [2.0, 18.0]},
        "Average Drop": {"value": -10.0, "CI": [-25.0, 3.0]},
    }
    report = evaluate.format_report(results)
    assert "| + sigmoid branch | 60.25 (+10.25*) | 20.00 (-10.00) |" in report
    assert "interval excludes 0" in report


@pytest.mark.parametrize("metrics", [[], ["road", "shap"], ["wsol", "wsol"]])
def test_bad_metric_families(setup, tmp_path, metrics):
    _, model = setup
    with raises_invalid("metrics", repr(metrics)):
        evaluate.run(
            flags_lib.config(
                evaluate.SPEC, model=model, output_dir=str(tmp_path), metrics=metrics
            )
        )


def test_missing_model_flag(tmp_path):
    with raises_invalid("model", "dual_sigmoid.keras"):
        evaluate.run(flags_lib.config(evaluate.SPEC, output_dir=str(tmp_path)))


def test_methods_all_and_the_costly_opt_ins():
    assert evaluate.resolve_methods(["all"]) == list(kd.cams.NAMES)
    assert evaluate.resolve_methods(["gradcam"]) == ["gradcam"]
    evaluate.check_methods(["all"])
    # The default is every variant but the costly ones, which stay opt-in.
    assert set(evaluate.DEFAULT_METHODS) | set(evaluate.COSTLY_METHODS) == set(
        kd.cams.NAMES
    )
    assert not set(evaluate.DEFAULT_METHODS) & set(evaluate.COSTLY_METHODS)
    with raises_invalid("methods", "['all', 'gradcam']"):
        evaluate.check_methods(["all", "gradcam"])
