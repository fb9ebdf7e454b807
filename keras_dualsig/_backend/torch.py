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


def value_grad_and_hvp(fn, x, vector_of):
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        score, aux = fn(x)
        # create_graph: the gradient is differentiated once more.
        (gradient,) = torch.autograd.grad(score, x, create_graph=True)
        vector = vector_of(aux).detach()
        hessian_vector = None
        if gradient.requires_grad:
            (hessian_vector,) = torch.autograd.grad(
                (gradient * vector).sum(), x, allow_unused=True
            )
    if hessian_vector is None:  # the score is linear in x
        hessian_vector = torch.zeros_like(x)
    aux = keras.tree.map_structure(
        lambda t: t.detach() if isinstance(t, torch.Tensor) else t, aux
    )
    return aux, gradient.detach(), hessian_vector.detach()
