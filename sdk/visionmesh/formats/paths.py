"""Relative paths inside a dataset: safety checks, splits named by folders, YOLO label paths."""

from __future__ import annotations

import posixpath
import re

from .problems import show

SPLIT_NAMES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".mpo", ".jfif"}
)

_DRIVE = re.compile(r"^[A-Za-z]:")
# A split name with the suffixes datasets put after it: ``train2017``, ``val_2014``,
# ``test-dev2017``, ``valid``.
_SPLIT_WORD = re.compile(
    r"^(train|training|val|valid|validation|test|testing)(?:[-_]?dev)?(?:[-_]?\d{2,4})?$"
)
# Values that say "no split" (the v0.9 tool writes "none").
NO_SPLIT = frozenset({"", "none", "null", "unassigned", "unknown"})


def split_name(word: str) -> str:
    """The split a folder, file stem or value names (``val2017`` -> ``val``), or ''."""
    low = word.strip().lower()
    split = SPLIT_NAMES.get(low)
    if split:
        return split
    match = _SPLIT_WORD.match(low)
    return SPLIT_NAMES[match.group(1)] if match else ""


def is_image_path(path: str) -> bool:
    return posixpath.splitext(path)[1].lower() in IMAGE_EXTENSIONS


def check_relative(path: object) -> tuple[str, str | None, bool]:
    """Normalize a file name from a document.

    Returns ``(normalized, message, is_error)``: ``message`` is None when the path is fine,
    a warning when it was only normalized (backslashes), an error when it is absolute or
    climbs out of the dataset with ``..``.
    """
    if not isinstance(path, str) or not path.strip():
        return "", "file name must be a non-empty string", True
    norm = path.replace("\\", "/")
    note = None
    if norm != path:
        note = "backslashes in the file name were read as '/'"
    if norm.startswith("/") or _DRIVE.match(norm):
        return norm, f"absolute path {show(path)}; file names must be relative to the dataset", True
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        return norm, f"{show(path)} climbs out of the dataset with '..'", True
    return "/".join(parts), note, False


def split_from_path(path: str) -> str:
    """The split named by a folder of ``path`` (``train``, ``val``/``valid``, ``test``), or ''."""
    for part in path.split("/")[:-1]:
        split = split_name(part)
        if split:
            return split
    return ""


def split_from_name(name: str) -> str:
    """The split named in a file stem such as ``instances_val2017`` (or '')."""
    stem = posixpath.splitext(posixpath.basename(name))[0].lower()
    for token in reversed(re.split(r"_|\.", stem)):
        split = split_name(token)
        if split:
            return split
    return ""


def yolo_label_candidates(image_path: str) -> list[str]:
    """Label files a YOLO image may have: ``.../images/...`` -> ``.../labels/...``, else beside it."""
    stem = posixpath.splitext(image_path)[0]
    parts = stem.split("/")
    out = []
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            swapped = parts[:i] + ["labels"] + parts[i + 1 :]
            out.append("/".join(swapped) + ".txt")
            break
    out.append(stem + ".txt")
    return out


def strip_layout(path: str) -> str:
    """Drop the leading ``images``/split folders of a path: ``images/train/a/b.jpg`` -> ``a/b.jpg``."""
    parts = path.split("/")
    while len(parts) > 1 and (parts[0] == "images" or split_name(parts[0])):
        parts = parts[1:]
    return "/".join(parts)


def safe_folder_name(name: str) -> str:
    """A class name usable as one folder name."""
    cleaned = name.replace("/", "_").replace("\\", "_").strip()
    if cleaned in ("", ".", ".."):
        cleaned = f"_{cleaned.strip('.')}_" if cleaned else "_"
    return cleaned
