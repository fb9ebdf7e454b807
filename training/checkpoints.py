"""Checkpoints: what a run leaves behind to be resumed from, and the resume.

After every epoch `Checkpoint` writes `<model_dir>/checkpoint/epoch-NNNN.keras`
(the model with its optimizer state), then `state.json` (the epoch, the model
file, the history, the random-seed states, the script and its flags), after
keeping the state before it as `state.previous.json`; model files neither state
names are deleted. Every state is written atomically, so a run killed at any
moment leaves a state that names a complete model.

`resume` reads the newest readable checkpoint back (a truncated state or model
file is reported by name and the previous checkpoint is used), and refuses to
continue with flags that change the result (see `check_flags`).
"""

import dataclasses
import os
import shutil
import tempfile
import time

# Some oneDNN conv gradients crash on common CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import logging  # noqa: E402

from keras_dualsig._errors import invalid  # noqa: E402
from training import devices, files, models  # noqa: E402
from training import flags as flags_lib  # noqa: E402

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
PREVIOUS_STATE_FILE = "state.previous.json"
# Newest first: the order in which `restore` tries them.
STATE_FILES = (STATE_FILE, PREVIOUS_STATE_FILE)

FLAGS = [
    flags_lib.flag(
        "allow_flag_changes",
        False,
        "Resume even if flags that change the result differ from the "
        "checkpoint's (the differences are logged).",
        compared=False,
    ),
]


class Checkpoint(keras.callbacks.Callback):
    """Saves the model (with optimizer state) and the history after every epoch.

    See `save_checkpoint` for the files. Non-chief workers of a multi-worker
    strategy save too (saving may run collective ops), into a temporary folder
    they delete at once, as TensorFlow's multi-worker guide recommends.

    Besides the Keras logs, the history records "epoch_seconds" (training and
    validation time of each epoch, without the checkpoint).

    An epoch whose logs are not finite (a diverged loss) raises
    FloatingPointError before anything is written: the last checkpoint stays
    the last good one.

    Args:
        model_dir: the run's folder.
        history: the history of the epochs restored ({} for a new run).
        chief: whether this process keeps the files.
        record: {"script", "flags"} stored in every state (see `record`).
    """

    def __init__(self, model_dir, history=None, chief=True, record=None):
        super().__init__()
        self.directory = os.path.join(model_dir, CHECKPOINT_DIR)
        self.history = {key: list(values) for key, values in (history or {}).items()}
        self.chief = chief
        self.record = record
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        logs = {key: float(value) for key, value in (logs or {}).items()}
        bad = {key: value for key, value in logs.items() if not np.isfinite(value)}
        if bad:
            raise FloatingPointError(
                f"Training diverged in epoch {epoch + 1}: {bad}. No checkpoint of "
                f"this epoch was written ({self.directory} keeps the last good "
                "one). Start again in a new --model_dir with a lower "
                "--learning_rate."
            )
        for key, value in logs.items():
            self.history.setdefault(key, []).append(value)
        self.history.setdefault("epoch_seconds", []).append(seconds)
        save_checkpoint(
            self.model, self.directory, epoch + 1, self.history, self.chief, self.record
        )


def record(flags, spec, script):
    """What a checkpoint stores about the run: {"script", "flags"}."""
    return {"script": script, "flags": flags_lib.values(flags, spec)}


def save_checkpoint(model, directory, epoch, history, chief=True, run=None):
    """Writes one checkpoint after `epoch` finished epochs.

    Writes `epoch-NNNN.keras`, keeps the current `state.json` as
    `state.previous.json` (when it is readable and older), writes the new
    `state.json` atomically, then deletes the model files neither state names.

    Args:
        model: the model to save (with its optimizer state).
        directory: `<model_dir>/checkpoint`.
        epoch: finished epochs.
        history: per-epoch logs so far.
        chief: False on non-chief workers: save into a temporary folder and
            delete it.
        run: {"script", "flags"} to store (see `record`), or None.
    """
    name = f"epoch-{epoch:04d}.keras"
    if not chief:
        folder = tempfile.mkdtemp(prefix="keras_dualsig_worker_")
        try:
            model.save(os.path.join(folder, name))
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return
    os.makedirs(directory, exist_ok=True)
    model.save(os.path.join(directory, name))
    state = {
        "epoch": epoch,
        "model": name,
        "history": history,
        "seed_generators": [np.asarray(v).tolist() for v in seed_states(model)],
        **(run or {}),
    }
    state_path = os.path.join(directory, STATE_FILE)
    current = _read_state_or_none(state_path)
    if current is not None and current["epoch"] < epoch:
        files.write_json(os.path.join(directory, PREVIOUS_STATE_FILE), current)
    files.write_json(state_path, state)
    # The new state is in place: model files no state names are garbage now.
    kept = {
        kept_state["model"]
        for kept_state in map(_read_state_or_none, _state_paths(directory))
        if kept_state is not None
    }
    for old in os.listdir(directory):
        if old.startswith("epoch-") and old.endswith(".keras") and old not in kept:
            os.remove(os.path.join(directory, old))


def _state_paths(directory):
    return [os.path.join(directory, name) for name in STATE_FILES]


def _read_state(path):
    """A checkpoint state, checked.

    Raises:
        ValueError: naming the file when it is truncated or malformed.
    """
    state = files.read_json(path)
    if (
        not isinstance(state, dict)
        or not isinstance(state.get("epoch"), int)
        or not isinstance(state.get("model"), str)
        or not isinstance(state.get("history"), dict)
    ):
        raise ValueError(f"{path} is not a checkpoint state (epoch, model, history)")
    return state


def _read_state_or_none(path):
    if not os.path.exists(path):
        return None
    try:
        return _read_state(path)
    except ValueError:
        return None


def seed_states(model):
    """The state variables of the model's random seed generators (Dropout...).

    `model.save` keeps weights only; without these states a resumed run would
    draw other dropout masks than an uninterrupted one.
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


@dataclasses.dataclass
class Restored:
    """A checkpoint read back.

    Unpacks as `model, epoch, history = restored`.

    Attributes:
        model: the model with its optimizer state and seed states.
        epoch: the number of finished epochs.
        history: per-epoch logs of those epochs.
        script: the script that wrote it (None for older checkpoints).
        flags: its flags, name -> value (None for older checkpoints).
        path: the state file it was read from.
    """

    model: keras.Model
    epoch: int
    history: dict
    script: str | None
    flags: dict | None
    path: str

    def __iter__(self):
        return iter((self.model, self.epoch, self.history))


def restore(model_dir, strategy=None):
    """The newest readable checkpoint of a run, or None when there is none.

    Tries `state.json`, then `state.previous.json`: a state or model file that
    is truncated or unreadable is logged by name, and the previous checkpoint
    is used.

    Args:
        model_dir: the run's folder.
        strategy: the run's strategy; under a multi-worker strategy the workers
            check that they all resume from the same epoch (they read the
            chief's checkpoints, so model_dir must be on a shared filesystem).

    Returns:
        A `Restored`, or None.

    Raises:
        ValueError: (Keras template, `model_dir`) when checkpoint states exist
            but none of them (or of their model files) can be read.
    """
    directory = os.path.join(model_dir, CHECKPOINT_DIR)
    problems, restored = [], None
    for path in _state_paths(directory):
        if not os.path.exists(path):
            continue
        try:
            state = _read_state(path)
            model = models.load_file(os.path.join(directory, state["model"]))
        except ValueError as err:
            problems.append(str(err))
            continue
        restored = Restored(
            model,
            state["epoch"],
            state["history"],
            state.get("script"),
            state.get("flags"),
            path,
        )
        _restore_seed_states(model, state.get("seed_generators", []))
        break
    if strategy is not None and devices.is_multi_worker(strategy):
        _check_workers_agree(strategy, restored.epoch if restored else 0, model_dir)
    if restored is None:
        if problems:
            raise invalid(
                "model_dir",
                "a folder whose checkpoint can be read, or none (delete "
                f"{directory} or use another --model_dir to start afresh)",
                received=f"{model_dir}: " + "; ".join(problems),
            )
        return None
    if problems:
        logging.warning(
            "Unreadable checkpoint files: %s. Falling back to %s (epoch %d).",
            "; ".join(problems),
            restored.path,
            restored.epoch,
        )
    logging.info("Resuming from %s after epoch %d.", directory, restored.epoch)
    return restored


def _restore_seed_states(model, saved):
    variables = seed_states(model)
    if len(saved) == len(variables):
        for variable, value in zip(variables, saved, strict=True):
            variable.assign(np.asarray(value, dtype=variable.dtype))
    else:
        logging.warning(
            "The checkpoint has %d seed states, the model %d: not restored.",
            len(saved),
            len(variables),
        )


def _check_workers_agree(strategy, epoch, model_dir):
    """Raises unless every worker resumes from the same epoch (a collective)."""
    local = strategy.run(lambda: tf.constant([epoch], tf.int64))
    epochs = sorted(set(strategy.gather(local, axis=0).numpy().tolist()))
    if len(epochs) > 1:
        raise RuntimeError(
            f"Workers found checkpoints of different epochs {epochs} in "
            f"{model_dir}: --model_dir must be a folder every worker reads (a "
            "shared filesystem), since only the chief writes checkpoints."
        )


def resume(flags, spec, script, strategy=None):
    """The run's checkpoint, if any, once it is safe to continue from it.

    Args:
        flags: the script's flags (with model_dir, epochs, allow_flag_changes).
        spec: the script's flag spec (which flags are compared).
        script: the script's name, e.g. "train_sigmoid".
        strategy: the run's strategy (see `restore`).

    Returns:
        A `Restored`, or None for a new run.

    Raises:
        ValueError: (Keras template) see `check_flags`.
    """
    restored = restore(flags.model_dir, strategy)
    if restored is not None:
        check_flags(restored, flags, spec, script)
    return restored


def check_flags(restored, flags, spec, script):
    """Refuses to continue a checkpoint that this run cannot honestly extend.

    Always refused: a checkpoint another script wrote, and fewer --epochs than
    the checkpoint has finished. Refused unless --allow_flag_changes (then
    logged): any flag whose `compared` says it changes the result, listed as
    flag: saved value -> new value. A checkpoint without recorded flags (older
    versions) is resumed with a warning.

    Raises:
        ValueError: (Keras template) naming `model_dir`, `epochs` or the first
            differing flag.
    """
    where = os.path.dirname(restored.path)
    if restored.script not in (None, script):
        raise invalid(
            "model_dir",
            f"a folder of {script} runs (or a new one)",
            received=f"{flags.model_dir}, whose checkpoint {restored.script} wrote",
        )
    if restored.epoch > flags.epochs:
        raise invalid(
            "epochs",
            f"at least the {restored.epoch} epochs the checkpoint in {where} has "
            "finished (or another --model_dir)",
            flags.epochs,
        )
    if restored.flags is None:
        logging.warning(
            "The checkpoint in %s does not record its flags (an older version "
            "wrote it): they are not compared with this run's.",
            where,
        )
        return
    changed = flags_lib.differences(restored.flags, flags_lib.values(flags, spec), spec)
    if not changed:
        return
    listing = "; ".join(
        f"--{name}: {saved!r} -> {new!r}" for name, saved, new in changed
    )
    if not flags.allow_flag_changes:
        name, saved, new = changed[0]
        raise invalid(
            name,
            f"the value the checkpoint in {where} was trained with ({saved!r}): "
            "these flags change the result and differ (flag: saved -> new): "
            f"{listing}. Resume with the saved values, use another --model_dir, "
            "or pass --allow_flag_changes to continue anyway",
            new,
        )
    logging.warning(
        "--allow_flag_changes: resuming from %s with changed flags (saved -> "
        "new): %s. The model and its optimizer state (learning-rate schedule "
        "included) continue from the checkpoint.",
        where,
        listing,
    )


def save_model(model, path, chief=True):
    """Saves a final model; non-chief workers save to a temporary folder.

    Every worker saves (saving may run collective ops); only the chief's file
    stays.
    """
    if chief:
        model.save(path)
        return
    folder = tempfile.mkdtemp(prefix="keras_dualsig_worker_")
    try:
        model.save(os.path.join(folder, os.path.basename(path)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
