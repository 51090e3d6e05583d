"""Image files: size from the header (EXIF orientation applied), content hash, placing copies."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import BinaryIO

# EXIF orientations that swap width and height (rotated by 90 or 270 degrees).
_TRANSPOSED = {5, 6, 7, 8}
_ORIENTATION_TAG = 0x0112

PLACE_MODES = ("link", "copy", "symlink", "none")


def read_size(fp: BinaryIO | str | Path) -> tuple[int, int]:
    """(width, height) as displayed, reading only the header. Raises on an unreadable image."""
    from PIL import Image as PILImage  # here: reading labels alone never needs Pillow

    with PILImage.open(fp) as im:
        width, height = im.size
        try:
            orientation = im.getexif().get(_ORIENTATION_TAG)
        except Exception:  # a broken EXIF block does not make the pixels unreadable
            orientation = None
    if orientation in _TRANSPOSED:
        return height, width
    return width, height


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def place(src: Path, dest: Path, mode: str) -> None:
    """Put ``src`` at ``dest``: a hard link when possible (no bytes copied), else a copy."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if mode == "symlink":
        os.symlink(os.path.abspath(src), dest)
        return
    if mode == "link":
        try:
            os.link(src, dest)
            return
        except OSError:  # other device, or links not allowed: fall back to a copy
            pass
    shutil.copyfile(src, dest)
