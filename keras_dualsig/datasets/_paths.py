"""Paths named in metadata files: what they may look like and where they may lead.

Metadata files name images and masks by paths relative to a root folder. A path
that is absolute, climbs out with "..", or holds control characters is refused
as text (`path_error`); a path naming no file is refused on disk (`RootGuard`).
"""

import ntpath
import os
import posixpath
import unicodedata

_BYTE_ORDER_MARK = "\ufeff"


def path_error(path, what, root):
    """Why `path` may not name a file inside `root`, or None.

    Args:
        path: the path as read from a metadata file (a str).
        what: how messages call the path ("image_id", "mask path").
        root: how messages call the root ("data_root", "mask_root").

    Returns:
        None for a usable relative path, else the reason as a phrase.
    """
    if not path:
        return f"empty {what}"
    odd = next(
        (c for c in path if unicodedata.category(c) == "Cc" or c == _BYTE_ORDER_MARK),
        None,
    )
    if odd is not None:
        return f"{what} {path!r} contains the control character U+{ord(odd):04X}"
    if posixpath.isabs(path) or ntpath.isabs(path) or path.startswith("~"):
        return f"{what} {path!r} is absolute; it must be relative to {root}"
    if ".." in path.replace("\\", "/").split("/"):
        return f"{what} {path!r} climbs out of {root} with '..'"
    return None


class RootGuard:
    """Finds files named relative to a root.

    Args:
        root: the folder the paths are relative to.
        argument: the argument naming the root, for messages ("data_root").
    """

    def __init__(self, root, argument):
        self.root = os.path.abspath(os.fspath(root))
        self.argument = argument

    def locate(self, relative, what):
        """``(absolute path, problem or None)`` of a file named by `relative`."""
        path = os.path.join(self.root, relative)
        if not os.path.isfile(path):
            return path, f"{what} {relative!r} not found at {path}"
        return path, None
