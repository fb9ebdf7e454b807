"""The classifier head: finding it in a model and running it.

A `Head` is the chain of layers from the feature map to the class scores,
with the call arguments of each layer and the rule that reads its logits.
`split_classifier` finds the head of a trained classifier (the rule of
docs/method.md, "Finding the head") and returns the trunk and the Head; a
`kd.DualSigmoidModel` holds a trunk and two Heads.
"""

import keras
from keras import ops

from keras_dualsig import _keras_internals
from keras_dualsig._errors import check_choice, invalid

# Final activations: they turn class scores into probabilities, so the logits
# are what enters them.
FINAL_ACTIVATIONS = ("softmax", "sigmoid")
# How a head's logits are read: "pre_activation" is the value that enters the
# final softmax/sigmoid (a trailing Activation/Softmax layer, or the last
# weighted layer's own activation), or the output itself when there is none;
# "log" is the log of the output, for heads whose probabilities come from an
# opaque layer (the softmax branch of a CAM then explains log p_k).
LOGITS = ("pre_activation", "log")
# Probabilities are clipped this far from 0 before "log" logits are taken.
_LOG_EPSILON = 1e-12

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


def activation_name(activation):
    """The registered name of an activation ("linear" for None)."""
    if activation is None:
        return "linear"
    try:
        name = keras.activations.serialize(activation)
    except Exception:  # Custom, unregistered activation: not a known final one.
        return getattr(activation, "__name__", "custom")
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    return name


def is_final_activation_layer(layer):
    """A Softmax layer or an Activation layer applying softmax/sigmoid/linear."""
    if isinstance(layer, keras.layers.Softmax):
        return True
    return isinstance(layer, keras.layers.Activation) and (
        activation_name(layer.activation) in (*FINAL_ACTIVATIONS, "linear")
    )


@keras.saving.register_keras_serializable(package="keras_dualsig")
class TokenPooling(keras.layers.Layer):
    """Token sequence (B, N, D) -> (B, D): one token, or the mean of all.

    The head of a transformer classifier pools its tokens with a plain op
    (`x[:, 0]` for the class token, `ops.mean(x, axis=1)`), which is not a
    layer of the model; the Head runs this layer instead, which computes the
    same op, so the softmax output stays bit-identical.

    Args:
        mode: "index" (`x[:, index]`) or "mean" (`mean(x, axis=1)`).
        index: the token kept by "index" (0: the class token).
        **kwargs: Layer arguments (dtype: the token tensor's, so nothing is
            cast).
    """

    def __init__(self, mode="index", index=0, **kwargs):
        super().__init__(**kwargs)
        self.mode = check_choice(mode, "mode", ("index", "mean"))
        self.index = int(index)

    def call(self, tokens):
        if self.mode == "index":
            return tokens[:, self.index]
        return ops.mean(tokens, axis=1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "index": self.index}


@keras.saving.register_keras_serializable(package="keras_dualsig")
class Head:
    """A chain of layers from a feature map to class scores.

    Calling a Head runs its layers in order, each with the keyword arguments
    of its call in the original model, and returns `(output, logits)`:

    - output: the classifier's output exactly as the original model computes
      it; or, when `activation` is set (the sigmoid branch), that activation
      of the float32 logits;
    - logits: float32 pre-activation class scores (see `LOGITS`).

    When the last logit layer carries the final activation itself (e.g.
    `Dense(C, activation="softmax")`), its logits come from a private linear
    copy of that layer evaluated with the original layer's weights (a
    `keras.StatelessScope`), so the user's layer is never modified.

    Args:
        layers: the head layers, in call order.
        call_kwargs: one dict of non-tensor call arguments per layer.
        num_logit_layers: how many leading layers produce the logits; the rest
            are trailing activation layers. Default: all.
        logits: "pre_activation" or "log" (see `LOGITS`).
        activation: None (output = the layers' output) or "sigmoid".
    """

    def __init__(
        self,
        layers,
        call_kwargs=None,
        *,
        num_logit_layers=None,
        logits="pre_activation",
        activation=None,
    ):
        self.layers = list(layers)
        if call_kwargs is None:
            call_kwargs = [{} for _ in self.layers]
        self.call_kwargs = [dict(kwargs) for kwargs in call_kwargs]
        if len(self.call_kwargs) != len(self.layers):
            raise invalid(
                "call_kwargs",
                f"one dict per head layer ({len(self.layers)})",
                received=f"{len(self.call_kwargs)} dicts",
            )
        self.num_logit_layers = (
            len(self.layers) if num_logit_layers is None else int(num_logit_layers)
        )
        self.logits = check_choice(logits, "logits", LOGITS)
        if activation is not None:
            check_choice(activation, "activation", ("sigmoid",))
        self.activation = activation
        last = self.layers[self.num_logit_layers - 1]
        # The last logit layer's own final activation is stripped for logits.
        self._strip_activation = (
            logits == "pre_activation"
            and activation_name(getattr(last, "activation", None)) in FINAL_ACTIVATIONS
        )
        self._linear_twin = None

    @property
    def final_activation(self):
        """How the head turns logits into its output.

        "softmax", "sigmoid" (a trailing Activation/Softmax layer or the last
        logit layer's own activation), "linear" (the output is the logits,
        or another activation such as relu), or "opaque" (logits read as
        "log": an unrecognised last layer, e.g. a Lambda).
        """
        if self.activation is not None:
            return self.activation
        if self.logits == "log":
            return "opaque"
        for layer in reversed(self.layers[self.num_logit_layers :]):
            if isinstance(layer, keras.layers.Softmax):
                return "softmax"
            name = activation_name(layer.activation)
            if name in FINAL_ACTIVATIONS:
                return name
        last = self.layers[self.num_logit_layers - 1]
        name = activation_name(getattr(last, "activation", None))
        return name if name in FINAL_ACTIVATIONS else "linear"

    @property
    def logit_layers(self):
        """The layers that produce the logits (without trailing activations)."""
        return self.layers[: self.num_logit_layers]

    def __call__(self, features, training=False):
        """Runs the head.

        Args:
            features: the feature map entering the head, e.g. (B, h, w, c).
            training: passed to every layer (frozen heads are called with
                False).

        Returns:
            (output, logits): the output (B, C) and float32 logits (B, C).
        """
        x, logits = features, None
        last_logit = self.num_logit_layers - 1
        for index, (layer, kwargs) in enumerate(
            zip(self.layers, self.call_kwargs, strict=True)
        ):
            kwargs = {**kwargs, "training": training}
            if index == last_logit and self._strip_activation:
                logits = self._pre_activation(layer, x, kwargs)
            x = layer(x, **kwargs)
            if index == last_logit and logits is None:
                logits = x
        if self.logits == "log":
            # No separate logits: log-probabilities differ from the logits by
            # a per-sample constant.
            logits = ops.log(ops.maximum(ops.cast(x, "float32"), _LOG_EPSILON))
        logits = ops.cast(logits, "float32")
        if self.activation == "sigmoid":
            x = ops.sigmoid(logits)
        return x, logits

    def _pre_activation(self, layer, x, kwargs):
        """`layer(x)` without its activation, leaving `layer` untouched."""
        if self._linear_twin is None:
            config = layer.get_config()
            config["activation"] = "linear"
            config["name"] = f"{layer.name}_logits"
            twin = layer.__class__.from_config(config)
            twin(x, **kwargs)  # Builds the twin's (unused) variables.
            self._linear_twin = twin
        twin = self._linear_twin
        mapping = list(zip(twin.weights, layer.weights, strict=True))
        with keras.StatelessScope(state_mapping=mapping):
            return twin(x, **kwargs)

    def get_config(self):
        return {
            "layers": [keras.saving.serialize_keras_object(x) for x in self.layers],
            "call_kwargs": self.call_kwargs,
            "num_logit_layers": self.num_logit_layers,
            "logits": self.logits,
            "activation": self.activation,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        layers = [
            keras.saving.deserialize_keras_object(x) for x in config.pop("layers")
        ]
        return cls(layers, **config)

    def __repr__(self):
        names = [layer.name for layer in self.layers]
        return f"Head({names}, logits={self.logits!r}, activation={self.activation!r})"


def _check_classifier(model):
    """Validates a single-output (B, C) classifier; returns its output tensor."""
    if not isinstance(model, keras.Model):
        raise invalid("model", "a keras.Model", model)
    try:
        outputs, inputs = model.outputs, model.inputs
    except (AttributeError, ValueError) as err:
        raise invalid(
            "model",
            "a built Functional or Sequential model (call `model.build(...)` or "
            "give the Sequential an `keras.Input`)",
            received=model.name,
        ) from err
    if not inputs or not outputs:
        raise invalid(
            "model",
            "a built Functional or Sequential model with defined inputs",
            received=model.name,
        )
    if len(outputs) != 1:
        raise invalid(
            "model",
            "a single-output classifier",
            received=f"{model.name} with {len(outputs)} outputs",
        )
    output = outputs[0]
    if len(output.shape) != 2 or output.shape[-1] is None:
        raise invalid(
            "model",
            "a classifier whose output has shape (batch, num_classes)",
            received=f"{model.name} with output shape {tuple(output.shape)}",
        )
    return output


def _is_reduction(layer, output):
    if isinstance(
        layer, (*_GLOBAL_POOLS, keras.layers.GlobalAveragePooling1D, TokenPooling)
    ):
        return True
    return isinstance(layer, keras.layers.Reshape) and len(output.shape) == 2


def _is_spatial(tensor):
    """A feature map or a token sequence the head starts at.

    Rank 4 with H and W not both 1, or rank 3 with more than one token
    (unknown sizes count).
    """
    shape = tensor.shape
    if len(shape) == 3:
        return shape[1] != 1
    return len(shape) == 4 and not (shape[1] == 1 and shape[2] == 1)


def _head_layer(layer, node):
    """The layer the Head runs for a node: the node's own, or a TokenPooling."""
    reduction = _keras_internals.token_reduction(layer, node)
    if reduction is None:
        return layer
    mode, index = reduction
    return TokenPooling(
        mode,
        index or 0,
        dtype=node.input_tensors[0].dtype,
        name=f"kd_token_{mode}" if mode == "mean" else f"kd_token_{index}",
    )


def _can_walk_into(layer):
    """A nested Functional/Sequential model with one input and one output."""
    if not isinstance(layer, keras.Model):
        return False
    try:
        inputs, outputs = layer.inputs, layer.outputs
    except (AttributeError, ValueError):
        return False
    return bool(inputs) and len(inputs) == 1 and len(outputs or []) == 1


def _step_out(tensor, outer):
    """A nested model's input tensor -> the outer tensor that feeds it."""
    while outer and any(tensor is t for t in outer[-1][0].inputs):
        _, node = outer.pop()
        tensor = node.input_tensors[0]
    return tensor


# The layers a head may run on through inside a nested model, back to its
# input: fc-style layers that keep the resolution. A pooling, a strided
# convolution or a normalisation there means the nested model is a backbone
# (e.g. keras.applications' with `pooling="avg"`), not a head.
_RUN_ON = (
    keras.layers.Conv2D,
    keras.layers.Dense,
    keras.layers.Dropout,
    keras.layers.SpatialDropout2D,
    keras.layers.Activation,
)


def _check_run_on(model, layer, outer):
    """Refuses a run-on through a layer that is not a head layer."""
    strided = isinstance(layer, keras.layers.Conv2D) and (
        tuple(layer.strides) != (1, 1) or tuple(layer.dilation_rate) != (1, 1)
    )
    if strided or not isinstance(layer, _RUN_ON):
        raise invalid(
            "model",
            "a classifier whose head starts in its outermost graph, or at the "
            "input of a nested model holding only head layers (the trunk "
            "cannot end inside a nested model: pass a model whose backbone "
            "ends at its feature map, e.g. keras.applications with "
            "pooling=None and the pooling outside)",
            received=f"{model.name} (the head starts inside the nested model "
            f"{outer[-1][0].name!r}, after its layer {layer.name!r})",
        )


def _feature_tensor(head_start, tensor, outer):
    """The input of a `head_start` layer, as a tensor of the outer graph.

    Raises:
        ValueError: (Keras template) when it lies inside a nested model (the
            trunk would have to end inside it).
    """
    tensor = _step_out(tensor, outer)
    if outer:
        raise invalid(
            "head_start",
            "a layer whose input is a tensor of the outermost graph or a "
            "nested model's input (the trunk cannot end inside a nested model)",
            received=f"{head_start!r} (its input lies inside the nested model "
            f"{outer[-1][0].name!r})",
        )
    return tensor


def _walk_head(model, output, head_start):
    """Walks back from the output; returns (head chain reversed, feature tensor)."""
    chain = []  # (layer, node), from the output backwards.
    tensor = output
    seen_reduction = seen_weights = False
    merge = None  # A layer with several inputs that stopped the walk.
    # Nested single-input models being walked through (keras-hub's VGG keeps
    # its head in a nested Sequential): (model, its node in the outer graph).
    outer = []
    # A head that starts inside a nested model runs on to that model's input
    # (the trunk cannot end inside it): keras-hub VGG's `fc1 (7x7 conv) ->
    # fc2 -> pooler -> predictions`, as keras.applications' VGG16 top.
    run_on = False
    while True:
        layer, node = _keras_internals.producer(tensor)
        if layer is not None and node.is_input and outer:
            tensor = _step_out(tensor, outer)
            if run_on and not outer:
                return chain, tensor
            continue
        if layer is None or node.is_input:
            break
        if len(node.input_tensors) != 1:
            merge = layer.name
            break
        if _can_walk_into(layer):
            outer.append((layer, node))
            tensor = layer.outputs[0]
            continue
        head_layer = _head_layer(layer, node)
        chain.append((head_layer, node))
        is_reduction = _is_reduction(head_layer, tensor)
        tensor = node.input_tensors[0]
        if run_on:
            _check_run_on(model, layer, outer)
            continue
        if head_start is not None:
            if layer.name != head_start:
                continue
            tensor = _feature_tensor(head_start, tensor, outer)
            if len(tensor.shape) not in (3, 4):
                raise invalid(
                    "head_start",
                    "the name of a head layer whose input is a rank-4 feature "
                    "map (batch, height, width, channels) or a token sequence "
                    "(batch, tokens, channels)",
                    received=f"{head_start!r} (its input has shape "
                    f"{tuple(tensor.shape)})",
                )
            return chain, tensor
        pools = is_reduction and not isinstance(head_layer, keras.layers.Reshape)
        if pools and seen_weights and len(tensor.shape) in (3, 4):
            # A global pooling, Flatten or token pooling of a map, with
            # weights after it, ends the head even when small inputs shrank
            # the map to 1x1.
            stop = True
        else:
            seen_reduction = seen_reduction or is_reduction
            seen_weights = seen_weights or bool(getattr(layer, "weights", None))
            stop = seen_reduction and seen_weights and _is_spatial(tensor)
        if stop:
            tensor = _step_out(tensor, outer)
            if not outer:
                return chain, tensor
            run_on = True
    names = [layer.name for layer, _ in chain]
    if head_start is not None:
        raise invalid(
            "head_start",
            "the name of a layer on the chain of single-input layers that ends "
            f"at the model's output (one of {names})",
            head_start,
        )
    stop = (
        f"; the walk stopped at {merge!r}, which has several inputs: a head is a "
        "chain of single-input layers, so image features that meet other "
        "inputs (or each other) before the pooling are not a head"
        if merge
        else ""
    )
    raise invalid(
        "model",
        "a classifier with a head: a rank-4 feature map followed by pooling, "
        "Flatten or Reshape and a layer with weights (or pass `head_start`)",
        received=f"{model.name} (no classifier head found walking back from the "
        f"output through {names}{stop})",
    )


def _logits_rule(layers):
    """(num_logit_layers, logits) for a head chain."""
    num_logit_layers = len(layers)
    while num_logit_layers > 1 and is_final_activation_layer(
        layers[num_logit_layers - 1]
    ):
        num_logit_layers -= 1
    last = layers[num_logit_layers - 1]
    if (
        num_logit_layers < len(layers)
        or hasattr(last, "activation")
        or isinstance(last, _SCORE_PASSTHROUGH)
    ):
        return num_logit_layers, "pre_activation"
    # An opaque last layer (e.g. a Lambda applying softmax): no separate
    # logits exist, fall back to log-probabilities.
    return num_logit_layers, "log"


def split_classifier(model, head_start=None):
    """Splits a single-output classifier into trunk and head.

    The head is found by the rule of docs/method.md ("Finding the head"): walk
    back from the output until both a spatial reduction (global pooling,
    Flatten, Reshape to rank 2, or a token pooling: `x[:, i]`,
    `ops.mean(x, axis=1)`, GlobalAveragePooling1D) and a layer with weights
    have been passed, and stop at the first tensor that is a spatial feature
    map (rank 4, H and W not both 1) or a token sequence (rank 3).

    Args:
        model: a built keras.Model (Functional or Sequential) with one output
            of shape (batch, num_classes).
        head_start: optional name of the first head layer; auto-detected when
            None.

    Returns:
        (trunk, head): a keras.Model from the classifier's inputs to the
        feature map (sharing its layers) and the `Head`.

    Raises:
        ValueError: in the Keras template, for a non-model, a multi-output
            model, an output that is not rank 2, an unknown or unusable
            `head_start`, or when no classifier head is found.
    """
    output = _check_classifier(model)
    chain, tensor = _walk_head(model, output, head_start)
    chain.reverse()
    layers = [layer for layer, _ in chain]
    num_logit_layers, logits = _logits_rule(layers)
    head = Head(
        layers,
        [
            {}
            if isinstance(layer, TokenPooling)
            else _keras_internals.call_kwargs(node)
            for layer, node in chain
        ],
        num_logit_layers=num_logit_layers,
        logits=logits,
    )
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    trunk = keras.Model(inputs, tensor, name=f"{model.name}_trunk")
    return trunk, head


def output_layer_name(model):
    """Name of the layer that produces a Functional model's (first) output."""
    layer, _ = _keras_internals.producer(model.outputs[0])
    return layer.name
