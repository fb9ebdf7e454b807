"""Tests of training/common.py: per-epoch data, checkpoints, strategies, flags."""

import hashlib
import json
import os

import keras
import numpy as np
import pytest

import keras_dualsig as kd
from training import common, train_classifier


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    info = kd.datasets.cluttered_mnist(
        root=tmp_path_factory.mktemp("data"),
        num_train=48,
        num_val=8,
        num_test=8,
        image_size=56,
    )
    flags = _flags(info)
    resolved = common.dataset_source(flags)
    resolved["arch"] = "small_cnn"
    return info, resolved


def _flags(info, **overrides):
    values = {
        "dataset": "custom",
        "data_root": info.data_root,
        "metadata_root": info.metadata_root,
        "num_classes": 10,
        "image_size": 32,
        "batch_size": 8,
        "epochs": 3,
    }
    values.update(overrides)
    return common.config(train_classifier.SPEC, **values)


def _epochs(dataset, steps):
    """Per-epoch lists of (SHA-256 of an image, label), in order."""
    epochs, current = [], []
    for images, labels in dataset.as_numpy_iterator():
        for image, label in zip(images, labels, strict=True):
            current.append((hashlib.sha256(image.tobytes()).hexdigest(), int(label)))
        if len(current) == steps * len(labels):
            epochs.append(current)
            current = []
    assert not current
    return epochs


def test_epoch_data_depends_on_seed_and_epoch_only(source):
    info, resolved = source
    flags = _flags(info)
    full, steps = common.epoch_datasets(resolved, flags, first_epoch=0)
    assert steps == 48 // 8
    epochs = _epochs(full, steps)
    assert len(epochs) == 3
    # A new order (and new augmentation) every epoch...
    assert epochs[0] != epochs[1] != epochs[2]
    # ...and a run resumed at epoch 2 sees exactly the batches of epoch 2.
    resumed, _ = common.epoch_datasets(resolved, flags, first_epoch=2)
    assert _epochs(resumed, steps) == epochs[2:]
    other_seed, _ = common.epoch_datasets(resolved, _flags(info, seed=1), 2)
    assert _epochs(other_seed, steps) != epochs[2:]


def test_max_images_keeps_one_subset_for_all_epochs(source):
    info, resolved = source
    flags = _flags(info, max_images=16)
    dataset, steps = common.epoch_datasets(resolved, flags, 0, augment=False)
    assert steps == 2
    epochs = _epochs(dataset, steps)
    # Same 16 images every epoch (without augmentation, equal bytes), new order.
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(epochs[2])
    assert epochs[0] != epochs[1]


def test_epoch_datasets_when_no_epoch_is_left(source):
    info, resolved = source
    assert common.epoch_datasets(resolved, _flags(info), first_epoch=3) == (None, 6)
    with pytest.raises(ValueError, match="batch_size=64 exceeds"):
        common.epoch_datasets(resolved, _flags(info, batch_size=64), 0)


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
    common.save_checkpoint(model, str(tmp_path / "checkpoint"), 1, {"loss": [1.0]})
    restored, epoch, history = common.restore(str(tmp_path))
    assert (epoch, history) == (1, {"loss": [1.0]})
    # Dropout's seed state is not a weight, so `model.save` leaves it out.
    states = common._seed_states(model)
    assert len(states) == 1
    np.testing.assert_array_equal(
        np.asarray(states[0]), np.asarray(common._seed_states(restored)[0])
    )
    # The same next step: same weights, optimizer state and dropout masks.
    for m in (model, restored):
        m.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(model.get_weights(), restored.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_state_always_names_a_complete_model(tmp_path):
    model = _dropout_model()
    directory = tmp_path / "checkpoint"
    common.save_checkpoint(model, str(directory), 1, {})
    # A run killed while writing epoch 2's model leaves a partial file that no
    # state names; the state still points at epoch 1.
    (directory / "epoch-0002.keras").write_bytes(b"partial")
    restored = common.restore(str(tmp_path))
    assert restored[1] == 1
    common.save_checkpoint(model, str(directory), 2, {})
    assert sorted(os.listdir(directory)) == ["epoch-0002.keras", "state.json"]
    state = json.loads((directory / "state.json").read_text())
    assert (state["epoch"], state["model"]) == (2, "epoch-0002.keras")
    assert common.restore(str(tmp_path / "elsewhere")) is None


def test_non_chief_writes_leave_nothing(tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr("tempfile.tempdir", str(scratch))
    model = _dropout_model()
    common.save_checkpoint(model, str(tmp_path / "run" / "checkpoint"), 1, {}, False)
    common.save_model(model, str(tmp_path / "run" / "model.keras"), chief=False)
    assert not (tmp_path / "run").exists()
    assert os.listdir(scratch) == []


def test_setup_strategies_and_flag_errors(source):
    info, _ = source
    strategy = common.setup(_flags(info))
    assert common.is_chief(strategy)
    assert strategy.num_replicas_in_sync == 1
    with pytest.raises(ValueError, match=r"argument `strategy`.*Received: strategy="):
        common.make_strategy(_flags(info, strategy="horovod"))
    with pytest.raises(ValueError, match=r"argument `num_cpu_devices`"):
        common.setup(_flags(info, num_cpu_devices=0))
    with pytest.raises(ValueError, match="Unknown flags"):
        _flags(info, epoch=3)
    with pytest.raises(ValueError, match=r"argument `arch`"):
        common.preprocess_for("AlexNet")
    assert common.preprocess_for("small_cnn") is None
    assert (
        common.preprocess_for("ResNet50V2")
        is keras.applications.resnet.preprocess_input
    )
    assert common.epoch_range(3, 3).startswith("all 3 epochs done")
    assert common.epoch_range(1, 3) == "epochs 2-3 of 3"
