"""Overlays, boxes and side-by-side figures of class activation maps."""

import cv2
import matplotlib
import numpy as np
from matplotlib.figure import Figure

from keras_dualsig._errors import as_array, invalid


def _as_uint8_rgb(image, argument="image"):
    """(H, W), (H, W, 1) or (H, W, 3) in [0, 1] floats or uint8 -> uint8 (H, W, 3)."""
    image = as_array(image, argument)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise invalid(
            argument,
            "an image of shape (H, W), (H, W, 1) or (H, W, 3)",
            image,
        )
    if image.dtype == np.uint8:
        return image.copy()
    image = image.astype(np.float32)
    if not np.all(np.isfinite(image)):
        raise invalid(argument, "finite pixel values", image)
    low, high = float(image.min()), float(image.max())
    if low < 0.0 or high > 1.0:
        # Preprocessed inputs (e.g. [-1, 1] or ImageNet-normalised): stretch.
        image = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return np.round(image * 255.0).astype(np.uint8)


def _check_map(cam, argument="cam"):
    cam = as_array(cam, argument).astype(np.float32)
    if cam.ndim != 2:
        raise invalid(argument, "a map of shape (H, W)", cam)
    if not np.all(np.isfinite(cam)) or cam.min() < 0.0 or cam.max() > 1.0:
        raise invalid(
            argument,
            "finite values in [0, 1] (use normalize=True when computing CAMs)",
            received=f"map with min {np.nanmin(cam):.3g}, max {np.nanmax(cam):.3g}",
        )
    return cam


def heatmap(cam, colormap="jet"):
    """Colours a map with a matplotlib colormap.

    Args:
        cam: float (H, W) in [0, 1].
        colormap: matplotlib colormap name.

    Returns:
        uint8 (H, W, 3) RGB.
    """
    cam = _check_map(cam)
    try:
        cmap = matplotlib.colormaps[colormap]
    except KeyError as err:
        raise invalid(
            "colormap", "a matplotlib colormap name such as 'jet'", colormap
        ) from err
    return np.round(cmap(cam)[..., :3] * 255.0).astype(np.uint8)


def overlay(image, cam, *, alpha=0.5, colormap="jet"):
    """Blends a class activation map over an image.

    Args:
        image: (H, W, 3), (H, W, 1) or (H, W); uint8, or floats in [0, 1]
            (other float ranges are min-max stretched for display).
        cam: float (h, w) in [0, 1]; resized (bilinear) to (H, W) if needed.
        alpha: weight of the heatmap, in [0, 1].
        colormap: matplotlib colormap name.

    Returns:
        uint8 (H, W, 3) RGB: `round((1 - alpha) * image + alpha * heat)`.

    Example:
    >>> maps = kd.cams.GradCAM(model)(images)
    >>> picture = kd.vis.overlay(images[0], maps[0])
    """
    if not 0.0 <= alpha <= 1.0:
        raise invalid("alpha", "a number in [0, 1]", alpha)
    rgb = _as_uint8_rgb(image)
    cam = _check_map(cam)
    height, width = rgb.shape[:2]
    if cam.shape != (height, width):
        cam = np.clip(
            cv2.resize(cam, (width, height), interpolation=cv2.INTER_LINEAR), 0.0, 1.0
        )
    heat = heatmap(cam, colormap).astype(np.float32)
    blend = (1.0 - alpha) * rgb.astype(np.float32) + alpha * heat
    return np.clip(np.round(blend), 0, 255).astype(np.uint8)


def draw_boxes(image, boxes, color=(0, 255, 0), thickness=1):
    """Draws boxes on a copy of an image.

    Args:
        image: as for `overlay`.
        boxes: int-like (n, 4) array of inclusive pixel boxes (x0, y0, x1, y1).
        color: RGB tuple of ints in [0, 255].
        thickness: line width in pixels.

    Returns:
        uint8 (H, W, 3) RGB with the rectangles drawn.
    """
    rgb = np.ascontiguousarray(_as_uint8_rgb(image))
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if boxes.size and (
        np.any(boxes[:, 2] < boxes[:, 0]) or np.any(boxes[:, 3] < boxes[:, 1])
    ):
        raise invalid("boxes", "boxes (x0, y0, x1, y1) with x1 >= x0, y1 >= y0", boxes)
    color = tuple(int(c) for c in color)
    for x0, y0, x1, y1 in np.round(boxes).astype(int):
        cv2.rectangle(rgb, (x0, y0), (x1, y1), color, int(thickness))
    return rgb


def compare(
    images,
    maps_by_title,
    *,
    boxes=None,
    gt_boxes=None,
    captions=None,
    alpha=0.5,
    colormap="jet",
    panel_size=2.2,
):
    """A figure with one row per image and one column per map.

    The first column shows the image (with ground-truth boxes, if given); each
    further column overlays one map, e.g. softmax Grad-CAM | sigmoid Grad-CAM.

    Args:
        images: (B, H, W, C) or (B, H, W) images (see `overlay` for ranges).
        maps_by_title: dict column title -> float (B, h, w) maps in [0, 1].
        boxes: optional dict column title -> list of B int (n_i, 4) predicted
            boxes, drawn in yellow on that column.
        gt_boxes: optional list of B int (n_i, 4) ground-truth boxes, drawn in
            green on every column.
        captions: optional list of B strings (e.g. "pred 7 (0.98) | true 7"),
            the title of each row's image panel.
        alpha: heatmap weight of the overlays.
        colormap: matplotlib colormap name.
        panel_size: inches per panel.

    Returns:
        matplotlib.figure.Figure (not attached to pyplot; save it with
        `fig.savefig(path)`, display it in a notebook as the cell's value).
    """
    images = as_array(images, "images")
    if images.ndim not in (3, 4):
        raise invalid("images", "a batch (B, H, W[, C])", images)
    if not isinstance(maps_by_title, dict) or not maps_by_title:
        raise invalid(
            "maps_by_title",
            "a non-empty dict title -> (B, h, w) maps",
            maps_by_title,
        )
    count = len(images)
    for title, maps in maps_by_title.items():
        if len(maps) != count:
            raise invalid(
                "maps_by_title",
                f"{count} maps per title (one per image)",
                received=f"{len(maps)} maps for {title!r}",
            )
    for argument, value in (("gt_boxes", gt_boxes), ("captions", captions)):
        if value is not None and len(value) != count:
            raise invalid(argument, f"{count} entries (one per image)", value)
    columns = 1 + len(maps_by_title)
    figure = Figure(figsize=(panel_size * columns, panel_size * count))
    axes = figure.subplots(count, columns, squeeze=False)
    green, yellow = (0, 255, 0), (255, 220, 0)
    for row in range(count):
        base = _as_uint8_rgb(images[row], "images")
        if gt_boxes is not None:
            base = draw_boxes(base, gt_boxes[row], green)
        axes[row, 0].imshow(base)
        axes[row, 0].set_title(captions[row] if captions else "image", fontsize=8)
        for column, (title, maps) in enumerate(maps_by_title.items(), start=1):
            panel = overlay(images[row], maps[row], alpha=alpha, colormap=colormap)
            if boxes is not None and title in boxes:
                panel = draw_boxes(panel, boxes[title][row], yellow)
            if gt_boxes is not None:
                panel = draw_boxes(panel, gt_boxes[row], green)
            axes[row, column].imshow(panel)
            axes[row, column].set_title(title, fontsize=8)
    for axis in axes.ravel():
        axis.set_axis_off()
    figure.tight_layout()
    return figure
