"""Graph surgery on Keras classifiers: find the head, split it off, tap layers.

Private module shared by `dual_sigmoid`, the CAM classes and the metrics. The
head-detection rule is the one of METHOD.md ("Model surgery"): walk back from
the output until both a spatial reduction (global pooling, Flatten, Reshape to
rank 2) and at least one layer with weights have been passed, and stop at the
first tensor that is a spatial feature map (rank 4, H and W not both 1).
"""

import dataclasses

import keras
from keras import ops

from keras_dualsig._errors import invalid

# Layers that collapse the spatial axes of a feature map.
_GLOBAL_POOLS = (
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
    keras.layers.Flatten,
)
# Layers that pass class scores through unchanged in meaning.
_SCORE_PASSTHROUGH = (
    keras.layers.Reshape,
    keras.layers.Flatten,
    keras.layers.Dropout,
    keras.layers.GlobalAveragePooling2D,
    keras.layers.GlobalMaxPooling2D,
)
# Final activations that turn class scores into probabilities (or leave them):
# the logits are what enters them.
_FINAL_ACTIVATIONS = ("softmax", "sigmoid", "linear")


def _activation_name(activation):
    if activation is None:
        return "linear"
    try:
        name = keras.activations.serialize(activation)
    except Exception:  # Custom, unregistered activation: not a known final one.
        return getattr(activation, "__name__", "custom")
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    return name


def _is_reduction(layer, output):
    if isinstance(layer, _GLOBAL_POOLS):
        return True
    return isinstance(layer, keras.layers.Reshape) and len(output.shape) == 2


def _is_spatial(tensor):
    """Rank 4 with H and W not both 1 (unknown sizes count as spatial)."""
    shape = tensor.shape
    return len(shape) == 4 and not (shape[1] == 1 and shape[2] == 1)


def _is_final_activation(layer):
    if isinstance(layer, keras.layers.Softmax):
        return True
    return isinstance(layer, keras.layers.Activation) and (
        _activation_name(layer.activation) in _FINAL_ACTIVATIONS
    )


def _producer(tensor):
    """The (layer, node) that produced a symbolic tensor of a functional graph."""
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None, None
    layer = history.operation
    return layer, layer._inbound_nodes[history.node_index]


def _call_kwargs(node):
    """The non-tensor keyword arguments a node was called with."""
    return {
        key: value
        for key, value in node.arguments.kwargs.items()
        if not isinstance(value, keras.KerasTensor)
    }


def single_output(model, argument="model"):
    """Validates a Keras classifier and returns its one (B, C) output tensor."""
    if not isinstance(model, keras.Model):
        raise invalid(argument, "a keras.Model", model)
    if getattr(model, "_is_dual_sigmoid", False):
        raise invalid(
            argument,
            "a plain classifier (this model already has a sigmoid branch)",
            received=model.name,
        )
    try:
        outputs = model.outputs
        inputs = model.inputs
    except (AttributeError, ValueError) as err:
        raise invalid(
            argument,
            "a built Functional or Sequential model (call `model.build(...)` or "
            "give the Sequential an `keras.Input`)",
            received=model.name,
        ) from err
    if not inputs or not outputs:
        raise invalid(
            argument,
            "a built Functional or Sequential model with defined inputs",
            received=model.name,
        )
    if len(outputs) != 1:
        raise invalid(
            argument,
            "a single-output classifier",
            received=f"{model.name} with {len(outputs)} outputs",
        )
    output = outputs[0]
    if len(output.shape) != 2 or output.shape[-1] is None:
        raise invalid(
            argument,
            "a classifier whose output has shape (batch, num_classes)",
            received=f"{model.name} with output shape {tuple(output.shape)}",
        )
    return output


@dataclasses.dataclass
class ClassifierParts:
    """A classifier split into a trunk and a chain of head layers.

    Attributes:
        trunk: keras.Model mapping the classifier's inputs to the feature map,
            float (batch, h, w, channels). Shares layers with the classifier.
        head: the head layers, in call order, from the feature map to the output.
        head_kwargs: the non-tensor keyword arguments each head layer was
            called with.
        feature_layer: name of the layer whose output enters the head.
        num_classes: number of classes C.
        logits_mode: how the pre-softmax logits are read: "activation_layer"
            (the input of trailing Activation/Softmax layers), "preactivation"
            (the last layer with its activation switched off), "identity"
            (the output already is logits) or "log" (log of the output,
            when nothing else is available).
        num_logit_layers: how many head layers produce the logits (the rest
            are trailing activation layers).
    """

    trunk: keras.Model
    head: list
    head_kwargs: list
    feature_layer: str
    num_classes: int
    logits_mode: str
    num_logit_layers: int

    def apply_head(self, features, training=False):
        """Runs the head on features.

        Returns:
            (output, logits): the classifier's output exactly as the original
            model computes it, and the pre-softmax logits, both (B, C).
        """
        return apply_head(
            self.head,
            self.head_kwargs,
            self.logits_mode,
            self.num_logit_layers,
            features,
            training=training,
        )


def _walk_head(model, output, head_start):
    """Walks back from the output; returns (head chain reversed, feature tensor)."""
    chain = []  # (layer, node), from the output backwards.
    tensor = output
    seen_reduction = seen_weights = False
    while True:
        layer, node = _producer(tensor)
        if layer is None or node.is_input or len(node.input_tensors) != 1:
            break
        chain.append((layer, node))
        is_reduction = _is_reduction(layer, tensor)
        tensor = node.input_tensors[0]
        if head_start is not None:
            if layer.name != head_start:
                continue
            if len(tensor.shape) != 4:
                raise invalid(
                    "head_start",
                    "the name of a head layer whose input is a rank-4 feature "
                    "map (batch, height, width, channels)",
                    received=f"{head_start!r} (its input has shape {tuple(tensor.shape)})",
                )
            return chain, tensor
        if isinstance(layer, _GLOBAL_POOLS) and seen_weights and len(tensor.shape) == 4:
            # A global pooling or Flatten of a rank-4 map, with weights after
            # it, ends the head even when small inputs shrank the map to 1x1.
            return chain, tensor
        seen_reduction = seen_reduction or is_reduction
        seen_weights = seen_weights or bool(layer.weights)
        if seen_reduction and seen_weights and _is_spatial(tensor):
            return chain, tensor
    names = [layer.name for layer, _ in chain]
    if head_start is not None:
        raise invalid(
            "head_start",
            "the name of a layer on the chain of single-input layers that ends "
            f"at the model's output (one of {names})",
            head_start,
        )
    raise invalid(
        "model",
        "a classifier with a head: a rank-4 feature map followed by pooling, "
        "Flatten or Reshape and a layer with weights (or pass `head_start`)",
        received=f"{model.name} (no classifier head found walking back from the output "
        f"through {names})",
    )


def split_classifier(model, head_start=None):
    """Splits a single-output classifier into trunk and head (METHOD.md rule).

    Args:
        model: a built keras.Model (Functional or Sequential) with one output of
            shape (batch, num_classes).
        head_start: optional name of the first head layer; auto-detected when
            None.

    Returns:
        A `ClassifierParts`.

    Raises:
        ValueError: in the Keras template, for a non-model, a multi-output
            model, an output that is not rank 2, an unknown or unusable
            `head_start`, or when no classifier head is found.
    """
    output = single_output(model)
    chain, tensor = _walk_head(model, output, head_start)
    chain.reverse()
    head = [layer for layer, _ in chain]
    head_kwargs = [_call_kwargs(node) for _, node in chain]
    feature_producer, _ = _producer(tensor)
    num_logit_layers = len(head)
    while num_logit_layers > 1 and _is_final_activation(head[num_logit_layers - 1]):
        num_logit_layers -= 1
    last = head[num_logit_layers - 1]
    if num_logit_layers < len(head):
        logits_mode = "activation_layer"
    elif hasattr(last, "activation"):
        name = _activation_name(last.activation)
        # softmax/sigmoid: switch it off; linear or e.g. relu: the output is
        # the score itself.
        logits_mode = "preactivation" if name in ("softmax", "sigmoid") else "identity"
    elif isinstance(last, _SCORE_PASSTHROUGH):
        logits_mode = "identity"
    else:
        # An opaque last layer (e.g. a Lambda applying softmax): no separate
        # logits exist, fall back to log-probabilities.
        logits_mode = "log"
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    trunk = keras.Model(inputs, tensor, name=f"{model.name}_trunk")
    return ClassifierParts(
        trunk=trunk,
        head=head,
        head_kwargs=head_kwargs,
        feature_layer=feature_producer.name,
        num_classes=int(output.shape[-1]),
        logits_mode=logits_mode,
        num_logit_layers=num_logit_layers,
    )


def _call_without_activation(layer, x, **kwargs):
    """Calls a layer with its `activation` switched to linear for this call."""
    activation = layer.activation
    layer.activation = keras.activations.linear
    try:
        return layer(x, **kwargs)
    finally:
        layer.activation = activation


def apply_head(head, head_kwargs, logits_mode, num_logit_layers, x, training=False):
    """Runs a head chain; returns (output, float32 logits), both (B, C)."""
    logits = None
    for index, (layer, kwargs) in enumerate(zip(head, head_kwargs, strict=True)):
        # Keras layers all accept `training`; frozen heads are called with False.
        kwargs = {**kwargs, "training": training}
        is_last_logit_layer = index == num_logit_layers - 1
        if is_last_logit_layer and logits_mode == "preactivation":
            logits = _call_without_activation(layer, x, **kwargs)
            x = layer.activation(logits)
            continue
        x = layer(x, **kwargs)
        if is_last_logit_layer:
            logits = x
    if logits_mode == "log":
        # No separate logits: log-probabilities differ from the logits by a
        # per-sample constant.
        logits = ops.log(ops.maximum(ops.cast(x, "float32"), 1e-12))
    return x, ops.cast(logits, "float32")


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
    if isinstance(model, keras.Model) and hasattr(model, "_run_through_graph"):

        def operation_fn(op):
            return lambda *args, **kw: _run_op(op, args, kw, taps)

        return model._run_through_graph(inputs, operation_fn=operation_fn)
    return model(*inputs, **kwargs)


def _run_op(op, args, kwargs, taps):
    if isinstance(op, keras.Model) and (
        isinstance(op, keras.Sequential) or hasattr(op, "_run_through_graph")
    ):
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


def model_logits(model):
    """A function from images to the pre-activation class scores of a model.

    Args:
        model: a DualSigmoidModel or a plain single-output Keras classifier.

    Returns:
        Callable `f(images) -> dict`: "softmax" holds the original head's
        pre-softmax logits, float32 (B, C) (log-probabilities when the model
        has no separate logits); for a DualSigmoidModel, "sigmoid" holds the
        branch's pre-sigmoid logits, float32 (B, C). Runs in inference mode.
    """
    if getattr(model, "_is_dual_sigmoid", False):
        return model.logits
    parts = split_classifier(model)

    def logits(images):
        features = parts.trunk(images, training=False)
        return {"softmax": parts.apply_head(features)[1]}

    return logits
