"""First principal component of a feature map (EigenCAM, eigen_smooth)."""

from keras import ops


def deterministic_sign(projection):
    """Flips each (B, ...) projection so that its largest-magnitude entry is >= 0.

    SVD and eigen solvers return a component up to its sign, which differs
    between LAPACK builds and backends. This is the convention of
    scikit-learn's `svd_flip` (which KernelPCA applies) and of
    pytorch-grad-cam's `get_2d_projection_with_sign_correction` (flip when
    |min| > |max|): the salient extreme of the map is positive.
    """
    flat = ops.reshape(projection, (projection.shape[0], -1))
    index = ops.argmax(ops.abs(flat), axis=1)
    extreme = ops.take_along_axis(flat, index[:, None], axis=1)
    sign = ops.where(extreme < 0.0, -1.0, 1.0)
    return projection * ops.reshape(sign, (-1,) + (1,) * (len(projection.shape) - 1))


def centered_positions(tensor):
    """(B, h, w, c) -> (B, h*w, c), each channel centred over the positions.

    NaNs become zeros first, as in pytorch-grad-cam's `get_2d_projection`.
    """
    batch, height, width, channels = tensor.shape
    tensor = ops.cast(tensor, "float32")
    tensor = ops.where(ops.isnan(tensor), ops.zeros_like(tensor), tensor)
    flat = ops.reshape(tensor, (batch, height * width, channels))
    return flat - ops.mean(flat, axis=1, keepdims=True)


def first_component(tensor):
    """Projection of (B, h, w, c) on its first principal component: (B, h, w).

    As pytorch-grad-cam's `get_2d_projection`: per image, the positions are
    the samples and the channels the features; after centring each channel,
    the map is `X v_1` with v_1 the first right singular vector of X, then
    signed by `deterministic_sign`.
    """
    batch, height, width, _ = tensor.shape
    flat = centered_positions(tensor)
    # X = U S V^T; X v_1 = u_1 s_1. (B, n, k), (B, k), (B, k, c)
    left, singular, _ = ops.svd(flat, full_matrices=False)
    projection = left[:, :, 0] * singular[:, :1]
    return deterministic_sign(ops.reshape(projection, (batch, height, width)))
