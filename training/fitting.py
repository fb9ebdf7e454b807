"""`fit`: the training scripts' call of `model.fit`, with checkpoints and logs."""

import os

# Some oneDNN conv gradients crash on common CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_dualsig import _keras_internals  # noqa: E402
from training import checkpoints  # noqa: E402


def fit(model, flags, train, steps, validation, first_epoch, history, chief, record):
    """`model.fit` with checkpoints, TensorBoard and a progress bar.

    Call it inside the strategy's scope.

    Args:
        model: the compiled (or restored) model.
        flags: namespace with model_dir and epochs.
        train: batches of epochs [first_epoch, epochs), or None.
        steps: batches per epoch.
        validation: validation batches, or None.
        first_epoch: finished epochs (of a restored checkpoint).
        history: the restored history ({} for a new run).
        chief: whether this process keeps checkpoints and logs.
        record: {"script", "flags"} stored with every checkpoint (see
            `checkpoints.record`).

    Returns:
        The history of all epochs, restored ones included (with
        "epoch_seconds", see `checkpoints.Checkpoint`).
    """
    checkpoint = checkpoints.Checkpoint(flags.model_dir, history, chief, record)
    if train is None or first_epoch >= flags.epochs:
        return checkpoint.history
    callbacks = [checkpoint]
    if chief:
        callbacks.append(
            keras.callbacks.TensorBoard(os.path.join(flags.model_dir, "logs"))
        )
    train = _shard_by_data(train)
    if validation is not None:
        validation = _shard_by_data(validation)
    if tf.distribute.has_strategy():
        _keras_internals.build_without_reading(model, train)
    model.fit(
        train,
        epochs=flags.epochs,
        initial_epoch=first_epoch,
        steps_per_epoch=steps,
        validation_data=validation,
        callbacks=callbacks,
        shuffle=False,  # Every epoch is shuffled by its own seed already.
        verbose=1 if chief else 0,
    )
    return checkpoint.history


def _shard_by_data(dataset):
    """Multi-worker: each worker keeps its share of every global batch.

    The pipelines read files inside `map`, so TensorFlow's default (AUTO) would
    try file sharding first and fall back to this with a warning.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA
    )
    return dataset.with_options(options)
