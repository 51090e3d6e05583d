"""Local folder backend: ``file:///abs/path`` (the default, under ``$VISIONMESH_HOME/store``).

Each key is a file under the root. Every write goes to a temp file in the target's own
folder (``.vmtmp-*``, hidden from :meth:`LocalStore.list`) and is published with
``os.replace``, so readers never see a partial object. Content types are not stored.
Because keys are files, ``a`` and ``a/b`` cannot both exist (S3 allows it).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from visionmesh.store.base import (
    TEMP_PREFIX,
    BlobIntegrityError,
    KeyNotFound,
    ObjectStore,
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
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


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
        def write(f: BinaryIO) -> None:
            digest = hashlib.sha256()
            for chunk in iter_chunks(fileobj):
                digest.update(chunk)
                f.write(chunk)
            if digest.hexdigest() != sha256:
                raise BlobIntegrityError(
                    f"content changed while storing {key}: now hashes to {digest.hexdigest()}"
                )

        _atomic_write(self._path(key), write)

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
