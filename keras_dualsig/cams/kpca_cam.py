"""KPCA-CAM: kernel principal component of the feature map."""

from keras import ops

from keras_dualsig._errors import invalid
from keras_dualsig.cams._pca import centered_positions, deterministic_sign
from keras_dualsig.cams.base import BaseCAM

KERNELS = ("sigmoid", "rbf", "linear", "poly", "cosine")


class KPCACAM(BaseCAM):
    """KPCA-CAM (Karmani et al., arXiv:2410.00267), as pytorch-grad-cam's `KPCA_CAM`.

    Per image, the h*w positions of A (each channel centred over the
    positions) are embedded by scikit-learn's `KernelPCA(n_components=1,
    kernel, gamma)`: the kernel matrix K (n x n, n = h*w) is double-centred,
    `Kc = K - 1K - K1 + 1K1` (1 = ones / n), and the map is `sqrt(l) a` with
    (l, a) the largest eigenpair of Kc, signed so that its largest-magnitude
    entry is positive (scikit-learn's `svd_flip`). Kernels and defaults as
    scikit-learn: sigmoid `tanh(gamma x.y + 1)` (pytorch-grad-cam's default),
    rbf `exp(-gamma |x - y|^2)`, poly `(gamma x.y + 1)^3`, linear `x.y`,
    cosine; gamma None means `1 / c`.

    Class agnostic: `branch=` is accepted and harmless; `positive_weights`
    and `eigen_smooth` have no effect. Costs an n x n eigendecomposition per
    image. See `BaseCAM` for the call.

    Args:
        model: a DualSigmoidModel or a plain Keras classifier.
        layer: feature layer name(s); default the head's input.
        reshape: the token-grid layout of a transformer layer, as `BaseCAM`.
        kernel: one of "sigmoid", "rbf", "linear", "poly", "cosine".
        gamma: None or a positive float (kernel coefficient).

    Example:
    >>> maps = kd.cams.KPCACAM(dual)(images)
    """

    uses_gradients = False

    def __init__(
        self, model, layer=None, *, kernel="sigmoid", gamma=None, reshape=None
    ):
        if kernel not in KERNELS:
            raise invalid("kernel", f"one of {list(KERNELS)}", kernel)
        if gamma is not None and (
            isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or gamma <= 0
        ):
            raise invalid("gamma", "None or a positive number", gamma)
        super().__init__(model, layer, reshape=reshape)
        self.kernel = kernel
        self.gamma = gamma

    def _kernel_matrix(self, flat):
        """(B, n, c) -> (B, n, n)."""
        gamma = 1.0 / flat.shape[-1] if self.gamma is None else float(self.gamma)
        dots = ops.einsum("bnc,bmc->bnm", flat, flat)
        if self.kernel == "sigmoid":
            return ops.tanh(gamma * dots + 1.0)
        if self.kernel == "poly":
            return ops.power(gamma * dots + 1.0, 3)
        if self.kernel == "linear":
            return dots
        squares = ops.sum(ops.square(flat), axis=-1)
        if self.kernel == "rbf":
            distances = squares[:, :, None] + squares[:, None, :] - 2.0 * dots
            return ops.exp(-gamma * ops.maximum(distances, 0.0))
        norms = ops.sqrt(squares)
        norms = ops.where(norms > 0, norms, 1.0)
        return dots / (norms[:, :, None] * norms[:, None, :])

    def activation_map(self, activations, gradients, request):
        batch, height, width, _ = activations.shape
        flat = centered_positions(activations)
        kernel = self._kernel_matrix(flat)
        row = ops.mean(kernel, axis=2, keepdims=True)
        column = ops.mean(kernel, axis=1, keepdims=True)
        total = ops.mean(kernel, axis=(1, 2), keepdims=True)
        centred = kernel - row - column + total
        centred = 0.5 * (centred + ops.transpose(centred, (0, 2, 1)))
        # eigh: ascending eigenvalues; the last pair is the largest.
        values, vectors = ops.eigh(centred)
        top = ops.maximum(values[:, -1:], 0.0)
        projection = vectors[:, :, -1] * ops.sqrt(top)
        return deterministic_sign(ops.reshape(projection, (batch, height, width)))
