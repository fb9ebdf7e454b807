"""The main job end to end, at reduced size (`--small`)."""

import json

import pytest

from training import evaluate, quickstart
from training import flags as flags_lib


@pytest.mark.slow
def test_quickstart_small(tmp_path):
    outcome = quickstart.run(
        flags_lib.config(
            quickstart.SPEC,
            output_dir=str(tmp_path / "run"),
            data_root=str(tmp_path / "data"),
            small=True,
        )
    )
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())
    assert results["dataset"] == "cluttered_mnist"
    assert results["num_images"] == 200
    assert set(results["methods"]) == set(evaluate.DEFAULT_METHODS)
    gradcam = results["methods"]["gradcam"]["sigmoid"]
    # Boxes and masks: the embedded dataset has both.
    assert {"MaxBoxAccV2", "PxAP", "Average Drop"} <= set(gradcam)
    # The reduced run learns (84% when measured; chance is 10%).
    assert results["top1_cls"]["softmax"] > 50.0
    assert (run / "report.md").read_text().count("| + sigmoid branch |") == 7
    assert (run / "figures" / "gradcam.png").exists()
    assert (run / "classifier" / "classifier.keras").exists()
    assert (run / "sigmoid" / "dual_sigmoid.keras").exists()
    assert outcome["seconds"] > 0
