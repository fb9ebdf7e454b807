"""A small ViT (--arch=vit_tiny) through the whole pipeline on the embedded data.

train_classifier (one epoch) -> train_sigmoid (one epoch) -> evaluate (Grad-CAM
on both branches), each script's run() on tiny settings.
"""

import json

import keras
import numpy as np
import pytest

import keras_dualsig as kd
from training import evaluate, train_classifier, train_sigmoid
from training import flags as flags_lib

pytest.importorskip("keras_hub")


@pytest.mark.slow
def test_vit_tiny_pipeline(tiny_data, tmp_path):
    data = {**tiny_data, "max_images": 16}
    classifier = train_classifier.run(
        flags_lib.config(
            train_classifier.SPEC,
            **data,
            arch="vit_tiny",
            image_size=32,
            model_dir=str(tmp_path / "classifier"),
            epochs=1,
        )
    )
    dual = train_sigmoid.run(
        flags_lib.config(
            train_sigmoid.SPEC,
            **data,
            classifier=classifier["model_path"],
            model_dir=str(tmp_path / "dual"),
            epochs=1,
        )
    )
    info = json.loads((tmp_path / "dual" / "model_info.json").read_text())
    assert info["arch"] == "vit_tiny" and info["image_size"] == 32
    model = keras.models.load_model(dual["model_path"], safe_mode=True)
    assert isinstance(model, kd.DualSigmoidModel)
    # The class-token head: Grad-CAM explains the encoder's input, 8 x 8 patches.
    cam = kd.cams.GradCAM(model)
    maps = cam(np.zeros((1, 32, 32, 3), "float32"), resize=False)
    assert maps.shape == (1, 8, 8)

    results = evaluate.run(
        flags_lib.config(
            evaluate.SPEC,
            dataset="custom",
            data_root=data["data_root"],
            metadata_root=data["metadata_root"],
            num_classes=10,
            batch_size=8,
            max_images=8,
            model=dual["model_path"],
            output_dir=str(tmp_path / "eval"),
            methods=["gradcam"],
            num_figure_images=2,
        )
    )
    assert results["num_images"] == 8
    by_branch = results["methods"]["gradcam"]
    for metrics in (by_branch["softmax"], by_branch["sigmoid"]):
        for key in ("MaxBoxAccV2", "GT-known Loc", "Average Drop"):
            assert 0.0 <= metrics[key] <= 100.0, key
