"""Token sequences as feature maps: (B, N, D) -> (B, h, w, D).

A transformer's layer outputs tokens; a CAM needs a spatial map. As
pytorch-grad-cam's `reshape_transform`, the leading class / distillation /
register tokens are dropped and the patch tokens laid out on their grid.
The grid is inferred from the token count and the input's aspect ratio
(h * w patch tokens with h / w = H / W, after the fewest leading extra
tokens); a `reshape=` callable replaces the inference for anything else.
"""

import math

from keras import ops

from keras_dualsig._errors import invalid

# At most this many leading non-patch tokens (class, distillation, registers).
MAX_EXTRA_TOKENS = 8


def token_grid(num_tokens, image_size):
    """(extra, h, w): leading tokens to drop and the patch grid, or None.

    Args:
        num_tokens: N, the tokens of the layer (an int).
        image_size: (H, W) of the model's input.

    Returns:
        The fewest leading tokens `extra` (0 to MAX_EXTRA_TOKENS) such that
        the remaining `N - extra = h * w` tokens tile a grid with the input's
        aspect ratio, `h * W == w * H`; None if there is none.
    """
    height, width = image_size
    for extra in range(0, min(MAX_EXTRA_TOKENS, num_tokens - 1) + 1):
        count = num_tokens - extra
        rows = round(math.sqrt(count * height / width))
        for h in (rows - 1, rows, rows + 1):
            if h > 0 and count % h == 0 and h * width == (count // h) * height:
                return extra, h, count // h
    return None


def grid_reshape(num_tokens, image_size, layer):
    """A function (B, N, D) -> (B, h, w, D) for a token layer, or an error.

    Raises:
        ValueError: (Keras template, argument `reshape`) when the grid cannot
            be inferred from the token count and the input size.
    """
    grid = token_grid(num_tokens, image_size) if num_tokens else None
    if grid is None:
        raise invalid(
            "reshape",
            "a callable (B, N, D) -> (B, h, w, D) for this layer: its token "
            f"count does not tile a grid of the input's {tuple(image_size)} "
            f"aspect ratio after at most {MAX_EXTRA_TOKENS} leading tokens",
            received=f"None for layer {layer!r} with {num_tokens} tokens",
        )
    extra, rows, columns = grid

    def reshape(tokens):
        # (B, N, D) -> drop leading tokens -> (B, h, w, D)
        return ops.reshape(tokens[:, extra:], (-1, rows, columns, tokens.shape[-1]))

    reshape.grid = (extra, rows, columns)
    return reshape
