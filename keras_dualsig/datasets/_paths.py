"""Paths named in metadata files: what they may look like and where they may lead.

Metadata files name images and masks by paths relative to a root folder. A path
that is absolute, climbs out with "..", or holds control characters is refused
as text (`path_error`); a path that is fine as text but resolves, through a
symbolic link, to a file outside the root is refused on disk (`RootGuard`)
unless the user opts in.
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
    """Finds files named relative to a root and refuses those that leave it.

    Symbolic links are resolved: a file whose real path lies outside the real
    path of the root (a link to /etc/passwd, or a linked sub-folder on another
    disk) is refused unless ``allow_outside`` is set. The root itself may be a
    link. Real paths of folders are cached, so a split of a million images
    costs about two `stat` calls per file.

    Args:
        root: the folder the paths are relative to.
        argument: the argument naming the root, for messages ("data_root").
        allow_outside: accept files whose real path leaves the root.
    """

    def __init__(self, root, argument, allow_outside=False):
        self.root = os.path.abspath(os.fspath(root))
        self.argument = argument
        self.allow_outside = allow_outside
        self._real_root = os.path.realpath(self.root)
        self._real_folders = {}

    def locate(self, relative, what):
        """``(absolute path, problem or None)`` of a file named by `relative`."""
        path = os.path.join(self.root, relative)
        if not self.allow_outside:
            real = self._real_path(path)
            if os.path.commonpath([self._real_root, real]) != self._real_root:
                return path, (
                    f"{what} {relative!r} resolves to {real}, outside "
                    f"{self.argument} ({self._real_root}); pass "
                    f"allow_outside_root=True to read files behind such links"
                )
        if not os.path.exists(path):
            return path, f"{what} {relative!r} not found at {path}"
        if not os.path.isfile(path):
            return path, f"{what} {relative!r} at {path} is not a file"
        return path, None

    def _real_path(self, path):
        folder, name = os.path.split(path)
        real_folder = self._real_folders.get(folder)
        if real_folder is None:
            real_folder = self._real_folders[folder] = os.path.realpath(folder)
        candidate = os.path.join(real_folder, name)
        return os.path.realpath(candidate) if os.path.islink(candidate) else candidate
