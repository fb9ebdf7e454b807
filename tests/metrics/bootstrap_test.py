"""Tests for the bootstrap intervals of kd.metrics.

The weighted-mean shortcut is checked against re-evaluating each metric on
the resampled images themselves (rows repeated as often as drawn); the
intervals against the exact bootstrap distribution of two images and the
normal approximation of a proportion; pairing against shifted outcomes.
"""

import numpy as np
import pytest
from helpers.errors import raises_invalid

from keras_dualsig.metrics import (
    bootstrap_distribution,
    bootstrap_interval,
    paired_bootstrap_interval,
    pxap,
)
from keras_dualsig.metrics.bootstrap import resample_counts


def test_resample_counts_are_draws_with_replacement():
    counts = np.concatenate(list(resample_counts(7, 500, seed=3)))
    assert counts.shape == (500, 7)
    np.testing.assert_array_equal(counts.sum(axis=1), 7)
    assert counts.mean() == pytest.approx(1.0, abs=0.05)
    again = np.concatenate(list(resample_counts(7, 500, seed=3)))
    np.testing.assert_array_equal(counts, again)


@pytest.mark.parametrize("kind", ["max", "mean_of_max", "pxap"])
def test_weighted_means_equal_the_metric_on_the_resampled_images(kind):
    rng = np.random.default_rng(0)
    if kind == "max":  # MaxBoxAcc@d: best threshold of the box accuracy
        outcomes = rng.random((9, 11)) < 0.5
        statistic = kind

        def metric(rows):
            return rows.mean(axis=0).max()

    elif kind == "mean_of_max":  # MaxBoxAccV2
        outcomes = rng.random((9, 3, 11)) < 0.5
        statistic = kind

        def metric(rows):
            return rows.mean(axis=0).max(axis=-1).mean()

    else:  # PxAP of the summed per-image histograms
        outcomes = rng.integers(0, 20, (9, 2, 6))
        statistic = pxap

        def metric(rows):
            return pxap(rows.sum(axis=0))

    values = bootstrap_distribution(outcomes, statistic, num_resamples=50, seed=1)
    counts = np.concatenate(list(resample_counts(9, 50, seed=1))).astype(int)
    expected = [metric(np.repeat(outcomes, row, axis=0)) for row in counts]
    np.testing.assert_allclose(values, expected, rtol=1e-12, atol=1e-12)


def test_two_images_exact_distribution():
    # Resampled means of [0, 1]: 0, 1/2, 1 with probabilities 1/4, 1/2, 1/4.
    values = bootstrap_distribution(np.array([0.0, 1.0]), num_resamples=4000, seed=0)
    levels, counts = np.unique(values, return_counts=True)
    np.testing.assert_array_equal(levels, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(counts / 4000, [0.25, 0.5, 0.25], atol=0.03)
    result = bootstrap_interval(np.array([0.0, 1.0]), num_resamples=4000)
    assert result == {"value": 0.5, "CI": [0.0, 1.0]}


def test_proportion_interval_matches_the_normal_approximation():
    hits = np.zeros(400, bool)
    hits[:120] = True  # p = 0.3
    result = bootstrap_interval(100.0 * hits, num_resamples=2000, seed=0)
    half = 1.96 * 100 * np.sqrt(0.3 * 0.7 / 400)
    assert result["value"] == pytest.approx(30.0)
    assert result["CI"][0] == pytest.approx(30.0 - half, abs=1.0)
    assert result["CI"][1] == pytest.approx(30.0 + half, abs=1.0)
    narrow = bootstrap_interval(100.0 * hits, level=0.5, num_resamples=2000)
    assert result["CI"][0] < narrow["CI"][0] < narrow["CI"][1] < result["CI"][1]


def test_paired_differences_resample_the_same_images():
    rng = np.random.default_rng(0)
    base = rng.normal(50, 20, 200)
    shifted = paired_bootstrap_interval(base + 3.0, base, num_resamples=300)
    assert shifted["value"] == pytest.approx(3.0)
    assert shifted["CI"] == pytest.approx([3.0, 3.0])
    alone = bootstrap_interval(base, num_resamples=300)
    assert alone["CI"][1] - alone["CI"][0] > 4.0  # unpaired: much wider
    same = paired_bootstrap_interval(base, base, num_resamples=50, seed=None)
    assert same == {"value": 0.0, "CI": [0.0, 0.0]}
    # Bool outcomes (the float32 path) pair too.
    hits = rng.random((60, 5)) < 0.5
    paired = paired_bootstrap_interval(hits, hits, "max", num_resamples=50)
    assert paired["CI"] == [0.0, 0.0]


def test_seeds_and_validation():
    values = np.arange(10.0)
    first = bootstrap_interval(values, seed=4)
    assert bootstrap_interval(values, seed=4) == first
    assert bootstrap_interval(values, seed=5) != first
    with raises_invalid("outcomes", "num_images >= 1"):
        bootstrap_interval(np.zeros((0,)))
    with raises_invalid("outcomes", "finite"):
        bootstrap_interval(np.array([1.0, np.nan]))
    with raises_invalid("statistic", "'mean'"):
        bootstrap_interval(values, "median")
    with raises_invalid("level", "(0, 1)"):
        bootstrap_interval(values, level=1.0)
    with raises_invalid("num_resamples"):
        bootstrap_interval(values, num_resamples=0)
    with raises_invalid("baseline_outcomes", "the shape of `outcomes`"):
        paired_bootstrap_interval(values, values[:5])
