"""The training scripts: thin absl programs on TensorFlow (tf.data, tf.distribute).

They run on Keras' TensorFlow backend only; on another backend, or without
TensorFlow, importing them stops with what to do (the library itself runs on
every backend; README, "Backends").
"""

import os

os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

import keras  # noqa: E402

from keras_dualsig import _backend  # noqa: E402

_backend.require_tensorflow("The training scripts (tf.data, tf.distribute)")
if keras.backend.backend() != "tensorflow":
    raise RuntimeError(
        "The training scripts run on Keras' TensorFlow backend (tf.data "
        "pipelines and tf.distribute); this Keras uses the "
        f"{keras.backend.backend()!r} backend. Run them with "
        "KERAS_BACKEND=tensorflow; models they save load on every backend."
    )
