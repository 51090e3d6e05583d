"""UploadImages: receive a client stream of files, store blobs, commit rows at the end.

The stream is one header, then chunks, then an ``end`` message (without it nothing is
committed); a chunk with a ``path`` starts a new file. Each
file is hashed while it arrives and kept in memory up to ``upload_spool_bytes`` (beyond
that it spills to a temp file, so a big file is never held whole), its header decoded once with
Pillow for width/height (no pixel decoding; more pixels than the limit is a
decompression bomb and is skipped), and added to the store's blob batch (deduplicated by
sha256) while the stream goes on. Files that are not images, too
big or bombs are reported in ``skipped`` with the reason. Once the whole stream arrived,
the batch is published (every blob durable, then visible) and the rows are committed in
ONE transaction. A cancelled or broken stream (client gone, server killed) commits
nothing: its batch is discarded (a killed server's staging is removed by
:mod:`dataset_svc.gc`), and no row ever references a blob that is not stored (see
:func:`commit`).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import shutil
import tempfile
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO, Protocol

import grpc
from PIL import Image as PILImage
from sqlalchemy import select
from sqlalchemy.orm import Session

from dataset_svc import documents, gc, paths, retention
from dataset_svc.catalog import Catalog
from dataset_svc.catalog.db import lock_blob_references
from dataset_svc.catalog.models import Blob, BlobGuard, Image, utcnow
from dataset_svc.settings import ServiceSettings
from visionmesh.errors import (
    ServiceError,
    aborted,
    already_exists,
    invalid_argument,
    resource_exhausted,
)
from visionmesh.store import ObjectStore

log = logging.getLogger("dataset_svc")

ACCEPTED_FORMATS = {"JPEG", "PNG", "BMP", "GIF", "TIFF", "WEBP", "MPO"}
# Blob writes that wait on the network (S3) overlap with receiving the next files; a
# local batch's writes are quick and done inline (threads would only fight over the GIL).
STORE_WORKERS = 8
MAX_PENDING_FILES = 64
# Files up to settings.upload_spool_bytes stay in memory (a temp file per small image
# costs more than the rest of its ingest); in-memory files waiting for the pool are capped.
MAX_PENDING_BYTES = 128 * 1024 * 1024
# What an upload does with a path the dataset has (the header's on_conflict).
REPLACE, SKIP, FAIL = "replace", "skip", "fail"
KEEPING = (SKIP, FAIL)


class Chunk(Protocol):
    """A piece of a file (a ``FileChunk`` message): ``path`` starts a new file."""

    path: str
    data: bytes


class ChunkStream(Protocol):
    """The chunks of a stream after its header, in order; ``end_file_count`` is the
    ``end`` message's count once the stream ended with one (None before, or without)."""

    end_file_count: int | None

    def __iter__(self) -> Iterator[Chunk]: ...


@dataclass
class Rejected:
    """A file of the stream that was not added, and why."""

    path: str
    reason: str


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
    skipped: list[Rejected] = field(default_factory=list)
    deduplicated: int = 0
    received_bytes: int = 0
    # Blobs this stream wrote (not stored before): what to take back if it is refused.
    written: list[str] = field(default_factory=list)


def check_path_prefix(path_prefix: str) -> None:
    try:
        paths.normalize(path_prefix, allow_empty=True)
    except paths.BadPath as exc:
        raise invalid_argument(f"header.path_prefix {exc}", "header.path_prefix") from None


def _probe_image(source: Path | BinaryIO, max_pixels: int) -> tuple[int, int, str] | str:
    """(width, height, content type) from the image header, or the reason it is refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", PILImage.DecompressionBombWarning)
            with PILImage.open(source) as img:
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


def _decode_problem(source: Path | BinaryIO, max_pixels: int) -> str | None:
    """Why the image's pixel data does not decode to the end (None when it does).

    A header that reads fine says nothing about the rest: a JPEG cut at 40% opens and
    reports its size. Every byte is decoded here (a JPEG at 1/8 scale: the entropy-coded
    data is read in full either way, the inverse DCT is 64 times cheaper).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with PILImage.open(source) as img:
                if img.format == "JPEG":
                    img.draft(img.mode, (max(1, img.width // 8), max(1, img.height // 8)))
                img.load()
                frames = getattr(img, "n_frames", 1)
                if frames * img.width * img.height > max_pixels:
                    return (
                        f"decompression bomb: {frames} frames of {img.width}x{img.height} are "
                        f"more than {max_pixels} pixels"
                    )
                if frames > 1:  # GIF/TIFF/WEBP animations: every frame, not only the first
                    for index in range(1, frames):
                        img.seek(index)
                        img.load()
    except Exception as exc:  # truncated, corrupt: Pillow raises OSError, SyntaxError, ...
        return f"the image data is truncated or corrupt ({type(exc).__name__}: {exc})"[:300]
    return None


class Receiver:
    """Consumes the chunks of one UploadImages stream (after its header).

    Each complete image is added to the store's blob batch: right away when adding is a
    quick local write, else on a small thread pool while the stream goes on, with at most
    ``MAX_PENDING_FILES`` files (and ``MAX_PENDING_BYTES`` of in-memory ones) waiting.
    """

    def __init__(
        self,
        settings: ServiceSettings,
        store: ObjectStore,
        path_prefix: str,
        *,
        on_conflict: str = REPLACE,
        existing: frozenset[str] = frozenset(),
    ) -> None:
        self.settings = settings
        self.store = store
        self.prefix = paths.normalize(path_prefix, allow_empty=True)
        self.result = Received()
        # Paths the dataset had when the stream began: with SKIP or FAIL their bytes are
        # never stored (skipped, or the upload refused before its blobs are published).
        self._on_conflict = on_conflict
        self._existing = existing if on_conflict in KEEPING else frozenset()
        self._seen_paths: set[str] = set()
        self._seen_blobs: set[str] = set()
        self._files_started = 0
        self._end_file_count: int | None = None
        self._pending: deque[tuple[Future[bool], int]] = deque()
        self._pending_bytes = 0
        self._pool = ThreadPoolExecutor(STORE_WORKERS, thread_name_prefix="upload-store")
        self._blobs = store.blob_batch()
        self._tmp_root = settings.upload_tmp_dir
        self._tmp_dir: Path | None = None  # made when the first big file spills

    def publish(self) -> None:
        """Make every blob of the stream durable and visible (before rows reference them)."""
        self._blobs.publish()

    def close(self) -> None:
        """Stop the pool and drop whatever was not published (a failed or cancelled stream)."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._blobs.discard()
        if self._tmp_dir is not None:
            shutil.rmtree(self._tmp_dir, ignore_errors=True)

    def tmp_dir(self) -> Path:
        if self._tmp_dir is None:
            self._tmp_root.mkdir(parents=True, exist_ok=True)
            self._tmp_dir = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=self._tmp_root))
        return self._tmp_dir

    def _store_blob(self, f: _IncomingFile, digest: str) -> bool:
        """Add one blob to the batch; True when it was stored already (deduplicated)."""
        try:
            if f.tmp_path is None:
                stored, existed = self._blobs.add_bytes(f.data())
            else:
                stored, existed = self._blobs.add_file(f.tmp_path)
            if stored != digest:  # never expected
                raise aborted(f"{f.path}: bytes changed while storing; retry the upload")
            if not existed:
                self.result.written.append(digest)
            return existed
        finally:
            f.discard()

    def _submit(self, f: _IncomingFile, digest: str) -> None:
        in_memory = 0 if f.tmp_path is not None else f.size
        self._pending.append((self._pool.submit(self._store_blob, f, digest), in_memory))
        self._pending_bytes += in_memory
        while len(self._pending) > MAX_PENDING_FILES or (
            self._pending_bytes > MAX_PENDING_BYTES and len(self._pending) > 1
        ):
            self._collect_oldest()

    def _collect_oldest(self) -> None:
        future, in_memory = self._pending.popleft()
        self._pending_bytes -= in_memory
        if future.result():
            self.result.deduplicated += 1

    def _drain(self) -> None:
        while self._pending:
            self._collect_oldest()

    def _full_path(self, raw: str) -> str:
        try:
            path = paths.normalize(raw)
        except paths.BadPath as exc:
            raise invalid_argument(f"chunk.path {exc}", "chunk.path") from None
        return f"{self.prefix}/{path}" if self.prefix else path

    def _check_end(self) -> None:
        if self._end_file_count is None:
            raise invalid_argument(
                "the stream stopped without its end message, so nothing was committed (a "
                'client cancelled half-way looks the same): finish with {"end": {"file_count": '
                f"{self._files_started}}}}}",
                "end",
            )
        if self._end_file_count != self._files_started:
            raise invalid_argument(
                f"end.file_count is {self._end_file_count} but the stream carried "
                f"{self._files_started} files: nothing was committed",
                "end.file_count",
            )

    def consume(self, chunks: ChunkStream) -> Received:
        current: _IncomingFile | None = None
        try:
            for chunk in chunks:
                if chunk.path:
                    if current is not None:
                        self._finish(current)
                    current = self._start(chunk.path)
                elif current is None:
                    raise invalid_argument(
                        "the first chunk of each file must carry its relative path",
                        "chunk.path",
                    )
                data = chunk.data
                self.result.received_bytes += len(data)
                if self.result.received_bytes > self.settings.max_upload_bytes:
                    raise resource_exhausted(
                        f"upload larger than {self.settings.max_upload_bytes} bytes: "
                        "split it into several UploadImages calls"
                    )
                current.write(data, self.settings.max_image_bytes)
            self._end_file_count = chunks.end_file_count
            self._check_end()
            if current is not None:
                self._finish(current)
                current = None
            self._drain()
        finally:
            if current is not None:
                current.discard()
        return self.result

    def _start(self, raw_path: str) -> _IncomingFile:
        if len(self._seen_paths) >= self.settings.max_upload_files:
            raise resource_exhausted(
                f"more than {self.settings.max_upload_files} files in one upload: "
                "split it into several UploadImages calls"
            )
        self._files_started += 1
        path = self._full_path(raw_path)
        return _IncomingFile(path, self.settings.upload_spool_bytes, self.tmp_dir)

    def _skip(self, path: str, reason: str) -> None:
        self.result.skipped.append(Rejected(path, reason))

    def _finish(self, f: _IncomingFile) -> None:
        try:
            f.close()
            if f.path in self._seen_paths:
                self._skip(f.path, "the same path was sent twice in this upload; kept the first")
                return
            self._seen_paths.add(f.path)
            if f.path in self._existing:
                if self._on_conflict == FAIL:
                    raise already_exists(
                        f"{f.path!r} already exists in the dataset; nothing was committed: use "
                        "ON_CONFLICT_REPLACE or ON_CONFLICT_SKIP",
                        "header.on_conflict",
                    )
                self._skip(f.path, "path already in the dataset; kept")  # nothing stored
                return
            if f.too_big:
                self._skip(
                    f.path,
                    f"larger than the {self.settings.max_image_bytes}-byte limit per image",
                )
                return
            if f.size == 0:
                self._skip(f.path, "empty file")
                return
            with f.open() as source:
                probe = _probe_image(source, self.settings.max_image_pixels)
            if isinstance(probe, str):
                self._skip(f.path, probe)
                return
            with f.open() as source:
                broken = _decode_problem(source, self.settings.max_image_pixels)
            if broken is not None:
                self._skip(f.path, broken)
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
            f.handed_off = True  # _store_blob discards it
            if self._blobs.parallel_adds:
                self._submit(f, digest)
            elif self._store_blob(f, digest):
                self.result.deduplicated += 1
        finally:
            if not f.handed_off:
                f.discard()


class _IncomingFile:
    """One file of the stream, hashed as it arrives: chunks in memory until the file
    passes ``spool_bytes``, then a temp file (made by ``tmp_dir()`` only then)."""

    def __init__(self, path: str, spool_bytes: int, tmp_dir: Callable[[], Path]) -> None:
        self.path = path
        self._spool_bytes = spool_bytes
        self._tmp_dir = tmp_dir
        self._chunks: list[bytes] = []
        self._out: BinaryIO | None = None
        self.tmp_path: Path | None = None
        self.digest = hashlib.sha256()
        self.size = 0
        self.too_big = False
        self.handed_off = False  # now belongs to a store worker

    def write(self, data: bytes, limit: int) -> None:
        self.size += len(data)
        if self.too_big or self.size > limit:
            self.too_big = True  # keep draining the stream, store nothing
            self._chunks.clear()
            return
        self.digest.update(data)
        if self._out is None and self.size > self._spool_bytes:
            fd, name = tempfile.mkstemp(dir=self._tmp_dir())
            self.tmp_path = Path(name)
            self._out = os.fdopen(fd, "wb")
            self._out.writelines(self._chunks)
            self._chunks.clear()
        if self._out is not None:
            self._out.write(data)
        else:
            self._chunks.append(data)

    def close(self) -> None:
        if self._out is not None and not self._out.closed:
            self._out.close()

    def data(self) -> bytes:
        """The whole file, when it stayed in memory."""
        if len(self._chunks) != 1:
            self._chunks = [b"".join(self._chunks)]
        return self._chunks[0]

    def open(self) -> BinaryIO:
        """A reader over the file, wherever it is."""
        return io.BytesIO(self.data()) if self.tmp_path is None else open(self.tmp_path, "rb")

    def discard(self) -> None:
        self.close()
        self._chunks.clear()
        if self.tmp_path is not None:
            with contextlib.suppress(OSError):
                self.tmp_path.unlink()


def commit(
    session: Session,
    dataset_id: str,
    received: Received,
    on_conflict: str,
    started: datetime,
    store: ObjectStore,
) -> tuple[list[Image], list[Rejected]]:
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
    skipped: list[Rejected] = []
    by_path = {f.path: f for f in received.files}
    existing: dict[str, Image] = {}
    file_paths = list(by_path)
    for start in range(0, len(file_paths), 500):
        batch = file_paths[start : start + 500]
        for row in session.scalars(
            select(Image).where(Image.dataset_id == dataset_id, Image.path.in_(batch))
        ):
            existing[row.path] = row
    if existing and on_conflict == FAIL:
        first = sorted(existing)[0]
        raise already_exists(
            f"{len(existing)} paths already exist in the dataset (first: {first!r}); "
            "nothing was committed: use ON_CONFLICT_REPLACE or ON_CONFLICT_SKIP",
            "header.on_conflict",
        )
    _add_blob_rows(session, received.files)
    if on_conflict != SKIP:
        replaced = [row.id for path, row in existing.items() if row.sha256 != by_path[path].sha256]
        retention.retain_departing(session, dataset_id, replaced)
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
        elif on_conflict == SKIP:
            skipped.append(Rejected(f.path, "path already in the dataset; kept"))
            continue
        row.sha256 = f.sha256
        row.width, row.height = f.width, f.height
        row.size_bytes = f.size
        row.content_type = f.content_type
        row.doc_json = documents.image_fragment(f.path, f.width, f.height, f.sha256, f.size)
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
    receiver: Receiver,
    chunks: ChunkStream,
    context: grpc.ServicerContext,
) -> Received:
    """Consume the stream and publish its blobs; ``receiver.result.written`` names the
    blobs it wrote, also when this raises (see :func:`dataset_svc.gc.take_back`)."""
    try:
        received = receiver.consume(chunks)
        if not context.is_active():
            raise ServiceError(grpc.StatusCode.CANCELLED, "the client cancelled the upload")
        receiver.publish()
    finally:
        receiver.close()
    return received


@contextlib.contextmanager
def unused_blobs_taken_back(
    catalog: Catalog, store: ObjectStore, receiver: Receiver
) -> Iterator[set[str]]:
    """Wrap receiving and committing a stream: the blobs it wrote that no committed row uses
    (digests the caller adds to the set yielded once committed) leave the store again."""
    committed: set[str] = set()
    try:
        yield committed
    finally:
        leftovers = set(receiver.result.written) - committed
        if leftovers:
            try:
                gc.take_back(catalog, store, leftovers)
            except Exception:  # the next GC removes them
                log.exception("could not remove %d blobs of a refused upload", len(leftovers))


def existing_paths(session: Session, dataset_id: str, on_conflict: str) -> frozenset[str]:
    """The dataset's paths, when ``on_conflict`` keeps existing images (SKIP, FAIL)."""
    if on_conflict not in KEEPING:
        return frozenset()
    return frozenset(session.scalars(select(Image.path).where(Image.dataset_id == dataset_id)))
