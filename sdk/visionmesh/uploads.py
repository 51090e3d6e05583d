"""Client side of ``DatasetService.UploadImages``: the request stream for a set of files.

Small files are packed several to a message (``chunks``, up to ``message_bytes`` of data
each): a message per thumbnail would cost more in per-message overhead than the bytes
themselves. A file bigger than that goes in ``message_bytes`` pieces, read from disk as it
is sent, so no file is ever held whole. Use it with any channel::

    stub.UploadImages(upload_requests(dataset.name, folder_files(folder, images_only=True)))
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from visionmesh.v1 import dataset_pb2

MESSAGE_BYTES = 1024 * 1024  # data per message: well under gRPC's 4 MiB default limit
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})

FileSource = bytes | str | os.PathLike[str]


def folder_files(
    folder: str | os.PathLike[str], *, images_only: bool = False
) -> list[tuple[str, Path]]:
    """(relative POSIX path, file) for every file under ``folder``, sorted by path."""
    root = Path(folder)
    return [
        (p.relative_to(root).as_posix(), p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and (not images_only or p.suffix.lower() in IMAGE_SUFFIXES)
    ]


def upload_requests(
    parent: str,
    files: Iterable[tuple[str, FileSource]],
    *,
    on_conflict: int = 0,
    path_prefix: str = "",
    message_bytes: int = MESSAGE_BYTES,
) -> Iterator[dataset_pb2.UploadImagesRequest]:
    """The header, every file (relative path, bytes or a file on disk) in order, the end."""
    if message_bytes <= 0:
        raise ValueError("message_bytes must be positive")
    yield dataset_pb2.UploadImagesRequest(
        header=dataset_pb2.UploadImagesHeader(
            parent=parent, on_conflict=on_conflict, path_prefix=path_prefix
        )
    )
    packed: list[dataset_pb2.FileChunk] = []
    packed_bytes = 0
    count = 0
    for path, source in files:
        count += 1
        size = len(source) if isinstance(source, bytes) else os.path.getsize(source)
        if packed and packed_bytes + size > message_bytes:
            yield _packed(packed)
            packed, packed_bytes = [], 0
        if size <= message_bytes:
            data = source if isinstance(source, bytes) else Path(source).read_bytes()
            packed.append(dataset_pb2.FileChunk(path=path, data=data))
            packed_bytes += len(data)
            continue
        for i, piece in enumerate(_pieces(source, message_bytes)):
            yield dataset_pb2.UploadImagesRequest(
                chunk=dataset_pb2.FileChunk(path=path if i == 0 else "", data=piece)
            )
    if packed:
        yield _packed(packed)
    yield dataset_pb2.UploadImagesRequest(end=dataset_pb2.UploadImagesEnd(file_count=count))


def _packed(chunks: list[dataset_pb2.FileChunk]) -> dataset_pb2.UploadImagesRequest:
    if len(chunks) == 1:
        return dataset_pb2.UploadImagesRequest(chunk=chunks[0])
    return dataset_pb2.UploadImagesRequest(chunks=dataset_pb2.FileChunks(chunks=chunks))


def _pieces(source: FileSource, size: int) -> Iterator[bytes]:
    if isinstance(source, bytes):
        for start in range(0, len(source), size):
            yield source[start : start + size]
        return
    with open(source, "rb") as f:
        yield f.read(size)  # even if the file shrank to nothing: this piece carries the path
        while piece := f.read(size):
            yield piece
