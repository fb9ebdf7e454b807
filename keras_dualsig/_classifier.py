"""Any supported model seen the same way: a trunk and its heads.

CAMs, Score-CAM's scorer, the fidelity metrics and the tf-keras-vis interop
all read a model through `classifier_of`, the one place that knows the kinds
of model the package accepts: a `kd.DualSigmoidModel` (trunk, softmax head and
sigmoid branch) or a plain single-output Keras classifier (trunk and softmax
head, split off by `_head.split_classifier`).
"""

import dataclasses

import keras

from keras_dualsig import _keras_internals
from keras_dualsig._errors import invalid
from keras_dualsig._head import split_classifier
from keras_dualsig.dual_sigmoid import DualSigmoidModel

BRANCHES = ("sigmoid", "softmax")


@dataclasses.dataclass(frozen=True)
class Classifier:
    """A classifier as a trunk and its heads.

    Attributes:
        trunk: keras.Model, images -> feature map (B, h, w, c).
        heads: {"softmax": Head} for a plain classifier, plus "sigmoid" for a
            DualSigmoidModel.
        name: the model's name (for messages).
        num_classes: C.
    """

    trunk: keras.Model
    heads: dict
    name: str
    num_classes: int

    @property
    def is_dual(self):
        """Whether the model has a sigmoid branch."""
        return "sigmoid" in self.heads

    @property
    def feature_layer(self):
        """Name of the layer whose output enters the heads."""
        layer, _ = _keras_internals.producer(self.trunk.outputs[0])
        return layer.name

    def check_branch(self, branch, argument="branch"):
        """Validates a branch name against the heads this model has."""
        if branch not in BRANCHES:
            raise invalid(argument, f"one of {BRANCHES}", branch)
        if branch not in self.heads:
            raise invalid(
                argument,
                '"softmax" for a plain classifier ("sigmoid" needs a model '
                "built by kd.dual_sigmoid)",
                branch,
            )
        return branch

    def head_logits(self, features):
        """{branch: float32 (B, C) logits} of every head, in inference mode."""
        return {
            branch: head(features, training=False)[1]
            for branch, head in self.heads.items()
        }

    def logits(self, images):
        """{branch: float32 (B, C) logits} for a batch of images (inference)."""
        return self.head_logits(self.trunk(images, training=False))


def classifier_of(model, argument="model"):
    """The trunk and heads of any model the package accepts.

    Args:
        model: a `kd.DualSigmoidModel` or a plain single-output Keras
            classifier (its head is found as `kd.dual_sigmoid` finds it).
        argument: the argument name used in error messages.

    Returns:
        A `Classifier`.

    Raises:
        ValueError: (Keras template) for anything else, with the reason.
    """
    if isinstance(model, DualSigmoidModel):
        return Classifier(
            trunk=model.trunk,
            heads=dict(model.heads),
            name=model.name,
            num_classes=int(model.num_classes),
        )
    if not isinstance(model, keras.Model):
        raise invalid(argument, "a keras.Model", model)
    trunk, head = split_classifier(model)
    return Classifier(
        trunk=trunk,
        heads={"softmax": head},
        name=model.name,
        num_classes=int(model.outputs[0].shape[-1]),
    )
