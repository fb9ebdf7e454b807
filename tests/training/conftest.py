"""Shared set-up of the training-script tests."""

import os

import keras
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


@pytest.fixture(scope="module")
def evaluate_setup(tmp_path_factory):
    """(info, model path): 12 test images at 56 px and a saved random dual model.

    The tiny set-up of the evaluate tests: a `kd.datasets.cluttered_mnist`
    build and an untrained `small_cnn` dual model with its model_info.json.
    """
    from training import models

    info = kd.datasets.cluttered_mnist(
        root=tmp_path_factory.mktemp("data"),
        num_train=4,
        num_val=4,
        num_test=12,
        image_size=56,
    )
    model_dir = tmp_path_factory.mktemp("model")
    keras.utils.set_random_seed(0)
    dual = kd.dual_sigmoid(kd.small_cnn(10, (56, 56, 3), width=8))
    path = os.path.join(model_dir, "dual_sigmoid.keras")
    dual.save(path)
    models.write_model_info(str(model_dir), arch="small_cnn", image_size=56)
    return info, path
