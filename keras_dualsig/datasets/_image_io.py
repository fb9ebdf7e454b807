"""Reading image and mask files with TensorFlow, with a pixel limit.

An image whose header declares more pixels than a limit is refused before it is
decoded (a 60,000 x 60,000 PNG of a few kilobytes would otherwise take 10 GB of
memory): `header_size` reads (height, width) from the first bytes of JPEG, PNG,
GIF, BMP and WebP files, in TensorFlow ops so that the same check runs in the
verification pass and inside the tf.data pipeline. Files of other formats are
checked after decoding. Sizes are (height, width).
"""

import numpy as np
import tensorflow as tf

# Enough bytes for every header field read below (WebP's VP8X reaches byte 29).
_HEADER_BYTES = 30


def _field(offset, count, big_endian=False):
    """A row of weights that turns header bytes into one unsigned integer."""
    row = np.zeros(_HEADER_BYTES)
    for i in range(count):
        row[offset + i] = 256.0 ** (count - 1 - i if big_endian else i)
    return row


# Integer fields as one matrix, so the parser stays a few dozen graph ops (each
# op costs tracing and optimisation time in every pipeline): rows are
# (height, width) pairs, in the order of `_FORMATS`.
_FIELDS = np.stack(
    [
        *(_field(20, 4, True), _field(16, 4, True)),  # PNG IHDR
        *(_field(8, 2), _field(6, 2)),  # GIF logical screen
        *(_field(22, 4), _field(18, 4)),  # BMP, BITMAPINFOHEADER and later
        *(_field(20, 2), _field(18, 2)),  # BMP, BITMAPCOREHEADER
        *(_field(28, 2), _field(26, 2)),  # WebP "VP8 " (14 bits used)
        *(_field(27, 3), _field(24, 3)),  # WebP "VP8X" (size - 1)
    ]
)
# (name, [(offset, signature), ...]); a file is of the first format that matches.
_FORMATS = (
    ("png", [(0, b"\x89PNG\r\n\x1a\n")]),
    ("gif", [(0, b"GIF8")]),
    ("bmp", [(0, b"BM")]),
    ("bmp_core", [(0, b"BM"), (14, b"\x0c\x00\x00\x00")]),
    ("webp_lossy", [(0, b"RIFF"), (8, b"WEBPVP8 ")]),
    ("webp_extended", [(0, b"RIFF"), (8, b"WEBPVP8X")]),
    ("webp_lossless", [(0, b"RIFF"), (8, b"WEBPVP8L")]),
)


def _signature_table():
    wanted = np.zeros((len(_FORMATS), _HEADER_BYTES), bool)
    values = np.zeros((len(_FORMATS), _HEADER_BYTES), np.int64)
    for row, (_, parts) in enumerate(_FORMATS):
        for offset, signature in parts:
            wanted[row, offset : offset + len(signature)] = True
            values[row, offset : offset + len(signature)] = list(signature)
    return wanted, values


_SIGNATURE_WANTED, _SIGNATURE_VALUES = _signature_table()


# Traced once per process rather than in every tf.data map that uses it.
@tf.function(input_signature=[tf.TensorSpec([], tf.string)])
def header_size(contents):
    """(height, width) that an image file declares, read without decoding it.

    Reads JPEG (via `tf.io.extract_jpeg_shape`), PNG, GIF, BMP and WebP.

    Args:
        contents: scalar string tensor, the file's bytes.

    Returns:
        int64 tensor (2,): (height, width), or (-1, -1) for a format not
        recognised here (decoders may still read it).
    """
    raw = tf.io.decode_raw(tf.strings.substr(contents, 0, _HEADER_BYTES), tf.uint8)
    head = tf.cast(tf.pad(raw, [[0, _HEADER_BYTES - tf.shape(raw)[0]]]), tf.int64)
    fields = tf.reshape(
        tf.cast(tf.linalg.matvec(_FIELDS, tf.cast(head, tf.float64)), tf.int64),
        (-1, 2),
    )  # (6, 2) candidate (height, width) pairs
    # BMP sizes are signed (a negative height means rows stored top-down).
    signed = tf.where(fields[2] >= 2**31, fields[2] - 2**32, fields[2])
    lossless = tf.stack(  # "VP8L": 14-bit width - 1, then height - 1, bit-packed
        [
            1 + head[22] // 64 + head[23] * 4 + (head[24] % 16) * 1024,
            1 + head[21] + (head[22] % 64) * 256,
        ]
    )
    candidates = tf.stack(
        [
            fields[0],
            fields[1],
            tf.abs(signed),
            fields[3],
            fields[4] % 2**14,
            fields[5] + 1,
            lossless,
            tf.constant([-1, -1], tf.int64),
        ]
    )  # (formats + 1, 2), the last row for "unknown"
    matches = tf.reduce_all(
        tf.logical_or(~_SIGNATURE_WANTED, tf.equal(head, _SIGNATURE_VALUES)), axis=1
    )
    # The BMP core header is the more specific match: it takes precedence.
    matches = tf.tensor_scatter_nd_update(
        matches, [[2]], [tf.logical_and(matches[2], tf.logical_not(matches[3]))]
    )
    chosen = tf.argmax(tf.concat([tf.cast(matches, tf.int32), [1]], axis=0))
    return tf.cond(
        tf.equal(head[0] * 256 + head[1], 0xFFD8),
        lambda: tf.cast(tf.io.extract_jpeg_shape(contents)[:2], tf.int64),
        lambda: tf.gather(candidates, chosen),
    )


def too_many_pixels(size, max_pixels):
    """Whether a (height, width) tensor exceeds `max_pixels` (None: no limit)."""
    if max_pixels is None:
        return tf.constant(False)
    size = tf.cast(size, tf.int64)
    return size[0] * size[1] > max_pixels


def decode(path, channels, max_pixels):
    """Reads and decodes one file, refusing more than `max_pixels` pixels.

    The header is checked before decoding and the decoded shape after it (for
    formats whose header is not read here). A refused file raises
    InvalidArgumentError naming the file, its size and the limit.

    Returns:
        uint8 tensor (height, width, channels).
    """
    contents = tf.io.read_file(path)
    message = (
        f"Image larger than max_pixels={max_pixels} (pass a larger max_pixels, "
        f"or None, to read it); file and (height, width):"
    )
    if max_pixels is not None:
        size = header_size(contents)
        check = tf.debugging.Assert(
            tf.logical_not(too_many_pixels(size, max_pixels)), [message, path, size]
        )
        with tf.control_dependencies([check]):
            contents = tf.identity(contents)
    image = tf.io.decode_image(contents, channels=channels, expand_animations=False)
    if max_pixels is not None:
        size = tf.shape(image)[:2]
        check = tf.debugging.Assert(
            tf.logical_not(too_many_pixels(size, max_pixels)), [message, path, size]
        )
        with tf.control_dependencies([check]):
            image = tf.identity(image)
    return image


def resize_nearest_like_cv2(image, size):
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


def load_image(path, size, max_pixels):
    """Reads, decodes and resizes one image: uint8 (height, width, 3)."""
    image = decode(path, 3, max_pixels)
    # Antialiased bilinear resizing, like torchvision's Resize on PIL images;
    # rounding back to uint8 like PIL keeps cached images small.
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return tf.ensure_shape(image, (*size, 3))


def load_mask(path, size, max_pixels):
    """A mask file -> bool (height, width), foreground where the value is > 0."""
    mask = decode(path, 1, max_pixels)[..., 0]
    mask = resize_nearest_like_cv2(mask, size)
    return tf.ensure_shape(mask > 0, size)


def _first_error_line(error):
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0] if message.strip() else type(error).__name__


def _oversized(size, max_pixels, decoded):
    height, width = size
    how = "decoded" if decoded else "declared by its header; not decoded"
    return (
        f"{height}x{width} (height x width) = {height * width:,} pixels ({how}) is "
        f"more than max_pixels={max_pixels:,}; pass a larger max_pixels, or None, "
        f"to read it"
    )


def decode_check(paths, channels, max_pixels):
    """Decodes every file with the pipeline's decoder, in parallel.

    Files whose header declares more than `max_pixels` pixels are not decoded.

    Returns:
        ``(shapes, failures)``: index -> (height, width) of the decodable files,
        and index -> reason of the others.
    """
    if not paths:
        return {}, {}

    def shape_of(index, path):
        contents = tf.io.read_file(path)
        declared = tf.cast(header_size(contents), tf.int32)
        refused = too_many_pixels(declared, max_pixels)
        shape = tf.cond(
            refused,
            lambda: declared,
            lambda: tf.shape(
                tf.io.decode_image(contents, channels=channels, expand_animations=False)
            )[:2],
        )
        return index, shape, tf.logical_not(refused)

    indices = np.arange(len(paths), dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((indices, np.array(paths)))
    ds = ds.map(shape_of, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    # Errors inside tf.data carry no file name; dropping the failing elements and
    # looking for the missing indices tells which files they were.
    ds = ds.ignore_errors().batch(4096)
    shapes, failures = {}, {}
    for batch in ds.as_numpy_iterator():
        for index, shape, decoded in zip(*batch, strict=True):
            shape = tuple(int(v) for v in shape)
            if max_pixels is not None and shape[0] * shape[1] > max_pixels:
                failures[int(index)] = _oversized(shape, max_pixels, decoded)
            else:
                shapes[int(index)] = shape
    for index, path in enumerate(paths):
        if index not in shapes and index not in failures:
            failures[index] = _decode_error(path, channels)
    return shapes, failures


def _decode_error(path, channels):
    """TensorFlow's reason for not decoding a file, from one eager attempt."""
    try:
        tf.io.decode_image(
            tf.io.read_file(path), channels=channels, expand_animations=False
        )
    except (tf.errors.OpError, ValueError) as e:
        return _first_error_line(e)
    return "decoding failed inside tf.data"
