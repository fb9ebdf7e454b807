"""ROAD's noisy linear imputation: removed pixels become the average of their neighbours.

Rong et al., "A Consistent and Efficient Evaluation Strategy for Attribution
Methods", ICML 2022 (arXiv:2202.00449), code tleemann/road_evaluation
(`NoisyLinearImputer`), also in pytorch-grad-cam (metrics/road.py). Each
removed pixel's value x_i is the weighted mean of its 8 neighbours inside
the image (weight 1/6 for the 4 axial ones, 1/12 for the 4 diagonal ones),
known neighbours entering with their values and removed ones as unknowns:

    sum_{j in N(i)} w_j * x_i - sum_{j in N(i), removed} w_j * x_j
        = sum_{j in N(i), kept} w_j * v_j,

one sparse linear system per image for all channels; then Gaussian noise of
standard deviation `noise` is added to every imputed value. The matrix is
symmetric (opposite offsets have equal weights) and, when one pixel is kept,
positive definite, so it is factorised once (SuperLU with a symmetric
ordering) and solved for every channel.
"""

import numpy as np
from scipy import sparse
from scipy.sparse import linalg

# (row offset, column offset, weight): road_evaluation's `neighbors_weights`.
NEIGHBOURS = (
    (1, 1, 1 / 12),
    (0, 1, 1 / 6),
    (-1, 1, 1 / 12),
    (1, -1, 1 / 12),
    (0, -1, 1 / 6),
    (-1, -1, 1 / 12),
    (1, 0, 1 / 6),
    (-1, 0, 1 / 6),
)


def linear_system(image, removed):
    """The imputation system M x = b of one image, set up without loops over pixels.

    Args:
        image: float64 (H, W, C).
        removed: bool (H, W), True where the pixel is imputed.

    Returns:
        (M, b, flat_index): scipy CSC (n, n) matrix with the neighbour
        weights inside the image on the diagonal and `-w_j` for removed
        neighbours, float64 (n, C) right-hand side (weighted kept
        neighbours), and the int64 (n,) row-major pixel index of each
        unknown. n = removed.sum().
    """
    height, width = removed.shape
    flat_removed = removed.ravel()
    flat_index = np.flatnonzero(flat_removed)
    count = flat_index.size
    unknown_of_pixel = np.full(height * width, -1, np.int64)
    unknown_of_pixel[flat_index] = np.arange(count)
    y, x = np.divmod(flat_index, width)
    pixels = image.reshape(height * width, -1)
    diagonal = np.zeros(count)
    rhs = np.zeros((count, pixels.shape[1]))
    rows, cols, values = [], [], []
    for dy, dx, weight in NEIGHBOURS:
        ny, nx = y + dy, x + dx
        inside = (ny >= 0) & (ny < height) & (nx >= 0) & (nx < width)
        # Only neighbours inside the image count, in the weights too.
        diagonal[inside] += weight
        equation = np.flatnonzero(inside)
        neighbour = ny[inside] * width + nx[inside]
        is_unknown = flat_removed[neighbour]
        rows.append(equation[is_unknown])
        cols.append(unknown_of_pixel[neighbour[is_unknown]])
        values.append(np.full(int(is_unknown.sum()), -weight))
        # Each (equation, offset) pair occurs once: plain fancy-index update.
        rhs[equation[~is_unknown]] += weight * pixels[neighbour[~is_unknown]]
    rows.append(np.arange(count))
    cols.append(np.arange(count))
    values.append(diagonal)
    matrix = sparse.csc_matrix(
        (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
        shape=(count, count),
    )
    return matrix, rhs, flat_index


def impute(image, removed, noise, rng):
    """ROAD's noisy linear imputation of the removed pixels of one image.

    Args:
        image: float (H, W, C).
        removed: bool (H, W), True for the pixels to impute.
        noise: standard deviation of the Gaussian noise added to each
            imputed value (0: exact, deterministic).
        rng: a NumPy Generator (used only when noise > 0).

    Returns:
        float64 (H, W, C): the kept pixels unchanged, the removed ones
        imputed. When every pixel is removed no value is known and the
        system has every constant as a solution: the image's per-channel
        mean is used (then the noise), a choice of this package.
    """
    image = np.asarray(image, np.float64)
    height, width, channels = image.shape
    result = image.copy()
    flat = result.reshape(height * width, channels)
    count = int(removed.sum())
    if count == 0:
        return result
    if count == height * width:
        values = np.broadcast_to(image.mean(axis=(0, 1)), (count, channels)).copy()
        index = np.arange(count)
    else:
        matrix, rhs, index = linear_system(image, removed)
        # Symmetric positive definite: a symmetric ordering keeps the fill low.
        factor = linalg.splu(
            matrix, permc_spec="MMD_AT_PLUS_A", options={"SymmetricMode": True}
        )
        values = factor.solve(rhs).reshape(count, channels)
    if noise:
        values = values + noise * rng.standard_normal(values.shape)
    flat[index] = values
    return result
