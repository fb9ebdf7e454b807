"""Token sequences as feature maps: (B, N, D) -> (B, h, w, D).

A transformer's layer outputs tokens; a CAM needs a spatial map. As
pytorch-grad-cam's `reshape_transform`, the leading class / distillation /
register tokens are dropped and the patch tokens laid out on their grid.

The grid comes, in this order, from a `reshape=` callable given by the user;
from the patch grid of an enclosing backbone that knows it (keras-hub's ViT,
DeiT, DINOv2 and Swin backbones have `image_shape` and `patch_size`; Swin's
later stages halve it, so the grid and its halvings are tried); or from the
token count and the input's aspect ratio (h * w patch tokens with
h / w = H / W, after the fewest leading extra tokens). Anything else is
refused, naming `reshape`.

A class-token head (`x[:, 0] -> Dense`) reads only the class token, and every
layer after the last token-mixing one (attention) acts per token: there the
gradient is zero on every patch token and each map would be blank. The
default layer of such a head is therefore the input of the last token-mixing
layer (pytorch-grad-cam's `blocks[-1].norm1` for a timm ViT), found by
walking back through per-token layers (`mixing_input`).
"""

import math

import keras
from keras import ops

from keras_dualsig import _keras_internals
from keras_dualsig._errors import invalid
from keras_dualsig._head import TokenPooling

# At most this many leading non-patch tokens (class, distillation, registers)
# where a backbone states its patch grid; where only the token count is
# known, at most FALLBACK_EXTRA_TOKENS (class and distillation token): with
# more, counts such as 32 = 7 + 5 * 5 would be read as a grid they are not.
MAX_EXTRA_TOKENS = 8
FALLBACK_EXTRA_TOKENS = 2

# Layers that act on each token alone (the last axis), so that gradients do
# not move between tokens through them.
_PER_TOKEN = (
    keras.layers.LayerNormalization,
    keras.layers.Dropout,
    keras.layers.Activation,
    keras.layers.Identity,
    keras.layers.Dense,
    keras.layers.EinsumDense,
)


def token_grid(num_tokens, image_size):
    """(extra, h, w): leading tokens to drop and the patch grid, or None.

    Args:
        num_tokens: N, the tokens of the layer (an int).
        image_size: (H, W) of the model's input.

    Returns:
        The fewest leading tokens `extra` (0 to FALLBACK_EXTRA_TOKENS) such that
        the remaining `N - extra = h * w` tokens tile a grid with the input's
        aspect ratio, `h * W == w * H`; None if there is none.
    """
    height, width = image_size
    if not height or not width:
        return None
    for extra in range(0, min(FALLBACK_EXTRA_TOKENS, num_tokens - 1) + 1):
        count = num_tokens - extra
        rows = round(math.sqrt(count * height / width))
        for h in (rows - 1, rows, rows + 1):
            if h > 0 and count % h == 0 and h * width == (count // h) * height:
                return extra, h, count // h
    return None


def known_grid(num_tokens, owners):
    """(extra, h, w) from the patch grid of a backbone that knows it, or None.

    Args:
        num_tokens: N.
        owners: the explained layer and the models enclosing it, innermost
            first; the first with `image_shape` (H, W, ...) and `patch_size`
            (channels_last) gives the grid (H // p, W // p).

    Returns:
        The grid with `extra = N - h * w` leading tokens when
        `0 <= extra <= MAX_EXTRA_TOKENS`, else the halving of the grid
        (Swin's stages) with exactly N tokens; None when no owner knows a
        grid or none fits.
    """
    for owner in owners:
        shape = getattr(owner, "image_shape", None)
        patch = getattr(owner, "patch_size", None)
        if shape is None or patch is None:
            continue
        if getattr(owner, "data_format", "channels_last") != "channels_last":
            return None
        patch = (patch, patch) if isinstance(patch, int) else tuple(patch)
        if shape[0] is None or shape[1] is None:
            return None
        rows, columns = shape[0] // patch[0], shape[1] // patch[1]
        extra = num_tokens - rows * columns
        if 0 <= extra <= MAX_EXTRA_TOKENS:
            return extra, rows, columns
        # Swin's patch merging halves the grid; its stages have no extras.
        while rows > 1 and columns > 1:
            rows, columns = rows // 2, columns // 2
            if rows * columns == num_tokens:
                return 0, rows, columns
        return None
    return None


def grid_reshape(num_tokens, image_size, layer, owners=()):
    """A function (B, N, D) -> (B, h, w, D) for a token layer, or an error.

    Args:
        num_tokens: N (None when unknown).
        image_size: (H, W) of the model's input.
        layer: the layer's name (for the message).
        owners: see `known_grid`.

    Raises:
        ValueError: (Keras template, argument `reshape`) when the grid cannot
            be inferred from a backbone, the token count and the input size.
    """
    grid = None
    if num_tokens:
        grid = known_grid(num_tokens, owners) or token_grid(num_tokens, image_size)
    if grid is None:
        raise invalid(
            "reshape",
            "a callable (B, N, D) -> (B, h, w, D) for this layer: its token "
            f"count does not tile a grid of the input's {tuple(image_size)} "
            f"aspect ratio after at most {FALLBACK_EXTRA_TOKENS} leading tokens, "
            "and no enclosing backbone states its patch grid",
            received=f"None for layer {layer!r} with {num_tokens} tokens",
        )
    extra, rows, columns = grid

    def reshape(tokens):
        # (B, N, D) -> drop leading tokens -> (B, h, w, D)
        return ops.reshape(tokens[:, extra:], (-1, rows, columns, tokens.shape[-1]))

    reshape.grid = (extra, rows, columns)
    return reshape


def check_reshape(reshape, shape, layer):
    """Validates a user `reshape` on zeros shaped like the layer's output.

    Returns:
        `reshape`, once it maps (1, *shape[1:]) to a rank-4 (1, h, w, D).

    Raises:
        ValueError: (Keras template) if it is not callable or returns
            anything else.
    """
    if not callable(reshape):
        raise invalid(
            "reshape", "None or a callable (B, N, D) -> (B, h, w, D)", reshape
        )
    if any(size is None for size in shape[1:]):
        return reshape  # Checked on the first batch's shapes only.
    out = reshape(ops.zeros((1, *shape[1:]), "float32"))
    out_shape = tuple(getattr(out, "shape", ()))
    if len(out_shape) != 4 or out_shape[0] != 1:
        raise invalid(
            "reshape",
            "a callable (B, N, D) -> (B, h, w, D) (rank 4, batch kept)",
            received=f"a callable that maps layer {layer!r}'s "
            f"{tuple(shape)} to {out_shape}",
        )
    return reshape


def reads_class_token(head):
    """Whether a head pools its tokens by taking one token (`x[:, i]`)."""
    return any(
        isinstance(layer, TokenPooling) and layer.mode == "index"
        for layer in head.layers
    )


def _is_per_token(layer, node):
    if len(node.input_tensors) != 1:
        return False
    if isinstance(layer, keras.layers.LayerNormalization):
        axis = layer.axis if isinstance(layer.axis, list | tuple) else [layer.axis]
        return list(axis) in ([-1], [len(node.input_tensors[0].shape) - 1])
    return isinstance(layer, _PER_TOKEN)


def _through_per_token(tensor, source):
    """Whether `tensor` is computed from `source` by per-token layers only."""
    for _ in range(64):
        if tensor is source:
            return True
        layer, node = _keras_internals.producer(tensor)
        if layer is None or node.is_input or not _is_per_token(layer, node):
            return False
        tensor = node.input_tensors[0]
    return False


def _depends_on(tensor, source, limit=512):
    """Whether `tensor` is computed from `source` (a bounded graph search)."""
    stack, seen = [tensor], set()
    while stack and len(seen) < limit:
        current = stack.pop()
        if current is source:
            return True
        if id(current) in seen:
            continue
        seen.add(id(current))
        layer, node = _keras_internals.producer(current)
        if layer is not None and not node.is_input:
            stack.extend(node.input_tensors)
    return False


def _residual_branch(inputs):
    """Where the walk continues at a residual `Add([x, f(x)])`, or None.

    At `x` when f acts per token (an MLP block: the mixing is before x);
    inside f when f mixes tokens (an attention block: f holds the mixing).
    """
    for skip, branch in ((inputs[0], inputs[1]), (inputs[1], inputs[0])):
        if _through_per_token(branch, skip):
            return skip
    for skip, branch in ((inputs[0], inputs[1]), (inputs[1], inputs[0])):
        if _depends_on(branch, skip):
            return branch
    return None


def mixing_input(trunk):
    """Name of the layer whose output enters the trunk's last token mixing.

    Walks back from the trunk's output (into nested Functional models)
    through per-token layers and residual sums (`Add([x, f(x)])`: on to x
    when f acts per token, into f otherwise) until a layer that mixes tokens
    (attention, or an opaque encoder layer); returns the name of the layer
    that produced that layer's (first) input, or None when the walk finds
    none (a graph input, a multi-input layer it cannot read).
    """
    tensor = trunk.outputs[0]
    outer = []  # (nested model, its node) to step back out through.
    for _ in range(1000):
        layer, node = _keras_internals.producer(tensor)
        if layer is None:
            return None
        if node.is_input:
            if not outer:
                return None
            model, model_node = outer.pop()
            position = [id(t) for t in model.inputs].index(id(tensor))
            tensor = model_node.input_tensors[position]
            continue
        if isinstance(layer, keras.Model) and hasattr(layer, "outputs"):
            if len(layer.outputs) != 1:
                return None
            outer.append((layer, node))
            tensor = layer.outputs[0]
            continue
        if _is_per_token(layer, node):
            tensor = node.input_tensors[0]
            continue
        inputs = node.input_tensors
        if isinstance(layer, keras.layers.Add) and len(inputs) == 2:
            branch = _residual_branch(inputs)
            if branch is not None:
                tensor = branch
                continue
        if not inputs or len(inputs[0].shape) != 3:
            return None
        source, _ = _keras_internals.producer(inputs[0])
        return None if source is None else source.name
    return None
