"""What differs per Keras backend, behind one small interface.

Everything else in the package is written on `keras.ops`. Three things are not
portable and live here, one module per backend (`tensorflow.py`, `jax.py`,
`torch.py`), each exposing the same functions:

- `compile(fn, variables)`: `fn` compiled (tf.function, jax.jit; torch runs
  eagerly), reading the CURRENT values of `variables` at every call, so that
  a compiled CAM follows later training of the model;
- `value_and_grad(fn, x)`: for `fn(x) -> (score, aux)` with a scalar score,
  returns `(aux, d score / d x)`;
- `value_grad_and_hvp(fn, x, vector_of)`: also the Hessian-vector product
  (ShapleyCAM);
- `assert_class_labels(labels, C)`: a run-time check of traced labels where
  the backend has one (TensorFlow graphs);
- `is_traced(x)`: whether a tensor is symbolic (inside a tf.function graph or a
  jax trace), where values cannot be inspected and a bad value cannot be
  reported eagerly.

The module is chosen from `keras.backend.backend()` at call time.
"""

import importlib

import keras

_MODULES = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}


def _impl():
    name = keras.backend.backend()
    if name not in _MODULES:
        raise NotImplementedError(
            f"keras_dualsig runs on the TensorFlow, JAX and PyTorch backends of "
            f"Keras; this Keras uses the {name!r} backend (set KERAS_BACKEND)."
        )
    return importlib.import_module(f"keras_dualsig._backend.{_MODULES[name]}")


def compile(fn, variables):  # noqa: A001 - mirrors the backends' own names.
    """Compiles `fn(*args)`; the result reads `variables` at each call.

    Args:
        fn: a function of backend tensors (and Python values bound beforehand
            with functools.partial), written on keras.ops; it may call Keras
            layers and models whose variables are among `variables`.
        variables: every Keras variable `fn` reads.

    Returns:
        A callable with the same arguments and outputs as `fn`.
    """
    return _impl().compile(fn, list(variables))


def value_and_grad(fn, x):
    """(aux, gradient) of a scalar `score` where `fn(x) -> (score, aux)`."""
    return _impl().value_and_grad(fn, x)


def is_traced(x):
    """Whether `x` is symbolic (traced), so its values cannot be read."""
    return _impl().is_traced(x)


def assert_class_labels(labels, num_classes):
    """Traced labels, checked in [0, num_classes) where the backend can.

    TensorFlow graphs get an assertion that fails at run time with a message
    in the Keras template; inside jax.jit nothing can be checked.

    Returns:
        int32 labels (the same values).
    """
    return _impl().assert_class_labels(labels, num_classes)


def require_tensorflow(feature):
    """Imports TensorFlow for a TensorFlow-only feature, or says what to do.

    Args:
        feature: what needs it, e.g. "`kd.datasets.load_wsol` (a tf.data
            pipeline)".

    Returns:
        The `tensorflow` module.

    Raises:
        ImportError: naming the feature, the Keras backend, and the install
            line, when TensorFlow is not installed.
    """
    try:
        import tensorflow as tf
    except ImportError as err:
        raise ImportError(
            f"TensorFlow is needed by {feature} and is not installed (Keras "
            f"runs on the {keras.backend.backend()!r} backend here). Install it beside "
            "your backend with `pip install tensorflow-cpu` (tf.data and "
            "tf-keras-vis work with any Keras backend installed next to "
            "TensorFlow), or use the backend-independent parts of keras_dualsig "
            "(models, CAMs, losses, metrics, figures)."
        ) from err
    return tf


def value_grad_and_hvp(fn, x, vector_of):
    """(aux, gradient, Hessian-vector product) of a scalar score.

    For `fn(x) -> (score, aux)`: the gradient g = d score / d x and
    `H v = d (g . v) / d x`, with `v = vector_of(aux)` held constant (not
    differentiated). Zeros where the score is linear in x (ShapleyCAM).
    """
    return _impl().value_grad_and_hvp(fn, x, vector_of)
