"""NumPy (float64) re-derivations of the CAM methods, for golden tests.

The model is fixed and tiny, so that everything is written out by hand:
`x (B, 8, 8, 2) -> inner = relu(1x1 conv, 3) -> 2x2 average pool ->
features = tanh(1x1 conv, 5) -> GAP -> Dense(4)` (softmax head `w, b`,
sigmoid head `ws, bs`). The tanh makes the logit curved in the inner layer's
activations, so ShapleyCAM's Hessian-vector product is not zero there.
Formulas follow pytorch-grad-cam / torchcam as documented in each method's
docstring; none of this imports keras_dualsig.
"""

import cv2
import numpy as np
from sklearn.decomposition import KernelPCA

SIZE, IN_CHANNELS, INNER, FEATURES, CLASSES = 8, 2, 3, 5, 4
MASK_EPSILON = 1e-8


def weights(seed):
    rng = np.random.default_rng(seed)
    return {
        "k1": rng.normal(0, 1, (IN_CHANNELS, INNER)),
        "b1": rng.normal(0.2, 0.1, INNER),
        "k2": rng.normal(0, 1.0, (INNER, FEATURES)),
        "b2": rng.normal(0, 0.3, FEATURES),
        "softmax": (rng.normal(0, 1, (FEATURES, CLASSES)), rng.normal(0, 0.1, CLASSES)),
        "sigmoid": (rng.normal(0, 1, (FEATURES, CLASSES)), rng.normal(0, 0.1, CLASSES)),
    }


# ---------------------------------------------------------------- forward


def _pool(a):
    batch, height, width, channels = a.shape
    return a.reshape(batch, height // 2, 2, width // 2, 2, channels).mean(axis=(2, 4))


def _unpool(g):
    """Adjoint of `_pool`: each input gets a quarter of its output's value."""
    return np.repeat(np.repeat(g, 2, axis=1), 2, axis=2) / 4.0


def inner(p, x):
    return np.maximum(x @ p["k1"] + p["b1"], 0.0)


def features_from_inner(p, a):
    return np.tanh(_pool(a) @ p["k2"] + p["b2"])


def logits_from_features(p, f, branch):
    kernel, bias = p[branch]
    return f.mean(axis=(1, 2)) @ kernel + bias


def logits_from(p, layer, a, branch):
    """Logits (N, C) with the activations of `layer` replaced by `a`."""
    f = features_from_inner(p, a) if layer == "inner" else a
    return logits_from_features(p, f, branch)


def activations(p, x, layer):
    a = inner(p, x)
    return a if layer == "inner" else features_from_inner(p, a)


def logits(p, x, branch):
    return logits_from(p, "inner", inner(p, x), branch)


# ------------------------------------------------------------ derivatives


def _score_vector(p, branch, scores):
    """(B, FEATURES): d score / d GAP features for per-image class weights.

    `scores` (B, C) are the coefficients of each logit in the score (a one-hot
    row for a single logit).
    """
    kernel, _ = p[branch]
    return scores @ kernel.T


def gradients(p, x, layer, branch, coefficients):
    """d (sum_j coefficients_j z_j) / dA, (B, h, w, c)."""
    vector = _score_vector(p, branch, coefficients)  # (B, F)
    f = features_from_inner(p, inner(p, x))
    hw = f.shape[1] * f.shape[2]
    g_f = np.broadcast_to(vector[:, None, None, :] / hw, f.shape)
    if layer == "features":
        return np.array(g_f)
    g_u = g_f * (1.0 - f**2)
    return _unpool(g_u @ p["k2"].T)


def hessian_vector(p, x, layer, branch, coefficients):
    """H A of the score with respect to A (zero at the linear head's input)."""
    a = activations(p, x, layer)
    if layer == "features":
        return np.zeros_like(a)
    vector = _score_vector(p, branch, coefficients)
    f = features_from_inner(p, a)
    hw = f.shape[1] * f.shape[2]
    second = -2.0 * f * (1.0 - f**2)  # tanh''
    direction = _pool(a) @ p["k2"]  # d u along v = A
    h_u = vector[:, None, None, :] / hw * second * direction
    return _unpool(h_u @ p["k2"].T)


def one_hot(class_index):
    return np.eye(CLASSES)[class_index]


# ----------------------------------------------------------- projections


def _signed(projection):
    flat = projection.reshape(-1)
    return -projection if flat[np.argmax(np.abs(flat))] < 0 else projection


def first_component(t):
    """pytorch-grad-cam get_2d_projection, largest-|.| entry positive."""
    out = []
    for a in t:
        flat = a.reshape(-1, a.shape[-1])
        flat = flat - flat.mean(axis=0)
        _, _, vt = np.linalg.svd(flat, full_matrices=True)
        out.append(_signed((flat @ vt[0]).reshape(a.shape[:2])))
    return np.array(out)


def kernel_component(t, kernel="sigmoid", gamma=None):
    """pytorch-grad-cam get_2d_projection_kernel (scikit-learn KernelPCA)."""
    out = []
    for a in t:
        flat = a.reshape(-1, a.shape[-1])
        flat = flat - flat.mean(axis=0)
        projection = KernelPCA(n_components=1, kernel=kernel, gamma=gamma)
        out.append(projection.fit_transform(flat)[:, 0].reshape(a.shape[:2]))
    return np.array(out)


# ---------------------------------------------------------------- methods


def _upsample_align_corners(maps, size):
    def axis(n_in, n_out):
        src = np.arange(n_out) * ((n_in - 1) / (n_out - 1))
        low = np.minimum(np.floor(src).astype(int), n_in - 1)
        high = np.minimum(low + 1, n_in - 1)
        m = np.zeros((n_out, n_in))
        m[np.arange(n_out), low] += 1 - (src - low)
        m[np.arange(n_out), high] += src - low
        return m

    return np.einsum(
        "Hh,nhw,Ww->nHW", axis(maps.shape[1], size), maps, axis(maps.shape[2], size)
    )


def score_masks(a):
    """(B, h, w, c) -> (B, c, H, W) Score-CAM masks (pytorch-grad-cam)."""
    out = []
    for image in a:
        up = _upsample_align_corners(np.moveaxis(image, -1, 0), SIZE)
        low = up.min(axis=(1, 2), keepdims=True)
        high = up.max(axis=(1, 2), keepdims=True)
        out.append((up - low) / (high - low + MASK_EPSILON))
    return np.array(out)


def _softmax(v):
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _masked_logits(p, x, masks, branch, class_index, scale=1.0):
    """(B, c): z_k(scale * M_c * x)."""
    scores = np.zeros(masks.shape[:2])
    for b in range(x.shape[0]):
        masked = scale * masks[b][..., None] * x[b][None]
        scores[b] = logits(p, masked, branch)[:, class_index[b]]
    return scores


def raw_map(method, p, x, layer, branch, class_index, positive, **options):
    """The map before ReLU / min-max / resize, (B, h, w)."""
    a = activations(p, x, layer)
    coefficients = one_hot(class_index)
    weighted = None
    if method == "finercam":
        z = logits(p, x, branch)
        own = z[np.arange(len(z)), class_index]
        distance = np.abs(z - own[:, None])
        distance[np.arange(len(z)), class_index] = np.inf
        similar = np.argsort(distance, axis=1)[:, :3]
        coefficients = np.zeros_like(z)
        for b in range(len(z)):
            coefficients[b, class_index[b]] += 3.0
            coefficients[b, similar[b]] -= 1.0
    g = gradients(p, x, layer, branch, coefficients)
    if method == "gradcamelementwise":
        return np.maximum(g * a, 0).sum(axis=-1)
    if method == "eigencam":
        return first_component(a)
    if method == "eigengradcam":
        return first_component(g * a)
    if method == "kpcacam":
        return kernel_component(a)
    if method == "fem":
        th = a.mean(axis=(1, 2), keepdims=True) + 2.0 * a.std(
            axis=(1, 2), keepdims=True
        )
        above = a > th
        return (above.mean(axis=(1, 2), keepdims=True) * a).sum(axis=-1)
    if method in ("gradcam", "finercam"):
        weighted = g.mean(axis=(1, 2))
    elif method == "shapleycam":
        h = hessian_vector(p, x, layer, branch, coefficients)
        weighted = (g - 0.5 * h).mean(axis=(1, 2))
    elif method == "randomcam":
        rng = np.random.default_rng(options.get("seed", 0))
        weighted = rng.uniform(-1.0, 1.0, (a.shape[0], a.shape[-1]))
    elif method == "ablationcam":
        base = logits_from(p, layer, a, branch)[np.arange(len(a)), class_index]
        weighted = np.zeros((a.shape[0], a.shape[-1]))
        for c in range(a.shape[-1]):
            ablated = a.copy()
            ablated[..., c] = 0.0
            z = logits_from(p, layer, ablated, branch)[np.arange(len(a)), class_index]
            weighted[:, c] = (base - z) / base
    elif method == "scorecam":
        weighted = _softmax(_masked_logits(p, x, score_masks(a), branch, class_index))
    elif method == "sscam":
        n, std = options.get("num_samples", 35), options.get("std", 2.0)
        noise = np.random.default_rng(options.get("seed", 0)).normal(
            0, std, (n, SIZE, SIZE)
        )
        masks, total = score_masks(a), 0.0
        for d in noise:
            total = total + _masked_logits(p, x, masks + d, branch, class_index)
        weighted = _softmax(total / n)
    elif method == "iscam":
        n = options.get("num_samples", 10)
        masks, total, scale = score_masks(a), 0.0, 0.0
        for i in range(n):
            scale += (i + 1) / n
            total = total + _masked_logits(p, x, masks, branch, class_index, scale)
        weighted = _softmax(total / n)
    else:
        raise ValueError(method)
    if positive:
        weighted = np.maximum(weighted, 0.0)
    if options.get("eigen_smooth"):
        return first_component(a * weighted[:, None, None, :])
    return np.einsum("bhwc,bc->bhw", a, weighted)


# ------------------------------------------------------ post-processing


def min_max(maps):
    low = maps.min(axis=(1, 2), keepdims=True)
    high = maps.max(axis=(1, 2), keepdims=True)
    span = high - low
    varies = span > 1e-6 * np.maximum(np.abs(low), np.abs(high))
    return np.where(varies, (maps - low) / np.where(varies, span, 1.0), 0.0)


def postprocess(maps):
    """ReLU, min-max, cv2 bilinear resize to SIZE, min-max."""
    maps = min_max(np.maximum(maps, 0))
    resized = np.stack(
        [
            cv2.resize(
                m.astype(np.float32), (SIZE, SIZE), interpolation=cv2.INTER_LINEAR
            )
            for m in maps
        ]
    ).astype(np.float64)
    return min_max(resized)


def aug_smooth(method, p, x, layer, branch, class_index, positive):
    """pytorch-grad-cam aug_smooth: {id, hflip} x {0.9, 1, 1.1}, flipped back, mean."""
    total = 0.0
    for flip in (False, True):
        for factor in (0.9, 1.0, 1.1):
            augmented = (x[:, :, ::-1] if flip else x) * factor
            maps = postprocess(
                raw_map(method, p, augmented, layer, branch, class_index, positive)
            )
            total = total + (maps[:, :, ::-1] if flip else maps)
    return total / 6.0


def multi_layer(maps_per_layer):
    """pytorch-grad-cam aggregate_multi_layers of post-processed maps."""
    return min_max(np.maximum(np.mean(maps_per_layer, axis=0), 0))
