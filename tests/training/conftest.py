"""Shared set-up of the training-script tests."""

import pytest
from tensorflow.python.framework import config as tf_config


@pytest.fixture(autouse=True)
def _no_op_determinism_leak():
    # `common.setup` switches op determinism on for the whole process; TF has
    # no public switch back, so each test restores the default afterwards.
    yield
    tf_config.disable_op_determinism()
