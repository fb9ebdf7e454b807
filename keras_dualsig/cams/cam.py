"""CAM: the class layer's weights are the channel weights."""

from keras import ops

from keras_dualsig._errors import invalid
from keras_dualsig.cams import _tokens
from keras_dualsig.cams._linear_head import class_weight_layer
from keras_dualsig.cams.base import BaseCAM


class CAM(BaseCAM):
    """Class activation mapping (Zhou et al., CVPR 2016, arXiv:1512.04150).

    For a head `GAP -> Dense` (or a 1x1 Conv2D before or after the pooling,
    or a transformer's mean over tokens `ops.mean(x, axis=1) -> Dense`)
    the logit is `z_k = mean_{i,j} sum_c W_ck A_cij + b_k`, so the channel
    weights are the class layer's kernel row `w_c = W_ck`. On the sigmoid
    branch the kernel of the branch's own layer (`<name>_sigmoid`) is read and
    rectified by default (Oh & Noh, BMVC 2025, arXiv:2511.05590). Gradient
    free; only the head's input can be explained. See `BaseCAM` for the call.

    Args:
        model: a DualSigmoidModel or a plain Keras classifier with a
            `GAP -> Dense` style head.
        layer: None or the head's input layer (`model.feature_layer`).
        reshape: see `BaseCAM` (token sequences -> grid).

    Raises:
        ValueError: (Keras template) for a head CAM cannot read (VGG's fc
            layers, several weighted layers, max pooling, a class-token head:
            use GradCAM), or a
            `layer` other than the head's input.

    Example:
    >>> maps = kd.cams.CAM(dual)(images)
    """

    uses_gradients = False

    def __init__(self, model, layer=None, *, reshape=None):
        super().__init__(model, layer, reshape=reshape)
        head = self.classifier.heads["softmax"]
        if _tokens.reads_class_token(head):
            raise invalid(
                "model",
                "a classifier whose head pools its feature map or tokens (CAM "
                "needs logit = mean over positions of sum_c W_c A_c; a "
                "class-token head reads one token, so no map of patch tokens "
                "sums to its logit: use kd.cams.GradCAM or another gradient "
                "method)",
                received=f"{model.name} with head {[x.name for x in head.layers]}",
            )
        if self.layer != self.feature_layer:
            raise invalid(
                "layer",
                f"None or the head's input {self.feature_layer!r} (CAM weights "
                "exist only there; use GradCAM for other layers)",
                layer,
            )
        self._class_layer = class_weight_layer(
            model.name, self.classifier.heads["softmax"]
        )

    def channel_weights(self, activations, gradients, request):
        layer = self.classifier.heads[request.branch].layers[self._class_layer]
        kernel = ops.cast(ops.convert_to_tensor(layer.kernel), "float32")
        # Dense (c, C) or 1x1 conv (1, 1, c, C) -> (C, c)
        kernel = ops.transpose(ops.reshape(kernel, (-1, kernel.shape[-1])))
        # (C, c) -> (B, c)
        return ops.take(kernel, request.class_index, axis=0)
