"""Checkpoints: what a run leaves behind to be resumed from, and the resume.

After every epoch `Checkpoint` writes `<model_dir>/checkpoint/epoch-NNNN.keras`
(the model with its optimizer state), then `state.json` (the epoch, the model
file, the history, the random-seed states) atomically, then deletes older model
files: a run killed at any moment leaves a state that names a complete model of
the same epoch. `restore` reads it back.
"""

import json
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

from training import devices, files  # noqa: E402

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"


class Checkpoint(keras.callbacks.Callback):
    """Saves the model (with optimizer state) and the history after every epoch.

    See `save_checkpoint` for the files. Non-chief workers of a multi-worker
    strategy save too (saving may run collective ops), into a temporary folder
    they delete at once, as TensorFlow's multi-worker guide recommends.

    Besides the Keras logs, the history records "epoch_seconds" (training and
    validation time of each epoch, without the checkpoint).
    """

    def __init__(self, model_dir, history=None, chief=True):
        super().__init__()
        self.directory = os.path.join(model_dir, CHECKPOINT_DIR)
        self.history = {key: list(values) for key, values in (history or {}).items()}
        self.chief = chief
        self._start = None

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._start
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        self.history.setdefault("epoch_seconds", []).append(seconds)
        save_checkpoint(self.model, self.directory, epoch + 1, self.history, self.chief)


def save_checkpoint(model, directory, epoch, history, chief=True):
    """Writes one checkpoint after `epoch` finished epochs.

    Writes `epoch-NNNN.keras`, then `state.json` atomically (temporary file +
    rename), then deletes older model files.
    """
    target = directory if chief else tempfile.mkdtemp(prefix="keras_dualsig_worker_")
    os.makedirs(target, exist_ok=True)
    name = f"epoch-{epoch:04d}.keras"
    model.save(os.path.join(target, name))
    state = {
        "epoch": epoch,
        "model": name,
        "history": history,
        "seed_generators": [np.asarray(v).tolist() for v in seed_states(model)],
    }
    files.write_json(os.path.join(target, STATE_FILE), state)
    # The new state is in place: older model files are garbage now.
    for old in os.listdir(target):
        if old.startswith("epoch-") and old.endswith(".keras") and old != name:
            os.remove(os.path.join(target, old))
    if not chief:
        shutil.rmtree(target, ignore_errors=True)


def seed_states(model):
    """The state variables of the model's random seed generators (Dropout...).

    `model.save` keeps weights only; without these states a resumed run would
    draw other dropout masks than an uninterrupted one.
    """
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def restore(model_dir, strategy=None):
    """The last checkpoint of a run, or None.

    Args:
        model_dir: the run's folder.
        strategy: the run's strategy; under a multi-worker strategy the workers
            check that they all resume from the same epoch (they read the
            chief's checkpoints, so model_dir must be on a shared filesystem).

    Returns:
        (model, number of finished epochs, history) or None.
    """
    directory = os.path.join(model_dir, CHECKPOINT_DIR)
    state_path = os.path.join(directory, STATE_FILE)
    state = None
    if os.path.exists(state_path):
        with open(state_path) as f:
            state = json.load(f)
    if strategy is not None and devices.is_multi_worker(strategy):
        _check_workers_agree(strategy, state["epoch"] if state else 0, model_dir)
    if state is None:
        return None
    model = keras.models.load_model(
        os.path.join(directory, state.get("model", "model.keras"))
    )
    saved = state.get("seed_generators", [])
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
    logging.info("Resuming from %s after epoch %d.", directory, state["epoch"])
    return model, state["epoch"], state["history"]


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
