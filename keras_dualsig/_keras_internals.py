"""Every use of a private Keras API in the package, in one place.

Keras 3 has no public API to walk a Functional graph backwards from a tensor
or to re-run a Functional model op by op, which the head surgery and the
tapping of inner layers need. Each use below says why and the Keras versions
it was checked on, so that a Keras upgrade is checked in this file only (run
`pytest tests/keras_internals_test.py tests/dual_sigmoid_test.py tests/cams`).

Checked on Keras 3.8 to 3.15 (keras/src/ops/node.py, keras/src/ops/function.py,
keras/src/models/functional.py). The last two functions are TensorFlow
workarounds for the training scripts (tf.distribute), checked on Keras 3.15
with TensorFlow 2.21; they import TensorFlow when called.
"""

import keras


def producer(tensor):
    """The (layer, node) that produced a symbolic tensor of a Functional graph.

    Why: the head is found by walking back from the output; Keras keeps the
    producing operation on each KerasTensor as `_keras_history` (operation,
    node_index, tensor_index) and the call records on the operation as
    `_inbound_nodes` (keras/src/ops/node.py). No public equivalent exists
    (keras-team/keras#18906 discusses graph traversal).

    Args:
        tensor: a KerasTensor of a Functional model.

    Returns:
        (layer, node), or (None, None) for a tensor that no layer produced.
    """
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, None
    layer = history.operation
    return layer, layer._inbound_nodes[history.node_index]


def call_kwargs(node):
    """The non-tensor keyword arguments a layer was called with in a graph.

    Why: a head layer must be re-run with the arguments of the original call
    (e.g. `Dropout(...)(x, noise_shape=...)` or a Lambda's `mask`); Keras
    records them on the node as `node.arguments` (a `SymbolicArguments`,
    keras/src/ops/symbolic_arguments.py), not publicly.
    """
    return {
        key: value
        for key, value in node.arguments.kwargs.items()
        if not isinstance(value, keras.KerasTensor)
    }


def can_run_through_graph(model):
    """Whether `run_through_graph` can inline `model` (a Functional model)."""
    return isinstance(model, keras.Model) and hasattr(model, "_run_through_graph")


def run_through_graph(model, inputs, operation_fn):
    """Runs a Functional model's graph, calling `operation_fn(op)` for each op.

    Why: CAMs at a layer inside a nested backbone need that layer's output as
    a tensor of one flat graph; `Function._run_through_graph`
    (keras/src/ops/function.py) re-runs the graph op by op with a hook, which
    is exactly that. No public equivalent exists.

    Args:
        model: a Functional keras.Model.
        inputs: the tensors to feed, matching `model.inputs`.
        operation_fn: `op -> callable(*args, **kwargs)` used instead of `op`.

    Returns:
        The model's outputs computed through the hooked ops.
    """
    return model._run_through_graph(inputs, operation_fn=operation_fn)


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
    import tensorflow as tf
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


def token_reduction(operation, node):
    """How an op node reduces a token sequence (B, N, D) to (B, D), if it does.

    Why: keras-hub's ViT, DeiT and Swin classifiers (and hand-built ViTs) pool
    their tokens with plain ops in the Functional graph, `x[:, 0]` (a
    `GetItem` operation whose key is a node argument) or `ops.mean(x, axis=1)`
    (a `Mean` operation with an `axis` attribute), not with layers. Their
    classes live in keras/src/ops/numpy.py (checked on Keras 3.15).

    Args:
        operation: the producer of a tensor (from `producer`).
        node: its node.

    Returns:
        ("index", i) for `x[:, i]`, ("mean", None) for a mean over axis 1
        without keepdims, or None for anything else.
    """
    from keras.src.ops import numpy as knp

    inputs = node.input_tensors
    if len(inputs) != 1 or len(inputs[0].shape) != 3:
        return None
    if isinstance(operation, knp.GetItem):
        key = node.arguments.args[1] if len(node.arguments.args) > 1 else None
        if (
            isinstance(key, tuple)
            and len(key) == 2
            and key[0] == slice(None)
            and isinstance(key[1], int)
        ):
            return ("index", key[1])
        return None
    if isinstance(operation, knp.Mean):
        axis = operation.axis
        axis = tuple(axis) if isinstance(axis, list | tuple) else (axis,)
        if axis in ((1,), (-2,)) and not operation.keepdims:
            return ("mean", None)
    return None
