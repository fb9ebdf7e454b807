"""Model-randomisation sanity check (Adebayo et al., NeurIPS 2018).

Adebayo, Gilmer, Muelly, Goodfellow, Hardt and Kim, "Sanity Checks for
Saliency Maps", NeurIPS 2018 (arXiv:1810.03292): re-initialise the weights
of the top layers and compare the maps before and after. A map that barely
changes does not depend on what the model learned, so it does not explain
the model. The similarities are those of the paper and of Quantus's
`MPRT`: Spearman rank correlation and SSIM. docs/method.md, section
"Randomisation check".
"""

import keras
import numpy as np
from scipy import ndimage, stats

from keras_dualsig._errors import (
    check_bool,
    check_class_index,
    check_int,
    check_positive_int,
    invalid,
)
from keras_dualsig.cams.base import BaseCAM
from keras_dualsig.metrics import _scorer
from keras_dualsig.metrics.fidelity import _check_images

# skimage.metrics.structural_similarity's defaults (Wang et al., IEEE TIP
# 2004, with a uniform window): 7x7 window, K1 = 0.01, K2 = 0.03, sample
# covariances.
SSIM_WINDOW = 7
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def ssim(a, b, data_range=1.0):
    """Mean structural similarity of two maps, as skimage computes it.

    `skimage.metrics.structural_similarity(a, b, data_range=...)` with its
    defaults: local means, variances and covariance over a 7x7 uniform
    window (sample covariances, factor 49/48), C1 = (0.01 R)^2,
    C2 = (0.03 R)^2,

        S = (2 mu_a mu_b + C1)(2 cov_ab + C2) /
            ((mu_a^2 + mu_b^2 + C1)(var_a + var_b + C2)),

    averaged over the pixels whose window lies inside the map.

    Args:
        a, b: float (H, W), H and W >= 7.
        data_range: R, the range of the values (1 for maps in [0, 1]).

    Returns:
        float in [-1, 1]; 1 for identical maps.
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    size = SSIM_WINDOW
    cov_norm = size * size / (size * size - 1.0)

    def mean(x):
        return ndimage.uniform_filter(x, size=size)

    mu_a, mu_b = mean(a), mean(b)
    var_a = cov_norm * (mean(a * a) - mu_a * mu_a)
    var_b = cov_norm * (mean(b * b) - mu_b * mu_b)
    cov = cov_norm * (mean(a * b) - mu_a * mu_b)
    c1 = (_SSIM_K1 * data_range) ** 2
    c2 = (_SSIM_K2 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / (
        (mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2)
    )
    pad = (size - 1) // 2
    return float(s[pad:-pad, pad:-pad].mean())


def spearman(a, b):
    """Spearman rank correlation of two maps' pixels (ties: average ranks).

    Returns:
        float in [-1, 1]. Undefined for a constant map; here 1.0 when both
        maps are constant (nothing changed) and 0.0 when only one is.
    """
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    constant_a, constant_b = a.min() == a.max(), b.min() == b.max()
    if constant_a or constant_b:
        return 1.0 if constant_a and constant_b else 0.0
    return float(stats.spearmanr(a, b).statistic)


def _weighted_layers(model):
    """Layers with weights, in `model.layers` order, nested models expanded."""
    layers = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            layers.extend(_weighted_layers(layer))
        elif layer.weights:
            layers.append(layer)
    return layers


def _layers_to_randomize(classifier, branch, randomize):
    """The explained head's layers, plus the top `randomize` trunk layers."""
    expected = '"head" or an int >= 1 (the head plus that many top trunk layers)'
    if isinstance(randomize, str):
        if randomize != "head":
            raise invalid("randomize", expected, randomize)
        top = 0
    else:
        top = check_int(randomize, "randomize", minimum=1)
    head = [layer for layer in classifier.heads[branch].layers if layer.weights]
    trunk = _weighted_layers(classifier.trunk)
    if top > len(trunk):
        raise invalid(
            "randomize",
            f"{expected}, at most the {len(trunk)} trunk layers with weights",
            randomize,
        )
    return head + trunk[len(trunk) - top :]


def _fresh_value(layer, variable, rng):
    """A re-initialised value: the layer's own initializer, freshly seeded.

    Keras layers keep `<weight>_initializer` (kernel_initializer,
    bias_initializer, gamma_initializer, moving_mean_initializer, ...);
    a weight without one gets a random permutation of its own values.
    """
    name = variable.name.split("/")[-1]
    initializer = getattr(layer, f"{name}_initializer", None)
    if initializer is None:
        values = keras.ops.convert_to_numpy(variable.value)
        return rng.permutation(values.ravel()).reshape(values.shape)
    config = initializer.get_config()
    if "seed" in config:
        config["seed"] = int(rng.integers(2**31 - 1))
        initializer = type(initializer).from_config(config)
    return initializer(tuple(variable.shape), dtype=variable.dtype)


def randomization_check(
    cam,
    images,
    class_index=None,
    *,
    branch="sigmoid",
    randomize="head",
    seed=None,
    batch_size=None,
    return_per_image=False,
):
    """Maps before and after re-initialising the top of the model: how similar?

    The sanity check of Adebayo et al. (NeurIPS 2018): the weights of the
    explained head (`randomize="head"`: the sigmoid branch for
    branch="sigmoid", the softmax head for "softmax") or of the head and the
    top k trunk layers with weights (`randomize=k`, the paper's cascading
    randomisation, top down) are re-drawn from each layer's own
    initializer, and the maps of the same classes are computed again. Low
    similarity is what a faithful explanation shows; a map that does not
    change does not explain the model.

    The model is modified only for the duration of the call: every weight
    is saved and restored bit for bit afterwards (also when the call fails);
    run no other computation on the model meanwhile.

    Args:
        cam: a `kd.cams` object (e.g. `kd.cams.GradCAM(dual)`); its model
            is the one randomised, its options make the maps.
        images: float (batch, height, width, channels), the model's inputs.
        class_index: None (the softmax head's prediction on the images,
            fixed before randomising), an int, or an int array (batch,).
        branch: "sigmoid" or "softmax", the explained head.
        randomize: "head" (default) or an int k >= 1 (the head plus the k
            top trunk layers with weights, in `model.layers` order with
            nested models expanded).
        seed: None or an int, for the new weights.
        batch_size: passed to the CAM (None: the whole batch at once).
        return_per_image: also return the per-image similarities.

    Returns:
        {"Spearman": float, "SSIM": float}, means over images in [-1, 1]
        of the Spearman rank correlation of the pixels (a constant map
        scores 1.0 against a constant map, 0.0 against any other) and of
        skimage's SSIM (7x7 window, data range 1), between the maps before
        and after. With `return_per_image`, a tuple (that dict, the same
        keys to float64 (batch,) arrays).

    Raises:
        ValueError: as the CAM's call, and for a bad `randomize` (not
            "head" nor an int in [1, number of trunk layers with weights]),
            `seed`, or images smaller than 7x7.

    Example:

    ```python
    cam = kd.cams.GradCAM(dual)
    kd.metrics.randomization_check(cam, images)
    # {'Spearman': 0.12, 'SSIM': 0.20}   (low: the maps depend on the branch)
    ```
    """
    if not isinstance(cam, BaseCAM):
        raise invalid("cam", "a kd.cams object, e.g. kd.cams.GradCAM(model)", cam)
    classifier = cam.classifier
    classifier.check_branch(branch)
    layers = _layers_to_randomize(classifier, branch, randomize)
    seed = check_int(seed, "seed", minimum=0, allow_none=True)
    batch_size = check_positive_int(batch_size, "batch_size", allow_none=True)
    return_per_image = check_bool(return_per_image, "return_per_image")
    images = _check_images(images)
    batch, height, width = images.shape[:3]
    if min(height, width) < SSIM_WINDOW:
        raise invalid(
            "images",
            f"images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (SSIM)",
            images,
        )
    if class_index is None:
        logits = _scorer.Scorer(cam.model, "softmax", 32).logits(images)
        class_index = np.argmax(logits["softmax"], axis=-1)
    class_index = check_class_index(class_index, batch, classifier.num_classes)

    def maps():
        return cam(images, class_index, branch=branch, batch_size=batch_size)

    before = maps()
    rng = np.random.default_rng(seed)
    variables, seen = [], set()
    for layer in layers:
        for variable in layer.weights:
            if id(variable) not in seen:
                seen.add(id(variable))
                variables.append((layer, variable))
    saved = [keras.ops.convert_to_numpy(v.value).copy() for _, v in variables]
    try:
        for layer, variable in variables:
            variable.assign(_fresh_value(layer, variable, rng))
        after = maps()
    finally:
        for (_, variable), value in zip(variables, saved, strict=True):
            variable.assign(value)
    terms = {
        "Spearman": np.array(
            [spearman(a, b) for a, b in zip(before, after, strict=True)]
        ),
        "SSIM": np.array([ssim(a, b) for a, b in zip(before, after, strict=True)]),
    }
    result = {name: float(values.mean()) for name, values in terms.items()}
    return (result, terms) if return_per_image else result
