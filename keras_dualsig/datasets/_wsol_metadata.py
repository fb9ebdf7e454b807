"""Reading and validating the wsolevaluation metadata format (no TensorFlow).

The format is the one of clovaai/wsolevaluation (Choe et al., "Evaluating Weakly
Supervised Object Localization Methods Right", CVPR 2020). One folder per split,
``<metadata_root>/<split>/``, holds up to four comma-separated text files:

- ``image_ids.txt``: ``<path>``, one image per line, paths relative to
  ``data_root``.
- ``class_labels.txt``: ``<path>,<integer label>``.
- ``image_sizes.txt``: ``<path>,<width>,<height>`` of the original image.
- ``localization.txt``, either boxes ``<path>,<x0>,<y0>,<x1>,<y1>`` (original
  pixels, one line per box, several lines per image) or masks
  ``<path>,<mask path>,<ignore path>`` (one line per instance mask, paths relative
  to the mask root; the ignore path is given on the image's first line only and is
  empty on the following ones).

Everything here is plain Python and NumPy so that evaluation scripts can read the
original ground truth without building a tf.data pipeline.
"""

import dataclasses
import ntpath
import os
import posixpath

import numpy as np

SPLITS = ("train", "val", "test")

IMAGE_IDS_FILE = "image_ids.txt"
CLASS_LABELS_FILE = "class_labels.txt"
IMAGE_SIZES_FILE = "image_sizes.txt"
LOCALIZATION_FILE = "localization.txt"
# Order in which problems are reported: the file a user fixes first comes first.
_FILE_ORDER = (IMAGE_IDS_FILE, CLASS_LABELS_FILE, IMAGE_SIZES_FILE, LOCALIZATION_FILE)

# How many problems a ValueError spells out; the rest are only counted, so that a
# completely wrong file does not produce a message of a million lines.
MAX_REPORTED_PROBLEMS = 10
# Raw lines quoted in messages are cut to this many characters.
_MAX_QUOTED_CHARS = 160

# wsolevaluation thresholds masks read as float grey values at 0.5, i.e. any
# non-zero uint8 pixel is foreground.
_MASK_THRESHOLD = 0.5

_NOUN = {"boxes": "box", "masks": "mask"}


@dataclasses.dataclass(frozen=True)
class WSOLRecord:
    """One image of a wsolevaluation-format split, with its original ground truth.

    Attributes:
        image_id: the path as written in ``image_ids.txt``, relative to
            ``data_root`` (also the key of score maps in wsolevaluation).
        path: absolute path of the image file.
        label: integer class label in ``[0, num_classes)``.
        size: ``(width, height)`` from ``image_sizes.txt``, or None when the split
            has no such file.
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
    size: tuple | None = None
    boxes: tuple = ()
    mask_paths: tuple = ()
    ignore_path: str | None = None
    line: int = 0


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
    """

    data_root: str
    metadata_dir: str
    mask_root: str
    split: str
    num_classes: int
    localization: str | None
    records: tuple
    skipped: tuple = ()

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


class Problems:
    """Collects metadata problems so that one ValueError reports all of them."""

    def __init__(self, where):
        self._where = where
        self._items = []

    def __len__(self):
        return len(self._items)

    def add(self, file, line, message, raw=None):
        """Records a problem at ``file`` (a base name) and 1-based ``line``."""
        if raw is not None:
            if len(raw) > _MAX_QUOTED_CHARS:
                raw = raw[:_MAX_QUOTED_CHARS] + "..."
            message = f"{message} (line: {raw!r})"
        self._items.append((file, line, message))

    def raise_if_any(self):
        if not self._items:
            return
        order = {name: i for i, name in enumerate(_FILE_ORDER)}
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
        count = len(items)
        raise ValueError(
            f"Invalid WSOL metadata in {self._where}: {count} problem(s).\n"
            + "\n".join(lines)
        )


def _read_lines(path, problems, file):
    """Yields ``(line_number, stripped_line)`` of the non-blank lines of a file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as e:
        problems.add(file, 0, f"not a UTF-8 text file ({e})")
        return []
    # splitlines() also removes "\r" of files written on Windows.
    return [
        (number, line.strip())
        for number, line in enumerate(text.splitlines(), start=1)
        if line.strip()
    ]


def _split_fields(line):
    return [field.strip() for field in line.split(",")]


def relative_path_error(path, what="path", root="the root"):
    """Why ``path`` may not be used as a path inside ``root``, or None."""
    if not path:
        return f"empty {what}"
    if posixpath.isabs(path) or ntpath.isabs(path) or path.startswith("~"):
        return f"{what} {path!r} is absolute; it must be relative to {root}"
    parts = path.replace("\\", "/").split("/")
    if ".." in parts:
        return f"{what} {path!r} climbs out of {root} with '..'"
    return None


def _parse_int(text):
    try:
        return int(text)
    except ValueError:
        return None


def _resolve_num_classes(num_classes, metadata_root, table):
    """C from the argument, else from the dataset table by folder name.

    Guessing C from the labels (max + 1) would go silently wrong on a split that
    lacks the last classes, so an unknown dataset needs an explicit count.
    """
    if num_classes is not None:
        return num_classes
    name = os.path.basename(os.path.normpath(os.fspath(metadata_root)))
    for key, count in table.items():
        if key.lower() == name.lower():
            return count
    raise ValueError(
        f"Invalid value received for argument `num_classes`. Expected the number "
        f"of classes as an int: the folder name {name!r} of `metadata_root` is "
        f"not one of the known datasets {tuple(table)}, so it cannot be looked "
        f"up. Received: num_classes=None"
    )


def parse_metadata(
    data_root,
    metadata_root,
    split,
    *,
    num_classes,
    with_localization,
    mask_root,
    table,
):
    """Reads and validates one split; raises one ValueError listing every problem.

    Returns:
        ``(metadata, mask_lines, size_lines)``: a `WSOLMetadata`; a dict from each
        mask file's absolute path to the first ``localization.txt`` line naming
        it; a dict from image_id to its ``image_sizes.txt`` line (both for later
        error messages about undecodable masks or wrong sizes).
    """
    data_root = os.path.abspath(os.fspath(data_root))
    metadata_dir = os.path.abspath(os.path.join(os.fspath(metadata_root), split))
    mask_root = data_root if mask_root is None else os.path.abspath(mask_root)
    files = {
        name: os.path.join(metadata_dir, name)
        for name in (
            IMAGE_IDS_FILE,
            CLASS_LABELS_FILE,
            IMAGE_SIZES_FILE,
            LOCALIZATION_FILE,
        )
    }

    if not os.path.isdir(data_root):
        raise ValueError(
            f"Invalid value received for argument `data_root`. Expected an "
            f"existing folder holding the images. Received: data_root={data_root}"
        )
    if not os.path.isdir(metadata_dir):
        raise ValueError(
            f"Missing WSOL metadata folder {metadata_dir} for split '{split}'. "
            f"`metadata_root` must hold one folder per split (train, val, test) "
            f"with image_ids.txt, class_labels.txt, image_sizes.txt and "
            f"localization.txt, as in wsolevaluation's metadata/<dataset>/ folders."
        )

    # Which files must exist. Localization is required for evaluation splits
    # unless switched off: an evaluation image without ground truth would
    # silently drop out of the localization metrics.
    required = [IMAGE_IDS_FILE, CLASS_LABELS_FILE]
    if with_localization is None:
        read_localization = os.path.isfile(files[LOCALIZATION_FILE])
        if split in ("val", "test"):
            required.append(LOCALIZATION_FILE)
            read_localization = True
    else:
        read_localization = bool(with_localization)
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

    num_classes = _resolve_num_classes(num_classes, metadata_root, table)
    problems = Problems(f"{metadata_dir} (split '{split}')")

    # image_ids.txt: the list of images, which every other file must match.
    id_lines = {}
    for number, line in _read_lines(files[IMAGE_IDS_FILE], problems, IMAGE_IDS_FILE):
        image_id = line
        if "," in image_id:
            problems.add(IMAGE_IDS_FILE, number, "expected one field <path>", raw=line)
            continue
        error = relative_path_error(image_id, "image_id", "data_root")
        if error:
            problems.add(IMAGE_IDS_FILE, number, error)
            continue
        if image_id in id_lines:
            problems.add(
                IMAGE_IDS_FILE,
                number,
                f"duplicate image_id {image_id!r} (first on line {id_lines[image_id]})",
            )
            continue
        id_lines[image_id] = number
        path = os.path.join(data_root, image_id)
        if not os.path.isfile(path):
            problems.add(
                IMAGE_IDS_FILE, number, f"image {image_id!r} not found at {path}"
            )
    if not id_lines and not len(problems):
        problems.add(IMAGE_IDS_FILE, 0, "no image listed")

    # class_labels.txt
    labels, label_lines = {}, {}
    for number, line in _read_lines(
        files[CLASS_LABELS_FILE], problems, CLASS_LABELS_FILE
    ):
        fields = _split_fields(line)
        if len(fields) != 2:
            problems.add(
                CLASS_LABELS_FILE,
                number,
                f"expected 2 fields <path>,<label>, got {len(fields)}",
                raw=line,
            )
            continue
        image_id, label_text = fields
        label = _parse_int(label_text)
        if label is None:
            problems.add(
                CLASS_LABELS_FILE,
                number,
                f"label {label_text!r} is not an integer",
                raw=line,
            )
            continue
        if image_id in labels:
            problems.add(
                CLASS_LABELS_FILE,
                number,
                f"duplicate label for {image_id!r} (first on line "
                f"{label_lines[image_id]})",
            )
            continue
        if image_id not in id_lines:
            problems.add(
                CLASS_LABELS_FILE,
                number,
                f"label for {image_id!r}, which is not in {IMAGE_IDS_FILE}",
            )
            continue
        labels[image_id] = label
        label_lines[image_id] = number
    for image_id, number in id_lines.items():
        if image_id not in labels:
            problems.add(
                IMAGE_IDS_FILE,
                number,
                f"image {image_id!r} has no label in {CLASS_LABELS_FILE}",
            )
    for image_id, label in labels.items():
        if not 0 <= label < num_classes:
            problems.add(
                CLASS_LABELS_FILE,
                label_lines[image_id],
                f"label {label} of {image_id!r} is outside [0, {num_classes}) "
                f"(num_classes={num_classes})",
            )

    # localization.txt: boxes or masks, decided by the field count.
    localization = None
    boxes, box_lines = {}, {}
    mask_paths, ignore_paths, mask_lines = {}, {}, {}
    if read_localization:
        for number, line in _read_lines(
            files[LOCALIZATION_FILE], problems, LOCALIZATION_FILE
        ):
            fields = _split_fields(line)
            kind = {5: "boxes", 3: "masks"}.get(len(fields))
            if kind is None:
                problems.add(
                    LOCALIZATION_FILE,
                    number,
                    f"expected 5 fields <path>,<x0>,<y0>,<x1>,<y1> or 3 fields "
                    f"<path>,<mask path>,<ignore path>, got {len(fields)}",
                    raw=line,
                )
                continue
            if localization is None:
                localization = kind
            elif kind != localization:
                problems.add(
                    LOCALIZATION_FILE,
                    number,
                    f"a {_NOUN[kind]} line in a file of {localization}",
                    raw=line,
                )
                continue
            image_id = fields[0]
            if image_id not in id_lines:
                problems.add(
                    LOCALIZATION_FILE,
                    number,
                    f"localization for {image_id!r}, which is not in {IMAGE_IDS_FILE}",
                )
                continue
            if kind == "boxes":
                values = [_parse_int(text) for text in fields[1:]]
                if None in values:
                    problems.add(
                        LOCALIZATION_FILE,
                        number,
                        "box coordinates must be integers",
                        raw=line,
                    )
                    continue
                x0, y0, x1, y1 = values
                if x1 < x0 or y1 < y0:
                    problems.add(
                        LOCALIZATION_FILE,
                        number,
                        f"box (x0={x0}, y0={y0}, x1={x1}, y1={y1}) of {image_id!r} "
                        f"has x1 < x0 or y1 < y0",
                    )
                    continue
                boxes.setdefault(image_id, []).append((x0, y0, x1, y1))
                box_lines.setdefault(image_id, []).append(number)
            else:
                mask_path, ignore_path = fields[1], fields[2]
                error = relative_path_error(mask_path, "mask path", "mask_root")
                if error:
                    problems.add(LOCALIZATION_FILE, number, error)
                    continue
                first = image_id not in mask_paths
                if not first and ignore_path:
                    problems.add(
                        LOCALIZATION_FILE,
                        number,
                        f"ignore path {ignore_path!r} on a later line of "
                        f"{image_id!r}; only an image's first line may name it",
                    )
                    continue
                if first and ignore_path:
                    error = relative_path_error(
                        ignore_path, "ignore mask path", "mask_root"
                    )
                    if error:
                        problems.add(LOCALIZATION_FILE, number, error)
                        continue
                absolute = os.path.join(mask_root, mask_path)
                if not os.path.isfile(absolute):
                    problems.add(
                        LOCALIZATION_FILE,
                        number,
                        f"mask {mask_path!r} not found at {absolute}",
                    )
                    continue
                mask_lines.setdefault(absolute, number)
                mask_paths.setdefault(image_id, []).append(absolute)
                if first:
                    ignore_paths[image_id] = None
                    if ignore_path:
                        absolute = os.path.join(mask_root, ignore_path)
                        if not os.path.isfile(absolute):
                            problems.add(
                                LOCALIZATION_FILE,
                                number,
                                f"ignore mask {ignore_path!r} not found at {absolute}",
                            )
                            continue
                        mask_lines.setdefault(absolute, number)
                        ignore_paths[image_id] = absolute
        if localization is None and not len(problems):
            problems.add(LOCALIZATION_FILE, 0, "no localization listed")
        located = boxes if localization == "boxes" else mask_paths
        if localization is not None:
            for image_id, number in id_lines.items():
                if image_id not in located:
                    problems.add(
                        IMAGE_IDS_FILE,
                        number,
                        f"image {image_id!r} has no {_NOUN[localization]} in "
                        f"{LOCALIZATION_FILE}",
                    )

    # image_sizes.txt: needed to rescale boxes; checked whenever present.
    sizes, size_lines = {}, {}
    sizes_required = localization == "boxes"
    if sizes_required and not os.path.isfile(files[IMAGE_SIZES_FILE]):
        problems.add(
            IMAGE_SIZES_FILE,
            0,
            f"missing file {files[IMAGE_SIZES_FILE]}; it is required to rescale "
            f"the boxes of {LOCALIZATION_FILE}",
        )
    elif os.path.isfile(files[IMAGE_SIZES_FILE]):
        for number, line in _read_lines(
            files[IMAGE_SIZES_FILE], problems, IMAGE_SIZES_FILE
        ):
            fields = _split_fields(line)
            if len(fields) != 3:
                problems.add(
                    IMAGE_SIZES_FILE,
                    number,
                    f"expected 3 fields <path>,<width>,<height>, got {len(fields)}",
                    raw=line,
                )
                continue
            image_id = fields[0]
            width, height = _parse_int(fields[1]), _parse_int(fields[2])
            if width is None or height is None or width <= 0 or height <= 0:
                problems.add(
                    IMAGE_SIZES_FILE,
                    number,
                    "width and height must be positive integers",
                    raw=line,
                )
                continue
            if image_id in sizes:
                problems.add(
                    IMAGE_SIZES_FILE,
                    number,
                    f"duplicate size for {image_id!r} (first on line "
                    f"{size_lines[image_id]})",
                )
                continue
            if image_id not in id_lines:
                problems.add(
                    IMAGE_SIZES_FILE,
                    number,
                    f"size for {image_id!r}, which is not in {IMAGE_IDS_FILE}",
                )
                continue
            sizes[image_id] = (width, height)
            size_lines[image_id] = number
        for image_id, number in id_lines.items():
            if image_id not in sizes:
                problems.add(
                    IMAGE_IDS_FILE,
                    number,
                    f"image {image_id!r} has no size in {IMAGE_SIZES_FILE}",
                )

    # Boxes must lie inside their image. x1 == width is accepted: wsolevaluation's
    # CUB boxes are x + w of the original annotation, which reaches the border.
    for image_id, image_boxes in boxes.items():
        if image_id not in sizes:
            continue
        width, height = sizes[image_id]
        for (x0, y0, x1, y1), number in zip(
            image_boxes, box_lines[image_id], strict=True
        ):
            if x0 < 0 or y0 < 0 or x1 > width or y1 > height:
                problems.add(
                    LOCALIZATION_FILE,
                    number,
                    f"box (x0={x0}, y0={y0}, x1={x1}, y1={y1}) of {image_id!r} lies "
                    f"outside the image (width={width}, height={height})",
                )

    problems.raise_if_any()

    records = tuple(
        WSOLRecord(
            image_id=image_id,
            path=os.path.join(data_root, image_id),
            label=labels[image_id],
            size=sizes.get(image_id),
            boxes=tuple(boxes.get(image_id, ())),
            mask_paths=tuple(mask_paths.get(image_id, ())),
            ignore_path=ignore_paths.get(image_id),
            line=number,
        )
        for image_id, number in id_lines.items()
    )
    metadata = WSOLMetadata(
        data_root=data_root,
        metadata_dir=metadata_dir,
        mask_root=mask_root,
        split=split,
        num_classes=num_classes,
        localization=localization,
        records=records,
    )
    return metadata, mask_lines, size_lines


def rescale_boxes(boxes, image_size, target_size):
    """Rescales boxes from original pixels to a resized image, as wsolevaluation.

    Each coordinate becomes ``int(c * new / old)`` (truncation), exactly as
    ``resize_bbox`` in wsolevaluation's evaluation.py, so that MaxBoxAcc numbers
    are comparable with published ones.

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
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    width, height = (float(v) for v in image_size)
    new_width, new_height = (float(v) for v in target_size)
    # Same operation order as wsolevaluation (c * new / old, in float64) so the
    # truncation lands on the same integer.
    scale = np.array([new_width, new_height, new_width, new_height])
    old = np.array([width, height, width, height])
    return np.trunc(boxes * scale / old).astype(np.int64)


def read_mask(record, size=(224, 224)):
    """Reads a record's ground-truth masks as wsolevaluation's ``get_mask`` does.

    Each instance mask is read as grey values with OpenCV, resized with
    nearest-neighbour interpolation to ``size`` and thresholded at 0.5 (any
    non-zero pixel); the union over instances is the foreground. The ignore region
    is the ignore mask minus the foreground.

    Args:
        record: a `WSOLRecord` with ``mask_paths``.
        size: ``(width, height)`` of the output, the score-map size.

    Returns:
        ``(mask, ignore)``: two bool numpy arrays (height, width).

    Raises:
        ValueError: if the record has no masks or a mask file cannot be read.
    """
    import cv2

    if not record.mask_paths:
        raise ValueError(
            f"Invalid value received for argument `record`. Expected a record with "
            f"mask_paths (a mask dataset). Received: record={record!r}"
        )
    width, height = size

    def load(path):
        image = cv2.imread(path, cv2.IMREAD_GRAYSCALE)
        if image is None:
            raise ValueError(f"Cannot read mask file {path}.")
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
