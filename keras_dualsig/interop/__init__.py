"""Interoperability with other CAM libraries (tf-keras-vis).

`keras_dualsig.interop.tf_keras_vis` does not import tf_keras_vis itself, so
this package works without it installed.
"""

from keras_dualsig.interop import tf_keras_vis

__all__ = ["tf_keras_vis"]
