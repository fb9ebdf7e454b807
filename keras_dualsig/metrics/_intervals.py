"""Bootstrap intervals and paired differences of `CAMEvaluation` results.

Everything here is computed from `CAMEvaluation.outcomes()` alone (the
arrays `save_outcomes` writes), so that the intervals of a saved run can be
recomputed. Each metric is recomputed exactly from its per-image outcomes on
every bootstrap resample (`bootstrap.bootstrap_distribution`): one set of
resamples for the test images (shared by every metric, method and branch,
so sigmoid-minus-softmax differences are paired), another for the pair
images of the class-discrimination test. docs/method.md, section
"Confidence intervals".
"""

import numpy as np

from keras_dualsig._errors import check_int, check_positive_int
from keras_dualsig.metrics import bootstrap, wsol

# Metrics reported as plain means (not percent) of their per-image outcomes.
SCALES = {
    "ROAD MoRF": 1.0,
    "ROAD LeRF": 1.0,
    "ROAD combined": 1.0,
    "Deletion AUC": 1.0,
    "Insertion AUC": 1.0,
}


def _mean_statistic(scale):
    def statistic(means):
        return scale * bootstrap.STATISTICS["mean"](means)

    return statistic


def _max_box_acc_v2(means):
    """(R, D, T) resampled box accuracies -> MaxBoxAccV2 in percent."""
    return 100.0 * bootstrap.STATISTICS["mean_of_max"](means)


def _pxap(means):
    """(R, 2, bins) resampled mean histograms -> PxAP (scale-invariant)."""
    return wsol.pxap(means)


def _inputs(outcomes, prefix, metric):
    """(per-image outcome array, statistic) of one metric of one entry."""
    if metric == "MaxBoxAccV2":
        names = sorted(k for k in outcomes if k.startswith(prefix + "BoxAcc@"))
        return np.stack([outcomes[k] for k in names], axis=1), _max_box_acc_v2
    if metric == "PxAP":
        return outcomes[prefix + "PxAP histograms"], _pxap
    return outcomes[prefix + metric], _mean_statistic(SCALES.get(metric, 100.0))


def _interval(distribution, level):
    if distribution is None:
        return [float("nan"), float("nan")]
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(distribution, [tail, 1.0 - tail])
    return [float(low), float(high)]


def with_intervals(results, outcomes, *, level, num_resamples, seed):
    """`results` with "<metric> CI" entries, "top1_cls CI" and "delta" per method.

    Args:
        results: `CAMEvaluation.result()` without intervals.
        outcomes: `CAMEvaluation.outcomes()` (a dict, e.g. read back from
            `save_outcomes`), or the method `CAMEvaluation.outcomes` itself:
            then each method's outcomes are unpacked in turn, and only one
            method's are in memory at a time.
        level, num_resamples, seed: as `kd.metrics.bootstrap_interval`.

    Returns:
        A new dict (see `CAMEvaluation.result`).
    """
    level = bootstrap._check_level(level)
    check_positive_int(num_resamples, "num_resamples")
    check_int(seed, "seed", minimum=0, allow_none=True)

    def distribution(array, statistic):
        if array.shape[0] == 0:
            return None
        return bootstrap.bootstrap_distribution(
            array, statistic, num_resamples=num_resamples, seed=seed
        )

    if callable(outcomes):
        read = outcomes
        outcomes = read(methods=())
    else:

        def read(methods):
            del methods
            return outcomes

    top1 = {
        branch: _interval(
            distribution(outcomes[f"top1_cls/{branch}"], _mean_statistic(100.0)),
            level,
        )
        for branch in results["top1_cls"]
    }
    out = {}
    for key, value in results.items():
        out[key] = value
        if key == "top1_cls":
            out["top1_cls CI"] = top1
    out["methods"] = {}
    for method, by_branch in results["methods"].items():
        method_outcomes = read(methods=(method,))
        out["methods"][method] = {}
        distributions = {}
        for branch, entry in by_branch.items():
            prefix = f"methods/{method}/{branch}/"
            new_entry = {}
            for metric, value in entry.items():
                found = distribution(*_inputs(method_outcomes, prefix, metric))
                distributions[branch, metric] = found
                new_entry[metric] = value
                new_entry[f"{metric} CI"] = _interval(found, level)
            out["methods"][method][branch] = new_entry
        if {"softmax", "sigmoid"} <= set(by_branch):
            delta = {}
            for metric in by_branch["sigmoid"]:
                ours = distributions["sigmoid", metric]
                base = distributions["softmax", metric]
                paired = None if ours is None else ours - base
                delta[metric] = {
                    "value": by_branch["sigmoid"][metric]
                    - by_branch["softmax"][metric],
                    "CI": _interval(paired, level),
                }
            out["methods"][method]["delta"] = delta
    return out
