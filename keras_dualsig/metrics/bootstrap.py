"""Bootstrap confidence intervals of metrics from per-image outcomes.

Efron & Tibshirani, "An Introduction to the Bootstrap", 1993: resample the
images with replacement, recompute the metric, and take the percentiles of
the resampled values (the percentile interval). Every metric of the package
is a function of per-image outcomes averaged over images (a mean for
Top-1 Loc or Average Drop; a maximum over CAM thresholds of means for
MaxBoxAcc; precision-recall of summed histograms for PxAP), so a resample is
a vector of counts w (how often each image was drawn) and the metric is
recomputed from the weighted means `w @ outcomes / n`, exactly, without
redoing any CAM.

A paired difference (the sigmoid branch minus the softmax branch on the same
images) uses the same resampled images for both: the counts depend only on
`seed`, `num_resamples` and the number of images, so two outcome arrays of
the same images resampled with the same seed are resampled jointly.
docs/method.md, section "Confidence intervals".
"""

import numbers

import numpy as np

from keras_dualsig._errors import as_array, check_int, check_positive_int, invalid

# Count matrices of at most this many entries are built at a time.
_MAX_COUNT_ENTRIES = 1 << 23


def _mean(means):
    """Mean of the per-outcome means: (R, ...) -> (R,)."""
    return means.reshape(means.shape[0], -1).mean(axis=1)


def _max(means):
    """Largest mean over the last axis (e.g. the best CAM threshold): (R, T) -> (R,)."""
    return means.reshape(means.shape[0], -1).max(axis=1)


def _mean_of_max(means):
    """MaxBoxAccV2's shape: (R, D, T) -> best threshold per row -> mean over D."""
    return means.max(axis=-1).reshape(means.shape[0], -1).mean(axis=1)


STATISTICS = {"mean": _mean, "max": _max, "mean_of_max": _mean_of_max}


def _check_statistic(statistic):
    if callable(statistic):
        return statistic
    if isinstance(statistic, str) and statistic in STATISTICS:
        return STATISTICS[statistic]
    raise invalid(
        "statistic",
        f"one of {list(STATISTICS)} or a callable mapping float64 (R, ...) "
        "weighted means to (R,) values",
        statistic,
    )


def _check_outcomes(outcomes, argument):
    """Per-image outcomes: a real, finite array (n, ...) with n >= 1."""
    array = as_array(outcomes, argument)
    if (
        array.ndim == 0
        or array.shape[0] == 0
        or not (array.dtype == bool or np.issubdtype(array.dtype, np.number))
        or array.dtype.kind == "c"
        or (array.dtype.kind == "f" and not np.isfinite(array).all())
    ):
        raise invalid(
            argument,
            "per-image outcomes: a bool or real array (num_images, ...) with "
            "num_images >= 1 and finite values",
            array,
        )
    return array


def _check_level(level):
    if (
        isinstance(level, bool | np.bool_)
        or not isinstance(level, numbers.Real)
        or not 0.0 < float(level) < 1.0
    ):
        raise invalid("level", "a float in (0, 1), e.g. 0.95", level)
    return float(level)


def resample_counts(num_images, num_resamples, seed):
    """Yields float64 (r, n) count matrices: how often each image is drawn.

    Row k is the k-th bootstrap resample (n draws with replacement); the
    rows come in chunks of bounded size, and depend only on `num_images`,
    `num_resamples` and `seed`: every outcome array of the same images gets
    the same resamples.
    """
    rng = np.random.default_rng(seed)
    rows = max(1, min(num_resamples, _MAX_COUNT_ENTRIES // num_images))
    for start in range(0, num_resamples, rows):
        count = min(rows, num_resamples - start)
        drawn = rng.integers(0, num_images, (count, num_images))
        offsets = np.arange(count)[:, None] * num_images
        yield (
            np.bincount((drawn + offsets).ravel(), minlength=count * num_images)
            .reshape(count, num_images)
            .astype(np.float64)
        )


def bootstrap_distribution(outcomes, statistic="mean", *, num_resamples=1000, seed=0):
    """The metric on `num_resamples` bootstrap resamples of the images.

    Args:
        outcomes: bool or real array (n, ...): one row per image (e.g. bool
            (n,) hits, float (n,) Average Drop terms, bool (n, T) box
            accuracy at each CAM threshold).
        statistic: how the metric follows from the weighted means over
            images, float64 (R, ...) -> (R,): "mean" (the mean of
            everything: Top-1 Loc, Average Drop, a pointing game), "max"
            (the largest mean over the remaining axes: MaxBoxAcc@d from
            (n, T)), "mean_of_max" (the mean over D of the largest mean over
            T: MaxBoxAccV2 from (n, D, T)), or a callable.
        num_resamples: R, the number of resamples.
        seed: int seed of the resamples (None: fresh ones).

    Returns:
        float64 (R,): the metric on each resample.

    Raises:
        ValueError: for empty or non-finite outcomes, an unknown statistic,
            a bad `num_resamples` or `seed`.
    """
    array = _check_outcomes(outcomes, "outcomes")
    statistic = _check_statistic(statistic)
    num_resamples = check_positive_int(num_resamples, "num_resamples")
    seed = check_int(seed, "seed", minimum=0, allow_none=True)
    num_images = array.shape[0]
    # Sums of counts over bool outcomes are integers <= n: exact in float32
    # (n < 2**24), at twice the speed of float64.
    exact32 = array.dtype == bool and num_images < 2**24
    dtype = np.float32 if exact32 else np.float64
    flat = array.reshape(num_images, -1).astype(dtype)
    values = []
    for counts in resample_counts(num_images, num_resamples, seed):
        sums = (counts.astype(dtype) @ flat).astype(np.float64)
        means = (sums / num_images).reshape(-1, *array.shape[1:])
        values.append(np.asarray(statistic(means), np.float64))
    return np.concatenate(values)


def _value(array, statistic):
    """The metric on all images (each counted once)."""
    means = array.reshape(array.shape[0], -1).astype(np.float64).mean(axis=0)
    return float(statistic(means.reshape(1, *array.shape[1:]))[0])


def _interval(distribution, level):
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(distribution, [tail, 1.0 - tail])
    return [float(low), float(high)]


def bootstrap_interval(
    outcomes, statistic="mean", *, level=0.95, num_resamples=1000, seed=0
):
    """A metric and its percentile bootstrap confidence interval over images.

    The images are resampled with replacement `num_resamples` times; the
    interval holds the central `level` share of the metric's resampled
    values (the percentile interval of Efron & Tibshirani, 1993).

    Args:
        outcomes: bool or real array (n, ...), one row per image (see
            `bootstrap_distribution`).
        statistic: "mean", "max", "mean_of_max" or a callable (see
            `bootstrap_distribution`).
        level: the coverage, default 0.95.
        num_resamples: default 1000.
        seed: int seed (default 0: the same interval every run), or None.

    Returns:
        {"value": float, "CI": [low, high]}: the metric on all images and
        the interval, in the outcomes' units (percent when the outcomes are
        in percent).

    Raises:
        ValueError: as `bootstrap_distribution`, and for a `level` outside
            (0, 1).

    Example:

    >>> import numpy as np
    >>> hits = np.array([True] * 80 + [False] * 20)
    >>> out = bootstrap_interval(100.0 * hits)
    >>> out["value"], 70 < out["CI"][0] < 80 < out["CI"][1] < 90
    (80.0, True)
    """
    level = _check_level(level)
    array = _check_outcomes(outcomes, "outcomes")
    distribution = bootstrap_distribution(
        array, statistic, num_resamples=num_resamples, seed=seed
    )
    return {
        "value": _value(array, _check_statistic(statistic)),
        "CI": _interval(distribution, level),
    }


def paired_bootstrap_interval(
    outcomes,
    baseline_outcomes,
    statistic="mean",
    *,
    level=0.95,
    num_resamples=1000,
    seed=0,
):
    """The difference of a metric between two methods on the same images, with its interval.

    Paired bootstrap: each resample draws the same images for both (rows i
    of `outcomes` and `baseline_outcomes` belong to the same image), so the
    interval reflects the difference's own spread, narrower than two
    separate intervals when the methods agree on which images are hard. A
    difference whose interval excludes 0 is significant at `1 - level`.

    Args:
        outcomes: bool or real array (n, ...), e.g. the sigmoid branch's.
        baseline_outcomes: the same shape, e.g. the softmax branch's.
        statistic: as in `bootstrap_interval`.
        level: the coverage, default 0.95.
        num_resamples: default 1000.
        seed: int seed (default 0), or None.

    Returns:
        {"value": float, "CI": [low, high]}: statistic(outcomes) -
        statistic(baseline_outcomes) on all images, and the interval of the
        resampled differences.

    Raises:
        ValueError: as `bootstrap_interval`, and for outcome arrays of
            different shapes.
    """
    level = _check_level(level)
    first = _check_outcomes(outcomes, "outcomes")
    second = _check_outcomes(baseline_outcomes, "baseline_outcomes")
    if first.shape != second.shape:
        raise invalid(
            "baseline_outcomes",
            f"the shape of `outcomes`, {first.shape} (the same images, in "
            "the same order)",
            second,
        )
    function = _check_statistic(statistic)
    kwargs = {"num_resamples": num_resamples, "seed": seed}
    if seed is None:
        # Both arrays must see the same resamples: fix one fresh seed.
        kwargs["seed"] = int(np.random.default_rng().integers(2**63))
    difference = bootstrap_distribution(
        first, function, **kwargs
    ) - bootstrap_distribution(second, function, **kwargs)
    return {
        "value": _value(first, function) - _value(second, function),
        "CI": _interval(difference, level),
    }
