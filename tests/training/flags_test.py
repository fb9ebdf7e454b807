"""Tests of training/flags.py: specs, namespaces, absl definitions."""

from absl import flags as absl_flags
from helpers.errors import raises_invalid

from training import flags as flags_lib
from training import train_sigmoid
from training.flags import flag


def test_flag_kinds_come_from_defaults():
    assert flag("a", 1, "").kind == "integer"
    assert flag("b", 0.5, "").kind == "float"
    assert flag("c", True, "").kind == "bool"
    assert flag("d", ["x"], "").kind == "list"
    assert flag("e", None, "").kind == "string"
    assert flag("f", None, "", "integer").kind == "integer"
    assert flag("g", "x", "", choices=["x", "y"]).choices == ("x", "y")


def test_config_and_from_absl():
    flags = flags_lib.config(train_sigmoid.SPEC, epochs=7)
    assert flags.epochs == 7 and flags.batch_size == 32
    assert {item.name for item in train_sigmoid.SPEC} == set(vars(flags))
    with raises_invalid("flags", "unknown flags ['epoch']"):
        flags_lib.config(train_sigmoid.SPEC, epoch=3)
    spec = [flag("flags_test_size", 3, "A test flag.")]
    flags_lib.define(spec)
    flags_lib.define(spec)  # Defined already: skipped, not redefined.
    absl_flags.FLAGS(["prog", "--flags_test_size=5"])
    assert flags_lib.from_absl(spec).flags_test_size == 5
