"""Every use of a private Keras API in the package, in one place.

Keras 3 has no public API to walk a Functional graph backwards from a tensor
or to re-run a Functional model op by op, which the head surgery and the
tapping of inner layers need. Each use below says why and the Keras versions
it was checked on, so that a Keras upgrade is checked in this file only (run
`pytest tests/keras_internals_test.py tests/dual_sigmoid_test.py tests/cams`).

Checked on Keras 3.8 to 3.15 (keras/src/ops/node.py, keras/src/ops/function.py,
keras/src/models/functional.py).
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
