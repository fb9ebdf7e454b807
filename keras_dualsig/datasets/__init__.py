"""Datasets: wsolevaluation-format tf.data pipelines and the embedded default.

- `load_wsol` reads CUB, Stanford Cars, ImageNet or OpenImages in the metadata
  format of clovaai/wsolevaluation; `read_wsol_metadata` gives the original
  ground truth per image for evaluation scripts.
- `wsol_format` is the format itself: one reader per metadata file, their
  cross-check, `write_wsol_metadata`, `WSOLRecord`, `rescale_boxes`, `read_mask`.
- `cluttered_mnist` builds the embedded default dataset (real MNIST digits on
  cluttered canvases, exact boxes and masks) in the same format, offline.
"""

from keras_dualsig.datasets import wsol_format
from keras_dualsig.datasets.cluttered_mnist import (
    ClutteredMNISTInfo,
    cluttered_mnist,
)
from keras_dualsig.datasets.wsol import (
    WSOL_DATASETS,
    WSOL_LOCALIZATION,
    load_wsol,
    read_wsol_metadata,
)
from keras_dualsig.datasets.wsol_format import (
    WSOLMetadata,
    WSOLRecord,
    read_mask,
    rescale_boxes,
    write_wsol_metadata,
)

__all__ = [
    "WSOL_DATASETS",
    "WSOL_LOCALIZATION",
    "ClutteredMNISTInfo",
    "WSOLMetadata",
    "WSOLRecord",
    "cluttered_mnist",
    "load_wsol",
    "read_mask",
    "read_wsol_metadata",
    "rescale_boxes",
    "write_wsol_metadata",
    "wsol_format",
]
