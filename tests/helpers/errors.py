"""The assertion every error test shares: the Keras error template."""

import contextlib

import pytest


@contextlib.contextmanager
def raises_invalid(argument, *fragments):
    """Expects a ValueError in the Keras template naming `argument`.

    The message must start with "Invalid value received for argument
    `argument`.", show "Received: argument=" and contain every fragment.

    Example:
    >>> from helpers.errors import raises_invalid
    >>> with raises_invalid("batch_size", "positive int"):
    ...     cam(images, batch_size=0)
    """
    with pytest.raises(ValueError) as info:
        yield info
    message = str(info.value)
    assert message.startswith(f"Invalid value received for argument `{argument}`."), (
        message
    )
    assert f"Received: {argument}=" in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
