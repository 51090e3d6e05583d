"""Local folder backend: ``file:///abs/path`` (the default, under ``$VISIONMESH_HOME/store``).

Each key is a file under the root. Every write goes to a temp file in the target's own
folder (``.vmtmp-*``, hidden from :meth:`LocalStore.list`) and is published with
``os.replace``, so readers never see a partial object. Content types are not stored.
A :meth:`LocalStore.blob_batch` stages its blobs in a folder of its own under the root
(``.vmtmp-batch-*``) and publishes them together.
Because keys are files, ``a`` and ``a/b`` cannot both exist (S3 allows it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO

from visionmesh.store.base import (
    TEMP_PREFIX,
    BlobBatch,
    BlobIntegrityError,
    KeyNotFound,
    ObjectStore,
    blob_key,
    iter_chunks,
    validate_expiry,
    validate_key,
    validate_prefix,
)


def _atomic_write(target: Path, write: Callable[[BinaryIO], None]) -> None:
    """Create ``target`` from ``write(f)`` via a temp file in the same folder + os.replace."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=TEMP_PREFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)  # private, like everything under VISIONMESH_HOME
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _copy_verified(src: BinaryIO, dst: BinaryIO, sha256: str, key: str) -> None:
    """Copy ``src`` to ``dst``, refusing (BlobIntegrityError) bytes that do not hash to sha256."""
    digest = hashlib.sha256()
    for chunk in iter_chunks(src):
        digest.update(chunk)
        dst.write(chunk)
    if digest.hexdigest() != sha256:
        raise BlobIntegrityError(
            f"content changed while storing {key}: now hashes to {digest.hexdigest()}"
        )


class LocalStore(ObjectStore):
    """Objects as files under ``root``.

    :meth:`presigned_url` returns a ``file://`` URL of the object's path (usable only on
    this machine, never expires); it does not check that the object exists.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.url = self.root.as_uri()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _existing(self, key: str) -> Path:
        path = self._path(key)
        if not path.is_file():
            raise KeyNotFound(key, self.url)
        return path

    # -- writes ----------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        _atomic_write(self._path(key), lambda f: f.write(data))

    def put_file(
        self, key: str, path: str | os.PathLike[str], content_type: str | None = None
    ) -> None:
        target = self._path(key)
        with open(path, "rb") as src:
            _atomic_write(target, lambda f: shutil.copyfileobj(src, f, 1024 * 1024))

    def put_stream(self, key: str, fileobj: BinaryIO, content_type: str | None = None) -> None:
        _atomic_write(self._path(key), lambda f: shutil.copyfileobj(fileobj, f, 1024 * 1024))

    def delete(self, key: str) -> None:
        try:
            os.unlink(self._existing(key))
        except FileNotFoundError:
            raise KeyNotFound(key, self.url) from None

    def copy(self, src: str, dst: str) -> None:
        target = self._path(dst)
        source = self._existing(src)
        try:
            with open(source, "rb") as s:
                _atomic_write(target, lambda f: shutil.copyfileobj(s, f, 1024 * 1024))
        except FileNotFoundError:
            if not source.exists():
                raise KeyNotFound(src, self.url) from None
            raise

    def _write_blob(self, key: str, sha256: str, size: int, fileobj: BinaryIO) -> None:
        _atomic_write(self._path(key), lambda f: _copy_verified(fileobj, f, sha256, key))

    def blob_batch(self) -> BlobBatch:
        return _LocalBlobBatch(self)

    def remove_stale_staging(self, older_than_seconds: float) -> int:
        """Remove batch folders (``.vmtmp-batch-*``) untouched for ``older_than_seconds``:
        a batch adds files to its folder as it goes, so only a dead one goes stale."""
        removed = 0
        cutoff = time.time() - older_than_seconds
        for entry in os.scandir(self.root):
            if not entry.name.startswith(_BATCH_PREFIX):
                continue
            try:
                stale = entry.stat().st_mtime < cutoff
            except FileNotFoundError:
                continue  # published or removed meanwhile
            if stale:
                shutil.rmtree(entry.path, ignore_errors=True)
                removed += 1
        return removed

    # -- reads -----------------------------------------------------------------------------
    def get_bytes(self, key: str) -> bytes:
        try:
            return self._existing(key).read_bytes()
        except FileNotFoundError:
            raise KeyNotFound(key, self.url) from None

    def open_read(self, key: str) -> BinaryIO:
        try:
            return open(self._existing(key), "rb")
        except FileNotFoundError:
            raise KeyNotFound(key, self.url) from None

    def download(self, key: str, dest_path: str | os.PathLike[str]) -> Path:
        dest = Path(dest_path)
        with self.open_read(key) as src:
            _atomic_write(dest, lambda f: shutil.copyfileobj(src, f, 1024 * 1024))
        return dest

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        try:
            return self._existing(key).stat().st_size
        except FileNotFoundError:
            raise KeyNotFound(key, self.url) from None

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        folder, _, _partial = prefix.rpartition("/")
        start = self.root.joinpath(*folder.split("/")) if folder else self.root
        base = f"{folder}/" if folder else ""
        for key in self._walk(start, base):
            if key.startswith(prefix):
                yield key
            elif key > prefix:
                return  # sorted: nothing further can match

    def _walk(self, folder: Path, base: str) -> Iterator[str]:
        """Keys under ``folder`` in the order S3 lists them (a directory sorts as 'name/')."""
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        items: list[tuple[str, os.DirEntry[str], bool]] = []
        for entry in entries:
            if entry.name.startswith(TEMP_PREFIX):
                continue
            is_dir = entry.is_dir(follow_symlinks=False)
            items.append((entry.name + "/" if is_dir else entry.name, entry, is_dir))
        items.sort(key=lambda item: item[0])
        for sort_name, entry, is_dir in items:
            if is_dir:
                yield from self._walk(Path(entry.path), base + sort_name)
            elif entry.is_file():
                yield base + entry.name

    def presigned_url(self, key: str, expires_seconds: int = 3600) -> str | None:
        validate_expiry(expires_seconds)  # same contract as S3, though file URLs never expire
        return self._path(key).as_uri()


_BATCH_PREFIX = f"{TEMP_PREFIX}batch-"
_PUBLISH_THREADS = 16  # fsyncs in flight at once: the disk merges them into few flushes


class _LocalBlobBatch(BlobBatch):
    """Stages each blob as a plain file (no fsync) in a folder of its own under the root;
    :meth:`publish` fsyncs them all, several at a time, then renames each into place.
    One fsync per file while writing would wait on the disk once per file instead."""

    parallel_adds = False  # an add is a file write that returns at once: no threads needed

    def __init__(self, store: LocalStore) -> None:
        super().__init__(store)
        self._root = str(store.root)
        self._lock = threading.Lock()
        self._folder: str | None = None
        self._staged: list[str] = []  # sha256 of each staged blob

    def _staging_folder(self) -> str:
        with self._lock:
            if self._folder is None:
                prefix = f"{_BATCH_PREFIX}{os.getpid()}-"
                self._folder = tempfile.mkdtemp(prefix=prefix, dir=self._root)
            return self._folder

    def _stage(self, key: str, sha256: str, size: int, source: bytes | BinaryIO) -> bool:
        staged = os.path.join(self._staging_folder(), sha256)
        try:
            fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return True  # staged before (or by another thread right now)
        try:
            with open(fd, "wb") as out:
                if isinstance(source, bytes):
                    out.write(source)
                else:
                    _copy_verified(source, out, sha256, key)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(staged)
            raise
        with self._lock:
            self._staged.append(sha256)
        return False

    def publish(self) -> None:
        with self._lock:
            staged, self._staged, folder = self._staged, [], self._folder
        if staged and folder is not None:
            sources = [os.path.join(folder, digest) for digest in staged]
            with ThreadPoolExecutor(min(_PUBLISH_THREADS, len(sources))) as pool:
                list(pool.map(_fsync_path, sources))
            made: set[str] = set()
            for source, digest in zip(sources, staged, strict=True):
                target = os.path.join(self._root, *blob_key(digest).split("/"))
                parent = os.path.dirname(target)
                if parent not in made:
                    os.makedirs(parent, exist_ok=True)
                    made.add(parent)
                os.replace(source, target)
        self.discard()

    def discard(self) -> None:
        with self._lock:
            folder, self._folder = self._folder, None
            self._staged = []
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
