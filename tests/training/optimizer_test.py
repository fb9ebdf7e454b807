"""Tests of training/optimizer.py: the step-decay schedule by hand."""

import pytest

from training import flags as flags_lib
from training import optimizer, train_classifier


def _flags(**overrides):
    return flags_lib.config(train_classifier.SPEC, **overrides)


def test_decay_epochs():
    flags = _flags(learning_rate=0.1, decay_every=2, decay_factor=0.5, epochs=5)
    assert optimizer.decay_epochs(flags) == [2, 4]
    assert optimizer.decay_epochs(_flags(decay_every=0, epochs=5)) == []
    assert optimizer.learning_rate(_flags(learning_rate=0.3), 3) == 0.3


def test_sgd_settings():
    sgd = optimizer.sgd(_flags(momentum=0.8, weight_decay=0.0), 4)
    assert sgd.nesterov and sgd.momentum == pytest.approx(0.8)
    assert sgd.weight_decay is None
    assert optimizer.sgd(_flags(), 4).weight_decay == pytest.approx(1e-4)
