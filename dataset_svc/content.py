"""Bytes out of the store: image content and thumbnails (GetImageContent), export zips
(DownloadExport), each as a content type and pieces of at most 1 MiB (the servicer sends
them as ``google.api.HttpBody`` messages, :func:`dataset_svc.messages.http_bodies`).

Thumbnails are JPEGs whose longest side is ``thumbnail_size`` pixels, made on first request
and kept in the store under ``thumbnails/<size>/<ab>/<sha256>.jpg`` (derived from the
image bytes, so one thumbnail serves every dataset holding the image). Rights are checked
by the caller of these functions: readers of the dataset for images, the exporter for
exports (an export's id ends with its exporter's user id, so readers of a public dataset
each get their own export object and never overwrite the owner's).
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

from PIL import Image as PILImage
from PIL import ImageOps

from visionmesh.errors import invalid_argument, not_found
from visionmesh.store import KeyNotFound, ObjectStore, blob_key

PIECE_BYTES = 1024 * 1024
MIN_THUMBNAIL, MAX_THUMBNAIL = 16, 1024


Content = tuple[str, Iterator[bytes]]  # (content type, the bytes in pieces)


def pieces(reader: BinaryIO) -> Iterator[bytes]:
    """The reader's bytes in pieces of at most PIECE_BYTES (one empty piece when empty)."""
    with reader:
        first = True
        while True:
            data = reader.read(PIECE_BYTES)
            if not data and not first:
                return
            yield data
            first = False


def thumbnail_key(sha256: str, size: int) -> str:
    return f"thumbnails/{size}/{sha256[:2]}/{sha256}.jpg"


def check_thumbnail_size(size: int) -> None:
    if size and not MIN_THUMBNAIL <= size <= MAX_THUMBNAIL:
        raise invalid_argument(
            f"thumbnail_size must be 0 (original) or {MIN_THUMBNAIL}..{MAX_THUMBNAIL}, got {size}",
            "thumbnail_size",
        )


def make_thumbnail(data: bytes, size: int) -> bytes:
    """A JPEG of the image whose longest side is ``size`` (never enlarged), EXIF-rotated."""
    with PILImage.open(io.BytesIO(data)) as im:
        im.draft("RGB", (size, size))  # JPEG: decode at a reduced scale, much faster
        im = ImageOps.exif_transpose(im)
        im.thumbnail((size, size))
        if im.mode not in ("RGB", "L"):
            im = im.convert("RGBA")
            background = PILImage.new("RGB", im.size, (255, 255, 255))
            background.paste(im, mask=im.getchannel("A"))
            im = background
        out = io.BytesIO()
        im.save(out, "JPEG", quality=80, optimize=False)
        return out.getvalue()


def image_content(
    store: ObjectStore, sha256: str, content_type: str, thumbnail_size: int, name: str
) -> Content:
    check_thumbnail_size(thumbnail_size)
    try:
        if not thumbnail_size:
            return content_type or "image/*", pieces(store.open_read(blob_key(sha256)))
        key = thumbnail_key(sha256, thumbnail_size)
        try:
            return "image/jpeg", pieces(store.open_read(key))
        except KeyNotFound:
            pass
        data = make_thumbnail(store.get_bytes(blob_key(sha256)), thumbnail_size)
    except KeyNotFound:
        raise not_found(
            f"the bytes of {name} are missing from the object store (blob {sha256}): "
            "run CheckIntegrity"
        ) from None
    store.put_bytes(key, data, "image/jpeg")
    return "image/jpeg", iter([data])


def export_content(store: ObjectStore, key: str, name: str) -> Content:
    try:
        return "application/zip", pieces(store.open_read(key))
    except KeyNotFound:
        raise not_found(f"export {name} not found: run ExportDataset first") from None
