"""Checks of metric inputs (score maps, thresholds, batch lengths).

The general validators (bools, ints, choices, fractions) live in
`keras_dualsig._errors`; these are the metric-specific ones, so that a bad map
fails at the boundary with a message naming the argument, instead of deep
inside OpenCV or NumPy.
"""

import numpy as np

from keras_dualsig._errors import as_array, invalid


def check_scoremaps(scoremaps, argument="scoremaps", ndim=3):
    """Validates score maps: real, finite, in [0, 1], of the given rank.

    Args:
        scoremaps: array-like (batch, height, width) (ndim=3) or (height,
            width) (ndim=2).
        argument: name used in the error message.
        ndim: required rank.

    Returns:
        np.ndarray of the same values: float32 or float64 as given (the uint8
        conversion `(s * 255).astype(uint8)` of wsolevaluation depends on the
        float type, so it is kept), other dtypes cast to float32.

    Raises:
        ValueError: wrong rank, empty, NaN, or values outside [0, 1].
    """
    array = as_array(scoremaps, argument)
    layout = "(batch, height, width)" if ndim == 3 else "(height, width)"
    expected = f"a float array of shape {layout} with values in [0, 1] and no NaN"
    if array.ndim != ndim or array.size == 0:
        raise invalid(argument, expected, array)
    if array.dtype == bool or not np.issubdtype(array.dtype, np.number):
        raise invalid(argument, expected, array)
    if array.dtype.kind == "c":
        raise invalid(argument, expected, array)
    if array.dtype not in (np.float32, np.float64):
        array = array.astype(np.float32)
    if np.isnan(array).any() or array.min() < 0 or array.max() > 1:
        raise invalid(argument, expected, array)
    return array


def check_thresholds(thresholds, argument, default):
    """Validates score-map thresholds: a non-empty 1-D float array in [0, 1].

    Returns:
        float64 (T,) array; `default` when `thresholds` is None.
    """
    if thresholds is None:
        return default
    array = as_array(thresholds, argument)
    expected = "a non-empty 1-D sequence of floats in [0, 1]"
    if (
        array.ndim != 1
        or array.size == 0
        or not np.issubdtype(array.dtype, np.number)
        or array.dtype == bool
    ):
        raise invalid(argument, expected, array)
    array = array.astype(np.float64)
    if np.isnan(array).any() or array.min() < 0 or array.max() > 1:
        raise invalid(argument, expected, array)
    return array


def check_batch_size(length, batch, argument):
    """The batch dimension of `argument` must equal the score maps' batch."""
    if length != batch:
        raise invalid(
            argument,
            f"one entry per score map ({batch} in this batch)",
            received=f"{length} entries",
        )
