"""Dual-branch sigmoid model surgery (Oh & Noh, BMVC 2025, arXiv:2511.05590)."""

import threading

import keras
import numpy as np
from keras import ops

from keras_dualsig import _head
from keras_dualsig._errors import as_array, check_choice, check_int, invalid
from keras_dualsig._label_accuracy import LabelAccuracy
from keras_dualsig.losses import (
    _PROB_EPSILON,
    ClassBalancedBinaryCrossentropy,
    check_labels,
)

_INITS = ("fresh", "copy")
_CONV_TYPES = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
# Authors' initialisation of Dense heads: N(0, 0.01), bias 0.
_DENSE_INIT_STDDEV = 0.01
BRANCH_SUFFIX = "_sigmoid"
_FINAL_OR_LINEAR = (*_head.FINAL_ACTIVATIONS, "linear")


@keras.saving.register_keras_serializable(package="keras_dualsig")
class DualSigmoidModel(keras.Model):
    """A frozen classifier plus a trainable per-class sigmoid branch.

    Built by `kd.dual_sigmoid`; see its docstring. Calling the model returns a
    dict:
      - "softmax": the original classifier's output, unchanged (B, C);
      - "sigmoid": per-class sigmoid probabilities of the branch, float32 (B, C).

    Only the branch trains. The trunk and the original head are frozen and
    always run in inference mode (frozen BatchNorm uses its moving statistics,
    Dropout is off), so the "softmax" output and the features are identical
    in `fit` and in `predict`.

    Attributes:
        trunk: keras.Model, images -> feature map (B, h, w, channels). It shares
            its layers with the original classifier.
        heads: {"softmax": the original head, "sigmoid": the branch}, each a
            `Head` (its layers, their call arguments, how its logits are read).
        softmax_head: the original head layers (frozen), in call order.
        sigmoid_head: the branch layers, named `<original name>_sigmoid`.
        feature_layer: name of the layer whose output enters both heads.
        num_classes: number of classes C.
    """

    def __init__(self, trunk, softmax_head, sigmoid_head, *, name=None, **kwargs):
        # Images reach the trunk as given (converted to tensors, never cast), as
        # in the original Functional model, so the "softmax" output is identical
        # under mixed precision too.
        kwargs["autocast"] = False
        super().__init__(name=name, **kwargs)
        self.trunk = trunk
        # The layer lists are what Keras tracks (and where `.keras` files keep
        # the weights: trunk, then the softmax head, then the branch); the
        # Heads know how to run them.
        self.softmax_head = list(softmax_head.layers)
        self.sigmoid_head = list(sigmoid_head.layers)
        self.heads = {"softmax": softmax_head, "sigmoid": sigmoid_head}
        features = keras.KerasTensor(trunk.output.shape, dtype=trunk.output.dtype)
        outputs = self.head_outputs(features)  # Builds the branch's variables.
        self.num_classes = int(outputs["softmax"].shape[-1])
        self.feature_layer = _head.output_layer_name(trunk)
        self.built = True

    def build(self, input_shape=None):
        # Built in __init__; present so Keras does not try a symbolic call.
        self.built = True

    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        # Unfreezing the model must never unfreeze the original classifier.
        self._trainable = bool(value)
        for layer in getattr(self, "sigmoid_head", []):
            layer.trainable = bool(value)

    def head_outputs(self, features, training=False):
        """Runs both heads on a feature map.

        Args:
            features: (B, h, w, channels) output of `trunk`.
            training: training flag for the sigmoid branch (the original head
                always runs in inference mode).

        Returns:
            dict of (B, C) tensors: "softmax" (original output), "softmax_logits"
            (float32 pre-softmax logits), "sigmoid_logits" (float32 pre-sigmoid
            logits), "sigmoid" (float32 probabilities).
        """
        softmax, softmax_logits = self.heads["softmax"](features, training=False)
        sigmoid, sigmoid_logits = self.heads["sigmoid"](features, training=training)
        return {
            "softmax": softmax,
            "softmax_logits": softmax_logits,
            "sigmoid_logits": sigmoid_logits,
            "sigmoid": sigmoid,
        }

    def call(self, inputs, training=None):
        features = self.trunk(inputs, training=False)
        outputs = self.head_outputs(features, training=bool(training))
        _LOGITS.keep(self, outputs["sigmoid"], outputs["sigmoid_logits"])
        return {"softmax": outputs["softmax"], "sigmoid": outputs["sigmoid"]}

    def logits(self, images):
        """Pre-activation class scores of both heads, in inference mode.

        Args:
            images: a batch the classifier accepts, e.g. (B, H, W, 3).

        Returns:
            dict with "softmax" (pre-softmax logits of the original head; the
            log-probabilities if the classifier has no separate logits) and
            "sigmoid" (pre-sigmoid logits of the branch), float32 (B, C).
        """
        outputs = self.head_outputs(self.trunk(images, training=False))
        return {
            "softmax": outputs["softmax_logits"],
            "sigmoid": outputs["sigmoid_logits"],
        }

    def branch_model(self):
        """The sigmoid branch alone, as a model from features to probabilities.

        Shares its layers (and so its weights) with this model. The trunk is
        frozen and deterministic, so its features can be computed once and the
        branch trained on them: the same updates as `fit` on images without
        augmentation, without running the trunk every epoch.

        Returns:
            Functional keras.Model, float (B, h, w, channels) features ->
            float32 (B, C) sigmoid probabilities; compile it with
            `ClassBalancedBinaryCrossentropy()`.
        """
        features = keras.Input(
            self.trunk.output.shape[1:], dtype=self.trunk.output.dtype, name="features"
        )
        head = self.heads["sigmoid"]
        z = features
        for layer, kwargs in zip(head.layers, head.call_kwargs, strict=True):
            z = layer(z, **kwargs)
        probs = keras.layers.Activation("sigmoid", dtype="float32", name="sigmoid")(z)
        return keras.Model(features, probs, name=f"{self.name}_branch")

    def fit(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.fit`, with the labels checked before training starts.

        Integer labels (B,) / (B, 1) or one-hot labels (B, C). Labels given as
        arrays (also in `validation_data`) are checked at once, so a label
        outside [0, C) or a fractional label is a clear error naming `y`
        rather than a graph error mid-epoch; labels inside a tf.data pipeline
        are checked as the loss reads them (docs of
        `kd.ClassBalancedBinaryCrossentropy`). Switching between integer and
        one-hot labels across `fit` calls is supported.
        """
        self._prepare_labels(y, "y")
        validation = kwargs.get("validation_data")
        if isinstance(validation, tuple | list) and len(validation) >= 2:
            self._prepare_labels(validation[1], "validation_data")
        return super().fit(x, y, *args, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        """`keras.Model.evaluate`, with array labels checked first (see `fit`)."""
        self._prepare_labels(y, "y")
        return super().evaluate(x, y, *args, **kwargs)

    def _prepare_labels(self, y, argument):
        """Checks array labels; retraces when the label form changes."""
        rank = _label_rank(y)
        if rank is None:
            return
        if _is_array(y):
            _check_label_array(y, self.num_classes, argument)
        # Compiled train/test functions are traced for one label rank (TF
        # relaxes a second rank to "unknown"): a new form needs new traces.
        if getattr(self, "_label_rank", None) not in (None, rank):
            self.train_function = None
            self.test_function = None
        self._label_rank = rank

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, **kwargs):
        """Configures training of the sigmoid branch.

        With no `loss`, the branch trains with `ClassBalancedBinaryCrossentropy`
        computed from the branch's logits (exact for saturated sigmoids, on
        every backend): `compute_loss` reads the logits that `call` computed
        with the "sigmoid" probabilities it receives.
        A loss that is not a dict applies to the "sigmoid" output only (the
        original head is frozen). With no `metrics`, reports the accuracy of
        both outputs ("softmax_accuracy", "sigmoid_accuracy"); a list of metrics
        applies to the "sigmoid" output, and the string "accuracy" means
        top-1 accuracy for integer or one-hot labels. Labels given to `fit`
        (integer (B,) or one-hot (B, C)) serve both outputs.

        Args:
            optimizer: a Keras optimizer or its name.
            loss: None, a loss, or a dict keyed by "softmax"/"sigmoid".
            metrics: None, a list, or a dict keyed by "softmax"/"sigmoid".
            **kwargs: other `keras.Model.compile` arguments.
        """
        if loss is None:
            loss = ClassBalancedBinaryCrossentropy(from_logits=True)
        if not isinstance(loss, dict):
            loss = {"sigmoid": loss}
        # A logits loss on the branch gets the logits (see compute_loss).
        branch_loss = loss.get("sigmoid")
        self._loss_from_logits = isinstance(
            branch_loss, ClassBalancedBinaryCrossentropy
        ) and bool(branch_loss.from_logits)
        if metrics is None:
            metrics = {
                "softmax": [LabelAccuracy(name="accuracy")],
                "sigmoid": [LabelAccuracy(name="accuracy")],
            }
        elif not isinstance(metrics, dict):
            metrics = {"sigmoid": list(metrics)}
        metrics = {key: _resolve_metrics(value) for key, value in metrics.items()}
        super().compile(optimizer=optimizer, loss=loss, metrics=metrics, **kwargs)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, **kwargs):
        if getattr(self, "_loss_from_logits", False) and isinstance(y_pred, dict):
            # The default loss reads logits: those of this step's call, or (for
            # outputs computed elsewhere) the clipped probabilities' logits.
            y_pred = {**y_pred, "sigmoid": _LOGITS.of(self, y_pred["sigmoid"])}
        return super().compute_loss(
            x=x, y=_targets_for(y), y_pred=y_pred, sample_weight=sample_weight, **kwargs
        )

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        return super().compute_metrics(x, _targets_for(y), y_pred, sample_weight)

    def compile_from_config(self, config):
        # `compile` only normalises its arguments, so the saved config (already
        # normalised) can go straight back through it.
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def get_config(self):
        return {
            "name": self.name,
            "trunk": keras.saving.serialize_keras_object(self.trunk),
            "softmax_head": keras.saving.serialize_keras_object(self.heads["softmax"]),
            "sigmoid_head": keras.saving.serialize_keras_object(self.heads["sigmoid"]),
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)

        def load(item):
            return keras.saving.deserialize_keras_object(
                item, custom_objects=custom_objects
            )

        trunk = load(config.pop("trunk"))
        if isinstance(config["softmax_head"], list):
            softmax_head, sigmoid_head = _heads_from_v0_1_config(config, load)
        else:
            softmax_head = load(config.pop("softmax_head"))
            sigmoid_head = load(config.pop("sigmoid_head"))
        return cls(trunk, softmax_head, sigmoid_head, **config)


# How 0.1.0 files named the ways of reading the softmax head's logits.
_V0_1_LOGITS = {
    "activation_layer": "pre_activation",
    "preactivation": "pre_activation",
    "identity": "pre_activation",
    "log": "log",
}


def _heads_from_v0_1_config(config, load):
    """The two Heads of a model saved by keras_dualsig 0.1.0 (pops its keys).

    0.1.0 stored the head layers as two lists plus the shared call arguments,
    the logits mode and the number of logit layers.
    """
    softmax_layers = [load(item) for item in config.pop("softmax_head")]
    sigmoid_layers = [load(item) for item in config.pop("sigmoid_head")]
    call_kwargs = config.pop("head_kwargs", None) or [{} for _ in softmax_layers]
    num_logit_layers = config.pop("num_logit_layers", None) or len(softmax_layers)
    logits = _V0_1_LOGITS[config.pop("logits_mode", "preactivation")]
    softmax_head = _head.Head(
        softmax_layers, call_kwargs, num_logit_layers=num_logit_layers, logits=logits
    )
    sigmoid_head = _sigmoid_head(sigmoid_layers, call_kwargs)
    return softmax_head, sigmoid_head


def _sigmoid_head(layers, call_kwargs):
    """The branch's Head: its layers end in linear logits; sigmoid in float32."""
    return _head.Head(
        layers,
        call_kwargs[: len(layers)],
        logits="pre_activation",
        activation="sigmoid",
    )


class _LogitsOfOutputs(threading.local):
    """The sigmoid logits of each model's latest call, per thread.

    `call` returns probabilities (the public output); the default loss needs
    the logits of those same probabilities. Keras trainers pass `call`'s
    outputs to `compute_loss` unchanged within one step, on every backend, so
    the logits are found by the identity of the probabilities tensor.
    Thread-local because tf.distribute traces replicas in threads.
    """

    def keep(self, model, probabilities, logits):
        self.__dict__[id(model)] = (probabilities, logits)

    def of(self, model, probabilities):
        kept = self.__dict__.get(id(model))
        if kept is not None and kept[0] is probabilities:
            return kept[1]
        # Not from this model's latest call: logits of the clipped probabilities.
        probabilities = ops.clip(
            ops.cast(probabilities, "float32"), _PROB_EPSILON, 1.0 - _PROB_EPSILON
        )
        return ops.log(probabilities) - ops.log1p(-probabilities)


_LOGITS = _LogitsOfOutputs()


def _is_array(y):
    return isinstance(y, list | tuple) or (hasattr(y, "shape") and hasattr(y, "dtype"))


def _label_rank(y):
    """1 for integer labels, 2 for one-hot, None when it cannot be told."""
    if _is_array(y):
        shape = (
            ops.shape(ops.convert_to_tensor(y)) if not hasattr(y, "shape") else y.shape
        )
        rank = len(shape)
        return 1 if rank == 2 and shape[-1] == 1 else rank
    spec = getattr(y, "element_spec", None)  # A tf.data dataset of labels.
    if spec is not None and hasattr(spec, "shape"):
        return spec.shape.rank
    return None


def _check_label_array(y, num_classes, argument):
    """Integer labels (B,) / (B, 1) in [0, C) or one-hot (B, C) rows."""
    values = as_array(y, argument)
    if values.ndim == 2 and values.shape[-1] == num_classes:
        if not np.issubdtype(values.dtype, np.number) or not (
            np.isfinite(values).all() and values.min() >= 0 and values.max() <= 1
        ):
            raise invalid(
                argument,
                f"one-hot (or soft) labels of shape (batch, {num_classes}) in [0, 1]",
                values,
            )
        return
    if values.ndim == 2 and values.shape[-1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise invalid(
            argument,
            f"integer labels (batch,) or one-hot labels (batch, {num_classes})",
            values,
        )
    check_labels(values, num_classes, argument)


def _targets_for(y):
    """One set of labels serves both outputs."""
    if y is None or isinstance(y, dict):
        return y
    return {"softmax": y, "sigmoid": y}


def _resolve_metrics(metrics):
    if not isinstance(metrics, list | tuple):
        metrics = [metrics]
    return [
        LabelAccuracy(name="accuracy") if m in ("accuracy", "acc") else m
        for m in metrics
    ]


def _branch_layer(layer, *, is_logit_layer, init, seed):
    """A fresh copy of a head layer for the sigmoid branch."""
    config = layer.get_config()
    config["name"] = layer.name + BRANCH_SUFFIX
    config["trainable"] = True
    if is_logit_layer and "activation" in config:
        if _head.activation_name(layer.activation) in _FINAL_OR_LINEAR:
            config["activation"] = "linear"  # The sigmoid is applied in float32.
    if init == "fresh":
        if isinstance(layer, keras.layers.Dense):
            config["kernel_initializer"] = keras.initializers.RandomNormal(
                mean=0.0, stddev=_DENSE_INIT_STDDEV, seed=seed
            )
            config["bias_initializer"] = "zeros"
        elif isinstance(layer, _CONV_TYPES):
            config["kernel_initializer"] = keras.initializers.GlorotUniform(seed=seed)
            config["bias_initializer"] = "zeros"
    return layer.__class__.from_config(config)


def _check_head(model, head):
    """Refuses heads whose sigmoid branch would not mean what the paper means."""
    num_classes = int(model.outputs[0].shape[-1])
    final = head.final_activation
    if num_classes < 2:
        raise invalid(
            "model",
            "a classifier with at least 2 classes (a single-unit binary or a "
            "one-class head has no softmax over classes to replace: rebuild it "
            "with `Dense(2, activation='softmax')`, or explain its logit directly "
            "with kd.cams on the plain model, branch='softmax')",
            received=f"{model.name} with {num_classes} output unit(s)",
        )
    if final == "sigmoid":
        raise invalid(
            "model",
            "a softmax (or logits) classifier: this head already ends in "
            "per-class sigmoids (multi-label), so a sigmoid branch would "
            "duplicate it; explain it directly with kd.cams on the plain model "
            "(branch='softmax' reads its pre-sigmoid logits)",
            received=f"{model.name} with a sigmoid output",
        )
    if final == "opaque":
        raise invalid(
            "model",
            "a head whose last layer is a Dense/Conv layer with its activation, "
            "or a trailing Activation/Softmax layer (the branch needs the "
            "logits; a Lambda or custom last layer hides them, and cloning it "
            "would give a sigmoid of probabilities)",
            received=f"{model.name} ending in {head.layers[-1].name!r} "
            f"({type(head.layers[-1]).__name__})",
        )
    lambdas = [
        layer.name
        for layer in head.logit_layers
        if isinstance(layer, keras.layers.Lambda)
    ]
    if lambdas:
        raise invalid(
            "model",
            "a head without Lambda layers (a Lambda cannot be cloned into the "
            "branch and loaded back safely; replace it with a registered layer, "
            "or pass `head_start` to start the head after it)",
            received=f"{model.name} with Lambda layer(s) {lambdas} in its head",
        )


def dual_sigmoid(model, *, head_start=None, init="fresh", name=None, seed=None):
    """Adds a per-class sigmoid branch to a trained Keras classifier.

    The model surgery of Oh & Noh, "Beyond Softmax: Dual-Branch Sigmoid
    Architecture for Accurate Class Activation Maps" (BMVC 2025): the
    classifier's head (everything from the last spatial feature map to the
    output) is cloned into a parallel branch whose final activation is a
    per-class sigmoid. Every original layer is frozen (`trainable = False`, so
    frozen BatchNorm runs in inference mode); only the branch trains. The
    original output is untouched, so predictions and accuracy are bit-identical.
    CAMs are then read from the branch (see `kd.cams`).

    The head is found by walking back from the output until both a spatial
    reduction (global pooling, Flatten, Reshape to rank 2) and a layer with
    weights have been passed, stopping at a rank-4 feature map. Examples:
    ResNet `GAP -> Dense`, VGG16 `Flatten -> fc1 -> fc2 -> predictions`,
    MobileNet `GAP -> Dropout -> Conv2D(1x1) -> Reshape -> Softmax`, a
    fully-convolutional `Conv2D(C) -> GAP -> Softmax`, and a nested backbone
    `Sequential([backbone, GAP, Dense])`.

    Note: the returned model shares its trunk and original head layers with
    `model`, and those layers are frozen in place.

    Args:
        model: a trained, built keras.Model (Functional or Sequential, nested
            backbones allowed) with one output (B, C) of probabilities or logits.
        head_start: name of the first head layer; auto-detected when None.
        init: "fresh" (paper: Dense kernels N(0, 0.01), conv kernels Glorot
            uniform, zero biases) or "copy" (start from the softmax head's
            weights).
        name: name of the returned model; default `<model name>_dual_sigmoid`.
        seed: optional int seed for the fresh initialisation.

    Returns:
        A `DualSigmoidModel` returning {"softmax": (B, C), "sigmoid": float32
        (B, C)}.

    Raises:
        ValueError: (Keras template) if `model` is not a keras.Model, has several
            outputs or an output that is not (B, C), is already dual, has no
            classifier head; for an unknown `head_start` or `init`. Also for
            heads the paper's surgery does not fit (README, "What it
            refuses"): fewer than 2 classes, a sigmoid (multi-label) output,
            an opaque last layer (e.g. a Lambda softmax) or a Lambda inside
            the head.

    Example:
    >>> dual = kd.dual_sigmoid(classifier)
    >>> dual.compile(optimizer="sgd")
    >>> dual.fit(images, labels, epochs=3)
    >>> dual.predict(images)["sigmoid"].shape
    (n, C)
    """
    check_choice(init, "init", _INITS)
    check_int(seed, "seed", allow_none=True)
    if isinstance(model, DualSigmoidModel):
        raise invalid(
            "model",
            "a plain classifier (this model already has a sigmoid branch)",
            received=model.name,
        )
    trunk, softmax_head = _head.split_classifier(model, head_start=head_start)
    _check_head(model, softmax_head)
    branch_source = softmax_head.logit_layers
    branch_layers = [
        _branch_layer(
            layer,
            is_logit_layer=index == len(branch_source) - 1,
            init=init,
            seed=None if seed is None else seed + index,
        )
        for index, layer in enumerate(branch_source)
    ]
    trunk.trainable = False
    for layer in softmax_head.layers:
        layer.trainable = False
    dual = DualSigmoidModel(
        trunk,
        softmax_head,
        _sigmoid_head(branch_layers, softmax_head.call_kwargs),
        name=name or f"{model.name}_dual_sigmoid",
    )
    if init == "copy":
        for source, clone in zip(branch_source, branch_layers, strict=True):
            clone.set_weights(source.get_weights())
    return dual
