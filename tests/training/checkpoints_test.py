"""Tests of training/checkpoints.py: what a checkpoint keeps, and restoring it."""

import json
import os

import keras
import numpy as np

from training import checkpoints


def _dropout_model():
    inputs = keras.Input((4,))
    x = keras.layers.Dense(8, activation="relu")(inputs)
    x = keras.layers.Dropout(0.5)(x)
    model = keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(x))
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    model.optimizer.build(model.trainable_variables)
    return model


def test_checkpoint_restores_optimizer_and_dropout_state(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((16, 4), dtype=np.float32)
    y = rng.integers(0, 3, 16)
    model = _dropout_model()
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    checkpoints.save_checkpoint(model, str(tmp_path / "checkpoint"), 1, {"loss": [1.0]})
    restored, epoch, history = checkpoints.restore(str(tmp_path))
    assert (epoch, history) == (1, {"loss": [1.0]})
    # Dropout's seed state is not a weight, so `model.save` leaves it out.
    states = checkpoints.seed_states(model)
    assert len(states) == 1
    np.testing.assert_array_equal(
        np.asarray(states[0]), np.asarray(checkpoints.seed_states(restored)[0])
    )
    # The same next step: same weights, optimizer state and dropout masks.
    for m in (model, restored):
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_state_always_names_a_complete_model(tmp_path):
    model = _dropout_model()
    directory = tmp_path / "checkpoint"
    checkpoints.save_checkpoint(model, str(directory), 1, {})
    # A run killed while writing epoch 2's model leaves a partial file that no
    # state names; the state still points at epoch 1.
    (directory / "epoch-0002.keras").write_bytes(b"partial")
    restored = checkpoints.restore(str(tmp_path))
    assert restored.epoch == 1
    checkpoints.save_checkpoint(model, str(directory), 2, {})
    # The last two checkpoints stay (see reliability_test.py for the fallback).
    checkpoints.save_checkpoint(model, str(directory), 3, {})
    assert sorted(os.listdir(directory)) == [
        "epoch-0002.keras",
        "epoch-0003.keras",
        "state.json",
        "state.previous.json",
    ]
    state = json.loads((directory / "state.json").read_text())
    assert (state["epoch"], state["model"]) == (3, "epoch-0003.keras")
    previous = json.loads((directory / "state.previous.json").read_text())
    assert (previous["epoch"], previous["model"]) == (2, "epoch-0002.keras")
    assert checkpoints.restore(str(tmp_path / "elsewhere")) is None


def test_non_chief_writes_leave_nothing(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    model = _dropout_model()
    checkpoints.save_checkpoint(
        model, str(tmp_path / "run" / "checkpoint"), 1, {}, False
    )
    checkpoints.save_model(model, str(tmp_path / "run" / "model.keras"), chief=False)
    assert not (tmp_path / "run").exists()
    assert os.listdir(scratch) == []
