"""The wsolevaluation metadata format: one reader per file, a cross-check, a writer.

The format is the one of clovaai/wsolevaluation (Choe et al., "Evaluating Weakly
Supervised Object Localization Methods Right", CVPR 2020). One folder per split,
``<metadata_root>/<split>/``, holds up to four comma-separated text files, each
read by one function below whose docstring shows its line format:

- ``image_ids.txt`` (`read_image_ids`): ``<path>``.
- ``class_labels.txt`` (`read_class_labels`): ``<path>,<label>``.
- ``image_sizes.txt`` (`read_image_sizes`): ``<path>,<width>,<height>``.
- ``localization.txt``: boxes (`read_boxes`) or masks (`read_mask_paths`).

`cross_check` checks the files against each other, `read_split` reads a whole
split into `WSOLRecord`s, and `write_wsol_metadata` writes records back.

Sizes are (height, width) everywhere in this package; ``image_sizes.txt`` keeps
the file's ``<width>,<height>`` order, converted by `read_image_sizes` and the
writer. Readers strip a UTF-8 byte order mark and spaces around fields, accept
Windows line ends, and report every other problem with the file, line and value.

Everything here is plain Python and NumPy so that evaluation scripts can read the
original ground truth without building a tf.data pipeline.
"""

import contextlib
import dataclasses
import os
import re
from typing import NamedTuple

import numpy as np

from keras_dualsig._errors import check_bool, check_choice, invalid
from keras_dualsig.datasets._paths import RootGuard, path_error

__all__ = [
    "CLASS_LABELS_FILE",
    "IMAGE_IDS_FILE",
    "IMAGE_SIZES_FILE",
    "LOCALIZATION_FILE",
    "METADATA_FILES",
    "SPLITS",
    "Entry",
    "MetadataProblems",
    "WSOLMetadata",
    "WSOLRecord",
    "cross_check",
    "localization_kind",
    "read_boxes",
    "read_class_labels",
    "read_image_ids",
    "read_image_sizes",
    "read_mask",
    "read_mask_paths",
    "read_split",
    "rescale_boxes",
    "split_folder",
    "write_wsol_metadata",
]

SPLITS = ("train", "val", "test")

IMAGE_IDS_FILE = "image_ids.txt"
CLASS_LABELS_FILE = "class_labels.txt"
IMAGE_SIZES_FILE = "image_sizes.txt"
LOCALIZATION_FILE = "localization.txt"
# Also the order in which problems are reported: the file fixed first comes first.
METADATA_FILES = (
    IMAGE_IDS_FILE,
    CLASS_LABELS_FILE,
    IMAGE_SIZES_FILE,
    LOCALIZATION_FILE,
)

# How many problems a ValueError spells out; the rest are only counted, so that a
# completely wrong file does not produce a message of a million lines.
MAX_REPORTED_PROBLEMS = 10
# Raw lines quoted in messages are cut to this many characters.
_MAX_QUOTED_CHARS = 160
# wsolevaluation thresholds masks read as float grey values at 0.5, i.e. any
# non-zero uint8 pixel is foreground.
_MASK_THRESHOLD = 0.5
# Integers as wsolevaluation writes them: ASCII digits with an optional sign.
# Python's int() also takes "1_000" and non-ASCII digits, which are typos here.
_INTEGER = re.compile(r"[+-]?[0-9]+")

_BOX_LAYOUT = "<path>,<x0>,<y0>,<x1>,<y1>"
_MASK_LAYOUT = "<path>,<mask path>,<ignore path>"
_NOUN = {"boxes": "box", "masks": "mask"}


@dataclasses.dataclass(frozen=True)
class WSOLRecord:
    """One image of a wsolevaluation-format split, with its original ground truth.

    Attributes:
        image_id: the path as written in ``image_ids.txt``, relative to
            ``data_root`` (also the key of score maps in wsolevaluation).
        path: absolute path of the image file.
        label: integer class label in ``[0, num_classes)``.
        original_size: ``(height, width)`` of the original image from
            ``image_sizes.txt``, or None when the split has no such file.
        boxes: ground-truth boxes in original image pixels, a tuple of
            ``(x0, y0, x1, y1)`` int tuples (empty when the split has no boxes).
        mask_paths: absolute paths of the instance masks (empty when the split has
            no masks).
        ignore_path: absolute path of the ignore mask, or None.
        line: 1-based line number of the image in ``image_ids.txt``.
    """

    image_id: str
    path: str
    label: int
    original_size: tuple | None = None
    boxes: tuple = ()
    mask_paths: tuple = ()
    ignore_path: str | None = None
    line: int = 0

    @property
    def size(self):
        """``(width, height)``, the order of ``image_sizes.txt`` (or None).

        Kept for callers of earlier versions; `original_size` is (height, width).
        """
        if self.original_size is None:
            return None
        height, width = self.original_size
        return (width, height)

    def boxes_at(self, size):
        """The boxes rescaled to an image of `size`, exactly as wsolevaluation.

        Each coordinate becomes ``int(c * new / old)`` in float64 (truncation,
        ``resize_bbox`` of wsolevaluation's evaluation.py) and is never clipped:
        a box reaching the right border of the original image (x1 = width, as
        in 352 of the 8,041 Stanford Cars test images) ends at x1 = the new
        width, e.g. 224 on a 224-pixel map, one past its last column.

        Args:
            size: ``(height, width)`` of the resized image (the score map).

        Returns:
            int64 numpy (n, 4) of ``x0, y0, x1, y1`` in resized pixels.

        Raises:
            ValueError: if the record has boxes but no `original_size`.
        """
        if self.boxes and self.original_size is None:
            raise invalid(
                "record",
                "a record with original_size (image_sizes.txt) to rescale its boxes",
                received=f"WSOLRecord(image_id={self.image_id!r}, original_size=None)",
            )
        return _rescale(self.boxes, self.original_size or (1, 1), size)


@dataclasses.dataclass(frozen=True)
class WSOLMetadata:
    """A parsed and validated wsolevaluation-format split.

    Attributes:
        data_root: absolute folder the image ids are relative to.
        metadata_dir: absolute folder holding the split's text files
            (``<metadata_root>/<split>``).
        mask_root: absolute folder the mask paths are relative to.
        split: "train", "val" or "test".
        num_classes: number of classes C; every label is in ``[0, C)``.
        localization: "boxes", "masks" or None (no localization ground truth read).
        records: the images, in ``image_ids.txt`` order, as `WSOLRecord`s.
        skipped: ``(image_id, reason)`` pairs of images that were dropped because
            they could not be decoded (only with ``on_corrupt="skip"``).
        source_lines: ``(file name, key) -> line`` for later messages: keys are
            image ids for ``image_sizes.txt`` and absolute mask paths for
            ``localization.txt``; see `line`.
    """

    data_root: str
    metadata_dir: str
    mask_root: str
    split: str
    num_classes: int
    localization: str | None
    records: tuple
    skipped: tuple = ()
    source_lines: dict = dataclasses.field(
        default_factory=dict, repr=False, compare=False
    )

    def __len__(self):
        return len(self.records)

    @property
    def max_boxes(self):
        """Largest number of boxes on one image (0 without boxes)."""
        return max((len(r.boxes) for r in self.records), default=0)

    @property
    def max_masks(self):
        """Largest number of instance masks on one image (0 without masks)."""
        return max((len(r.mask_paths) for r in self.records), default=0)

    def line(self, file, key):
        """The line of `file` that holds `key` (0 when unknown)."""
        return self.source_lines.get((file, key), 0)


class MetadataProblems:
    """Collects metadata problems so that one ValueError reports all of them.

    Args:
        where: the folder (and split) the files belong to, for the message.
    """

    def __init__(self, where):
        self._where = where
        self._items = []

    def __len__(self):
        return len(self._items)

    def add(self, file, line, message, raw=None):
        """Records a problem at `file` (a base name) and 1-based `line` (0: none)."""
        if raw is not None:
            if len(raw) > _MAX_QUOTED_CHARS:
                raw = raw[:_MAX_QUOTED_CHARS] + "..."
            message = f"{message} (line: {raw!r})"
        self._items.append((file, line, message))

    def raise_if_any(self):
        """Raises one ValueError listing the problems by file and line, if any."""
        if not self._items:
            return
        order = {name: i for i, name in enumerate(METADATA_FILES)}
        items = sorted(
            self._items, key=lambda item: (order.get(item[0], len(order)), item[1])
        )
        lines = []
        for file, line, message in items[:MAX_REPORTED_PROBLEMS]:
            location = f"{file}, line {line}" if line else file
            lines.append(f"  {location}: {message}")
        rest = len(items) - MAX_REPORTED_PROBLEMS
        if rest > 0:
            lines.append(f"  ... and {rest} more problem(s) not shown.")
        raise ValueError(
            f"Invalid WSOL metadata in {self._where}: {len(items)} problem(s).\n"
            + "\n".join(lines)
        )


class Entry(NamedTuple):
    """A value read from a metadata file and the 1-based line it is on."""

    value: object
    line: int


# ---------------------------------------------------------------------------
# Lines and fields


@contextlib.contextmanager
def _reporting(problems, where):
    """Yields `problems`, or a new collector that raises when the block ends."""
    if problems is not None:
        yield problems
        return
    own = MetadataProblems(where)
    yield own
    own.raise_if_any()


def _rows(path, layout, problems, other=None):
    """``(line, fields)`` of the non-blank lines of a file with `layout`'s fields.

    The file is read as UTF-8 (a leading byte order mark is dropped) with
    universal line ends; only "\\n" ends a line, so line numbers are the ones an
    editor shows. Fields are stripped of surrounding spaces. Lines with another
    field count are reported (with `other[count]` as the message when given)
    and left out.
    """
    file = os.path.basename(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        problems.add(file, 0, f"not a UTF-8 text file ({e})")
        return []
    count = layout.count(",") + 1
    rows = []
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        fields = [field.strip() for field in line.split(",")]
        if len(fields) == count:
            rows.append((number, fields))
        elif other and len(fields) in other:
            problems.add(file, number, other[len(fields)], raw=line)
        else:
            got = f"got {len(fields)}"
            problems.add(
                file, number, f"expected {count} fields {layout}, {got}", raw=line
            )
    return rows


def _folder(path):
    return os.path.dirname(os.path.abspath(path))


def _parse_int(text):
    return int(text) if _INTEGER.fullmatch(text) else None


def _is_repeat(seen, image_id, line, problems, file, what):
    """Reports `image_id` when already in `seen` (a dict to a line or an Entry)."""
    if image_id not in seen:
        return False
    first = seen[image_id]
    first = first.line if isinstance(first, Entry) else first
    problems.add(file, line, f"duplicate {what} {image_id!r} (first on line {first})")
    return True


# ---------------------------------------------------------------------------
# One reader per file


def read_image_ids(path, problems=None):
    """Reads ``image_ids.txt``: one image path per line, relative to data_root.

    ::

        <path>
        path/to/image1.jpg
        path/to/image2.jpg

    Returns:
        dict image_id -> line number, in file order.
    """
    file = os.path.basename(path)
    with _reporting(problems, _folder(path)) as problems:
        ids = {}
        for line, (image_id,) in _rows(path, "<path>", problems):
            error = path_error(image_id, "image_id", "data_root")
            if error:
                problems.add(file, line, error)
            elif not _is_repeat(ids, image_id, line, problems, file, "image_id"):
                ids[image_id] = line
        if not ids and not len(problems):
            problems.add(file, 0, "no image listed")
    return ids


def read_class_labels(path, problems=None):
    """Reads ``class_labels.txt``: the integer class label of each image.

    ::

        <path>,<label>
        path/to/image1.jpg,0
        path/to/image2.jpg,1

    Returns:
        dict image_id -> `Entry` (label, line).
    """
    file = os.path.basename(path)
    with _reporting(problems, _folder(path)) as problems:
        labels = {}
        for line, (image_id, text) in _rows(path, "<path>,<label>", problems):
            label = _parse_int(text)
            if label is None:
                message = f"label {text!r} is not an integer"
                problems.add(file, line, message, raw=f"{image_id},{text}")
            elif not _is_repeat(labels, image_id, line, problems, file, "label for"):
                labels[image_id] = Entry(label, line)
    return labels


def read_image_sizes(path, problems=None):
    """Reads ``image_sizes.txt``: the size of each original image.

    ::

        <path>,<width>,<height>
        path/to/image1.jpg,500,300
        path/to/image2.jpg,1000,600

    Returns:
        dict image_id -> `Entry` ((height, width), line): converted from the
        file's width-first order to the package's (height, width).
    """
    file = os.path.basename(path)
    with _reporting(problems, _folder(path)) as problems:
        sizes = {}
        for line, (image_id, *texts) in _rows(
            path, "<path>,<width>,<height>", problems
        ):
            width, height = (_parse_int(text) for text in texts)
            if width is None or height is None or width <= 0 or height <= 0:
                message = "width and height must be positive integers"
                problems.add(file, line, message, raw=",".join([image_id, *texts]))
            elif not _is_repeat(sizes, image_id, line, problems, file, "size for"):
                sizes[image_id] = Entry((height, width), line)
    return sizes


def localization_kind(path):
    """ "boxes" or "masks" by the field count of the first fitting line, or None."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            count = len(line.split(","))
            if line.strip() and count in (5, 3):
                return "boxes" if count == 5 else "masks"
    return None


def read_boxes(path, problems=None):
    """Reads ``localization.txt`` with boxes, one line per box, in original pixels.

    ::

        <path>,<x0>,<y0>,<x1>,<y1>
        path/to/image1.jpg,156,163,318,230
        path/to/image1.jpg,23,12,101,259
        path/to/image2.jpg,143,142,394,248

    Returns:
        dict image_id -> list of `Entry` ((x0, y0, x1, y1) ints, line).
    """
    file = os.path.basename(path)
    other = {3: "a mask line in a file of boxes"}
    with _reporting(problems, _folder(path)) as problems:
        boxes = {}
        for line, (image_id, *texts) in _rows(path, _BOX_LAYOUT, problems, other):
            box = tuple(_parse_int(text) for text in texts)
            if None in box:
                raw = ",".join([image_id, *texts])
                problems.add(file, line, "box coordinates must be integers", raw=raw)
            elif box[2] < box[0] or box[3] < box[1]:
                x0, y0, x1, y1 = box
                problems.add(
                    file,
                    line,
                    f"box (x0={x0}, y0={y0}, x1={x1}, y1={y1}) of {image_id!r} "
                    f"has x1 < x0 or y1 < y0",
                )
            else:
                boxes.setdefault(image_id, []).append(Entry(box, line))
    return boxes


def read_mask_paths(path, problems=None):
    """Reads ``localization.txt`` with masks, one line per instance mask.

    ::

        <path>,<mask path>,<ignore path>
        path/to/image1.jpg,path/to/mask1a.png,path/to/ignore1.png
        path/to/image1.jpg,path/to/mask1b.png,
        path/to/image2.jpg,path/to/mask2a.png,

    Paths are relative to the mask root; the ignore path is given on an image's
    first line only (or nowhere).

    Returns:
        ``(masks, ignores)``: dict image_id -> list of `Entry` (mask path,
        line), and dict image_id -> `Entry` (ignore path or None, line).
    """
    file = os.path.basename(path)
    other = {5: "a box line in a file of masks"}
    with _reporting(problems, _folder(path)) as problems:
        masks, ignores = {}, {}
        for line, (image_id, mask, ignore) in _rows(
            path, _MASK_LAYOUT, problems, other
        ):
            error = path_error(mask, "mask path", "mask_root")
            if ignore and image_id in masks:
                error = (
                    f"ignore path {ignore!r} on a later line of {image_id!r}; "
                    f"only an image's first line may name it"
                )
            elif ignore:
                error = error or path_error(ignore, "ignore mask path", "mask_root")
            if error:
                problems.add(file, line, error)
                continue
            masks.setdefault(image_id, []).append(Entry(mask, line))
            ignores.setdefault(image_id, Entry(ignore or None, line))
    return masks, ignores


# ---------------------------------------------------------------------------
# The cross-check


def cross_check(
    image_ids, labels, *, num_classes, sizes=None, boxes=None, masks=None, problems=None
):
    """Checks the files of one split against each other.

    Every image of ``image_ids.txt`` needs a label (and a size and localization
    when those files are read); no file may name an image that is not listed;
    labels lie in ``[0, num_classes)``; boxes lie inside their image, where
    x1 = width and y1 = height (a box reaching the border, as in Stanford Cars)
    are accepted.

    Args:
        image_ids: from `read_image_ids`.
        labels: from `read_class_labels`.
        num_classes: C.
        sizes: from `read_image_sizes`, or None when not read.
        boxes: from `read_boxes`, or None.
        masks: the first dict of `read_mask_paths`, or None.
        problems: a `MetadataProblems` to add to; None raises at the end.

    Raises:
        ValueError: when `problems` is None and a check fails.
    """
    with _reporting(problems, "the cross-checked split") as problems:
        _matches_ids(image_ids, labels, CLASS_LABELS_FILE, "label", problems)
        for image_id, (label, line) in labels.items():
            if image_id in image_ids and not 0 <= label < num_classes:
                problems.add(
                    CLASS_LABELS_FILE,
                    line,
                    f"label {label} of {image_id!r} is outside [0, {num_classes}) "
                    f"(num_classes={num_classes})",
                )
        if sizes is not None:
            _matches_ids(image_ids, sizes, IMAGE_SIZES_FILE, "size", problems)
        for kind, entries in (("boxes", boxes), ("masks", masks)):
            if entries is not None:
                noun = ("localization", _NOUN[kind])
                _matches_ids(image_ids, entries, LOCALIZATION_FILE, noun, problems)
        if boxes is not None and sizes is not None:
            _boxes_inside(boxes, sizes, problems)


def _matches_ids(image_ids, entries, file, noun, problems):
    """Reports entries for unlisted images, and listed images without entries."""
    named, missing = (noun, noun) if isinstance(noun, str) else noun
    for image_id, entry in entries.items():
        if image_id not in image_ids:
            line = (entry[0] if isinstance(entry, list) else entry).line
            problems.add(
                file,
                line,
                f"{named} for {image_id!r}, which is not in {IMAGE_IDS_FILE}",
            )
    for image_id, line in image_ids.items():
        if image_id not in entries:
            problems.add(
                IMAGE_IDS_FILE, line, f"image {image_id!r} has no {missing} in {file}"
            )


def _boxes_inside(boxes, sizes, problems):
    for image_id, entries in boxes.items():
        if image_id not in sizes:
            continue
        height, width = sizes[image_id].value
        for (x0, y0, x1, y1), line in entries:
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                problems.add(
                    LOCALIZATION_FILE,
                    line,
                    f"box (x0={x0}, y0={y0}, x1={x1}, y1={y1}) of {image_id!r} lies "
                    f"outside the image (width={width}, height={height})",
                )


# ---------------------------------------------------------------------------
# A whole split


def split_folder(metadata_root, split):
    """``<metadata_root>/<split>`` as an absolute path; a ValueError if missing."""
    folder = os.path.abspath(os.path.join(os.fspath(metadata_root), split))
    if not os.path.isdir(folder):
        hint = ""
        if os.path.isfile(os.path.join(os.fspath(metadata_root), IMAGE_IDS_FILE)):
            hint = (
                f" {os.path.abspath(metadata_root)} holds {IMAGE_IDS_FILE} itself: "
                f"it looks like a split folder; pass its parent as `metadata_root`."
            )
        raise ValueError(
            f"Missing WSOL metadata folder {folder} for split '{split}'. "
            f"`metadata_root` must hold one folder per split (train, val, test) "
            f"with image_ids.txt, class_labels.txt, image_sizes.txt and "
            f"localization.txt, as in wsolevaluation's metadata/<dataset>/ folders."
            + hint
        )
    return folder


def read_split(
    data_root,
    metadata_root,
    split,
    *,
    num_classes,
    with_localization=None,
    mask_root=None,
    allow_outside_root=False,
):
    """Reads, cross-checks and locates one split; one ValueError lists every problem.

    Args:
        data_root: folder the image ids are relative to.
        metadata_root: folder with one sub-folder per split.
        split: "train", "val" or "test".
        num_classes: C, for the label check.
        with_localization: None reads ``localization.txt`` when present and
            requires it for "val" and "test"; True requires it; False skips it.
        mask_root: folder the mask paths are relative to; None: `data_root`.
        allow_outside_root: accept images and masks whose real path (after
            symbolic links) lies outside `data_root` / `mask_root`.

    Returns:
        A `WSOLMetadata` whose records are in ``image_ids.txt`` order.

    Raises:
        ValueError: naming each file, line and value at fault.
    """
    data_root = os.path.abspath(os.fspath(data_root))
    split_dir = split_folder(metadata_root, split)
    mask_root = data_root if mask_root is None else os.path.abspath(mask_root)
    files = {name: os.path.join(split_dir, name) for name in METADATA_FILES}
    read_localization = _check_present(files, split, with_localization)
    problems = MetadataProblems(f"{split_dir} (split '{split}')")
    ids = read_image_ids(files[IMAGE_IDS_FILE], problems)
    labels = read_class_labels(files[CLASS_LABELS_FILE], problems)
    kind, boxes, masks, ignores = _read_localization(files, read_localization, problems)
    sizes = _read_sizes(files, kind, problems)
    cross_check(
        ids,
        labels,
        num_classes=num_classes,
        sizes=sizes,
        boxes=boxes,
        masks=masks,
        problems=problems,
    )
    images = RootGuard(data_root, "data_root", allow_outside_root)
    for image_id, line in ids.items():
        _, error = images.locate(image_id, "image")
        if error:
            problems.add(IMAGE_IDS_FILE, line, error)
    mask_guard = RootGuard(mask_root, "mask_root", allow_outside_root)
    located = _locate_masks(ids, masks, ignores, mask_guard, problems)
    problems.raise_if_any()
    records = _records(data_root, ids, labels, sizes, boxes, located)
    source_lines = {(IMAGE_SIZES_FILE, i): e.line for i, e in (sizes or {}).items()}
    return WSOLMetadata(
        data_root=data_root,
        metadata_dir=split_dir,
        mask_root=mask_root,
        split=split,
        num_classes=num_classes,
        localization=kind,
        records=records,
        source_lines={**source_lines, **located[2]},
    )


def _check_present(files, split, with_localization):
    """Whether to read localization.txt; a ValueError when a needed file is missing.

    Localization is required for evaluation splits unless switched off: an
    evaluation image without ground truth would silently drop out of the
    localization metrics.
    """
    required = [IMAGE_IDS_FILE, CLASS_LABELS_FILE]
    if with_localization is None:
        read_localization = split in ("val", "test") or os.path.isfile(
            files[LOCALIZATION_FILE]
        )
    else:
        read_localization = with_localization
    if read_localization:
        required.append(LOCALIZATION_FILE)
    missing = [files[name] for name in required if not os.path.isfile(files[name])]
    if missing:
        raise ValueError(
            f"Missing WSOL metadata file(s) for split '{split}': "
            + ", ".join(missing)
            + ". Expected the wsolevaluation layout <metadata_root>/<split>/"
            "{image_ids,class_labels,image_sizes,localization}.txt; pass "
            "with_localization=False to read a split without localization.txt."
        )
    return read_localization


def _read_localization(files, read_localization, problems):
    """``(kind, boxes, masks, ignores)``; the last three None when not read."""
    if not read_localization:
        return None, None, None, None
    path = files[LOCALIZATION_FILE]
    kind = localization_kind(path)
    if kind == "masks":
        return (kind, None, *read_mask_paths(path, problems))
    boxes = read_boxes(path, problems)  # also reports the lines of a kind-less file
    if kind is None:
        if not len(problems):
            problems.add(LOCALIZATION_FILE, 0, "no localization listed")
        return None, None, None, None
    return kind, boxes, None, None


def _read_sizes(files, kind, problems):
    """Sizes from image_sizes.txt when present; required to rescale boxes."""
    path = files[IMAGE_SIZES_FILE]
    if os.path.isfile(path):
        return read_image_sizes(path, problems)
    if kind == "boxes":
        problems.add(
            IMAGE_SIZES_FILE,
            0,
            f"missing file {path}; it is required to rescale the boxes of "
            f"{LOCALIZATION_FILE}",
        )
    return None


def _locate_masks(ids, masks, ignores, guard, problems):
    """``(mask files, ignore files, lines)`` of the listed images, by absolute path."""
    mask_files, ignore_files, lines = {}, {}, {}
    wanted = [
        (image_id, mask, line, "mask", mask_files)
        for image_id, entries in (masks or {}).items()
        for mask, line in entries
    ] + [
        (image_id, ignore, line, "ignore mask", ignore_files)
        for image_id, (ignore, line) in (ignores or {}).items()
        if ignore
    ]
    for image_id, relative, line, what, found in wanted:
        if image_id not in ids:
            continue
        path, error = guard.locate(relative, what)
        if error:
            problems.add(LOCALIZATION_FILE, line, error)
            continue
        lines.setdefault((LOCALIZATION_FILE, path), line)
        if what == "mask":
            found.setdefault(image_id, []).append(path)
        else:
            found[image_id] = path
    return mask_files, ignore_files, lines


def _records(data_root, ids, labels, sizes, boxes, located):
    mask_files, ignore_files, _ = located
    return tuple(
        WSOLRecord(
            image_id=image_id,
            path=os.path.join(data_root, image_id),
            label=labels[image_id].value,
            original_size=sizes[image_id].value if sizes else None,
            boxes=tuple(entry.value for entry in (boxes or {}).get(image_id, ())),
            mask_paths=tuple(mask_files.get(image_id, ())),
            ignore_path=ignore_files.get(image_id),
            line=line,
        )
        for image_id, line in ids.items()
    )


# ---------------------------------------------------------------------------
# The writer


def write_wsol_metadata(
    metadata_root, split, records, *, mask_root=None, overwrite=False
):
    """Writes records as one split in the wsolevaluation format.

    The inverse of `read_split` (and `keras_dualsig.datasets.read_wsol_metadata`):
    ``image_ids.txt`` and ``class_labels.txt`` always; ``image_sizes.txt`` when
    the records have an ``original_size`` (written width first, as the file
    wants); ``localization.txt`` with one line per box, or per instance mask
    (the ignore path on the image's first line), when the records have them.
    Records the format cannot hold (a comma in a path, mixed boxes and masks, a
    box outside its image, ...) are refused before anything is written.

    Args:
        metadata_root: folder of the split folders; files go to
            ``<metadata_root>/<split>/`` (created when missing).
        split: "train", "val" or "test".
        records: `WSOLRecord`s; ``path`` and ``line`` are not written. Mask and
            ignore paths may be relative to the mask root, or absolute inside
            ``mask_root``.
        mask_root: the folder absolute mask paths are written relative to.
        overwrite: replace metadata files already in the split folder (those
            the records do not need are removed, so that no stale file pairs
            with the new image list). False refuses to touch them.

    Returns:
        The paths of the files written, a list of str.

    Raises:
        ValueError: (Keras template) for invalid arguments and records.

    Example:

    ```python
    meta = kd.datasets.read_wsol_metadata("dataset/CUB", "metadata/CUB", "test")
    kd.datasets.write_wsol_metadata("metadata/CUB_first100", "test",
                                    meta.records[:100])
    ```
    """
    split = check_choice(split, "split", SPLITS)
    overwrite = check_bool(overwrite, "overwrite")
    _check_folder(metadata_root, "metadata_root")
    if mask_root is not None:
        mask_root = os.path.abspath(_check_folder(mask_root, "mask_root"))
    texts = _metadata_texts(list(records), mask_root)
    split_dir = os.path.join(os.fspath(metadata_root), split)
    existing = [
        name
        for name in METADATA_FILES
        if os.path.lexists(os.path.join(split_dir, name))
    ]
    if existing and not overwrite:
        raise invalid(
            "overwrite",
            f"True to replace the metadata files already in {split_dir} "
            f"({', '.join(existing)})",
            overwrite,
        )
    os.makedirs(split_dir, exist_ok=True)
    written = []
    for name in METADATA_FILES:
        path = os.path.join(split_dir, name)
        if name in texts:
            with open(path, "w", encoding="utf-8", newline="\n") as f:
                f.write(texts[name])
            written.append(path)
        elif name in existing:
            os.remove(path)
    return written


def _check_folder(value, argument):
    if not isinstance(value, str | os.PathLike) or not os.fspath(value):
        raise invalid(argument, "a folder path", value)
    return os.fspath(value)


def _metadata_texts(records, mask_root):
    """File name -> text of the files that `records` need."""
    if not records or not all(isinstance(r, WSOLRecord) for r in records):
        raise invalid("records", "a non-empty sequence of WSOLRecord", records)
    kinds = [_kind(record) for record in records]
    sized = [record.original_size is not None for record in records]
    for index in range(1, len(records)):
        if (kinds[index], sized[index]) != (kinds[0], sized[0]):
            raise invalid(
                "records",
                "records that all have the same ground truth (boxes, masks or "
                "neither) and all or none an original_size",
                received=f"records[{index}] ({kinds[index]}, original_size="
                f"{records[index].original_size}) after records[0] ({kinds[0]}, "
                f"original_size={records[0].original_size})",
            )
    if kinds[0] == "boxes and masks":
        raise invalid(
            "records",
            "records with boxes or masks, not both (localization.txt holds one kind)",
            received=f"records[0] with {len(records[0].boxes)} box(es) and mask "
            f"paths {records[0].mask_paths}",
        )
    if kinds[0] == "boxes" and not sized[0]:
        raise invalid(
            "records",
            "records with boxes to have an original_size (image_sizes.txt)",
            received="records[0].original_size=None",
        )
    lines = {name: [] for name in METADATA_FILES}
    seen = set()
    for index, record in enumerate(records):
        for name, rows in _record_lines(record, index, seen, mask_root).items():
            lines[name].extend(rows)
    return {name: "\n".join(rows) + "\n" for name, rows in lines.items() if rows}


def _kind(record):
    if record.boxes and (record.mask_paths or record.ignore_path):
        return "boxes and masks"
    if record.boxes:
        return "boxes"
    return "masks" if record.mask_paths or record.ignore_path else None


def _record_lines(record, index, seen, mask_root):
    """The lines of one record, per file; refuses what the files cannot hold."""
    image_id = _writable_path(record.image_id, "image_id", "data_root", index)
    if image_id in seen:
        raise _refused(index, "image_id", image_id, "unique image ids")
    seen.add(image_id)
    label = record.label
    if not _is_int(label) or label < 0:
        raise _refused(index, "label", label, "integer labels >= 0")
    lines = {IMAGE_IDS_FILE: [image_id], CLASS_LABELS_FILE: [f"{image_id},{label}"]}
    if record.original_size is not None:
        height, width = _writable_size(record.original_size, index)
        lines[IMAGE_SIZES_FILE] = [f"{image_id},{width},{height}"]
        boxes = [_writable_box(box, (height, width), index) for box in record.boxes]
        lines[LOCALIZATION_FILE] = [
            f"{image_id},{x0},{y0},{x1},{y1}" for x0, y0, x1, y1 in boxes
        ]
    if record.mask_paths or record.ignore_path:
        lines[LOCALIZATION_FILE] = _mask_lines(record, index, mask_root)
    return lines


def _mask_lines(record, index, mask_root):
    if not record.mask_paths:
        raise _refused(
            index, "mask_paths", (), "an instance mask with each ignore mask"
        )
    masks = [_mask_field(p, index, "mask_paths", mask_root) for p in record.mask_paths]
    ignore = ""
    if record.ignore_path:
        ignore = _mask_field(record.ignore_path, index, "ignore_path", mask_root)
    return [
        f"{record.image_id},{mask},{ignore if position == 0 else ''}"
        for position, mask in enumerate(masks)
    ]


def _mask_field(path, index, field, mask_root):
    if isinstance(path, str | os.PathLike) and os.path.isabs(path):
        if mask_root is None:
            raise _refused(index, field, path, "relative mask paths, or a mask_root")
        path = os.path.relpath(path, mask_root).replace(os.sep, "/")
    return _writable_path(path, "mask path", "mask_root", index, field)


def _writable_path(path, what, root, index, field=None):
    field = field or what
    if not isinstance(path, str):
        raise _refused(index, field, path, f"a str {what}")
    error = path_error(path, what, root)
    if error is None and "," in path:
        error = f"{what} {path!r} holds a comma, which the format cannot hold"
    if error is None and path != path.strip():
        error = f"{what} {path!r} has surrounding spaces, which readers strip"
    if error:
        raise _refused(index, field, path, f"paths the format can hold ({error})")
    return path


def _writable_size(size, index):
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(_is_int(v) and v > 0 for v in size)
    ):
        raise _refused(index, "original_size", size, "a (height, width) of ints > 0")
    return int(size[0]), int(size[1])


def _writable_box(box, size, index):
    height, width = size
    if (
        not isinstance(box, tuple | list | np.ndarray)
        or len(box) != 4
        or not all(_is_int(v) for v in box)
    ):
        raise _refused(index, "boxes", box, "(x0, y0, x1, y1) boxes of ints")
    x0, y0, x1, y1 = (int(v) for v in box)
    if not (0 <= x0 <= x1 <= width and 0 <= y0 <= y1 <= height):
        raise _refused(
            index,
            "boxes",
            box,
            f"boxes with 0 <= x0 <= x1 <= width={width} and 0 <= y0 <= y1 <= "
            f"height={height}",
        )
    return x0, y0, x1, y1


def _is_int(value):
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _refused(index, field, value, expected):
    return invalid("records", expected, received=f"records[{index}].{field}={value!r}")


# ---------------------------------------------------------------------------
# Ground truth at another size


def _rescale(boxes, original_size, size):
    """Boxes from an image of `original_size` to `size`, both (height, width)."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    height, width = (float(v) for v in original_size)
    new_height, new_width = (float(v) for v in size)
    # Same operation order as wsolevaluation (c * new / old, in float64) so the
    # truncation lands on the same integer.
    scale = np.array([new_width, new_height, new_width, new_height])
    old = np.array([width, height, width, height])
    return np.trunc(boxes * scale / old).astype(np.int64)


def rescale_boxes(boxes, image_size, target_size):
    """Rescales boxes from original pixels to a resized image, as wsolevaluation.

    Each coordinate becomes ``int(c * new / old)`` (truncation, never clipped),
    exactly as ``resize_bbox`` in wsolevaluation's evaluation.py, so that
    MaxBoxAcc numbers are comparable with published ones. Sizes here are
    width first, the order of ``resize_bbox`` and ``image_sizes.txt`` (kept for
    callers of earlier versions); `WSOLRecord.boxes_at` takes (height, width).

    Args:
        boxes: int array-like (n, 4) of ``x0, y0, x1, y1`` in original pixels.
        image_size: ``(width, height)`` of the original image.
        target_size: ``(width, height)`` of the resized image (the score map).

    Returns:
        int64 numpy array (n, 4) of ``x0, y0, x1, y1`` in resized pixels.

    Example:

    >>> rescale_boxes([[60, 27, 385, 331]], (500, 375), (224, 224)).tolist()
    [[26, 16, 172, 197]]
    """
    (width, height), (new_width, new_height) = image_size, target_size
    return _rescale(boxes, (height, width), (new_height, new_width))


def read_mask(record, size=(224, 224)):
    """Reads a record's ground-truth masks as wsolevaluation's ``get_mask`` does.

    Each instance mask is read as grey values with OpenCV, resized with
    nearest-neighbour interpolation to ``size`` and thresholded at 0.5 (any
    non-zero pixel); the union over instances is the foreground. The ignore region
    is the ignore mask minus the foreground.

    Args:
        record: a `WSOLRecord` with ``mask_paths``.
        size: ``(width, height)`` of the output, the score-map size (width
            first, as OpenCV and earlier versions; the output is (height, width)).

    Returns:
        ``(mask, ignore)``: two bool numpy arrays (height, width).

    Raises:
        ValueError: (Keras template) if the record has no masks or a mask file
            cannot be read.
    """
    import cv2

    if not isinstance(record, WSOLRecord) or not record.mask_paths:
        raise invalid("record", "a WSOLRecord with mask_paths (a mask dataset)", record)
    width, height = size

    def load(path):
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise invalid(
                "record",
                "a record whose mask files OpenCV can read",
                received=f"a record of {record.image_id!r} with mask file {path}",
            )
        image = cv2.resize(
            image.astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST
        )
        return image > _MASK_THRESHOLD

    mask = np.zeros((height, width), dtype=bool)
    for path in record.mask_paths:
        mask |= load(path)
    ignore = np.zeros_like(mask)
    if record.ignore_path:
        ignore = load(record.ignore_path) & ~mask
    return mask, ignore
