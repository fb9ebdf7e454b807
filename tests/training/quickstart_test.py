"""The main job end to end, at reduced size (`--small`)."""

import json

import pytest

from training import flags as flags_lib
from training import quickstart

METHODS = ["gradcam", "scorecam"]


@pytest.mark.slow
def test_quickstart_small(tmp_path):
    outcome = quickstart.run(
        flags_lib.config(
            quickstart.SPEC,
            output_dir=str(tmp_path / "run"),
            data_root=str(tmp_path / "data"),
            small=True,
            # Fewer epochs and methods than the main job: the pipeline, not
            # its numbers (the README's table comes from the full run).
            classifier_epochs=4,
            sigmoid_epochs=1,
            methods=METHODS,
        )
    )
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"] == "cluttered_mnist"
    assert results["num_images"] == 200
    assert set(results["methods"]) == set(METHODS)
    gradcam = results["methods"]["gradcam"]["sigmoid"]
    # Boxes and masks: the embedded dataset has both.
    assert {"MaxBoxAccV2", "PxAP", "Average Drop"} <= set(gradcam)
    # The pairs test and the intervals (the defaults of the main job).
    assert results["num_pair_images"] > 0
    assert "Pointing game (pairs)" in gradcam and "MaxBoxAccV2 CI" in gradcam
    assert "delta" in results["methods"]["gradcam"]
    # The reduced run learns (chance is 10%).
    assert results["top1_cls"]["softmax"] > 30.0
    assert (run / "report.md").read_text().count("| + sigmoid branch |") == len(METHODS)
    assert (run / "figures" / "gradcam.png").exists()
    assert (run / "classifier" / "classifier.keras").exists()
    assert (run / "sigmoid" / "dual_sigmoid.keras").exists()
    assert outcome["seconds"] > 0
