"""The Keras error template, shared by every public boundary of the package."""

import numpy as np


def invalid(argument, expected, received):
    """A ValueError in the Keras template naming `argument`.

    Args:
        argument: the argument's name.
        expected: what the argument should have been, as a phrase.
        received: a short printable summary of the received value (see
            `describe`).

    Returns:
        ValueError: "Invalid value received for argument `argument`. Expected
        ... Received: argument=...".
    """
    return ValueError(
        f"Invalid value received for argument `{argument}`. Expected {expected}. "
        f"Received: {argument}={received}"
    )


def invalid_value(argument, expected, value):
    """`invalid` with the received value summarised by `describe`."""
    return invalid(argument, expected, describe(value))


def describe(value, limit=80):
    """A short summary of a value: shape, dtype and range for arrays.

    Whole arrays are never printed: a (64, 224, 224) batch of maps would bury
    the message. Other values are shown with `repr`, cut at `limit` characters.
    """
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        try:
            array = np.asarray(value)
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
