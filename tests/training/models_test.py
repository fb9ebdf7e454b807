"""Tests of training/models.py: model_info.json beside saved models."""

from training import models


def test_model_info_round_trip(tmp_path):
    assert models.read_model_info(str(tmp_path / "model.keras")) == {}
    models.write_model_info(str(tmp_path), arch="small_cnn", image_size=32)
    info = models.read_model_info(str(tmp_path / "model.keras"))
    assert info == {"arch": "small_cnn", "image_size": 32}
