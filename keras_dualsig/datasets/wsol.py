"""tf.data pipelines for datasets in the wsolevaluation metadata format.

The paper's benchmarks (CUB-200-2011, Stanford Cars, ImageNet-1K, OpenImages-30K)
are distributed as image folders plus the metadata text files of
clovaai/wsolevaluation (Choe et al., CVPR 2020). `load_wsol` turns one split into
a `tf.data.Dataset` with the transforms of Oh & Noh, "Beyond Softmax: Dual-Branch
Sigmoid Architecture for Accurate Class Activation Maps", BMVC 2025
(arXiv:2511.05590), after validating the metadata and the files it names.
"""

import dataclasses
import logging
import numbers
import os

import numpy as np
import tensorflow as tf

from keras_dualsig._errors import invalid
from keras_dualsig.datasets import _wsol_metadata as _md
from keras_dualsig.datasets._wsol_metadata import (
    WSOLMetadata,
    WSOLRecord,
    read_mask,
    rescale_boxes,
)

__all__ = [
    "WSOL_DATASETS",
    "WSOL_LOCALIZATION",
    "WSOLMetadata",
    "WSOLRecord",
    "load_wsol",
    "read_mask",
    "read_wsol_metadata",
    "rescale_boxes",
]

_logger = logging.getLogger(__name__)

# Number of classes of the benchmarks of the paper, keyed by the dataset names of
# wsolevaluation's metadata/<name>/ folders (CARS is not part of wsolevaluation;
# the paper uses Stanford Cars, 196 classes, for the fidelity experiments).
WSOL_DATASETS = {"CUB": 200, "CARS": 196, "ILSVRC": 1000, "OpenImages": 100}
# The localization ground truth each benchmark ships: boxes (MaxBoxAcc) or
# instance masks (PxAP).
WSOL_LOCALIZATION = {
    "CUB": "boxes",
    "CARS": "boxes",
    "ILSVRC": "boxes",
    "OpenImages": "masks",
}

# ImageNet statistics of torchvision's Normalize, as in wsolevaluation.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# METHOD.md: train images are resized to 256x256 before a random 224 crop; other
# sizes keep that ratio.
_RESIZE_RATIO = 256 / 224
# Padding rows of "boxes" (beyond "num_boxes"); negative so they never pass for a
# real box.
_BOX_PADDING = -1.0
# Shuffle buffer used after an in-memory cache, where every buffered element is a
# decoded image.
_CACHED_SHUFFLE_BUFFER = 4096
_ON_CORRUPT = ("raise", "skip")
_IMAGENET = "imagenet"


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _as_size(name, value, allow_none=False):
    """An int or (height, width) pair -> (height, width) tuple of positive ints."""
    if value is None and allow_none:
        return None
    if _is_int(value) and value > 0:
        return (int(value), int(value))
    if (
        isinstance(value, (tuple, list))
        and len(value) == 2
        and all(_is_int(v) and v > 0 for v in value)
    ):
        return (int(value[0]), int(value[1]))
    raise invalid(name, "a positive int or a (height, width) pair of them", value)


def _check_common(split, num_classes, with_localization, mask_root, on_corrupt):
    if split not in _md.SPLITS:
        raise invalid("split", f"one of {_md.SPLITS}", split)
    if num_classes is not None and not (_is_int(num_classes) and num_classes > 0):
        raise invalid("num_classes", "None or a positive int", num_classes)
    if with_localization not in (None, True, False):
        raise invalid("with_localization", "None, True or False", with_localization)
    if mask_root is not None and not isinstance(mask_root, (str, os.PathLike)):
        raise invalid("mask_root", "None or a folder path", mask_root)
    if on_corrupt not in _ON_CORRUPT:
        raise invalid("on_corrupt", f"one of {_ON_CORRUPT}", on_corrupt)


def _first_error_line(error):
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0] if message.strip() else type(error).__name__


def _decode_check(paths, channels):
    """Decodes every file with the pipeline's decoder, in parallel.

    Returns:
        ``(shapes, failures)``: index -> (height, width) of the decodable files,
        and index -> error message of the others.
    """
    if not paths:
        return {}, {}
    indices = np.arange(len(paths), dtype=np.int64)

    def shape_of(index, path):
        image = tf.io.decode_image(
            tf.io.read_file(path), channels=channels, expand_animations=False
        )
        return index, tf.shape(image)[:2]

    ds = tf.data.Dataset.from_tensor_slices((indices, np.array(paths)))
    ds = ds.map(shape_of, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    # Errors inside tf.data carry no file name; dropping the failing elements and
    # looking for the missing indices tells which files they were.
    ds = ds.ignore_errors()
    ds = ds.batch(4096)
    shapes = {}
    for batch_indices, batch_shapes in ds.as_numpy_iterator():
        shapes.update(
            zip(batch_indices.tolist(), map(tuple, batch_shapes.tolist()), strict=True)
        )
    failures = {}
    for index, path in enumerate(paths):
        if index in shapes:
            continue
        # Decode the failing file once more, eagerly, to get TensorFlow's reason.
        try:
            tf.io.decode_image(
                tf.io.read_file(path), channels=channels, expand_animations=False
            )
            failures[index] = "decoding failed inside tf.data"
        except (tf.errors.OpError, ValueError) as e:
            failures[index] = _first_error_line(e)
    return shapes, failures


def _verify_files(metadata, mask_lines, size_lines, on_corrupt):
    """Decodes every image and mask; checks image_sizes.txt against the files."""
    records = metadata.records
    problems = _md.Problems(f"{metadata.metadata_dir} (split '{metadata.split}')")
    corrupt = {}  # record index -> (file, line, reason)

    shapes, failures = _decode_check([r.path for r in records], channels=3)
    for index, reason in failures.items():
        record = records[index]
        corrupt[index] = (
            _md.IMAGE_IDS_FILE,
            record.line,
            f"cannot decode image {record.image_id!r} at {record.path}: {reason}",
        )
    for index, (height, width) in shapes.items():
        record = records[index]
        if record.size is not None and record.size != (width, height):
            problems.add(
                _md.IMAGE_SIZES_FILE,
                size_lines[record.image_id],
                f"size {record.size[0]}x{record.size[1]} (width x height) of "
                f"{record.image_id!r} differs from the image file, which is "
                f"{width}x{height}",
            )

    mask_files = sorted(
        {p for r in records for p in r.mask_paths}
        | {r.ignore_path for r in records if r.ignore_path}
    )
    if mask_files:
        _, mask_failures = _decode_check(mask_files, channels=1)
        bad_masks = {mask_files[i]: reason for i, reason in mask_failures.items()}
        for index, record in enumerate(records):
            if index in corrupt:
                continue
            for path in (*record.mask_paths, record.ignore_path):
                if path in bad_masks:
                    corrupt[index] = (
                        _md.LOCALIZATION_FILE,
                        mask_lines[path],
                        f"cannot decode mask {path} of {record.image_id!r}: "
                        f"{bad_masks[path]}",
                    )
                    break

    if on_corrupt == "raise":
        for file, line, reason in corrupt.values():
            problems.add(file, line, reason)
    problems.raise_if_any()
    if not corrupt:
        return metadata
    skipped = tuple(
        (records[index].image_id, reason)
        for index, (_, _, reason) in sorted(corrupt.items())
    )
    shown = "; ".join(reason for _, reason in skipped[: _md.MAX_REPORTED_PROBLEMS])
    _logger.warning(
        "Skipped %d of %d image(s) of split '%s' in %s that could not be decoded "
        "(on_corrupt='skip'): %s%s",
        len(skipped),
        len(records),
        metadata.split,
        metadata.metadata_dir,
        shown,
        " ..." if len(skipped) > _md.MAX_REPORTED_PROBLEMS else "",
    )
    kept = tuple(r for index, r in enumerate(records) if index not in corrupt)
    if not kept:
        raise ValueError(
            f"No decodable image left in split '{metadata.split}' of "
            f"{metadata.metadata_dir}: all {len(records)} image(s) were skipped."
        )
    return dataclasses.replace(
        metadata, records=kept, skipped=metadata.skipped + skipped
    )


def read_wsol_metadata(
    data_root,
    metadata_root,
    split,
    *,
    num_classes=None,
    with_localization=None,
    mask_root=None,
    verify_images=False,
    on_corrupt="raise",
):
    """Reads and validates one split of a wsolevaluation-format dataset.

    Plain Python: returns the original (not rescaled) ground truth per image, for
    evaluation scripts. `load_wsol` calls it before building its pipeline.

    Layout (as in clovaai/wsolevaluation)::

        <metadata_root>/<split>/image_ids.txt      <path>
        <metadata_root>/<split>/class_labels.txt   <path>,<label>
        <metadata_root>/<split>/image_sizes.txt    <path>,<width>,<height>
        <metadata_root>/<split>/localization.txt   <path>,<x0>,<y0>,<x1>,<y1>
                                           or <path>,<mask path>,<ignore path>
        <data_root>/<path>                         the image files
        <mask_root>/<mask path>                    the mask files (masks only)

    Every problem is collected and reported in one ValueError that names the file,
    the line number and the offending value (the first few problems, plus a
    count of the rest): missing metadata files; an image listed but absent; an
    image id or mask path that is absolute or climbs out of its root with "..";
    duplicate entries; ids without labels, sizes or localization, and entries for
    ids not in image_ids.txt; a label outside ``[0, num_classes)``; a box with
    x1 < x0 or y1 < y0 or outside its image (x1 == width is accepted, as in
    wsolevaluation's CUB boxes); an ignore path on an image's later lines.

    Args:
        data_root: folder the image ids are relative to, e.g.
            ``wsolevaluation/dataset/CUB``.
        metadata_root: folder holding one sub-folder per split, e.g.
            ``wsolevaluation/metadata/CUB``; the files are read from
            ``<metadata_root>/<split>/``.
        split: "train", "val" or "test".
        num_classes: number of classes C for the label check. None: taken from
            `WSOL_DATASETS` when the folder name of ``metadata_root`` is one of
            its keys (case-insensitive, e.g. ``metadata/CUB`` -> 200), else a
            ValueError asks for it (guessing max label + 1 would silently go
            wrong on a split without the last classes).
        with_localization: None reads ``localization.txt`` when present and
            requires it for "val" and "test"; True requires it; False ignores it.
        mask_root: folder the mask paths are relative to. None: ``data_root``
            (wsolevaluation's OpenImages keeps masks beside the images,
            ``dataset/OpenImages``).
        verify_images: decode every image and mask once (in parallel, with the
            decoder of the pipeline) and check ``image_sizes.txt`` against the
            files.
        on_corrupt: what to do with an image (or one of its masks) that exists
            but cannot be decoded, when ``verify_images``: "raise" (a ValueError
            naming it) or "skip" (drop it, log it at WARNING on the
            ``keras_dualsig.datasets.wsol`` logger and list it in
            ``WSOLMetadata.skipped``).

    Returns:
        A `WSOLMetadata` whose ``records`` are `WSOLRecord`s in
        ``image_ids.txt`` order.

    Raises:
        ValueError: for invalid arguments and for every metadata problem above.

    Example:

    ```python
    # wsolevaluation layout: images in dataset/CUB, metadata in metadata/CUB.
    meta = kd.datasets.read_wsol_metadata("dataset/CUB", "metadata/CUB", "test")
    meta.num_classes, meta.localization  # 200, "boxes" (C from the folder name)
    record = meta.records[0]
    record.image_id, record.size, record.boxes  # original pixels
    kd.datasets.rescale_boxes(record.boxes, record.size, (224, 224))
    ```
    """
    _check_common(split, num_classes, with_localization, mask_root, on_corrupt)
    if not isinstance(verify_images, bool):
        raise invalid("verify_images", "True or False", verify_images)
    metadata, mask_lines, size_lines = _md.parse_metadata(
        data_root,
        metadata_root,
        split,
        num_classes=num_classes,
        with_localization=with_localization,
        mask_root=mask_root,
        table=WSOL_DATASETS,
    )
    if verify_images:
        metadata = _verify_files(metadata, mask_lines, size_lines, on_corrupt)
    return metadata


def _load_image(path, size):
    """Reads, decodes and resizes one image: uint8 (height, width, 3)."""
    image = tf.io.decode_image(
        tf.io.read_file(path), channels=3, expand_animations=False
    )
    # Antialiased bilinear resizing, like torchvision's Resize on PIL images;
    # rounding back to uint8 like PIL keeps cached images small.
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return tf.ensure_shape(image, (*size, 3))


def _resize_nearest_like_cv2(image, size):
    """Nearest-neighbour resize with OpenCV's INTER_NEAREST index rule.

    wsolevaluation resizes masks with cv2.INTER_NEAREST, which takes source index
    ``floor(i * (1 / (out / in)))``; TensorFlow's nearest resize uses half-pixel
    centres and picks different pixels. (H, W) -> (height, width).
    """
    height, width = size
    in_height = tf.shape(image)[0]
    in_width = tf.shape(image)[1]

    def source_indices(out, size_in):
        size_in_f = tf.cast(size_in, tf.float64)
        inverse_scale = 1.0 / (tf.constant(float(out), tf.float64) / size_in_f)
        positions = tf.floor(tf.range(out, dtype=tf.float64) * inverse_scale)
        return tf.minimum(tf.cast(positions, tf.int32), size_in - 1)

    image = tf.gather(image, source_indices(height, in_height), axis=0)
    return tf.gather(image, source_indices(width, in_width), axis=1)


def _load_mask(path, size):
    """A mask file -> bool (height, width), foreground where the value is > 0."""
    mask = tf.io.decode_image(
        tf.io.read_file(path), channels=1, expand_animations=False
    )[..., 0]
    mask = _resize_nearest_like_cv2(mask, size)
    return tf.ensure_shape(mask > 0, size)


def load_wsol(
    data_root,
    metadata_root,
    split,
    *,
    image_size=224,
    training=False,
    batch_size=None,
    num_classes=None,
    preprocess=None,
    as_supervised=False,
    with_localization=None,
    mask_root=None,
    resize_size=None,
    max_boxes=None,
    shuffle=None,
    seed=None,
    cache=False,
    shuffle_buffer_size=None,
    drop_remainder=False,
    verify_images=True,
    on_corrupt="raise",
    with_info=False,
):
    """Loads one split of a wsolevaluation-format dataset as a tf.data pipeline.

    Reads the metadata of clovaai/wsolevaluation (see `read_wsol_metadata` for
    the layout and every check), validates it and, by default, decodes every
    image once, all before the dataset is returned, so that problems surface
    before training starts, with the file, line and value at fault.

    Transforms (METHOD.md, as wsolevaluation and the paper's code):

    - ``training=True``: resize to ``resize_size`` (default 256x256 for
      ``image_size=224``, the same ratio otherwise), random crop of
      ``image_size``, random horizontal flip. Shuffled by default. Random
      choices are drawn from ``seed`` and differ from epoch to epoch.
    - ``training=False``: resize to ``image_size``, no crop, no flip.

    Resizing is antialiased bilinear with rounding to uint8, like torchvision's
    Resize on PIL images. Decoding, resizing and augmentation run with
    ``num_parallel_calls=tf.data.AUTOTUNE``; the dataset is prefetched.

    Elements (``as_supervised=False``) are dicts:

    - "image": float32 (height, width, 3), RGB; in [0, 1] when ``preprocess`` is
      None, else whatever ``preprocess`` returns.
    - "label": int32 (), in [0, num_classes).
    - "image_id": string (), the path in image_ids.txt (the key wsolevaluation
      uses for score maps).
    - Only with ``training=False`` and box localization: "boxes": float32
      (max_boxes, 4) of ``x0, y0, x1, y1`` in pixels of the ``image_size``
      image, rescaled from the original image size with wsolevaluation's
      ``int(c * new / old)`` (see `rescale_boxes`; corners inclusive), padded
      with rows of -1; "num_boxes": int32 (), the number of real rows.
    - Only with ``training=False`` and mask localization: "mask": bool
      (height, width), the union of the instance masks; "ignore": bool
      (height, width), the ignore region minus the mask. Masks are resized with
      OpenCV's nearest-neighbour rule and thresholded at > 0, as wsolevaluation.

    With ``as_supervised=True`` elements are ``(image, label)`` tuples, ready for
    ``model.fit``. With ``batch_size`` every entry gets a leading batch axis.

    Args:
        data_root: folder the image ids are relative to (wsolevaluation:
            ``dataset/CUB``, ``dataset/ILSVRC``, ``dataset/OpenImages``).
        metadata_root: folder with one sub-folder per split (wsolevaluation:
            ``metadata/CUB``); files are read from ``<metadata_root>/<split>/``.
        split: "train", "val" or "test" (wsolevaluation's train-weaksup,
            train-fullsup and test).
        image_size: output size, an int or ``(height, width)``.
        training: apply the train transform (and shuffle) instead of the test
            transform. Localization is only emitted by the test transform.
        batch_size: None for unbatched elements, else the batch size.
        num_classes: C for the label check; see `read_wsol_metadata`.
        preprocess: None (images in [0, 1]); "imagenet" (``(x / 255 - mean) /
            std`` with torchvision's ImageNet statistics, as wsolevaluation); or
            a callable, e.g. ``keras.applications.resnet50.preprocess_input``,
            that receives one float32 (height, width, 3) RGB image in [0, 255]
            and returns the model input.
        as_supervised: yield ``(image, label)`` tuples instead of dicts.
        with_localization: None reads localization.txt when present (required
            for "val" and "test"), True requires it, False ignores it. Ignored
            (not read) with ``training=True`` unless True, which is an error.
        mask_root: folder the mask paths are relative to; None: ``data_root``.
        resize_size: train-time resize before the crop, int or
            ``(height, width)``, at least ``image_size``. None: ``image_size *
            256 / 224`` rounded.
        max_boxes: rows of "boxes"; None: the split's largest box count. An
            image with more boxes is an error, never truncated.
        shuffle: None shuffles when ``training``.
        seed: int seed for shuffling and augmentation; None follows TensorFlow's
            global seed (``keras.utils.set_random_seed``).
        cache: False; True caches decoded, resized uint8 images in memory; a
            file path caches them on disk (``tf.data.Dataset.cache``). Random
            crops and flips are drawn after the cache.
        shuffle_buffer_size: None shuffles the whole file list before decoding,
            or, with ``cache``, uses a buffer of min(4096, size) decoded images.
        drop_remainder: drop the last incomplete batch.
        verify_images: decode every image and mask once before returning (on by
            default; turn off for very large training splits, where a corrupt
            file then fails inside tf.data with TensorFlow's own error).
        on_corrupt: "raise" or "skip" for files that exist but cannot be
            decoded; skipped images are logged at WARNING on the
            ``keras_dualsig.datasets.wsol`` logger and listed in the info's
            ``skipped`` (``with_info=True``).
        with_info: also return the `WSOLMetadata` (records, num_classes,
            skipped images).

    Returns:
        A `tf.data.Dataset`, or ``(dataset, metadata)`` with ``with_info=True``.

    Raises:
        ValueError: for invalid arguments, and for invalid metadata or
            undecodable images (see `read_wsol_metadata`).

    Example:

    ```python
    # wsolevaluation layout: images in dataset/CUB, metadata in metadata/CUB.
    train = kd.datasets.load_wsol(
        "dataset/CUB", "metadata/CUB", "train", training=True, batch_size=32,
        as_supervised=True, seed=0,
        preprocess=keras.applications.resnet50.preprocess_input)
    test = kd.datasets.load_wsol("dataset/CUB", "metadata/CUB", "test",
                                 batch_size=32)
    for batch in test.take(1):
        batch["image"].shape, batch["boxes"].shape  # (32, 224, 224, 3), (32, 1, 4)
    ```
    """
    _check_common(split, num_classes, with_localization, mask_root, on_corrupt)
    image_size = _as_size("image_size", image_size)
    if not isinstance(training, bool):
        raise invalid("training", "True or False", training)
    if batch_size is not None and not (_is_int(batch_size) and batch_size > 0):
        raise invalid("batch_size", "None or a positive int", batch_size)
    if not (
        preprocess is None
        or (isinstance(preprocess, str) and preprocess == _IMAGENET)
        or callable(preprocess)
    ):
        raise invalid("preprocess", "None, 'imagenet' or a callable", preprocess)
    if not isinstance(as_supervised, bool):
        raise invalid("as_supervised", "True or False", as_supervised)
    resize_size = _as_size("resize_size", resize_size, allow_none=True)
    if resize_size is None:
        resize_size = tuple(round(s * _RESIZE_RATIO) for s in image_size)
    if training and (resize_size[0] < image_size[0] or resize_size[1] < image_size[1]):
        raise invalid(
            "resize_size", f"a size at least image_size={image_size}", resize_size
        )
    if max_boxes is not None and not (_is_int(max_boxes) and max_boxes > 0):
        raise invalid("max_boxes", "None or a positive int", max_boxes)
    if shuffle not in (None, True, False):
        raise invalid("shuffle", "None, True or False", shuffle)
    if seed is not None and not _is_int(seed):
        raise invalid("seed", "None or an int", seed)
    if not isinstance(cache, (bool, str, os.PathLike)):
        raise invalid("cache", "True, False or a file path", cache)
    if shuffle_buffer_size is not None and not (
        _is_int(shuffle_buffer_size) and shuffle_buffer_size > 0
    ):
        raise invalid(
            "shuffle_buffer_size", "None or a positive int", shuffle_buffer_size
        )
    for name, value in (
        ("drop_remainder", drop_remainder),
        ("verify_images", verify_images),
        ("with_info", with_info),
    ):
        if not isinstance(value, bool):
            raise invalid(name, "True or False", value)
    if training and with_localization:
        raise invalid(
            "with_localization",
            "None or False with training=True (random crops would invalidate the "
            "ground truth; use training=False for localization)",
            with_localization,
        )
    if training:
        with_localization = False

    metadata = read_wsol_metadata(
        data_root,
        metadata_root,
        split,
        num_classes=num_classes,
        with_localization=with_localization,
        mask_root=mask_root,
        verify_images=verify_images,
        on_corrupt=on_corrupt,
    )
    records = metadata.records
    height, width = image_size
    shuffle = training if shuffle is None else shuffle

    columns = {
        "path": np.array([r.path for r in records]),
        "image_id": np.array([r.image_id for r in records]),
        "label": np.array([r.label for r in records], dtype=np.int32),
    }
    localization = metadata.localization
    if localization == "boxes":
        rows = metadata.max_boxes if max_boxes is None else max_boxes
        if rows < metadata.max_boxes:
            crowded = next(r for r in records if len(r.boxes) > rows)
            raise invalid(
                "max_boxes",
                f"at least {metadata.max_boxes}, the most boxes on one image "
                f"({crowded.image_id!r})",
                max_boxes,
            )
        boxes = np.full((len(records), rows, 4), _BOX_PADDING, dtype=np.float32)
        for index, record in enumerate(records):
            scaled = rescale_boxes(record.boxes, record.size, (width, height))
            boxes[index, : len(scaled)] = scaled
        columns["boxes"] = boxes
        columns["num_boxes"] = np.array([len(r.boxes) for r in records], np.int32)
    elif localization == "masks":
        rows = metadata.max_masks
        columns["mask_paths"] = np.array(
            [list(r.mask_paths) + [""] * (rows - len(r.mask_paths)) for r in records]
        )
        columns["num_masks"] = np.array([len(r.mask_paths) for r in records], np.int32)
        columns["ignore_path"] = np.array([r.ignore_path or "" for r in records])

    base_size = resize_size if training else image_size

    def decode(element):
        out = {
            "image": _load_image(element["path"], base_size),
            "label": element["label"],
            "image_id": element["image_id"],
        }
        if localization == "boxes":
            out["boxes"] = element["boxes"]
            out["num_boxes"] = element["num_boxes"]
        elif localization == "masks":
            paths = element["mask_paths"][: element["num_masks"]]
            masks = tf.map_fn(
                lambda path: _load_mask(path, image_size),
                paths,
                fn_output_signature=tf.TensorSpec(image_size, tf.bool),
            )
            mask = tf.reduce_any(masks, axis=0)
            ignore = tf.cond(
                element["ignore_path"] != "",
                lambda: _load_mask(element["ignore_path"], image_size),
                lambda: tf.zeros(image_size, tf.bool),
            )
            out["mask"] = mask
            # As wsolevaluation: the ignore region never covers the foreground.
            out["ignore"] = tf.logical_and(ignore, tf.logical_not(mask))
        return out

    def augment(element, seed_pair):
        seeds = tf.random.split(seed_pair, 2)  # (2,) -> (2, 2), one per op
        image = tf.image.stateless_random_crop(
            element["image"], (height, width, 3), seed=seeds[0]
        )
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        return {**element, "image": image}

    def finish(element):
        image = tf.cast(element["image"], tf.float32)  # uint8 -> float32 [0, 255]
        if preprocess is None:
            image = image / 255.0
        elif isinstance(preprocess, str):  # "imagenet", checked above
            image = (image / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD
        else:
            image = preprocess(image)
        if as_supervised:
            return image, element["label"]
        return {**element, "image": image}

    ds = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle and not cache:
        # Shuffling file names is cheap, so the whole split is one buffer.
        buffer = len(records) if shuffle_buffer_size is None else shuffle_buffer_size
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    if cache:
        ds = ds.cache() if cache is True else ds.cache(os.fspath(cache))
        if shuffle:
            # After a cache the buffer holds decoded images, hence a bound.
            buffer = shuffle_buffer_size or min(len(records), _CACHED_SHUFFLE_BUFFER)
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if training:
        # A seeded random stream zipped to the elements gives each element its
        # own stateless seed: reproducible for a seed, new every epoch.
        random_seed = None if seed is None else seed + 1
        seeds = tf.data.Dataset.random(
            seed=random_seed, rerandomize_each_iteration=True
        ).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))
        ds = ds.map(augment, num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(finish, num_parallel_calls=tf.data.AUTOTUNE)
    if batch_size is not None:
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    if with_info:
        return ds, metadata
    return ds
