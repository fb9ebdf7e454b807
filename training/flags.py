"""Flag specs of the training scripts: declared once, defined, read.

A script's flags are a list of `Flag`s (its `SPEC`). `define(spec)` turns them
into absl flags (so `--help` lists them), `from_absl(spec)` reads the parsed
values, and `config(spec, **overrides)` builds the same namespace from the
defaults, for tests and for the quickstart, which call `run()` directly.
"""

import dataclasses
import types
from typing import Any

from absl import flags as absl_flags

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
    """

    name: str
    default: Any
    help: str
    kind: str
    choices: tuple | None = None


def flag(name, default, help_text, kind=None, choices=None):
    """A `Flag`; `kind` defaults to the type of `default` (string for None)."""
    if kind is None:
        kind = {bool: "bool", int: "integer", float: "float", list: "list"}.get(
            type(default), "string"
        )
    return Flag(name, default, help_text, kind, tuple(choices) if choices else None)


STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
DATASETS = ("cluttered_mnist", "CUB", "CARS", "ILSVRC", "OpenImages", "custom")

# Flags every training script shares.
COMMON = [
    flag("dataset", "cluttered_mnist", "Dataset name.", choices=DATASETS),
    flag(
        "data_root",
        None,
        "wsolevaluation image root (dataset/<NAME>); for cluttered_mnist, the "
        "folder of the generated dataset (default: under ~/.keras).",
    ),
    flag("metadata_root", None, "wsolevaluation metadata root (metadata/<NAME>)."),
    flag("num_classes", None, "Number of classes (custom datasets).", "integer"),
    flag(
        "image_size",
        None,
        "Input size; default 96 (cluttered_mnist) or 224.",
        "integer",
    ),
    flag("batch_size", 32, "Global batch size."),
    flag("model_dir", "runs/model", "Where checkpoints, logs and models go."),
    flag("seed", 0, "Random seed (data order, augmentation, initialisation)."),
    flag("mixed_precision", False, "mixed_float16 on GPU, mixed_bfloat16 on CPU/TPU."),
    flag("jit_compile", False, "Compile train steps with XLA."),
    flag("strategy", "default", "tf.distribute strategy.", choices=STRATEGIES),
    flag("num_cpu_devices", 1, "Split the CPU into this many logical devices."),
    flag("tpu", "", "TPU address for --strategy=tpu ('' = local)."),
    flag("max_images", None, "Use at most this many images per split.", "integer"),
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
    """The spec's defaults as a namespace, with overrides (for tests and scripts)."""
    values = {item.name: item.default for item in spec}
    unknown = set(overrides) - set(values)
    if unknown:
        raise ValueError(f"Unknown flags {sorted(unknown)}; known: {sorted(values)}")
    values.update(overrides)
    return types.SimpleNamespace(**values)


def from_absl(spec):
    """The parsed absl flags of a spec as a namespace."""
    return types.SimpleNamespace(
        **{item.name: getattr(absl_flags.FLAGS, item.name) for item in spec}
    )
