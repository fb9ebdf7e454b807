"""tf.data pipelines for datasets in the wsolevaluation metadata format.

The paper's benchmarks (CUB-200-2011, Stanford Cars, ImageNet-1K, OpenImages-30K)
are distributed as image folders plus the metadata text files of
clovaai/wsolevaluation (Choe et al., CVPR 2020). `load_wsol` turns one split into
a `tf.data.Dataset` with the transforms of Oh & Noh, "Beyond Softmax: Dual-Branch
Sigmoid Architecture for Accurate Class Activation Maps", BMVC 2025
(arXiv:2511.05590), after validating the metadata (`wsol_format`) and the files
it names.
"""

import dataclasses
import logging
import os

import numpy as np

from keras_dualsig import _backend
from keras_dualsig._errors import (
    check_bool,
    check_choice,
    check_int,
    check_positive_int,
    invalid,
)
from keras_dualsig.datasets import wsol_format as fmt
from keras_dualsig.datasets.wsol_format import (
    WSOLMetadata,
    WSOLRecord,
    read_mask,
    rescale_boxes,
)

__all__ = [
    "DEFAULT_MAX_PIXELS",
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
# Images with more pixels are refused before decoding: PIL's decompression-bomb
# error threshold (2 * PIL.Image.MAX_IMAGE_PIXELS), far above any benchmark image.
DEFAULT_MAX_PIXELS = 178_956_970

# ImageNet statistics of torchvision's Normalize, as in wsolevaluation.
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# docs/method.md, "Training recipe": train images are resized to 256x256 before a random 224 crop; other
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
# tf.data seeds are int64 and the augmentation stream uses seed + 1.
_MAX_SEED = 2**63 - 2


# ---------------------------------------------------------------------------
# Arguments


def _tensorflow():
    """TensorFlow, imported when a tf.data pipeline is built (see _backend)."""
    return _backend.require_tensorflow(
        "`kd.datasets.load_wsol` (a tf.data pipeline; also image verification)"
    )


def _image_io_module():
    _tensorflow()
    from keras_dualsig.datasets import _image_io

    return _image_io


def _as_size(value, argument, allow_none=False):
    """An int or (height, width) pair -> (height, width) tuple of positive ints."""
    if value is None and allow_none:
        return None
    pair = value if isinstance(value, tuple | list) else (value, value)
    try:
        if len(pair) != 2:
            raise ValueError
        return tuple(check_positive_int(v, argument) for v in pair)
    except ValueError:
        raise invalid(
            argument, "a positive int or a (height, width) pair of them", value
        ) from None


def _check_folder(value, argument):
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise invalid(argument, "a folder path", value)
    return os.fspath(value)


@dataclasses.dataclass(frozen=True)
class _ReadOptions:
    """The checked arguments of `read_wsol_metadata` (and `load_wsol`)."""

    split: str
    num_classes: int | None = None
    with_localization: bool | None = None
    mask_root: str | None = None
    verify_images: bool = False
    on_corrupt: str = "raise"
    allow_outside_root: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        checked = {
            "split": check_choice(self.split, "split", fmt.SPLITS),
            "num_classes": check_positive_int(
                self.num_classes, "num_classes", allow_none=True
            ),
            "with_localization": check_bool(
                self.with_localization, "with_localization", allow_none=True
            ),
            "mask_root": None
            if self.mask_root is None
            else _check_folder(self.mask_root, "mask_root"),
            "verify_images": check_bool(self.verify_images, "verify_images"),
            "on_corrupt": check_choice(self.on_corrupt, "on_corrupt", _ON_CORRUPT),
            "allow_outside_root": check_bool(
                self.allow_outside_root, "allow_outside_root"
            ),
            "max_pixels": check_positive_int(
                self.max_pixels, "max_pixels", allow_none=True
            ),
        }
        for name, value in checked.items():
            object.__setattr__(self, name, value)


@dataclasses.dataclass(frozen=True)
class _LoadOptions:
    """The checked keyword arguments of `load_wsol`, one field each."""

    read: _ReadOptions
    image_size: tuple = (224, 224)
    training: bool = False
    batch_size: int | None = None
    preprocess: object = None
    as_supervised: bool = False
    resize_size: tuple | None = None
    max_boxes: int | None = None
    shuffle: bool | None = None
    seed: int | None = None
    cache: object = False
    shuffle_buffer_size: int | None = None
    drop_remainder: bool = False
    with_info: bool = False

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "image_size", _as_size(self.image_size, "image_size"))
        for name in ("training", "as_supervised", "drop_remainder", "with_info"):
            set_(self, name, check_bool(getattr(self, name), name))
        for name in ("batch_size", "max_boxes", "shuffle_buffer_size"):
            set_(
                self,
                name,
                check_positive_int(getattr(self, name), name, allow_none=True),
            )
        set_(self, "preprocess", _check_preprocess(self.preprocess))
        set_(self, "resize_size", self._checked_resize_size())
        set_(self, "shuffle", check_bool(self.shuffle, "shuffle", allow_none=True))
        if self.shuffle is None:
            set_(self, "shuffle", self.training)
        set_(self, "seed", _check_seed(self.seed))
        set_(self, "cache", _check_cache(self.cache))
        if self.training and self.read.with_localization:
            raise invalid(
                "with_localization",
                "None or False with training=True (random crops would invalidate "
                "the ground truth; use training=False for localization)",
                self.read.with_localization,
            )
        if self.training:
            set_(self, "read", dataclasses.replace(self.read, with_localization=False))

    def _checked_resize_size(self):
        resize_size = _as_size(self.resize_size, "resize_size", allow_none=True)
        if resize_size is None:
            return tuple(round(s * _RESIZE_RATIO) for s in self.image_size)
        if self.training and (
            resize_size[0] < self.image_size[0] or resize_size[1] < self.image_size[1]
        ):
            raise invalid(
                "resize_size",
                f"a size at least image_size={self.image_size}",
                resize_size,
            )
        return resize_size


def _check_preprocess(preprocess):
    if preprocess is None or callable(preprocess):
        return preprocess
    if isinstance(preprocess, str) and preprocess == _IMAGENET:
        return preprocess
    raise invalid("preprocess", "None, 'imagenet' or a callable", preprocess)


def _check_seed(seed):
    seed = check_int(seed, "seed", allow_none=True)
    if seed is not None and not -(2**63) <= seed <= _MAX_SEED:
        raise invalid("seed", "None or an int in [-2**63, 2**63 - 2]", seed)
    return seed


def _check_cache(cache):
    if isinstance(cache, bool | np.bool_):
        return bool(cache)
    if isinstance(cache, str | os.PathLike) and os.fspath(cache):
        return os.fspath(cache)
    raise invalid("cache", "True, False or a non-empty file path", cache)


def _resolve_num_classes(num_classes, metadata_root):
    """C from the argument, else from `WSOL_DATASETS` by folder name.

    Guessing C from the labels (max + 1) would go silently wrong on a split that
    lacks the last classes, so an unknown dataset needs an explicit count.
    """
    if num_classes is not None:
        return num_classes
    name = os.path.basename(os.path.normpath(os.fspath(metadata_root)))
    for key, count in WSOL_DATASETS.items():
        if key.lower() == name.lower():
            return count
    raise invalid(
        "num_classes",
        f"the number of classes as an int: the folder name {name!r} of "
        f"`metadata_root` is not one of the known datasets {tuple(WSOL_DATASETS)}, "
        f"so it cannot be looked up",
        num_classes,
    )


# ---------------------------------------------------------------------------
# Reading and verifying a split


def _read(data_root, metadata_root, options):
    """Reads, validates and (with ``verify_images``) decodes one split."""
    data_root = _check_folder(data_root, "data_root")
    metadata_root = _check_folder(metadata_root, "metadata_root")
    if not os.path.isdir(data_root):
        raise invalid(
            "data_root",
            "an existing folder holding the images",
            os.path.abspath(data_root),
        )
    fmt.split_folder(metadata_root, options.split)
    metadata = fmt.read_split(
        data_root,
        metadata_root,
        options.split,
        num_classes=_resolve_num_classes(options.num_classes, metadata_root),
        with_localization=options.with_localization,
        mask_root=options.mask_root,
        allow_outside_root=options.allow_outside_root,
    )
    if options.verify_images:
        metadata = _verify_files(metadata, options)
    return metadata


def _image_failures(metadata, max_pixels, problems):
    """Index -> (file, line, reason) of undecodable images; size mismatches added."""
    _image_io = _image_io_module()
    records = metadata.records
    shapes, failures = _image_io.decode_check([r.path for r in records], 3, max_pixels)
    corrupt = {
        index: (
            fmt.IMAGE_IDS_FILE,
            records[index].line,
            f"cannot decode image {records[index].image_id!r} at "
            f"{records[index].path}: {reason}",
        )
        for index, reason in failures.items()
    }
    for index, shape in shapes.items():
        record = records[index]
        if record.original_size is not None and record.original_size != shape:
            (height, width), (file_height, file_width) = record.original_size, shape
            problems.add(
                fmt.IMAGE_SIZES_FILE,
                metadata.line(fmt.IMAGE_SIZES_FILE, record.image_id),
                f"size {width}x{height} (width x height) of {record.image_id!r} "
                f"differs from the image file, which is {file_width}x{file_height}",
            )
    return corrupt


def _mask_failures(metadata, max_pixels, corrupt):
    """Adds the records whose masks cannot be decoded to `corrupt`."""
    _image_io = _image_io_module()
    records = metadata.records
    files = sorted(
        {p for r in records for p in r.mask_paths}
        | {r.ignore_path for r in records if r.ignore_path}
    )
    _, failures = _image_io.decode_check(files, 1, max_pixels)
    bad = {files[index]: reason for index, reason in failures.items()}
    for index, record in enumerate(records):
        path = next(
            (p for p in (*record.mask_paths, record.ignore_path) if p in bad), None
        )
        if index not in corrupt and path is not None:
            corrupt[index] = (
                fmt.LOCALIZATION_FILE,
                metadata.line(fmt.LOCALIZATION_FILE, path),
                f"cannot decode mask {path} of {record.image_id!r}: {bad[path]}",
            )


def _verify_files(metadata, options):
    """Decodes every image and mask; checks image_sizes.txt against the files."""
    problems = fmt.MetadataProblems(
        f"{metadata.metadata_dir} (split '{metadata.split}')"
    )
    corrupt = _image_failures(metadata, options.max_pixels, problems)
    _mask_failures(metadata, options.max_pixels, corrupt)
    if options.on_corrupt == "raise":
        for file, line, reason in corrupt.values():
            problems.add(file, line, reason)
    problems.raise_if_any()
    return _skip(metadata, corrupt) if corrupt else metadata


def _skip(metadata, corrupt):
    """`metadata` without the records in `corrupt`, logged and listed."""
    records = metadata.records
    skipped = tuple(
        (records[index].image_id, reason)
        for index, (_, _, reason) in sorted(corrupt.items())
    )
    shown = "; ".join(reason for _, reason in skipped[: fmt.MAX_REPORTED_PROBLEMS])
    _logger.warning(
        "Skipped %d of %d image(s) of split '%s' in %s that could not be decoded "
        "(on_corrupt='skip'): %s%s",
        len(skipped),
        len(records),
        metadata.split,
        metadata.metadata_dir,
        shown,
        " ..." if len(skipped) > fmt.MAX_REPORTED_PROBLEMS else "",
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
    allow_outside_root=False,
    max_pixels=DEFAULT_MAX_PIXELS,
):
    """Reads and validates one split of a wsolevaluation-format dataset.

    Plain Python: returns the original (not rescaled) ground truth per image, for
    evaluation scripts. `load_wsol` calls it before building its pipeline.

    Layout (as in clovaai/wsolevaluation; one reader per file in `wsol_format`)::

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
    image id or mask path that is absolute, climbs out of its root with "..",
    holds control characters, or (through a symbolic link) resolves outside its
    root; duplicate entries; ids without labels, sizes or localization, and
    entries for ids not in image_ids.txt; a label that is not a plain integer
    or lies outside ``[0, num_classes)``; a box with x1 < x0 or y1 < y0 or
    outside its image (x1 == width and y1 == height are accepted: boxes that
    reach the border, as in Stanford Cars); an ignore path on an image's later
    lines. A UTF-8 byte order mark, Windows line ends and spaces around fields
    are read as if absent.

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
            but cannot be decoded (or is above ``max_pixels``), when
            ``verify_images``: "raise" (a ValueError naming it) or "skip" (drop
            it, log it at WARNING on the ``keras_dualsig.datasets.wsol`` logger
            and list it in ``WSOLMetadata.skipped``).
        allow_outside_root: False refuses images (masks) whose real path, after
            symbolic links, lies outside the real path of ``data_root``
            (``mask_root``); True reads them (e.g. a sub-folder linked to
            another disk). The roots themselves may be links.
        max_pixels: with ``verify_images``, files whose height x width exceeds
            this are refused, from the file header (JPEG, PNG, GIF, BMP, WebP)
            before decoding; None: no limit.

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
    record.image_id, record.original_size, record.boxes  # original pixels
    record.boxes_at((224, 224))  # as wsolevaluation: truncated, not clipped
    ```
    """
    options = _ReadOptions(
        split=split,
        num_classes=num_classes,
        with_localization=with_localization,
        mask_root=mask_root,
        verify_images=verify_images,
        on_corrupt=on_corrupt,
        allow_outside_root=allow_outside_root,
        max_pixels=max_pixels,
    )
    return _read(data_root, metadata_root, options)


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
    allow_outside_root=False,
    max_pixels=DEFAULT_MAX_PIXELS,
):
    """Loads one split of a wsolevaluation-format dataset as a tf.data pipeline.

    Reads the metadata of clovaai/wsolevaluation (see `read_wsol_metadata` for
    the layout and every check), validates it and, by default, decodes every
    image once, all before the dataset is returned, so that problems surface
    before training starts, with the file, line and value at fault.

    Transforms (docs/method.md, "Training recipe", as wsolevaluation and the paper's code):

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
      image, padded with rows of -1; "num_boxes": int32 (), the number of real
      rows. Boxes are rescaled from the original image size exactly as
      wsolevaluation's ``resize_bbox``: ``int(c * new / old)`` per coordinate
      (truncation), never clipped (see `WSOLRecord.boxes_at`). Corners are
      inclusive, so a box that reaches the right or bottom border of the
      original image (x1 = width, as in 352 of the 8,041 Stanford Cars test
      images) ends at x1 = the output width (224 for ``image_size=224``), one
      past the last column, as in the published MaxBoxAcc numbers.
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
            decoded (or exceed ``max_pixels``); skipped images are logged at WARNING on the
            ``keras_dualsig.datasets.wsol`` logger and listed in the info's
            ``skipped`` (``with_info=True``).
        with_info: also return the `WSOLMetadata` (records, num_classes,
            skipped images).
        allow_outside_root: False (default) refuses images and masks whose real
            path, after symbolic links, leaves ``data_root`` (``mask_root``);
            True reads them. See `read_wsol_metadata`.
        max_pixels: refuse image and mask files with more than this many
            pixels (height x width), read from the file header before
            decoding (JPEG, PNG, GIF, BMP, WebP; other formats after decoding),
            in the verification pass and in the pipeline; default
            178,956,970, PIL's decompression-bomb limit; None: no limit.

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
    _tensorflow()  # Without TensorFlow: a clear error before any work.
    options = _LoadOptions(
        read=_ReadOptions(
            split=split,
            num_classes=num_classes,
            with_localization=with_localization,
            mask_root=mask_root,
            verify_images=verify_images,
            on_corrupt=on_corrupt,
            allow_outside_root=allow_outside_root,
            max_pixels=max_pixels,
        ),
        image_size=image_size,
        training=training,
        batch_size=batch_size,
        preprocess=preprocess,
        as_supervised=as_supervised,
        resize_size=resize_size,
        max_boxes=max_boxes,
        shuffle=shuffle,
        seed=seed,
        cache=cache,
        shuffle_buffer_size=shuffle_buffer_size,
        drop_remainder=drop_remainder,
        with_info=with_info,
    )
    metadata = _read(data_root, metadata_root, options.read)
    dataset = _pipeline(metadata, options)
    return (dataset, metadata) if options.with_info else dataset


# ---------------------------------------------------------------------------
# The pipeline


def _columns(metadata, options):
    """The per-image tensors the pipeline starts from (paths, labels, truth)."""
    records = metadata.records
    columns = {
        "path": np.array([r.path for r in records]),
        "image_id": np.array([r.image_id for r in records]),
        "label": np.array([r.label for r in records], dtype=np.int32),
    }
    if metadata.localization == "boxes":
        rows = metadata.max_boxes if options.max_boxes is None else options.max_boxes
        if rows < metadata.max_boxes:
            crowded = next(r for r in records if len(r.boxes) > rows)
            raise invalid(
                "max_boxes",
                f"at least {metadata.max_boxes}, the most boxes on one image "
                f"({crowded.image_id!r})",
                options.max_boxes,
            )
        boxes = np.full((len(records), rows, 4), _BOX_PADDING, dtype=np.float32)
        for index, record in enumerate(records):
            scaled = record.boxes_at(options.image_size)
            boxes[index, : len(scaled)] = scaled
        columns["boxes"] = boxes
        columns["num_boxes"] = np.array([len(r.boxes) for r in records], np.int32)
    elif metadata.localization == "masks":
        rows = metadata.max_masks
        columns["mask_paths"] = np.array(
            [list(r.mask_paths) + [""] * (rows - len(r.mask_paths)) for r in records]
        )
        columns["num_masks"] = np.array([len(r.mask_paths) for r in records], np.int32)
        columns["ignore_path"] = np.array([r.ignore_path or "" for r in records])
    return columns


def _decoder(localization, options):
    """element of `_columns` -> decoded image (uint8) and its ground truth."""
    tf = _tensorflow()
    _image_io = _image_io_module()
    size = options.image_size
    base_size = options.resize_size if options.training else size
    max_pixels = options.read.max_pixels

    def load_mask(path):
        return _image_io.load_mask(path, size, max_pixels)

    def decode(element):
        out = {
            "image": _image_io.load_image(element["path"], base_size, max_pixels),
            "label": element["label"],
            "image_id": element["image_id"],
        }
        if localization == "boxes":
            out["boxes"] = element["boxes"]
            out["num_boxes"] = element["num_boxes"]
        elif localization == "masks":
            paths = element["mask_paths"][: element["num_masks"]]
            masks = tf.map_fn(
                load_mask, paths, fn_output_signature=tf.TensorSpec(size, tf.bool)
            )
            mask = tf.reduce_any(masks, axis=0)
            ignore = tf.cond(
                element["ignore_path"] != "",
                lambda: load_mask(element["ignore_path"]),
                lambda: tf.zeros(size, tf.bool),
            )
            out["mask"] = mask
            # As wsolevaluation: the ignore region never covers the foreground.
            out["ignore"] = tf.logical_and(ignore, tf.logical_not(mask))
        return out

    return decode


def _augmenter(options):
    tf = _tensorflow()
    height, width = options.image_size

    def augment(element, seed_pair):
        seeds = tf.random.split(seed_pair, 2)  # (2,) -> (2, 2), one per op
        image = tf.image.stateless_random_crop(
            element["image"], (height, width, 3), seed=seeds[0]
        )
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
        return {**element, "image": image}

    return augment


def _finisher(options):
    tf = _tensorflow()
    preprocess = options.preprocess

    def finish(element):
        image = tf.cast(element["image"], tf.float32)  # uint8 -> float32 [0, 255]
        if preprocess is None:
            image = image / 255.0
        elif isinstance(preprocess, str):  # "imagenet", checked above
            image = (image / 255.0 - _IMAGENET_MEAN) / _IMAGENET_STD
        else:
            image = preprocess(image)
        if options.as_supervised:
            return image, element["label"]
        return {**element, "image": image}

    return finish


def _pipeline(metadata, options):
    """Shuffle, decode, cache, augment, preprocess, batch, prefetch."""
    tf = _tensorflow()
    count, seed, cache = len(metadata), options.seed, options.cache
    ds = tf.data.Dataset.from_tensor_slices(_columns(metadata, options))
    if options.shuffle and not cache:
        # Shuffling file names is cheap, so the whole split is one buffer.
        buffer = options.shuffle_buffer_size or count
        ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(
        _decoder(metadata.localization, options), num_parallel_calls=tf.data.AUTOTUNE
    )
    if cache:
        ds = ds.cache() if cache is True else ds.cache(cache)
        if options.shuffle:
            # After a cache the buffer holds decoded images, hence a bound.
            buffer = options.shuffle_buffer_size or min(count, _CACHED_SHUFFLE_BUFFER)
            ds = ds.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if options.training:
        # A seeded random stream zipped to the elements gives each element its
        # own stateless seed: reproducible for a seed, new every epoch.
        seeds = tf.data.Dataset.random(
            seed=None if seed is None else seed + 1, rerandomize_each_iteration=True
        ).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds))
        ds = ds.map(_augmenter(options), num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.map(_finisher(options), num_parallel_calls=tf.data.AUTOTUNE)
    if options.batch_size is not None:
        ds = ds.batch(options.batch_size, drop_remainder=options.drop_remainder)
    return ds.prefetch(tf.data.AUTOTUNE)
