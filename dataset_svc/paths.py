"""Image paths as kept in the catalog: relative, POSIX, never climbing out.

``images/train/x.jpg`` stays as given (the folder structure is the user's); Windows
separators become ``/``; ``./`` and empty segments are dropped. The split of an image
defaults to the first folder named train / val / test (``valid``/``validation`` read as
val), else "".
"""

from __future__ import annotations

import re

MAX_PATH = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
SPLIT_FOLDERS = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}


class BadPath(ValueError):
    pass


def normalize(path: str, *, allow_empty: bool = False) -> str:
    """The catalog form of ``path``; raises BadPath saying what is wrong."""
    if _CONTROL.search(path):
        raise BadPath(f"{path!r} contains control characters")
    text = path.replace("\\", "/")
    if text.startswith("/") or re.match(r"^[A-Za-z]:/", text):
        raise BadPath(f"{path!r} is absolute: send paths relative to the folder uploaded")
    segments = [s for s in text.split("/") if s not in ("", ".")]
    if ".." in segments:
        raise BadPath(f"{path!r} climbs out of the folder with '..'")
    normalized = "/".join(segments)
    if not normalized and not allow_empty:
        raise BadPath("the path is empty")
    if len(normalized.encode()) > MAX_PATH:
        raise BadPath(f"{path[:60]!r}... is longer than {MAX_PATH} bytes")
    return normalized


def split_of(path: str) -> str:
    for folder in path.split("/")[:-1]:
        split = SPLIT_FOLDERS.get(folder.lower())
        if split:
            return split
    return ""
