"""Every use of a private Keras or TensorFlow API in training/, one function each.

The scripts need two workarounds that public APIs cannot express. Each lives
in one function below, with why it is needed and the versions it was checked
on; nothing else in training/ touches `keras.src` or private attributes.
Checked on Keras 3.15 with TensorFlow 2.21.
"""

import os

# Some oneDNN conv gradients crash on common CPUs; must precede TF's import.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import tensorflow as tf  # noqa: E402


def fix_multi_worker_logs():
    """Works around Keras 3 reducing scalar step logs with `axis=0`.

    Private API: replaces `keras.src.backend.tensorflow.trainer.
    reduce_per_replica` and calls its `_collective_all_reduce_multi_worker`.

    Why: under MultiWorkerMirroredStrategy, Keras (3.x up to at least 3.15)
    reduces the per-step logs with `strategy.reduce("MEAN", v, axis=0)`, which
    fails on scalars ("Invalid reduction dimension 0 for input with 0
    dimensions"; keras-team/keras#20585, tensorflow/tensorflow#72388). The logs
    are per-replica metric results, so their mean over replicas (`axis=None`,
    an all-reduce across the workers) is what was meant. Idempotent.

    Checked on Keras 3.15, TensorFlow 2.21.
    """
    from keras.src.backend.tensorflow import trainer as tf_trainer

    original = tf_trainer.reduce_per_replica
    if getattr(original, "_keras_dualsig_fix", False):
        return

    def reduce_per_replica(values, strategy, reduction):
        # Exactly the case Keras gets wrong; everything else goes through it.
        if reduction in ("auto", "mean") and (
            tf_trainer._collective_all_reduce_multi_worker(strategy)
        ):
            return tf.nest.map_structure(
                lambda v: strategy.reduce("MEAN", v, axis=None), values
            )
        return original(values, strategy, reduction)

    reduce_per_replica._keras_dualsig_fix = True
    tf_trainer.reduce_per_replica = reduce_per_replica


def build_without_reading(model, dataset):
    """Builds the model's training state from shapes, as Keras would from data.

    Private API: `Model._symbolic_build(data_batch=...)` and the
    `Model._distribute_strategy` attribute.

    Why: under a tf.distribute strategy, Keras 3's `fit` first pulls a batch
    from a throwaway iterator to build the model, metrics and optimizer
    (`_maybe_symbolic_build`). Under MultiWorkerMirroredStrategy that fails
    (`strategy.reduce` of a nested batch; keras-team/keras#20585). Under any
    strategy it also costs determinism: the throwaway iterator advances the
    shuffle and augmentation seeds of the first epochs' pipelines (`load_wsol`
    reshuffles on every iteration), so distributed and resumed runs would see
    other batches than a single device. Building from the dataset's element
    spec creates the same state; detaching the model's strategy then skips
    Keras' step, and `fit`, called in the strategy's scope, uses the scope's.

    Checked on Keras 3.15, TensorFlow 2.21.
    """
    model._symbolic_build(data_batch=dataset.element_spec)
    model._distribute_strategy = None
