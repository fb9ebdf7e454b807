"""JAX: jax.jit over a StatelessScope, and jax.value_and_grad."""

import jax
import keras


def compile(fn, variables):  # noqa: A001
    # A jax.jit closure over a model would freeze its weights as constants.
    # The variables' values are arguments instead, and a StatelessScope maps
    # each variable to its traced value inside the compiled function.
    def stateless(values, *args):
        with keras.StatelessScope(
            state_mapping=list(zip(variables, values, strict=True))
        ):
            return fn(*args)

    jitted = jax.jit(stateless)

    def call(*args):
        return jitted([variable.value for variable in variables], *args)

    return call


def value_and_grad(fn, x):
    (_, aux), gradient = jax.value_and_grad(fn, has_aux=True)(x)
    return aux, gradient


def is_traced(x):
    return isinstance(x, jax.core.Tracer)


def assert_class_labels(labels, num_classes):
    # Values inside jax.jit cannot raise; out-of-range labels one-hot to zeros.
    del num_classes
    return labels.astype("int32")


def value_grad_and_hvp(fn, x, vector_of):
    def gradient_of(point):
        (_, aux), gradient = jax.value_and_grad(fn, has_aux=True)(point)
        return gradient, aux

    gradient, aux = gradient_of(x)
    vector = jax.lax.stop_gradient(vector_of(aux))
    # Forward over reverse: the directional derivative of the gradient along
    # v is H v (the Hessian is symmetric).
    _, hessian_vector = jax.jvp(lambda point: gradient_of(point)[0], (x,), (vector,))
    return aux, gradient, hessian_vector
