"""UploadImages: receive a client stream of files, store blobs, commit rows at the end.

The stream is one header, then chunks; a chunk with a ``path`` starts a new file. Each
file is streamed to a temp file while hashed (never held whole in memory), its header
decoded once with Pillow for width/height (no pixel decoding; more pixels than the limit
is a decompression bomb and is skipped), and stored as a content-addressed blob
(deduplicated by sha256). Files that are not images, too big or bombs are reported in
``skipped`` with the reason; the rest are committed in ONE transaction after the whole
stream arrived. A cancelled or broken stream (client gone, server killed) commits
nothing: the blobs it wrote are unreferenced garbage for :mod:`dataset_svc.gc`, and no
row ever references a blob that is not stored (see :func:`commit`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import warnings
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import grpc
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataset_svc import paths
from dataset_svc.catalog.db import lock_blob_references
from dataset_svc.catalog.models import Blob, BlobGuard, Image, utcnow
from dataset_svc.errors import (
    ServiceError,
    aborted,
    already_exists,
    invalid_argument,
    resource_exhausted,
)
from dataset_svc.settings import ServiceSettings
from visionmesh.store import ObjectStore
from visionmesh.v1 import dataset_pb2

ACCEPTED_FORMATS = {"JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "MPO"}
# Blob writes (hash, write, fsync) overlap with receiving the next files.
STORE_WORKERS = 8
MAX_PENDING_FILES = 64
OnConflict = dataset_pb2.UploadImagesHeader.OnConflict


@dataclass
class StoredFile:
    path: str
    sha256: str
    size: int
    width: int
    height: int
    content_type: str


@dataclass
class Received:
    """What a whole stream delivered, before anything is committed."""

    files: list[StoredFile] = field(default_factory=list)
    skipped: list[dataset_pb2.RejectedFile] = field(default_factory=list)
    deduplicated: int = 0
    received_bytes: int = 0


def read_header(first: dataset_pb2.UploadImagesRequest) -> dataset_pb2.UploadImagesHeader:
    if first.WhichOneof("payload") != "header":
        raise invalid_argument(
            "the first UploadImages message must be the header (parent, on_conflict, "
            "path_prefix); chunks come after it",
            "header",
        )
    header = first.header
    try:
        paths.normalize(header.path_prefix, allow_empty=True)
    except paths.BadPath as exc:
        raise invalid_argument(f"header.path_prefix {exc}", "header.path_prefix") from None
    return header


def _probe_image(path: Path, max_pixels: int) -> tuple[int, int, str] | str:
    """(width, height, content type) from the image header, or the reason it is refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(path) as img:
                width, height = img.size
                fmt = img.format or ""
                mime = img.get_format_mimetype() or PILImage.MIME.get(fmt, "")
    except (PILImage.DecompressionBombError, PILImage.DecompressionBombWarning):
        return f"decompression bomb: more than {max_pixels} pixels"
    except Exception as exc:  # Pillow raises many kinds for non-images
        return f"not an image Pillow can read ({type(exc).__name__})"
    if fmt not in ACCEPTED_FORMATS:
        return f"image format {fmt or 'unknown'} is not accepted (use JPEG, PNG, BMP, GIF, TIFF or WEBP)"
    if width <= 0 or height <= 0:
        return f"image has no pixels ({width}x{height})"
    if width * height > max_pixels:
        return f"decompression bomb: {width}x{height} is more than {max_pixels} pixels"
    return width, height, mime


class Receiver:
    """Consumes the chunks of one UploadImages stream (after its header).

    Each complete image is handed to a small thread pool that stores its blob while the
    stream goes on; at most ``MAX_PENDING_FILES`` temp files wait at any time.
    """

    def __init__(self, settings: ServiceSettings, store: ObjectStore, path_prefix: str) -> None:
        self.settings = settings
        self.store = store
        self.prefix = paths.normalize(path_prefix, allow_empty=True)
        self.result = Received()
        self._seen_paths: set[str] = set()
        self._seen_blobs: set[str] = set()
        self._pending: deque[Future[bool]] = deque()
        self._pool = ThreadPoolExecutor(STORE_WORKERS, thread_name_prefix="upload-store")
        settings.upload_tmp_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=settings.upload_tmp_dir))

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def _store_blob(self, tmp_path: Path, digest: str) -> bool:
        """Store one blob (in a pool thread); True when it was already stored."""
        try:
            if self.store.has_blob(digest):
                return True
            if self.store.put_blob_from_file(tmp_path) != digest:  # never expected
                raise aborted(f"{tmp_path.name}: bytes changed while storing; retry the upload")
            return False
        finally:
            with contextlib.suppress(OSError):
                tmp_path.unlink()

    def _collect(self, future: Future[bool]) -> None:
        if future.result():
            self.result.deduplicated += 1

    def _drain(self) -> None:
        while self._pending:
            self._collect(self._pending.popleft())

    def _full_path(self, raw: str) -> str:
        try:
            path = paths.normalize(raw)
        except paths.BadPath as exc:
            raise invalid_argument(f"chunk.path {exc}", "chunk.path") from None
        return f"{self.prefix}/{path}" if self.prefix else path

    def consume(self, requests: Iterator[dataset_pb2.UploadImagesRequest]) -> Received:
        current: _OpenFile | None = None
        try:
            for request in requests:
                if request.WhichOneof("payload") != "chunk":
                    raise invalid_argument(
                        "only the first UploadImages message may be a header", "header"
                    )
                chunk = request.chunk
                if chunk.path:
                    if current is not None:
                        self._finish(current)
                    current = self._start(chunk.path)
                elif current is None:
                    raise invalid_argument(
                        "the first chunk of each file must carry its relative path",
                        "chunk.path",
                    )
                self.result.received_bytes += len(chunk.data)
                if self.result.received_bytes > self.settings.max_upload_bytes:
                    raise resource_exhausted(
                        f"upload larger than {self.settings.max_upload_bytes} bytes: "
                        "split it into several UploadImages calls"
                    )
                current.write(chunk.data, self.settings.max_image_bytes)
            if current is not None:
                self._finish(current)
                current = None
            self._drain()
        finally:
            if current is not None:
                current.discard()
        return self.result

    def _start(self, raw_path: str) -> _OpenFile:
        if len(self._seen_paths) >= self.settings.max_upload_files:
            raise resource_exhausted(
                f"more than {self.settings.max_upload_files} files in one upload: "
                "split it into several UploadImages calls"
            )
        path = self._full_path(raw_path)
        return _OpenFile(path, self.tmp_dir)

    def _skip(self, path: str, reason: str) -> None:
        self.result.skipped.append(dataset_pb2.RejectedFile(path=path, reason=reason))

    def _finish(self, f: _OpenFile) -> None:
        try:
            f.close()
            if f.path in self._seen_paths:
                self._skip(f.path, "the same path was sent twice in this upload; kept the first")
                return
            self._seen_paths.add(f.path)
            if f.too_big:
                self._skip(
                    f.path,
                    f"larger than the {self.settings.max_image_bytes}-byte limit per image",
                )
                return
            if f.size == 0:
                self._skip(f.path, "empty file")
                return
            probe = _probe_image(f.tmp_path, self.settings.max_image_pixels)
            if isinstance(probe, str):
                self._skip(f.path, probe)
                return
            width, height, content_type = probe
            digest = f.digest.hexdigest()
            self.result.files.append(
                StoredFile(f.path, digest, f.size, width, height, content_type)
            )
            if digest in self._seen_blobs:
                self.result.deduplicated += 1
                return
            self._seen_blobs.add(digest)
            self._pending.append(self._pool.submit(self._store_blob, f.tmp_path, digest))
            f.handed_off = True
            while len(self._pending) > MAX_PENDING_FILES:
                self._collect(self._pending.popleft())
        finally:
            if not f.handed_off:
                f.discard()


class _OpenFile:
    def __init__(self, path: str, tmp_dir: Path) -> None:
        self.path = path
        fd, name = tempfile.mkstemp(dir=tmp_dir)
        self.tmp_path = Path(name)
        self._out = os.fdopen(fd, "wb")
        self.digest = hashlib.sha256()
        self.size = 0
        self.too_big = False
        self.handed_off = False  # the temp file now belongs to a store worker

    def write(self, data: bytes, limit: int) -> None:
        self.size += len(data)
        if self.too_big or self.size > limit:
            self.too_big = True  # keep draining the stream, store nothing
            return
        self.digest.update(data)
        self._out.write(data)

    def close(self) -> None:
        if not self._out.closed:
            self._out.close()

    def discard(self) -> None:
        self.close()
        with contextlib.suppress(OSError):
            self.tmp_path.unlink()


def commit(
    session: Session,
    dataset_id: str,
    received: Received,
    on_conflict: int,
    started: datetime,
    store: ObjectStore,
) -> tuple[list[Image], list[dataset_pb2.RejectedFile]]:
    """Add the received files to the dataset in the caller's transaction.

    Holds the blob guard, so the garbage collector cannot delete a blob between the check
    below and the commit; if a GC batch ran since the upload started, every blob is
    checked to exist first (ABORTED if one vanished: retry).
    """
    lock_blob_references(session)
    last_gc = session.scalar(select(BlobGuard.last_gc_time).where(BlobGuard.id == 1))
    if last_gc is not None:
        last_gc = last_gc if last_gc.tzinfo else last_gc.replace(tzinfo=UTC)
        if last_gc >= started:
            missing = [f.path for f in received.files if not store.has_blob(f.sha256)]
            if missing:
                raise aborted(
                    f"{len(missing)} blobs were garbage-collected during the upload "
                    f"(first: {missing[0]}); nothing was committed, retry the upload"
                )
    skipped: list[dataset_pb2.RejectedFile] = []
    by_path = {f.path: f for f in received.files}
    existing: dict[str, Image] = {}
    file_paths = list(by_path)
    for start in range(0, len(file_paths), 500):
        batch = file_paths[start : start + 500]
        for row in session.scalars(
            select(Image).where(Image.dataset_id == dataset_id, Image.path.in_(batch))
        ):
            existing[row.path] = row
    if existing and on_conflict == OnConflict.ON_CONFLICT_FAIL:
        first = sorted(existing)[0]
        raise already_exists(
            f"{len(existing)} paths already exist in the dataset (first: {first!r}); "
            "nothing was committed: use ON_CONFLICT_REPLACE or ON_CONFLICT_SKIP",
            "header.on_conflict",
        )
    _add_blob_rows(session, received.files)
    now = utcnow()
    changed: list[Image] = []
    for f in received.files:
        row = existing.get(f.path)
        if row is None:
            row = Image(
                dataset_id=dataset_id,
                path=f.path,
                split=paths.split_of(f.path),
                create_time=now,
            )
            session.add(row)
        elif on_conflict == OnConflict.ON_CONFLICT_SKIP:
            skipped.append(
                dataset_pb2.RejectedFile(path=f.path, reason="path already in the dataset; kept")
            )
            continue
        row.sha256 = f.sha256
        row.width, row.height = f.width, f.height
        row.size_bytes = f.size
        row.content_type = f.content_type
        changed.append(row)
    session.flush()
    return changed, skipped


def _add_blob_rows(session: Session, files: list[StoredFile]) -> None:
    wanted = {f.sha256: f for f in files}
    known: set[str] = set()
    digests = list(wanted)
    for start in range(0, len(digests), 500):
        known.update(
            session.scalars(
                select(Blob.sha256).where(Blob.sha256.in_(digests[start : start + 500]))
            )
        )
    new = [
        {"sha256": d, "size_bytes": f.size, "content_type": f.content_type, "create_time": utcnow()}
        for d, f in wanted.items()
        if d not in known
    ]
    if new:
        session.execute(Blob.__table__.insert(), new)


def clean_stale_tmp(settings: ServiceSettings) -> None:
    """Remove temp folders of upload processes that no longer run (e.g. SIGKILLed)."""
    root = settings.upload_tmp_dir
    if not root.is_dir():
        return
    for entry in root.iterdir():
        pid_text = entry.name.split("-", 1)[0]
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        alive = True
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive or pid == os.getpid():
            shutil.rmtree(entry, ignore_errors=True)


def run(
    requests: Iterator[dataset_pb2.UploadImagesRequest],
    context: grpc.ServicerContext,
    settings: ServiceSettings,
    store: ObjectStore,
    path_prefix: str,
) -> Received:
    receiver = Receiver(settings, store, path_prefix)
    try:
        received = receiver.consume(requests)
    finally:
        receiver.close()
    if not context.is_active():
        raise ServiceError(grpc.StatusCode.CANCELLED, "the client cancelled the upload")
    return received
