"""The Keras error template and the argument validators built on it.

Every public boundary of the package raises through `invalid`, so that each
message reads "Invalid value received for argument `x`. Expected ...
Received: x=..." (keras/src's wording), and validates common kinds of
argument (bools, positive ints, choices, fractions, class indices) with the
one validator of each kind below.
"""

import numbers

import keras
import numpy as np

_NO_VALUE = object()


def invalid(argument, expected, value=_NO_VALUE, *, received=None):
    """A ValueError in the Keras template naming `argument`.

    Args:
        argument: the argument's name (or a flag's, for scripts).
        expected: what the argument should have been, as a phrase.
        value: the received value; summarised by `describe` (arrays by shape,
            dtype and range, other values by a shortened `repr`).
        received: a phrase to show instead of `describe(value)`, for values
            better described in words (a model's name and output shape, say).

    Returns:
        ValueError: "Invalid value received for argument `argument`. Expected
        {expected}. Received: {argument}={received}".
    """
    if received is None:
        received = describe(value) if value is not _NO_VALUE else "<missing>"
    return ValueError(
        f"Invalid value received for argument `{argument}`. Expected {expected}. "
        f"Received: {argument}={received}"
    )


def describe(value, limit=80):
    """A short summary of a value: shape, dtype and range for arrays.

    Whole arrays are never printed: a (64, 224, 224) batch of maps would bury
    the message. Other values are shown with `repr`, cut at `limit` characters.
    """
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        try:
            array = as_array(value, "value")
        except Exception:  # Symbolic tensors cannot become arrays.
            return f"<{type(value).__name__} shape={tuple(value.shape)}>"
        if array.ndim == 0:
            return repr(array.item())
        text = f"<array shape={array.shape} dtype={array.dtype}"
        if array.size and np.issubdtype(array.dtype, np.number):
            finite = array[np.isfinite(array)] if array.dtype.kind in "fc" else array
            if finite.size:
                text += f" min={finite.min():.6g} max={finite.max():.6g}"
            if array.dtype.kind in "fc":
                nans = int(np.isnan(array).sum())
                if nans:
                    text += f" nan_count={nans}"
        return text + ">"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(
        value, bool | np.bool_
    )


def check_bool(value, argument, *, allow_none=False):
    """A Python or NumPy bool, returned as `bool`; None if allowed.

    Truthy strings such as "no" are refused rather than read as True.
    """
    if value is None and allow_none:
        return None
    if not isinstance(value, bool | np.bool_):
        raise invalid(
            argument, "None, True or False" if allow_none else "True or False", value
        )
    return bool(value)


def check_int(value, argument, *, minimum=None, allow_none=False):
    """An int (not a bool), at least `minimum` if given; None if allowed."""
    if value is None and allow_none:
        return None
    if not _is_int(value) or (minimum is not None and value < minimum):
        kind = "an int" if minimum is None else f"an int >= {minimum}"
        raise invalid(argument, f"None or {kind}" if allow_none else kind, value)
    return int(value)


def check_positive_int(value, argument, *, allow_none=False):
    """An int >= 1 (not a bool); None if allowed."""
    if value is None and allow_none:
        return None
    if not _is_int(value) or value < 1:
        expected = "None or a positive int" if allow_none else "a positive int"
        raise invalid(argument, expected, value)
    return int(value)


def check_choice(value, argument, choices):
    """One of a fixed set of strings."""
    if not isinstance(value, str) or value not in choices:
        options = ", ".join(f'"{choice}"' for choice in choices)
        raise invalid(argument, f"one of {options}", value)
    return value


def check_fraction(value, argument):
    """A real number in [0, 1], returned as a Python float."""
    if (
        isinstance(value, bool | np.bool_)
        or not isinstance(value, numbers.Real)
        or not 0.0 <= float(value) <= 1.0
    ):
        raise invalid(argument, "a float in [0, 1]", value)
    return float(value)


def as_array(value, argument):
    """A NumPy array of `value`; tensors of any Keras backend are accepted.

    Unconvertible inputs are reported in the template.
    """
    try:
        if keras.ops.is_tensor(value):
            # Detaches torch tensors that require gradients, copies from devices.
            return keras.ops.convert_to_numpy(value)
        return np.asarray(value)
    except (TypeError, ValueError, RuntimeError) as err:
        raise invalid(argument, "an array-like", value) from err


def check_class_index(class_index, batch, num_classes, argument="class_index"):
    """None, an int or an int array (batch,) of classes in [0, num_classes).

    Args:
        class_index: the value to check; tensors of any backend are accepted.
        batch: the batch size B.
        num_classes: the number of classes C.
        argument: the name used in the error message.

    Returns:
        None when `class_index` is None, else int32 numpy (B,) (an int is
        repeated for every image).

    Raises:
        ValueError: (Keras template) for floats, bools, a wrong shape or a
            class outside [0, C).
    """
    if class_index is None:
        return None
    values = as_array(class_index, argument)
    expected = (
        f"None, an int in [0, {num_classes}) or an int array of shape ({batch},) "
        f"with values in [0, {num_classes})"
    )
    if values.dtype.kind not in "iu":
        raise invalid(argument, expected, class_index)
    if values.ndim == 0:
        values = np.full((batch,), int(values))
    if values.shape != (batch,) or values.min() < 0 or values.max() >= num_classes:
        raise invalid(argument, expected, class_index)
    return values.astype(np.int32)
