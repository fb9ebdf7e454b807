"""Shared set-up of the training-script tests."""

import pytest
from tensorflow.python.framework import config as tf_config

import keras_dualsig as kd


@pytest.fixture(autouse=True)
def _no_op_determinism_leak():
    # `devices.setup` switches op determinism on for the whole process; TF has
    # no public switch back, so each test restores the default afterwards.
    yield
    tf_config.disable_op_determinism()


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    """Flags for a tiny real dataset (64/16/16 images at 56 px, read as custom)."""
    info = kd.datasets.cluttered_mnist(
        root=tmp_path_factory.mktemp("data"),
        num_train=64,
        num_val=16,
        num_test=16,
        image_size=56,
    )
    return {
        "dataset": "custom",
        "data_root": info.data_root,
        "metadata_root": info.metadata_root,
        "num_classes": 10,
        "batch_size": 16,
    }
