"""Evaluator states as plain NumPy arrays: read, compare, save, prefix.

The evaluators (`BoxEvaluator`, `MaskEvaluator`, `CAMEvaluation`) keep only
integer counts and per-image outcomes, so that the states of shards of a data
set merge into exactly the state of one run over it: counts add up exactly,
and per-image outcomes are concatenated in the shards' order (which is the
single run's order when each shard is a contiguous block of it). A state is a
flat dict from string keys to arrays: configuration (thresholds, options) as
0-d or 1-d arrays, compared on merge, and the accumulated values.
"""

import os

import numpy as np

from keras_dualsig._errors import invalid


class Saveable:
    """`save` / `load` of an evaluator with `state()` and `load_state`."""

    def save(self, path):
        """Writes `state()` to a compressed NumPy archive (.npz).

        `load` (or `merge`) on an evaluator of the same configuration reads
        it back, e.g. to merge shards evaluated on different machines.
        """
        save(path, self.state())

    def load(self, path):
        """`load_state` from a file written by `save`; returns self."""
        return self.load_state(path)


# Tri-state flags ("not seen yet", False, True) as int8 arrays.
UNSET = -1


def encode_flag(value):
    """None / False / True -> int8 -1 / 0 / 1."""
    return np.array(UNSET if value is None else int(bool(value)), np.int8)


def decode_flag(array):
    """int8 -1 / 0 / 1 -> None / False / True."""
    value = int(array)
    return None if value == UNSET else bool(value)


def combine_flags(mine, theirs, argument):
    """The merged tri-state flag: an unset one takes the other's value."""
    if mine is None:
        return theirs
    if theirs is not None and theirs != mine:
        raise invalid(
            argument,
            "states that agree on it (one shard had it, another did not)",
            received=f"{mine} in this state, {theirs} in the other",
        )
    return mine


def read(source, argument="state"):
    """A state from a dict of arrays, an object with `state()` or a .npz path.

    Returns:
        dict from str keys to NumPy arrays (a copy for dicts).
    """
    if hasattr(source, "state") and callable(source.state):
        return source.state()
    if isinstance(source, str | os.PathLike):
        with np.load(source, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    if isinstance(source, dict) and all(isinstance(k, str) for k in source):
        return {key: np.asarray(value) for key, value in source.items()}
    raise invalid(
        argument,
        "an evaluator, its `state()` dict of arrays, or the path of a file "
        "written by its `save`",
        source,
    )


def many(others, argument="others"):
    """`merge`'s argument as a list: one source or a list / tuple of them."""
    if isinstance(others, list | tuple):
        return list(others)
    return [others]


def check_same(mine, theirs, keys, argument="state"):
    """Refuses a state whose configuration differs from this evaluator's."""
    for key in keys:
        if key not in theirs:
            raise invalid(
                argument,
                f"a state with the key {key!r} (one written by the same kind of "
                "evaluator)",
                received=f"keys {sorted(theirs)[:8]}",
            )
        a, b = np.asarray(mine[key]), np.asarray(theirs[key])
        if a.shape != b.shape or not np.array_equal(a, b):
            raise invalid(
                argument,
                f"a state of an evaluator built with the same {key!r} "
                f"({a.tolist() if a.size <= 8 else f'{a.size} values'})",
                received=f"{key}={b.tolist() if b.size <= 8 else f'{b.size} values'}",
            )


def save(path, state):
    """Writes a state to a compressed .npz archive (np.load reads it back)."""
    np.savez_compressed(path, **state)


def prefixed(state, prefix):
    """{key: v} -> {prefix + key: v}."""
    return {prefix + key: value for key, value in state.items()}


def unprefixed(state, prefix):
    """The entries of `state` under `prefix`, with the prefix removed."""
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def parts(array):
    """A saved concatenation as a list of per-batch parts (none when empty).

    Empty parts are dropped, so that concatenating parts of several states
    keeps the dtype of a single run's parts (an empty uint32 array would
    promote uint16 histograms).
    """
    array = np.asarray(array)
    return [array] if array.shape[0] else []


def concatenated(parts_list, empty):
    """The per-batch parts as one array; `empty` when there are none."""
    return np.concatenate(parts_list) if parts_list else empty
