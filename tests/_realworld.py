"""The real annotation files of ../shared/realworld, made readable in a temporary folder.

Images are absent from most sources: :func:`materialize` copies a source and writes a blank
placeholder (PNG bytes, unique per image so no two are byte-identical) of each image's
declared width and height where the layout puts it. Sources that ship their images
(datumaro's test assets) are copied as they are.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import zlib
from pathlib import Path

import pytest

REALWORLD = Path(__file__).resolve().parents[1].parent / "shared" / "realworld"
needs_realworld = pytest.mark.skipif(
    not REALWORLD.is_dir(),
    reason=f"real annotation files not found at {REALWORLD} (../shared/realworld)",
)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")
_COCO_PREFIXES = ("person_keypoints_", "image_info_")


def placeholder_png(width: int, height: int, index: int) -> bytes:
    """A grey PNG of ``width`` x ``height`` whose first pixel encodes ``index`` (unique bytes)."""
    row = b"\x00" + bytes([128, 128, 128]) * width
    first = b"\x00" + bytes([index % 256, index // 256 % 256, index // 65536 % 256])
    first += bytes([128, 128, 128]) * (width - 1)
    raw = first + row * (height - 1)

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return len(data).to_bytes(4, "big") + body + zlib.crc32(body).to_bytes(4, "big")

    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0])
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 1))
        + chunk(b"IEND", b"")
    )


def coco_image_folder(document: Path) -> Path:
    """Where COCO's convention puts a document's images: ``annotations/instances_val2017.json``
    -> ``val2017/``; any other document names them relative to its own folder."""
    folder = document.parent
    if folder.name != "annotations":
        return folder
    stem = document.stem
    for prefix in _COCO_PREFIXES:
        if stem.startswith(prefix):
            return folder.parent / stem[len(prefix) :]
    return folder.parent / (stem.split("_", 1)[1] if "_" in stem else stem)


def _writable(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        os.chmod(dirpath, 0o755)
        for name in filenames:
            p = os.path.join(dirpath, name)
            os.chmod(p, os.stat(p).st_mode | stat.S_IWUSR)


def materialize(rel: str, dest: Path) -> Path:
    """Copy ``realworld/<rel>`` (a folder or one file) under ``dest`` with placeholder images."""
    src = REALWORLD / rel
    out = dest / Path(rel).name
    if src.is_dir():
        shutil.copytree(src, out)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
    _writable(dest)
    root = out if out.is_dir() else out.parent
    if any(p.suffix.lower() in IMAGE_SUFFIXES for p in root.rglob("*")):
        return out  # the source ships its images
    count = 0
    for doc_path in [out] if out.is_file() else sorted(out.rglob("*.json")):
        try:
            doc = json.loads(doc_path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if not isinstance(doc, dict):
            continue
        wanted = []
        if isinstance(doc.get("images"), list):
            base = coco_image_folder(doc_path)
            wanted = [
                (base / im["file_name"], im["width"], im["height"])
                for im in doc["images"]
                if isinstance(im, dict) and im.get("file_name") and im.get("width")
            ]
        elif doc.get("imagePath") and doc.get("imageWidth"):
            wanted = [(doc_path.parent / doc["imagePath"], doc["imageWidth"], doc["imageHeight"])]
        for path, width, height in wanted:
            if path.exists():
                continue
            count += 1
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(placeholder_png(int(width), int(height), count))
    return out
