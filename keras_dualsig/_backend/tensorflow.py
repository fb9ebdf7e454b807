"""TensorFlow: tf.function and GradientTape."""

import tensorflow as tf


def compile(fn, variables):  # noqa: A001
    # tf.function captures variables by reference: each call reads their
    # current values, so `variables` needs no special handling. Shapes stay
    # static (one trace per batch shape), as under jax.jit.
    del variables
    return tf.function(fn)


def value_and_grad(fn, x):
    # Only `x` is a source: no variable (frozen or not) needs watching.
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        score, aux = fn(x)
    return aux, tape.gradient(score, x)


def is_traced(x):
    del x
    return not tf.executing_eagerly()


def assert_class_labels(labels, num_classes):
    message = (
        "Invalid value received for argument `y_true`. Expected integer class "
        f"labels in [0, {num_classes})."
    )
    checks = []
    if labels.dtype.is_floating:
        checks.append(
            tf.debugging.assert_equal(labels, tf.round(labels), message=message)
        )
    labels = tf.cast(labels, tf.int32)
    checks += [
        tf.debugging.assert_non_negative(labels, message=message),
        tf.debugging.assert_less(labels, num_classes, message=message),
    ]
    with tf.control_dependencies(checks):
        return tf.identity(labels)


def value_grad_and_hvp(fn, x, vector_of):
    with tf.GradientTape(watch_accessed_variables=False) as outer:
        outer.watch(x)
        with tf.GradientTape(watch_accessed_variables=False) as inner:
            inner.watch(x)
            score, aux = fn(x)
        gradient = inner.gradient(
            score, x, unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        product = tf.reduce_sum(gradient * tf.stop_gradient(vector_of(aux)))
    hessian_vector = outer.gradient(
        product, x, unconnected_gradients=tf.UnconnectedGradients.ZERO
    )
    return aux, gradient, hessian_vector
