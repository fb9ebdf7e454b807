"""Flag specs of the training scripts: declared once, defined, read, validated.

A script's flags are a list of `Flag`s (its `SPEC`). `define(spec)` turns them
into absl flags (so `--help` lists them), `from_absl(spec)` reads the parsed
values, and `config(spec, **overrides)` builds the same namespace from the
defaults, for tests and for the quickstart, which call `run()` directly.
`validate(flags, spec)` checks every value at the start of a run and names the
flag, the value and what is accepted.

Each flag also says whether a resumed run must keep it (`compared`): see
`differences` and `training/checkpoints.py`.
"""

import dataclasses
import math
import numbers
import os
import types
from collections.abc import Callable
from typing import Any

from absl import flags as absl_flags

from keras_dualsig._errors import check_bool, check_choice, check_int, invalid

# Flags defined through `define` belong to the calling script, so that `--help`
# lists them (absl credits the module that calls DEFINE_*).
absl_flags.disclaim_key_flags()

_ABSL_DEFINE = {
    "bool": absl_flags.DEFINE_bool,
    "integer": absl_flags.DEFINE_integer,
    "float": absl_flags.DEFINE_float,
    "string": absl_flags.DEFINE_string,
    "list": absl_flags.DEFINE_list,
}


@dataclasses.dataclass(frozen=True)
class Flag:
    """One flag of a script.

    Attributes:
        name: the flag's name (`--name`).
        default: its default value.
        help: the `--help` text.
        kind: "bool", "integer", "float", "string" or "list".
        choices: the accepted strings of an enum flag, else None.
        minimum: numbers: the smallest accepted value (see `open_minimum`).
        maximum: numbers: the largest accepted value (see `open_maximum`).
        open_minimum: the minimum itself is refused (`> minimum`).
        open_maximum: the maximum itself is refused (`< maximum`).
        allow_none: None is accepted (the flag's "unset").
        path: a file or folder path (saved absolute, so that resuming from
            another working directory compares the same place).
        compared: whether a resumed run must have the same value: True (it
            changes the result), False (it does not), or a function
            `(saved_flags, new_flags) -> bool` that says whether a change
            matters (both dicts of name -> value).
    """

    name: str
    default: Any
    help: str
    kind: str
    choices: tuple | None = None
    minimum: float | None = None
    maximum: float | None = None
    open_minimum: bool = False
    open_maximum: bool = False
    allow_none: bool = False
    path: bool = False
    compared: bool | Callable[[dict, dict], bool] = True

    def expected(self):
        """What the flag accepts, as a phrase for error messages."""
        if self.choices:
            text = "one of " + ", ".join(f'"{c}"' for c in self.choices)
        elif self.kind in ("integer", "float"):
            text = "an int" if self.kind == "integer" else "a finite float"
            bounds = []
            if self.minimum is not None:
                bounds.append(f"{'>' if self.open_minimum else '>='} {self.minimum}")
            if self.maximum is not None:
                bounds.append(f"{'<' if self.open_maximum else '<='} {self.maximum}")
            if bounds:
                text += " " + " and ".join(bounds)
        elif self.kind == "bool":
            text = "True or False"
        elif self.kind == "list":
            text = "a list of strings"
        else:
            text = "a string"
        return f"None (unset) or {text}" if self.allow_none else text

    def check(self, value):
        """Raises ValueError (Keras template, naming the flag) unless accepted."""
        if value is None and self.allow_none:
            return
        if self.kind == "bool":
            check_bool(value, self.name)
        elif self.choices:
            check_choice(value, self.name, self.choices)
        elif self.kind == "integer":
            check_int(value, self.name)
            self._check_range(value)
        elif self.kind == "float":
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
            ):
                raise invalid(self.name, self.expected(), value)
            self._check_range(value)
        elif self.kind == "list":
            if not isinstance(value, list | tuple) or not all(
                isinstance(item, str) for item in value
            ):
                raise invalid(self.name, self.expected(), value)
        elif not isinstance(value, str | os.PathLike):
            raise invalid(self.name, self.expected(), value)

    def _check_range(self, value):
        low, high = self.minimum, self.maximum
        if (
            low is not None
            and (value <= low if self.open_minimum else value < low)
            or high is not None
            and (value >= high if self.open_maximum else value > high)
        ):
            raise invalid(self.name, self.expected(), value)


def flag(name, default, help_text, kind=None, choices=None, **constraints):
    """A `Flag`; `kind` defaults to the type of `default` (see `Flag`).

    Args:
        name: the flag's name.
        default: its default value.
        help_text: the `--help` text.
        kind: "bool", "integer", "float", "string" or "list"; None: from the
            type of `default` (string for None).
        choices: accepted strings (an enum flag).
        **constraints: `minimum`, `maximum`, `open_minimum`, `open_maximum`,
            `allow_none`, `path`, `compared` (see `Flag`). `allow_none` defaults to
            True when the default is None.

    Returns:
        The `Flag`.
    """
    if kind is None:
        kind = {bool: "bool", int: "integer", float: "float", list: "list"}.get(
            type(default), "string"
        )
    constraints.setdefault("allow_none", default is None)
    return Flag(
        name,
        default,
        help_text,
        kind,
        tuple(choices) if choices else None,
        **constraints,
    )


STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
DATASETS = ("cluttered_mnist", "CUB", "CARS", "ILSVRC", "OpenImages", "custom")
# numpy's (and so Keras') global seed is a uint32.
MAX_SEED = 2**32 - 1

# Flags every training script shares. `compared=False`: where and how a run
# computes, not what it computes (a resumed run may move to other devices).
COMMON = [
    flag("dataset", "cluttered_mnist", "Dataset name.", choices=DATASETS),
    flag(
        "data_root",
        None,
        "wsolevaluation image root (dataset/<NAME>); for cluttered_mnist, the "
        "folder of the generated dataset (default: under ~/.keras).",
        path=True,
    ),
    flag(
        "metadata_root",
        None,
        "wsolevaluation metadata root (metadata/<NAME>).",
        path=True,
    ),
    flag(
        "num_classes",
        None,
        "Number of classes (custom datasets).",
        "integer",
        minimum=2,
    ),
    flag(
        "image_size",
        None,
        "Input size; default 96 (cluttered_mnist) or 224.",
        "integer",
        minimum=1,
    ),
    flag("batch_size", 32, "Global batch size.", minimum=1),
    flag(
        "model_dir",
        "runs/model",
        "Where checkpoints, logs and models go.",
        compared=False,
    ),
    flag(
        "seed",
        0,
        "Random seed (data order, augmentation, initialisation).",
        minimum=0,
        maximum=MAX_SEED,
    ),
    flag("mixed_precision", False, "mixed_float16 on GPU, mixed_bfloat16 on CPU/TPU."),
    flag("jit_compile", False, "Compile train steps with XLA.", compared=False),
    flag(
        "strategy",
        "default",
        "tf.distribute strategy.",
        choices=STRATEGIES,
        compared=False,
    ),
    flag(
        "num_cpu_devices",
        1,
        "Split the CPU into this many logical devices.",
        minimum=1,
        compared=False,
    ),
    flag("tpu", "", "TPU address for --strategy=tpu ('' = local).", compared=False),
    flag(
        "max_images",
        None,
        "Use at most this many images per split.",
        "integer",
        minimum=1,
    ),
    flag(
        "embedded_size",
        "full",
        "Size of the embedded cluttered_mnist dataset.",
        choices=("full", "small"),
    ),
]


def define(spec):
    """Defines absl flags from a spec (skipping ones already defined)."""
    for item in spec:
        if item.name in absl_flags.FLAGS:
            continue
        if item.choices:
            absl_flags.DEFINE_enum(
                item.name, item.default, list(item.choices), item.help
            )
        else:
            _ABSL_DEFINE[item.kind](item.name, item.default, item.help)


def config(spec, **overrides):
    """The spec's defaults as a namespace, with overrides (for tests and scripts).

    Raises:
        ValueError: (Keras template) for a name the spec does not have.
    """
    defaults = {item.name: item.default for item in spec}
    unknown = sorted(set(overrides) - set(defaults))
    if unknown:
        raise invalid(
            "flags",
            f"names of the script's flags ({', '.join(sorted(defaults))})",
            received=f"unknown flags {unknown}",
        )
    return types.SimpleNamespace(**{**defaults, **overrides})


def from_absl(spec):
    """The parsed absl flags of a spec as a namespace."""
    return types.SimpleNamespace(
        **{item.name: getattr(absl_flags.FLAGS, item.name) for item in spec}
    )


def validate(flags, spec):
    """Checks every flag of `spec` on `flags` (types and ranges).

    Args:
        flags: a namespace with the spec's flags as attributes.
        spec: the script's list of `Flag`s.

    Raises:
        ValueError: (Keras template) naming the first flag that is missing,
            of the wrong type or out of range, with its value and what is
            accepted.
    """
    for item in spec:
        if not hasattr(flags, item.name):
            raise invalid(item.name, item.expected(), received="<missing>")
        item.check(getattr(flags, item.name))


def values(flags, spec):
    """The spec's flag values as a JSON-ready dict (paths absolute strings)."""
    result = {}
    for item in spec:
        value = getattr(flags, item.name)
        if isinstance(value, os.PathLike):
            value = os.fspath(value)
        if item.path and value:
            value = os.path.abspath(value)
        elif isinstance(value, tuple):
            value = list(value)
        result[item.name] = value
    return result


def differences(saved, new, spec):
    """The flags whose change makes a resumed run differ from an uninterrupted one.

    Args:
        saved: name -> value of the run that wrote the checkpoint.
        new: name -> value of this run (see `values`).
        spec: the script's flags; only flags with `compared` count. Flags the
            checkpoint did not record are compared with their default.

    Returns:
        A list of (flag name, saved value, new value), in spec order.
    """
    changed = []
    for item in spec:
        if not item.compared or item.name not in new:
            continue
        before = saved.get(item.name, item.default)
        after = new[item.name]
        if callable(item.compared):
            differs = item.compared(dict(saved), dict(new))
        else:
            differs = before != after
        if differs:
            changed.append((item.name, before, after))
    return changed
