"""PyTorch: eager execution and torch.autograd.grad."""

import keras
import torch


def compile(fn, variables):  # noqa: A001
    # Eager: every call reads the variables as they are. torch.compile is not
    # used (its first call costs more than a CAM batch on CPU).
    del variables
    return fn


def value_and_grad(fn, x):
    # The source gets its own leaf that requires gradients: a frozen trunk's
    # parameters do not, so nothing else would start the graph.
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        score, aux = fn(x)
        (gradient,) = torch.autograd.grad(score, x)
    aux = keras.tree.map_structure(
        lambda t: t.detach() if isinstance(t, torch.Tensor) else t, aux
    )
    return aux, gradient


def is_traced(x):
    del x
    return False


def assert_class_labels(labels, num_classes):  # pragma: no cover - never traced
    del num_classes
    return labels.to(torch.int32)
