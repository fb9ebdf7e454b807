"""Shared test setup.

oneDNN crashes in some convolution gradients on the CI CPUs, so it is switched
off before TensorFlow is imported anywhere in the test session.

The suite runs on TensorFlow (the default). With KERAS_BACKEND=jax or torch
(in a venv without TensorFlow, as `.ci/run` does), only the PORTABLE test
files below are collected: the model, CAM, loss, metric and figure tests that
need no TensorFlow (the keras.applications architectures run on TensorFlow
only: cross_backend_test covers nested and inner layers on every backend). Every other file tests a TensorFlow-only part (tf.data,
the training scripts, tf-keras-vis) or uses TensorFlow directly.
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("MPLBACKEND", "Agg")
# XLA's CPU optimisations cost more compile time than tiny test models run.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import pathlib  # noqa: E402

import keras  # noqa: E402
import pytest  # noqa: E402

PORTABLE = (
    "backends/cross_backend_test.py",
    "backends/model_test.py",
    "cams/cam_test.py",
    "cams/golden_methods_test.py",
    "cams/golden_test.py",
    "cams/properties_test.py",
    "cams/score_cam_test.py",
    "cams/tokens_test.py",
    "classifier_test.py",
    "head_test.py",
    "keras_internals_test.py",
    "metrics/bootstrap_test.py",
    "metrics/boxes_test.py",
    "metrics/fidelity_test.py",
    "metrics/outcomes_test.py",
    "metrics/pointing_game_test.py",
    "metrics/randomization_test.py",
    "metrics/road_test.py",
    "metrics/state_test.py",
    "reliability_test.py",
    "vis_test.py",
)
_TESTS = pathlib.Path(__file__).parent


def pytest_ignore_collect(collection_path, config):
    """On JAX and torch, collect only the PORTABLE test files."""
    if keras.backend.backend() == "tensorflow":
        return None
    path = pathlib.Path(collection_path).resolve()
    relative = path.relative_to(_TESTS.resolve()).as_posix()
    if path.is_dir():
        # Folders without portable tests (their conftest may import TensorFlow).
        return not any(entry.startswith(relative + "/") for entry in PORTABLE)
    if not path.name.endswith("_test.py"):
        return None
    return relative not in PORTABLE


@pytest.fixture(autouse=True)
def _reset_keras_state():
    """Every test starts with a float32 policy and a fixed seed."""
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(1234)
    yield
    keras.config.set_dtype_policy("float32")
