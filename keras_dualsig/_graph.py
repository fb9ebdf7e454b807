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


def all_layer_names(model, prefix=""):
    """Names of every layer of a model, nested ones as "outer/inner"."""
    names = []
    for layer in getattr(model, "layers", None) or []:
        names.append(prefix + layer.name)
        if isinstance(layer, keras.Model):
            names.extend(all_layer_names(layer, prefix + layer.name + "/"))
    return names


def _inline(model, inputs, taps, kwargs):
    """Symbolically runs `model` on `inputs`, inlining nested models.

    Every layer of a nested Functional or Sequential model is called directly on
    the outer tensors, so that the output of any inner layer becomes a tensor
    of the flattened graph. Outputs of layers listed in `taps` are recorded.
    """
    kwargs = {key: value for key, value in kwargs.items() if key != "training"}
    if isinstance(model, keras.Sequential):
        x = inputs[0] if isinstance(inputs, list | tuple) else inputs
        for layer in model.layers:
            x = _run_op(layer, (x,), {}, taps)
        return x
    if _keras_internals.can_run_through_graph(model):

        def operation_fn(op):
            return lambda *args, **kw: _run_op(op, args, kw, taps)

        return _keras_internals.run_through_graph(model, inputs, operation_fn)
    return model(*inputs, **kwargs)


def _run_op(op, args, kwargs, taps):
    if isinstance(op, keras.Sequential) or _keras_internals.can_run_through_graph(op):
        outputs = _inline(op, list(args), taps, kwargs)
    else:
        outputs = op(*args, **kwargs)
    if id(op) in taps and taps[id(op)] is None:
        taps[id(op)] = outputs
    return outputs


def tap_model(model, layer_names):
    """A model returning the outputs of named layers and the model's output.

    Works for layers inside nested backbones: nested models are inlined into one
    flat graph (sharing the same layer objects and weights), so one forward pass
    yields every tapped tensor and the output, ready for `GradientTape`.

    Args:
        model: a built Functional or Sequential keras.Model.
        layer_names: list of layer names or "outer/inner" paths.

    Returns:
        keras.Model with outputs `[*taps, model_output]`.

    Raises:
        ValueError: if a name is not a layer of the model (the message lists
            the available names).
    """
    taps = {}
    for name in layer_names:
        layer, _ = find_layer(model, name)
        if layer is None:
            raise invalid(
                "layer",
                f"the name of a layer of `{model.name}` (one of "
                f"{all_layer_names(model)[-40:]})",
                name,
            )
        taps[id(layer)] = None
    inputs = [
        keras.Input(
            shape=tensor.shape[1:], dtype=tensor.dtype, batch_size=tensor.shape[0]
        )
        for tensor in model.inputs
    ]
    output = _inline(model, inputs, taps, {})
    tapped = []
    for name in layer_names:
        layer, _ = find_layer(model, name)
        value = taps[id(layer)]
        if value is None:  # pragma: no cover - defensive: layer not on the path.
            raise invalid("layer", "a layer on the path to the output", name)
        tapped.append(value)
    return keras.Model(
        inputs if len(inputs) > 1 else inputs[0],
        [*tapped, output],
        name=f"{model.name}_taps",
    )
