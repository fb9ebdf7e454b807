"""ROAD: RemOve And Debias (Rong et al., ICML 2022).

Rong, Leemann, Borisov, Kasneci and Kasneci, "A Consistent and Efficient
Evaluation Strategy for Attribution Methods", ICML 2022 (arXiv:2202.00449).
Pixels are removed in the order a map gives and filled by noisy linear
imputation (`_imputation`), which leaks less of the removed region's shape
than a constant fill; the class confidence on the imputed image, against the
original, says how much the removed pixels mattered. The conventions are
pytorch-grad-cam's (`ROADMostRelevantFirstAverage`,
`ROADLeastRelevantFirstAverage`, `ROADCombined` in metrics/road.py, with a
softmax-probability target). docs/method.md, section "ROAD".
"""

import numbers

import numpy as np

from keras_dualsig._errors import as_array, check_bool, check_int, invalid
from keras_dualsig.metrics import _imputation, _scorer
from keras_dualsig.metrics.fidelity import _check_images_and_maps

PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)
ORDERS = ("MoRF", "LeRF")


def _check_percentiles(percentiles):
    """A non-empty 1-D sequence of numbers in [0, 100]; float64 (P,)."""
    array = as_array(percentiles, "percentiles")
    if (
        array.ndim != 1
        or array.size == 0
        or array.dtype == bool
        or not np.issubdtype(array.dtype, np.number)
        or array.dtype.kind == "c"
        or not np.isfinite(array).all()
        or array.min() < 0
        or array.max() > 100
    ):
        raise invalid(
            "percentiles", "a non-empty 1-D sequence of numbers in [0, 100]", array
        )
    return array.astype(np.float64)


def _check_noise(noise):
    if (
        isinstance(noise, bool | np.bool_)
        or not isinstance(noise, numbers.Real)
        or not np.isfinite(noise)
        or noise < 0
    ):
        raise invalid("noise", "a finite float >= 0 (0: exact imputation)", noise)
    return float(noise)


def removal_masks(scoremap, percentiles):
    """Which pixels ROAD removes at each percentile, MoRF then LeRF.

    pytorch-grad-cam's `RemoveMostRelevantFirst` keeps the pixels with
    `map < np.percentile(map, p)` and removes the rest, so MoRF at p removes
    the pixels whose value is at least the p-th percentile (at p = 10, about
    90% of the image), in the map's float32 arithmetic;
    `RemoveLeastRelevantFirst` does the same on `1 - map`.

    Args:
        scoremap: float32 (H, W).
        percentiles: float64 (P,) in [0, 100].

    Returns:
        bool (2, P, H, W): [0] MoRF, [1] LeRF; True where removed.
    """
    masks = []
    for values in (scoremap, np.float32(1) - scoremap):
        thresholds = np.percentile(values, percentiles).astype(values.dtype)
        masks.append(~(values[None] < thresholds[:, None, None]))
    return np.stack(masks)


def road(
    model,
    images,
    maps,
    class_index=None,
    *,
    percentiles=PERCENTILES,
    noise=0.01,
    confidence="softmax",
    seed=None,
    batch_size=32,
    return_per_image=False,
):
    """ROAD scores of maps: confidence after removing pixels, filled by imputation.

    For each percentile p, the pixels whose map value is at least the p-th
    percentile of the map are removed (MoRF, most relevant first; at p = 10
    about 90% of the pixels), or those whose `1 - map` is (LeRF, least
    relevant first), and filled by ROAD's noisy linear imputation: each
    removed pixel is the weighted mean of its 8 neighbours (1/6 axial, 1/12
    diagonal; one sparse linear system per image, all channels), plus
    Gaussian noise of standard deviation `noise`. With c(x) the target's
    confidence:

        MoRF = mean over images and percentiles of c(imputed_MoRF) - c(x)
        LeRF = the same for the LeRF images
        combined = (LeRF - MoRF) / 2

    A faithful map gives a low (negative) MoRF, a LeRF near 0 and a high
    combined score. These are pytorch-grad-cam's `ROADMostRelevantFirstAverage`,
    `ROADLeastRelevantFirstAverage` and `ROADCombined` (Rong et al., ICML
    2022, arXiv:2202.00449), with the softmax probability as target
    (`ClassifierOutputSoftmaxTarget`). A map that is constant removes every
    pixel at every percentile in both orders (MoRF = LeRF, combined 0);
    with no pixel left the image's per-channel mean is imputed.

    Cost: 2 * P sparse solves per image (P = len(percentiles)), with about
    (1 - p / 100) * H * W unknowns each; on one CPU core roughly 10-50 ms
    per solve at 96x96 and 0.1-1 s at 224x224. The model runs once per
    imputed image, in chunks of `batch_size`.

    Args:
        model: a DualSigmoidModel or a plain Keras classifier.
        images: float (batch, height, width, channels), the model's inputs
            (the imputation works in this space).
        maps: float (batch, height, width) in [0, 1], at the image size.
        class_index: None (the softmax head's prediction k* on the images),
            an int, or an int array (batch,).
        percentiles: numbers in [0, 100]; default 10, 20, ..., 90
            (pytorch-grad-cam's).
        noise: the imputation noise's standard deviation, in the images'
            units (default 0.01, ROAD's; 0 gives exact, deterministic runs).
        confidence: "softmax" (default), "sigmoid_softmax" or "sigmoid", as
            in `kd.metrics.confidence_change`.
        seed: None (fresh noise each call) or an int (reproducible noise;
            the noise is drawn image by image, so it does not depend on
            `batch_size`).
        batch_size: images per compiled model call.
        return_per_image: also return the per-image scores.

    Returns:
        {"ROAD MoRF": float, "ROAD LeRF": float, "ROAD combined": float},
        confidence differences in [-1, 1] (not percent). With
        `return_per_image`, a tuple (that dict, a dict of the same keys to
        float64 (batch,) per-image scores, whose means they are).

    Raises:
        ValueError: as `kd.metrics.confidence_change`, and for bad
            `percentiles`, `noise`, `seed` or `return_per_image`.

    Example:

    ```python
    maps = kd.cams.GradCAM(dual)(images)
    kd.metrics.road(dual, images, maps, seed=0)
    # {'ROAD MoRF': -0.41, 'ROAD LeRF': -0.05, 'ROAD combined': 0.18}
    ```
    """
    images, maps = _check_images_and_maps(images, maps)
    percentiles = _check_percentiles(percentiles)
    noise = _check_noise(noise)
    seed = check_int(seed, "seed", minimum=0, allow_none=True)
    return_per_image = check_bool(return_per_image, "return_per_image")
    scorer = _scorer.Scorer(model, confidence, batch_size)
    logits = scorer.logits(images)
    class_index = scorer.class_index(class_index, logits)
    batch = images.shape[0]
    original = scorer.probabilities(logits)[np.arange(batch), class_index]
    rng = np.random.default_rng(seed)
    per_image = len(ORDERS) * percentiles.size
    scores = np.empty((batch, per_image), np.float64)
    # Whole images per chunk, a few model calls' worth of imputed images.
    images_per_chunk = -(-4 * scorer.batch_size // per_image)
    for start in range(0, batch, images_per_chunk):
        stop = min(batch, start + images_per_chunk)
        imputed = [
            _imputation.impute(images[index], removed, noise, rng).astype(np.float32)
            for index in range(start, stop)
            for removed in removal_masks(maps[index], percentiles).reshape(
                per_image, *maps.shape[1:]
            )
        ]
        targets = np.repeat(class_index[start:stop], per_image)
        scores[start:stop] = scorer.scores(np.stack(imputed), targets).reshape(
            stop - start, per_image
        )
    # (B, 2 * P) -> (B, 2, P): confidence changes per order and percentile.
    change = (scores - original[:, None]).reshape(batch, len(ORDERS), -1)
    morf, lerf = change.mean(axis=2).T
    terms = {"ROAD MoRF": morf, "ROAD LeRF": lerf, "ROAD combined": (lerf - morf) / 2}
    result = {name: float(values.mean()) for name, values in terms.items()}
    return (result, terms) if return_per_image else result
