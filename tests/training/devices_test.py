"""Tests of training/devices.py: setup, strategies, the chief."""

import keras
import pytest

from training import devices, train_classifier
from training import flags as flags_lib


def _flags(**overrides):
    return flags_lib.config(train_classifier.SPEC, **overrides)


def test_setup_strategies_and_flag_errors():
    strategy = devices.setup(_flags(mixed_precision=True))
    assert keras.config.dtype_policy().name == "mixed_bfloat16"  # No GPU here.
    strategy = devices.setup(_flags())
    assert keras.config.dtype_policy().name == "float32"
    assert devices.is_chief(strategy)
    assert not devices.is_multi_worker(strategy)
    assert strategy.num_replicas_in_sync == 1
    with pytest.raises(ValueError, match=r"argument `strategy`.*Received: strategy="):
        devices.make_strategy(_flags(strategy="horovod"))
    with pytest.raises(ValueError, match=r"argument `num_cpu_devices`"):
        devices.setup(_flags(num_cpu_devices=0))
