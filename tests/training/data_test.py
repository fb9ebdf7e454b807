"""Tests of training/data.py: sources, per-epoch batches, the override schema."""

import hashlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from helpers.errors import raises_invalid

import keras_dualsig as kd
from training import data, train_classifier
from training import flags as flags_lib


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    info = kd.datasets.cluttered_mnist(
        root=tmp_path_factory.mktemp("data"),
        num_train=48,
        num_val=8,
        num_test=8,
        image_size=56,
    )
    return info, data.resolve(_flags(info), arch="small_cnn")


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
    return flags_lib.config(train_classifier.SPEC, **values)


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


def test_resolve_gives_a_data_source(source):
    info, resolved = source
    assert resolved == data.DataSource(
        name="custom",
        num_classes=10,
        image_size=32,
        data_root=info.data_root,
        metadata_root=info.metadata_root,
        arch="small_cnn",
    )
    assert resolved.count("train") == 48
    assert resolved.count("train", max_images=16) == 16
    # The model's input size replaces --image_size.
    assert data.resolve(_flags(info), image_size=40).image_size == 40


def test_epoch_data_depends_on_seed_and_epoch_only(source):
    info, resolved = source
    flags = _flags(info)
    full, steps = data.epoch_datasets(resolved, flags, first_epoch=0)
    assert steps == 48 // 8
    epochs = _epochs(full, steps)
    assert len(epochs) == 3
    # A new order (and new augmentation) every epoch...
    assert epochs[0] != epochs[1] != epochs[2]
    # ...and a run resumed at epoch 2 sees exactly the batches of epoch 2.
    resumed, _ = data.epoch_datasets(resolved, flags, first_epoch=2)
    assert _epochs(resumed, steps) == epochs[2:]
    other_seed, _ = data.epoch_datasets(resolved, _flags(info, seed=1), 2)
    assert _epochs(other_seed, steps) != epochs[2:]


def test_max_images_keeps_one_subset_for_all_epochs(source):
    info, resolved = source
    flags = _flags(info, max_images=16)
    dataset, steps = data.epoch_datasets(resolved, flags, 0, augment=False)
    assert steps == 2
    epochs = _epochs(dataset, steps)
    # Same 16 images every epoch (without augmentation, equal bytes), new order.
    assert sorted(epochs[0]) == sorted(epochs[1]) == sorted(epochs[2])
    assert epochs[0] != epochs[1]


def test_epoch_datasets_when_no_epoch_is_left(source):
    info, resolved = source
    assert data.epoch_datasets(resolved, _flags(info), first_epoch=3) == (None, 6)
    with raises_invalid("batch_size", "at most the training split's size (48 images)"):
        data.epoch_datasets(resolved, _flags(info, batch_size=64), 0)


def test_fixed_order_epochs_shuffle_each_epoch_by_its_seed():
    elements = tf.data.Dataset.range(12)
    flags = flags_lib.config(train_classifier.SPEC, epochs=3, batch_size=4)
    batches = list(
        data.fixed_order_epochs(elements, flags, 0, 3, 12).as_numpy_iterator()
    )
    epochs = [np.concatenate(batches[i : i + 3]) for i in (0, 3, 6)]
    for epoch in epochs:
        assert sorted(epoch.tolist()) == list(range(12))
    assert not np.array_equal(epochs[0], epochs[1])
    resumed = data.fixed_order_epochs(elements, flags, 2, 3, 12)
    np.testing.assert_array_equal(
        np.concatenate(list(resumed.as_numpy_iterator())), epochs[2]
    )
    assert data.fixed_order_epochs(elements, flags, 3, 3, 12) is None


def test_datasets_override_schema():
    images = tf.data.Dataset.from_tensor_slices(
        (np.zeros((5, 8, 8, 3), np.float32), np.arange(5) % 2)
    )
    override = data.DatasetsOverride.of(
        {"train": images, "num_classes": 2, "image_size": 8}
    )
    assert override == data.DatasetsOverride(2, 8, train=images)
    assert data.DatasetsOverride.of(override) is override
    assert data.DatasetsOverride.of(None) is None
    flags = flags_lib.config(train_classifier.SPEC)
    source = data.resolve(flags, override)
    assert (source.name, source.num_classes, source.image_size) == ("custom", 2, 8)
    assert source.count("train") == 5
    assert source.count("train", max_images=3) == 3
    assert source.elements("val") is None
    # A filtered dataset has no known size: it is counted.
    filtered = data.DatasetsOverride(2, 8, train=images.filter(lambda x, y: y == 0))
    assert data.resolve(flags, filtered).count("train") == 3
    with pytest.raises(ValueError, match=r"argument `datasets_override`"):
        data.DatasetsOverride.of({"train": images, "steps": 2})


def test_preprocess_and_epoch_range():
    with pytest.raises(ValueError, match=r"argument `arch`"):
        data.preprocess_for("AlexNet")
    assert data.preprocess_for("small_cnn") is None
    assert (
        data.preprocess_for("ResNet50V2") is keras.applications.resnet.preprocess_input
    )
    assert data.epoch_range(3, 3).startswith("all 3 epochs done")
    assert data.epoch_range(1, 3) == "epochs 2-3 of 3"
