"""Tests of training/train_sigmoid.py: one step, cached = uncached, resume."""

import json
import os

import keras
import numpy as np
import pytest
from helpers.errors import raises_invalid
from tensorflow.python.framework import config as tf_config

import keras_dualsig as kd
from training import data as data_lib
from training import flags as flags_lib
from training import train_classifier, train_sigmoid


@pytest.fixture(scope="module")
def data(tmp_path_factory, tiny_data):
    """A tiny dataset and a classifier trained on it for one epoch."""
    data = dict(tiny_data)
    # The classifier keeps its default dropout: the branch clones it, so the
    # tests below also cover dropout masks (cached = uncached, resume).
    classifier = train_classifier.run(
        flags_lib.config(
            train_classifier.SPEC,
            **data,
            image_size=32,
            model_dir=str(tmp_path_factory.mktemp("classifier")),
            epochs=1,
        )
    )
    tf_config.disable_op_determinism()
    return {**data, "classifier": classifier["model_path"]}


def _flags(data, model_dir, **overrides):
    return flags_lib.config(
        train_sigmoid.SPEC, **data, model_dir=str(model_dir), **overrides
    )


def _branch_weights(model):
    return [w for layer in model.sigmoid_head for w in layer.get_weights()]


def test_one_step_writes_every_output(data, tmp_path):
    metrics = train_sigmoid.run(_flags(data, tmp_path, epochs=1, max_images=16))

    assert metrics["model_path"] == str(tmp_path / "dual_sigmoid.keras")
    dual = keras.models.load_model(metrics["model_path"])
    assert isinstance(dual, kd.DualSigmoidModel)
    outputs = dual.predict(np.zeros((2, 32, 32, 3)), verbose=0)
    assert outputs["sigmoid"].shape == outputs["softmax"].shape == (2, 10)
    # The image size and arch come from the classifier's model_info.json.
    info = json.loads((tmp_path / "model_info.json").read_text())
    assert info == {
        "arch": "small_cnn",
        "image_size": 32,
        "num_classes": 10,
        "dataset": "custom",
    }
    history = json.loads((tmp_path / "history.json").read_text())
    assert history == metrics["history"]
    for key in ("loss", "sigmoid_accuracy", "softmax_accuracy", "val_loss"):
        assert len(history[key]) == 1, key
    assert os.listdir(tmp_path / "logs" / "train")  # TensorBoard events.
    assert (
        json.loads((tmp_path / "checkpoint" / "state.json").read_text())["epoch"] == 1
    )
    assert metrics["feature_seconds"] == 0.0


def _record_fixed_order_epochs(monkeypatch):
    """Records the labels of every batch `fixed_order_epochs` yields."""
    calls = []
    original = data_lib.fixed_order_epochs

    def recording(elements, flags, first_epoch, steps, buffer_size):
        dataset = original(elements, flags, first_epoch, steps, buffer_size)
        # The epochs never reshuffle, so iterating once more yields the batches
        # `fit` gets.
        labels = [batch[1] for batch in dataset.as_numpy_iterator()]
        calls.append(np.array(labels).reshape(flags.epochs - first_epoch, -1))
        return dataset

    monkeypatch.setattr(data_lib, "fixed_order_epochs", recording)
    return calls


def test_cached_features_reach_the_uncached_weights(data, tmp_path, monkeypatch):
    calls = _record_fixed_order_epochs(monkeypatch)

    def no_augmented_epochs(*args, **kwargs):
        raise AssertionError("--noaugment must not use the augmented pipeline")

    monkeypatch.setattr(data_lib, "epoch_datasets", no_augmented_epochs)
    uncached = train_sigmoid.run(
        _flags(data, tmp_path / "uncached", epochs=3, augment=False)
    )
    cached = train_sigmoid.run(
        _flags(data, tmp_path / "cached", epochs=3, cache_features=True)
    )

    # Both paths shuffled the same fixed order with the same per-epoch seeds.
    assert len(calls) == 2
    np.testing.assert_array_equal(calls[0], calls[1])
    assert calls[0].shape == (3, 64)  # 3 epochs x 4 steps of 16.
    assert not np.array_equal(calls[0][0], calls[0][1])
    # Same weights; bit-identical on this CPU (the trunk features are computed
    # by the same kernels, in fit or once); the tolerance allows for BLAS
    # kernels whose rounding depends on the batch size.
    for a, b in zip(
        _branch_weights(cached["model"]),
        _branch_weights(uncached["model"]),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5)
    np.testing.assert_allclose(
        cached["history"]["loss"], uncached["history"]["loss"], rtol=1e-5
    )
    np.testing.assert_allclose(
        cached["history"]["val_loss"], uncached["history"]["val_loss"], rtol=1e-5
    )
    assert cached["feature_seconds"] > 0
    # The saved dual model carries the branch trained on features.
    saved = keras.models.load_model(cached["model_path"])
    for a, b in zip(
        _branch_weights(saved), _branch_weights(cached["model"]), strict=True
    ):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("cache_features", [False, True])
def test_resumed_run_ends_with_the_uninterrupted_weights(
    data, tmp_path, cache_features
):
    options = {"cache_features": cache_features, "augment": False}
    straight = train_sigmoid.run(_flags(data, tmp_path / "a", epochs=3, **options))
    # An interrupted run: its checkpoint after epoch 1, then the full command.
    train_sigmoid.run(_flags(data, tmp_path / "b", epochs=1, **options))
    resumed = train_sigmoid.run(_flags(data, tmp_path / "b", epochs=3, **options))

    for a, b in zip(
        _branch_weights(straight["model"]),
        _branch_weights(resumed["model"]),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)
    assert straight["history"]["loss"] == resumed["history"]["loss"]
    if cache_features:
        # Refused as a flag change (reliability_test.py covers the rest).
        with raises_invalid(
            "augment", "--augment: False -> True", "--cache_features: True -> False"
        ):
            train_sigmoid.run(_flags(data, tmp_path / "b", epochs=4))


def test_bad_arguments(data, tmp_path):
    with pytest.raises(ValueError, match=r"argument `classifier`"):
        train_sigmoid.run(_flags({**data, "classifier": None}, tmp_path))
    with raises_invalid("classifier", "the dataset's 12 classes", "with 10 classes"):
        train_sigmoid.run(_flags({**data, "num_classes": 12}, tmp_path))
