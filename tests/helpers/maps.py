"""Random CAM-like score maps and GT boxes for the metric tests, written once."""

import numpy as np


def blob_maps(rng, count, size):
    """Smooth random maps in [0, 1]: a few Gaussian blobs each.

    Returns:
        float32 (count, size, size).
    """
    y, x = np.mgrid[0:size, 0:size]
    maps = np.zeros((count, size, size))
    for index in range(count):
        for cy, cx, s in rng.uniform([0, 0, 1], [size, size, 4], (3, 3)):
            maps[index] += np.exp(-((y - cy) ** 2 + (x - cx) ** 2) / (2 * s * s))
        maps[index] /= maps[index].max()
    return maps.astype(np.float32)


def random_boxes(rng, count, size):
    """One random GT box per image, as a list of int (1, 4) x0, y0, x1, y1.

    x1 may equal `size` (the width), as wsolevaluation's rescaling makes it.
    """
    boxes = []
    for _ in range(count):
        x0, y0 = rng.integers(0, size - 4, 2)
        x1 = min(size, x0 + rng.integers(3, size))  # x1 = width allowed
        y1 = min(size - 1, y0 + rng.integers(3, size))
        boxes.append(np.array([[x0, y0, x1, y1]]))
    return boxes
