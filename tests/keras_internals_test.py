"""The private Keras APIs the package relies on still behave as it expects.

A Keras upgrade that breaks one of them fails here first, with the name of
the API in the test.
"""

import keras
import numpy as np
from keras.ops import convert_to_numpy as to_numpy

from keras_dualsig import _keras_internals

L = keras.layers


def _model():
    inputs = keras.Input((4, 4, 2), name="image")
    x = L.Conv2D(3, 1, name="conv")(inputs)
    x = L.GlobalAveragePooling2D(name="gap")(x)
    x = L.Dropout(0.5, name="drop")(x, training=False)
    return keras.Model(inputs, L.Dense(2, name="dense")(x), name="tiny")


def test_producer_walks_back_through_keras_history():
    model = _model()
    layer, node = _keras_internals.producer(model.outputs[0])
    assert layer.name == "dense"
    names = []
    tensor = model.outputs[0]
    while True:
        layer, node = _keras_internals.producer(tensor)
        if node.is_input:
            break
        names.append(layer.name)
        tensor = node.input_tensors[0]
    assert names == ["dense", "drop", "gap", "conv"]
    assert _keras_internals.producer(np.zeros(2)) == (None, None)


def test_call_kwargs_reads_node_arguments():
    model = _model()
    _, node = _keras_internals.producer(model.get_layer("dense").input)
    assert _keras_internals.call_kwargs(node) == {"training": False}


def test_run_through_graph_calls_the_hook_for_every_operation():
    model = _model()
    images = np.random.default_rng(0).random((2, 4, 4, 2), dtype=np.float32)
    called = []

    def operation_fn(op):
        def run(*args, **kwargs):
            called.append(op.name)
            return op(*args, **kwargs)

        return run

    assert _keras_internals.can_run_through_graph(model)
    assert not _keras_internals.can_run_through_graph(L.Dense(2))
    outputs = _keras_internals.run_through_graph(model, [images], operation_fn)
    np.testing.assert_allclose(to_numpy(outputs), to_numpy(model(images)), atol=1e-6)
    assert called == ["conv", "gap", "drop", "dense"]
