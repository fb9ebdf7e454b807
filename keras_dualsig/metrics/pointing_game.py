"""The pointing game and its energy-based variant: is the map's evidence on the object?

- Pointing game (Zhang et al., "Top-down Neural Attention by Excitation
  Backprop", ECCV 2016; as Quantus's `PointingGame`, without tolerance):
  a hit when the map's maximum lies inside a ground-truth box.
- Energy-based pointing game (Wang et al., "Score-CAM", CVPR-W 2020,
  section 4.2): the share of the map's mass inside the ground-truth boxes,
  `sum(L inside) / (sum(L inside) + sum(L outside))`.
- `pair_pointing_game`: both, on images of two objects of different
  classes, for the map of each class against that class's box: a test of
  class discrimination.

docs/method.md, section "Pointing game".
"""

import numpy as np

from keras_dualsig._errors import as_array, check_bool, invalid
from keras_dualsig.cams.base import BaseCAM
from keras_dualsig.metrics import _checks, wsol
from keras_dualsig.metrics.fidelity import _check_images

KEYS = ("Pointing game", "Energy pointing game")
PAIR_KEYS = ("Pointing game (pairs)", "Energy pointing game (pairs)")


def box_region(boxes, height, width):
    """bool (H, W): the union of inclusive boxes, clipped to the map.

    Args:
        boxes: int (n, 4) x0, y0, x1, y1, inclusive corners, as
            `kd.metrics.BoxEvaluator` takes them (x1 = width is the edge of
            a box touching the border: the pixels past the map are dropped).
        height, width: the map's size.
    """
    region = np.zeros((height, width), bool)
    for x0, y0, x1, y1 in np.asarray(boxes, np.int64).tolist():
        region[y0 : min(y1, height - 1) + 1, x0 : min(x1, width - 1) + 1] = True
    return region


def pointing_terms(maps, regions):
    """Per-image hits and energies.

    Args:
        maps: float (B, H, W), non-negative.
        regions: bool (B, H, W), the ground-truth region of each map.

    Returns:
        (hit, energy): bool (B,), True when a pixel at the map's maximum is
        inside the region (ties: any of them, as Quantus; a constant map
        points nowhere and is a miss), and float64 (B,) in [0, 1], the map's
        mass inside the region over its total mass (0 for an all-zero map).
    """
    batch = maps.shape[0]
    flat = maps.reshape(batch, -1).astype(np.float64)
    inside = regions.reshape(batch, -1)
    top = flat.max(axis=1, keepdims=True)
    constant = flat.min(axis=1) == top[:, 0]
    hit = ((flat == top) & inside).any(axis=1) & ~constant
    total = flat.sum(axis=1)
    mass = np.where(inside, flat, 0.0).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        energy = np.where(total > 0, mass / total, 0.0)
    return hit, energy


def pointing_game(maps, gt_boxes, *, return_per_image=False):
    """Pointing game and energy-based pointing game of maps against GT boxes.

    - Pointing game = 100 * mean(argmax(L) in GT): the map's maximum falls
      inside a ground-truth box (Zhang et al., ECCV 2016; no tolerance
      margin, as Quantus's `PointingGame`). Ties: a hit when any pixel at
      the maximum is inside (Quantus's rule); a constant map (e.g. the
      all-zero map a CAM gives when every channel weight is negative)
      points nowhere and counts as a miss.
    - Energy pointing game = 100 * mean(sum(L * B) / sum(L)), B the union
      of the ground-truth boxes: the share of the map's energy on the
      objects (Wang et al., "Score-CAM", CVPR-W 2020). An all-zero map
      scores 0.

    Both are higher-is-better percentages. Overlapping boxes count once.

    Args:
        maps: float (batch, height, width) in [0, 1], e.g. CAMs at the
            image size.
        gt_boxes: a list of `batch` int arrays (n_i, 4), n_i >= 1, of boxes
            x0, y0, x1, y1 in map pixels, inclusive corners, as
            `kd.metrics.BoxEvaluator` takes them (x1 = width or y1 = height
            for a box touching the border, as wsolevaluation rescales them).
        return_per_image: also return the per-image outcomes.

    Returns:
        {"Pointing game": float, "Energy pointing game": float}, percent in
        [0, 100]. With `return_per_image`, a tuple (that dict, {"Pointing
        game": bool (batch,), "Energy pointing game": float64 (batch,) in
        [0, 1]}).

    Raises:
        ValueError: for maps with NaN or values outside [0, 1], boxes as
            `kd.metrics.BoxEvaluator.update` refuses them, or a
            `return_per_image` that is not a bool.

    Example:

    >>> import numpy as np
    >>> maps = np.zeros((1, 8, 8), "float32")
    >>> maps[0, 2, 3], maps[0, 6, 6] = 1.0, 0.5
    >>> pointing_game(maps, [np.array([[3, 2, 4, 3]])])
    {'Pointing game': 100.0, 'Energy pointing game': 66.66666666666667}
    """
    maps = _checks.check_scoremaps(maps, "maps")
    batch, height, width = maps.shape
    boxes = wsol._check_gt_boxes(gt_boxes, batch, height, width)
    return_per_image = check_bool(return_per_image, "return_per_image")
    regions = np.stack([box_region(b, height, width) for b in boxes])
    hit, energy = pointing_terms(maps, regions)
    result = {
        "Pointing game": float(100.0 * hit.mean()),
        "Energy pointing game": float(100.0 * energy.mean()),
    }
    if return_per_image:
        return result, {"Pointing game": hit, "Energy pointing game": energy}
    return result


def _check_pairs(labels, boxes, batch, height, width, num_classes):
    """int64 (B, K) distinct classes per image and int64 (B, K, 4) boxes."""
    array = as_array(labels, "labels")
    expected = (
        f"an int array ({batch}, K), K >= 2, of distinct classes per image in "
        f"[0, {num_classes})"
    )
    if (
        array.ndim != 2
        or array.shape[0] != batch
        or array.shape[1] < 2
        or array.dtype.kind not in "iu"
        or array.min() < 0
        or array.max() >= num_classes
        or (np.diff(np.sort(array, axis=1), axis=1) == 0).any()
    ):
        raise invalid("labels", expected, array)
    slots = array.shape[1]
    box_array = as_array(boxes, "boxes")
    if box_array.shape != (batch, slots, 4):
        raise invalid(
            "boxes",
            f"one box per class, an array of shape ({batch}, {slots}, 4) of "
            "x0, y0, x1, y1 (inclusive corners)",
            box_array,
        )
    checked = np.stack(
        [
            np.concatenate(
                wsol._check_gt_boxes(
                    box_array[:, k, None], batch, height, width, "boxes"
                )
            )
            for k in range(slots)
        ],
        axis=1,
    )
    return array.astype(np.int64), checked


def pair_pointing_game(
    cam,
    images,
    labels,
    boxes,
    *,
    branch="sigmoid",
    batch_size=None,
    return_per_image=False,
):
    """Class discrimination: does the map of each class point at that class's object?

    Each image shows K >= 2 objects of different classes, each with its own
    box (e.g. the "test_pairs" split of `kd.datasets.cluttered_mnist`: two
    digits per image). For every image and every one of its classes, the
    CAM of that class is scored with `pointing_game` against that class's
    box only. A map that ignores the class (the same map for every class)
    scores at most 100 / K percent on both games, since its maximum lies in
    at most one of K disjoint boxes (barring ties) and its shares of energy
    in them sum to at most 1; above that, the maps follow the class.

    Args:
        cam: a `kd.cams` object (e.g. `kd.cams.GradCAM(dual)`).
        images: float (batch, height, width, channels), the model's inputs.
        labels: int (batch, K): the classes shown in each image, distinct.
        boxes: int (batch, K, 4): boxes[i, k] is the box of the object of
            class labels[i, k], x0, y0, x1, y1 in image pixels (inclusive,
            as `kd.metrics.BoxEvaluator` takes them).
        branch: "sigmoid" or "softmax", passed to the CAM.
        batch_size: passed to the CAM.
        return_per_image: also return the per-image outcomes.

    Returns:
        {"Pointing game (pairs)": float, "Energy pointing game (pairs)":
        float}: percent in [0, 100], means over images and classes. With
        `return_per_image`, a tuple (that dict, {"Pointing game (pairs)":
        bool (batch, K), "Energy pointing game (pairs)": float64 (batch, K)
        in [0, 1]}).

    Raises:
        ValueError: as the CAM's call, and for labels that are not (batch,
            K) distinct classes, boxes of another shape or outside the
            images, or a bad `return_per_image`.

    Example:

    ```python
    info = kd.datasets.cluttered_mnist()
    for batch in info.load_pairs(batch_size=64):
        kd.metrics.pair_pointing_game(cam, batch["image"], batch["labels"],
                                      batch["boxes"])
    # {'Pointing game (pairs)': 87.5, 'Energy pointing game (pairs)': 61.0}
    ```
    """
    if not isinstance(cam, BaseCAM):
        raise invalid("cam", "a kd.cams object, e.g. kd.cams.GradCAM(model)", cam)
    images = _check_images(images)
    batch, height, width = images.shape[:3]
    labels, boxes = _check_pairs(
        labels, boxes, batch, height, width, cam.classifier.num_classes
    )
    return_per_image = check_bool(return_per_image, "return_per_image")
    hits, energies = [], []
    for slot in range(labels.shape[1]):
        maps = cam(images, labels[:, slot], branch=branch, batch_size=batch_size)
        regions = np.stack([box_region(b[None], height, width) for b in boxes[:, slot]])
        hit, energy = pointing_terms(maps, regions)
        hits.append(hit)
        energies.append(energy)
    terms = {
        PAIR_KEYS[0]: np.stack(hits, axis=1),
        PAIR_KEYS[1]: np.stack(energies, axis=1),
    }
    result = {name: float(100.0 * values.mean()) for name, values in terms.items()}
    return (result, terms) if return_per_image else result
