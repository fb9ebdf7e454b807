"""Layer lookup and tapping: the outputs of any layer, nested ones included.

Private module shared by the CAM classes: `find_layer` finds a layer by name
(or "outer/inner" path) in a model with nested backbones, and `tap_model`
builds one flat graph whose outputs are the tapped layers' outputs and the
model's output.
"""

import keras

from keras_dualsig import _keras_internals
from keras_dualsig._errors import invalid


def find_layer(model, name):
    """Finds a layer by name anywhere in a model, nested models included.

    `name` may be a plain layer name (searched breadth-first) or a path
    "outer/inner" through nested models.

    Returns:
        (layer, path): the layer and the list of nested models leading to it.
    """
    if "/" in name:
        current, path = model, []
        for part in name.split("/"):
            layers = getattr(current, "layers", None) or []
            match = [layer for layer in layers if layer.name == part]
            if not match:
                return None, None
            path.append(current)
            current = match[0]
        return current, path[1:]
    queue = [(model, [])]
    while queue:
        current, path = queue.pop(0)
        for layer in getattr(current, "layers", None) or []:
            if layer.name == name:
                return layer, path
        for layer in getattr(current, "layers", None) or []:
            if isinstance(layer, keras.Model):
                queue.append((layer, [*path, layer]))
    return None, None


def all_layers(model):
    """Every layer of a model, nested models' layers included (depth first)."""
    layers = []
    for layer in getattr(model, "layers", None) or []:
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers.extend(all_layers(layer))
    return layers


def all_layer_names(model, prefix=""):
    """Names of every layer of a model, nested ones as "outer/inner"."""
    names = []
    for layer in getattr(model, "layers", None) or []:
        names.append(prefix + layer.name)
        if isinstance(layer, keras.Model):
            names.extend(all_layer_names(layer, prefix + layer.name + "/"))
    return names


def _inline(model, inputs, on_output, kwargs):
    """Symbolically runs `model` on `inputs`, inlining nested models.

    Every layer of a nested Functional or Sequential model is called directly on
    the outer tensors, so that the output of any inner layer becomes a tensor
    of the flattened graph. `on_output(op, outputs)` sees each operation's
    outputs and returns what the graph continues with.
    """
    kwargs = {key: value for key, value in kwargs.items() if key != "training"}
    if isinstance(model, keras.Sequential):
        x = inputs[0] if isinstance(inputs, list | tuple) else inputs
        for layer in model.layers:
            x = _run_op(layer, (x,), {}, on_output)
        return x
    if _keras_internals.can_run_through_graph(model):

        def operation_fn(op):
            return lambda *args, **kw: _run_op(op, args, kw, on_output)

        return _keras_internals.run_through_graph(model, inputs, operation_fn)
    return model(*inputs, **kwargs)


def _run_op(op, args, kwargs, on_output):
    if isinstance(op, keras.Sequential) or _keras_internals.can_run_through_graph(op):
        outputs = _inline(op, list(args), on_output, kwargs)
    else:
        outputs = op(*args, **kwargs)
    return on_output(op, outputs)


def _find_all(model, layer_names):
    """The named layers, or a ValueError listing the available names."""
    layers = []
    for name in layer_names:
        layer, _ = find_layer(model, name)
        if layer is None:
            raise invalid(
                "layer",
                f"the name of a layer of `{model.name}` (one of "
                f"{all_layer_names(model)[-40:]})",
                name,
            )
        layers.append(layer)
    return layers


def _inputs_like(model):
    return [
        keras.Input(
            shape=tensor.shape[1:], dtype=tensor.dtype, batch_size=tensor.shape[0]
        )
        for tensor in model.inputs
    ]


def probe_model(model, layer_names):
    """A model that exposes named layers' outputs and lets gradients in there.

    Each tapped layer's output A gets a second input added to it, `A + d`,
    and the graph continues from `A + d`. Fed with `d = 0`, the model
    computes exactly what `model` computes, and the gradient of any function
    of its outputs with respect to `d` is the gradient with respect to A, at
    any layer (inside a residual block or a nested backbone too, where the
    model cannot be split at the layer), on every backend.

    Nested models are inlined into one flat graph sharing the same layer
    objects and weights.

    Args:
        model: a built Functional or Sequential keras.Model.
        layer_names: list of layer names or "outer/inner" paths.

    Returns:
        keras.Model with inputs `[*model.inputs, d_1, ..., d_k]` (d_i shaped
        like layer i's output) and outputs `[A_1 + d_1, ..., A_k + d_k,
        model_output]`.

    Raises:
        ValueError: if a name is not a layer of the model (the message lists
            the available names) or a layer is not on the path to the output.
    """
    layers = _find_all(model, layer_names)
    wanted = {id(layer): index for index, layer in enumerate(layers)}
    probes = {}

    def on_output(op, outputs):
        index = wanted.get(id(op))
        if index is None or index in probes:  # Shared layers: the first call.
            return outputs
        delta = keras.Input(
            shape=outputs.shape[1:], dtype=outputs.dtype, batch_size=outputs.shape[0]
        )
        # A named layer in A's own dtype: no name clash with the user's
        # layers, no cast under mixed precision.
        add = keras.layers.Add(dtype=outputs.dtype, name=f"kd_probe_{index}")
        probes[index] = (delta, add([outputs, delta]))
        return probes[index][1]

    inputs = _inputs_like(model)
    output = _inline(model, inputs, on_output, {})
    missing = [name for index, name in enumerate(layer_names) if index not in probes]
    if missing:
        raise invalid("layer", "a layer on the path to the output", missing[0])
    deltas = [probes[index][0] for index in range(len(layers))]
    tapped = [probes[index][1] for index in range(len(layers))]
    return keras.Model(
        [*inputs, *deltas], [*tapped, output], name=f"{model.name}_probe"
    )
