"""Tests of training/train_classifier.py: one step through run(), outputs, flags."""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.errors import raises_invalid

from training import data as data_lib
from training import flags as flags_lib
from training import train_classifier

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def data(tiny_data):
    return {
        **tiny_data,
        "image_size": 32,
    }


def test_one_step_writes_every_output(data, tmp_path):
    flags = flags_lib.config(
        train_classifier.SPEC,
        **data,
        model_dir=str(tmp_path),
        epochs=1,
        max_images=16,  # One step of 16 images.
    )
    metrics = train_classifier.run(flags)

    assert metrics["model_path"] == str(tmp_path / "classifier.keras")
    model = keras.models.load_model(metrics["model_path"])
    assert model.input.shape == (None, 32, 32, 3)
    assert model.predict(np.zeros((2, 32, 32, 3)), verbose=0).shape == (2, 10)
    info = json.loads((tmp_path / "model_info.json").read_text())
    assert info == {
        "arch": "small_cnn",
        "image_size": 32,
        "num_classes": 10,
        "dataset": "custom",
    }
    history = json.loads((tmp_path / "history.json").read_text())
    assert history == metrics["history"]
    for key in ("loss", "sparse_categorical_accuracy", "val_loss", "epoch_seconds"):
        assert len(history[key]) == 1, key
    assert 0.0 <= metrics["val_accuracy"] <= 1.0
    assert np.isfinite(history["loss"][0])
    assert os.listdir(tmp_path / "logs" / "train")  # TensorBoard events.
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert (state["epoch"], state["model"]) == (1, "epoch-0001.keras")
    assert (tmp_path / "checkpoint" / "epoch-0001.keras").exists()

    # The same command again finds every epoch done: no training, same outputs.
    again = train_classifier.run(flags)
    assert again["history"] == metrics["history"]
    for a, b in zip(
        model.get_weights(),
        keras.models.load_model(again["model_path"]).get_weights(),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_datasets_override(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.random((32, 32, 32, 3), dtype=np.float32)
    labels = rng.integers(0, 3, 32)
    train = tf.data.Dataset.from_tensor_slices((images, labels))
    flags = flags_lib.config(
        train_classifier.SPEC, model_dir=str(tmp_path), epochs=2, batch_size=16
    )
    metrics = train_classifier.run(
        flags,
        datasets_override={
            "train": train,
            "validation": train,
            "num_classes": 3,
            "image_size": 32,
        },
    )
    assert len(metrics["history"]["loss"]) == 2
    assert len(metrics["history"]["val_loss"]) == 2
    assert keras.models.load_model(metrics["model_path"]).output.shape == (None, 3)


def test_bad_arguments(data, tmp_path):
    with pytest.raises(ValueError, match=r"argument `arch`.*arch='NoSuchNet'"):
        train_classifier.build_classifier("NoSuchNet", 10, 32)
    flags = flags_lib.config(
        train_classifier.SPEC, **{**data, "batch_size": 128}, model_dir=str(tmp_path)
    )
    with raises_invalid("batch_size", "(64 images)"):
        train_classifier.run(flags)
    with raises_invalid("num_classes", "--dataset=custom"):
        data_lib.resolve(
            flags_lib.config(train_classifier.SPEC, **{**data, "num_classes": None})
        )


@pytest.mark.parametrize("script", ["train_classifier", "train_sigmoid"])
def test_help_lists_the_flags(script):
    result = subprocess.run(
        [sys.executable, "-m", f"training.{script}", "--help"],
        cwd=REPO,
        env={**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0", "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # absl exits with status 1 after --help, by design.
    assert result.returncode in (0, 1), result.stderr
    for name in ("--model_dir", "--strategy", "--num_cpu_devices", "--epochs"):
        assert name in result.stdout
    if script == "train_sigmoid":
        assert "--[no]cache_features" in result.stdout
