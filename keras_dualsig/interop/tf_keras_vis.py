"""Scores and a model modifier so that tf-keras-vis reads the sigmoid branch.

tf-keras-vis (`Gradcam`, `GradcamPlusPlus`, `Layercam`, `Scorecam`) explains a
score of a model's output. `branch_model` turns a `kd.DualSigmoidModel` (or a
plain classifier) into a Functional model whose output holds the chosen head's
LOGITS, and `LogitScore` reads one class's logit from it, so tf-keras-vis's
maps explain the sigmoid branch as in Oh & Noh, BMVC 2025 (arXiv:2511.05590).

This module never imports tf_keras_vis: the scores and the modifiers are plain
callables, which tf-keras-vis accepts. tf-keras-vis runs on the TensorFlow
backend only.

The positive clamp: `kd.cams` rectifies the sigmoid branch's channel weights
by default (w <- max(w, 0), the paper's method); tf-keras-vis's `Gradcam`
does not. Pass `gradient_modifier=kd_vis.positive_weights` to `Gradcam` to
get the clamped maps (`GradcamPlusPlus` weights are non-negative already for
non-negative activations; `Layercam` has no channel weights; `Scorecam`
weights are positive).

Example:
>>> from tf_keras_vis.gradcam import Gradcam
>>> from keras_dualsig.interop import tf_keras_vis as kd_vis
>>> model = kd_vis.branch_model(dual)  # sigmoid branch logits
>>> maps = Gradcam(model)(
...     kd_vis.LogitScore(class_index), images,
...     penultimate_layer=kd_vis.FEATURES, seek_penultimate_conv_layer=False)
"""

import keras
import numpy as np
from keras import ops

from keras_dualsig._classifier import BRANCHES, classifier_of
from keras_dualsig._errors import check_bool, invalid

# Name of the identity layer on the head's input in `branch_model`; pass it as
# tf-keras-vis's `penultimate_layer` with `seek_penultimate_conv_layer=False`.
FEATURES = "kd_features"


class _BranchLogits(keras.layers.Layer):
    """Runs a head on the feature map at call time; returns [logits, 0].

    The heads run inside `call`, as the package's `Head` reads their logits
    (not as symbolic Functional nodes of the original layers). The appended
    zero column lets `LogitScore(from_softmax=True)`
    recover `exp(logit)` from tf-keras-vis Scorecam's softmax over outputs.
    """

    def __init__(self, heads, branch, **kwargs):
        super().__init__(dtype="float32", autocast=False, **kwargs)
        self._head_fn = heads
        self.branch = branch

    def call(self, features):
        logits = ops.cast(self._head_fn(features)[self.branch], "float32")
        return ops.concatenate([logits, ops.zeros_like(logits[:, :1])], axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], None)


def branch_model(model, branch="sigmoid"):
    """A Functional model images -> the chosen head's logits, for tf-keras-vis.

    Args:
        model: a `kd.DualSigmoidModel`, or a plain Keras classifier (then only
            branch="softmax").
        branch: "sigmoid" (the branch's pre-sigmoid logits) or "softmax" (the
            original head's pre-softmax logits; log-probabilities when the
            classifier has no separate logits).

    Returns:
        keras.Model taking a list `[images]` (tf-keras-vis's convention),
        with output float32 (B, C + 1): columns 0..C-1 are the
        logits, column C is zero (see `LogitScore`). Its layer `FEATURES` is
        an identity on the head's input feature map (B, h, w, c). The model
        shares its layers and weights with `model`.

    Raises:
        ValueError: (Keras template) for an unknown branch, or "sigmoid" on a
            plain classifier.
    """
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            "tf-keras-vis runs on the TensorFlow backend only; this Keras uses "
            f"the {keras.backend.backend()!r} backend. Use kd.cams, which runs "
            "on every backend, or set KERAS_BACKEND=tensorflow."
        )
    classifier = classifier_of(model)
    classifier.check_branch(branch)
    trunk = classifier.trunk
    heads = classifier.head_logits

    # The trunk's own symbolic output: inner layers keep their place in the
    # graph, so tf-keras-vis can also tap them on flat (non-nested) models.
    features = keras.layers.Identity(name=FEATURES)(trunk.outputs[0])
    logits = _BranchLogits(heads, branch, name=f"kd_{branch}_logits")(features)
    # A list of inputs, as tf-keras-vis always feeds lists of seed inputs.
    return keras.Model(list(trunk.inputs), logits, name=f"{model.name}_{branch}_logits")


def positive_weights(gradients):
    """tf-keras-vis `gradient_modifier`: Grad-CAM with clamped channel weights.

    Grad-CAM's weight of channel c is the spatial mean of its gradients;
    zeroing the gradients of the channels whose mean is negative makes that
    weight `max(w_c, 0)`, the rectification `kd.cams.GradCAM` applies on the
    sigmoid branch by default (Oh & Noh, BMVC 2025).

    Args:
        gradients: float (B, h, w, c) gradients of the score.

    Returns:
        The gradients, zero for every (image, channel) with a negative mean.
    """
    mean = ops.mean(gradients, axis=(1, 2), keepdims=True)
    return gradients * ops.cast(mean > 0, gradients.dtype)


def branch_modifier(branch="sigmoid"):
    """A tf-keras-vis `model_modifier` applying `branch_model`.

    Pass `clone=False` to the tf-keras-vis visualizer: cloning a
    DualSigmoidModel is neither needed nor supported by `clone_model`.

    Example:
    >>> Gradcam(dual, model_modifier=branch_modifier("sigmoid"), clone=False)
    """
    if branch not in BRANCHES:
        raise invalid("branch", f"one of {BRANCHES}", branch)
    return lambda model: branch_model(model, branch)


class LogitScore:
    """tf-keras-vis score: the logit of a class, read from `branch_model`.

    Args:
        class_index: an int, or a sequence/array of ints (one per image).
        from_softmax: False for the gradient methods (Gradcam,
            GradcamPlusPlus, Layercam), which pass the raw output: the score
            is the logit z_k. True for Scorecam, which passes a softmax over
            the output: the score is `p_k / p_zero = exp(z_k)`, which makes
            tf-keras-vis's channel weights proportional to
            `softmax_channels(z_k)`, the Score-CAM weights of pytorch-grad-cam
            and `kd.cams.ScoreCAM` (the per-image constant cancels in the
            min-max normalisation). Overflows for logits above about 88.

    Returns (when called):
        float (B,) scores.
    """

    def __init__(self, class_index, from_softmax=False):
        values = np.asarray(class_index)
        if values.dtype == bool or not np.issubdtype(values.dtype, np.integer):
            raise invalid("class_index", "an int or an array of ints", class_index)
        self.class_index = values.astype("int32").reshape(-1)
        self.from_softmax = check_bool(from_softmax, "from_softmax")
        self.name = "LogitScore"

    def __call__(self, output):
        num_classes = output.shape[-1] - 1
        if self.class_index.min() < 0 or self.class_index.max() >= num_classes:
            raise invalid(
                "class_index",
                f"values in [0, {num_classes})",
                self.class_index,
            )
        index = self.class_index
        if index.size == 1:
            index = np.repeat(index, output.shape[0])
        picked = ops.take_along_axis(output, ops.convert_to_tensor(index[:, None]), 1)
        picked = picked[:, 0]
        if self.from_softmax:
            return picked / output[:, -1]
        return picked
