"""Reading image and mask files with TensorFlow. Sizes are (height, width)."""

import numpy as np
import tensorflow as tf


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


def load_image(path, size):
    """Reads, decodes and resizes one image: uint8 (height, width, 3)."""
    image = tf.io.decode_image(
        tf.io.read_file(path), channels=3, expand_animations=False
    )
    # Antialiased bilinear resizing, like torchvision's Resize on PIL images;
    # rounding back to uint8 like PIL keeps cached images small.
    image = tf.image.resize(image, size, method="bilinear", antialias=True)
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    return tf.ensure_shape(image, (*size, 3))


def load_mask(path, size):
    """A mask file -> bool (height, width), foreground where the value is > 0."""
    mask = tf.io.decode_image(
        tf.io.read_file(path), channels=1, expand_animations=False
    )[..., 0]
    mask = resize_nearest_like_cv2(mask, size)
    return tf.ensure_shape(mask > 0, size)


def _first_error_line(error):
    message = getattr(error, "message", None) or str(error)
    return message.strip().splitlines()[0] if message.strip() else type(error).__name__


def decode_check(paths, channels):
    """Decodes every file with the pipeline's decoder, in parallel.

    Returns:
        ``(shapes, failures)``: index -> (height, width) of the decodable files,
        and index -> reason of the others.
    """
    if not paths:
        return {}, {}

    def shape_of(index, path):
        image = tf.io.decode_image(
            tf.io.read_file(path), channels=channels, expand_animations=False
        )
        return index, tf.shape(image)[:2]

    indices = np.arange(len(paths), dtype=np.int64)
    ds = tf.data.Dataset.from_tensor_slices((indices, np.array(paths)))
    ds = ds.map(shape_of, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    # Errors inside tf.data carry no file name; dropping the failing elements and
    # looking for the missing indices tells which files they were.
    ds = ds.ignore_errors().batch(4096)
    shapes = {}
    for batch_indices, batch_shapes in ds.as_numpy_iterator():
        for index, shape in zip(batch_indices, batch_shapes, strict=True):
            shapes[int(index)] = tuple(int(v) for v in shape)
    failures = {
        index: _decode_error(path, channels)
        for index, path in enumerate(paths)
        if index not in shapes
    }
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
