"""The object store interface shared by every backend, key rules and content-addressed blobs.

Keys are POSIX-style relative paths (``datasets/ds1/snapshots/s1/manifest.json``): no leading
``/``, no empty, ``.`` or ``..`` segments, no backslashes or control characters, at most 1024
bytes of UTF-8. A bad key raises :class:`ValueError` naming the key and the rule it breaks.
A missing key raises :class:`KeyNotFound` (a :class:`KeyError`) on every backend.

Image bytes are stored once by content: ``blobs/sha256/<first two hex>/<64 hex>``; see
:meth:`ObjectStore.put_blob_from_file`.
"""

from __future__ import annotations

import abc
import hashlib
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

CHUNK_SIZE = 1024 * 1024
MAX_KEY_BYTES = 1024
BLOB_PREFIX = "blobs/sha256/"
# Local temp files live next to their target and carry this prefix; such names are reserved.
TEMP_PREFIX = ".vmtmp-"

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")


class KeyNotFound(KeyError):
    """The key does not exist in the store (raised by every backend)."""

    def __init__(self, key: str, where: str = "") -> None:
        super().__init__(key)
        self.key = key
        self.where = where

    def __str__(self) -> str:  # KeyError's default str() is the repr of the key
        suffix = f" in {self.where}" if self.where else ""
        return f"object {self.key!r} not found{suffix}"


class BlobIntegrityError(OSError):
    """A blob's bytes did not hash to the expected sha256 (e.g. the source changed mid-upload)."""


def _check_segments(value: str, what: str, segments: list[str]) -> None:
    for segment in segments:
        if segment == "":
            raise ValueError(f"invalid {what} {value!r}: empty path segment ('//' or trailing '/')")
        if segment in (".", ".."):
            raise ValueError(f"invalid {what} {value!r}: {segment!r} segments are not allowed")
        if segment.startswith(TEMP_PREFIX):
            raise ValueError(
                f"invalid {what} {value!r}: segments starting with {TEMP_PREFIX!r} are reserved"
            )


def _check_common(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"invalid {what} {value!r}: must be a str, got {type(value).__name__}")
    if value.startswith("/"):
        raise ValueError(f"invalid {what} {value!r}: must be relative (no leading '/')")
    if "\\" in value:
        raise ValueError(f"invalid {what} {value!r}: use '/' as separator, not '\\'")
    if _CONTROL_RE.search(value):
        raise ValueError(f"invalid {what} {value!r}: control characters are not allowed")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ValueError(f"invalid {what} {value[:40]!r}...: longer than {MAX_KEY_BYTES} bytes")
    return value


def validate_key(key: object) -> str:
    """Return ``key`` if it is a valid object key, else raise ValueError saying why."""
    _check_common(key, "object key")
    assert isinstance(key, str)
    if key == "":
        raise ValueError("invalid object key '': must not be empty")
    _check_segments(key, "object key", key.split("/"))
    return key


def validate_prefix(prefix: object) -> str:
    """Validate a listing prefix: '' or a key prefix whose complete segments are valid.

    The last segment may be partial (``images/cat`` matches ``images/cat.jpg`` and
    ``images/cats/1.jpg``, as S3 prefixes do).
    """
    _check_common(prefix, "prefix")
    assert isinstance(prefix, str)
    if prefix:
        _check_segments(prefix, "prefix", prefix.split("/")[:-1])
    return prefix


MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # the SigV4 limit


def validate_expiry(expires_seconds: int) -> int:
    seconds = int(expires_seconds)
    if not 1 <= seconds <= MAX_PRESIGN_SECONDS:
        raise ValueError(
            f"expires_seconds must be 1..{MAX_PRESIGN_SECONDS} (7 days), got {expires_seconds}"
        )
    return seconds


def blob_key(sha256: str) -> str:
    """``blobs/sha256/ab/<hex>`` for a lowercase hex sha256 digest."""
    if not isinstance(sha256, str) or not _SHA256_RE.match(sha256):
        raise ValueError(f"invalid sha256 {sha256!r}: expected 64 lowercase hex characters")
    return f"{BLOB_PREFIX}{sha256[:2]}/{sha256}"


def sha256_from_blob_key(key: str) -> str | None:
    """The digest a blob key names, or None if ``key`` is not a well-formed blob key."""
    if not key.startswith(BLOB_PREFIX):
        return None
    rest = key[len(BLOB_PREFIX) :]
    folder, _, digest = rest.partition("/")
    if _SHA256_RE.match(digest) and folder == digest[:2]:
        return digest
    return None


def iter_chunks(fileobj: BinaryIO, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
    while True:
        chunk = fileobj.read(chunk_size)
        if not chunk:
            return
        yield chunk


def file_sha256(path: str | os.PathLike[str]) -> tuple[str, int]:
    """(hex sha256, size) of a file, read in chunks."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for chunk in iter_chunks(f):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class ObjectStore(abc.ABC):
    """A flat namespace of byte objects addressed by POSIX-style keys.

    Writes are atomic on every backend: a reader sees the old object, the new one, or
    nothing, never a partial object. Instances are safe to share between threads.
    """

    url: str

    # -- writes --------------------------------------------------------------------------
    @abc.abstractmethod
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        """Store ``data`` at ``key`` (replacing any existing object)."""

    @abc.abstractmethod
    def put_file(
        self, key: str, path: str | os.PathLike[str], content_type: str | None = None
    ) -> None:
        """Upload a local file to ``key``; content type guessed from the name when None."""

    @abc.abstractmethod
    def put_stream(self, key: str, fileobj: BinaryIO, content_type: str | None = None) -> None:
        """Upload everything ``fileobj.read()`` returns, streamed in chunks, to ``key``."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete ``key``; raises KeyNotFound when it does not exist."""

    @abc.abstractmethod
    def copy(self, src: str, dst: str) -> None:
        """Server-side copy of ``src`` to ``dst``; raises KeyNotFound when src is missing."""

    # -- reads ---------------------------------------------------------------------------
    @abc.abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """The whole object in memory (use open_read/download for big objects)."""

    @abc.abstractmethod
    def open_read(self, key: str) -> BinaryIO:
        """A readable binary stream of the object; close it (or use ``with``)."""

    @abc.abstractmethod
    def download(self, key: str, dest_path: str | os.PathLike[str]) -> Path:
        """Write the object to ``dest_path`` atomically (temp file in the same folder + rename)."""

    @abc.abstractmethod
    def exists(self, key: str) -> bool: ...

    @abc.abstractmethod
    def size(self, key: str) -> int:
        """Size in bytes; raises KeyNotFound when missing."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with ``prefix``, in lexicographic (UTF-8 byte) order, lazily."""

    @abc.abstractmethod
    def presigned_url(self, key: str, expires_seconds: int = 3600) -> str | None:
        """A URL that fetches the object without credentials (see each backend)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release network resources (no-op for the local backend)."""

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- content-addressed blobs -----------------------------------------------------------
    def put_blob_from_file(self, path: str | os.PathLike[str]) -> str:
        """Store a file as ``blobs/sha256/ab/<hex>`` and return its sha256 (lowercase hex).

        The file is hashed first (one streaming read); when the blob already exists nothing
        is uploaded (dedup). Otherwise it is written atomically while being hashed again,
        and the write is abandoned (no object appears) if the second hash differs, so a
        blob's content always matches its key, even if the file changed meanwhile.
        """
        return BlobBatch(self).add_file(path)[0]  # the plain batch stores as it adds

    def put_blob_bytes(self, data: bytes) -> str:
        """Store ``data`` content-addressed (deduplicated, atomic); return its sha256."""
        return BlobBatch(self).add_bytes(data)[0]

    def has_blob(self, sha256: str) -> bool:
        return self.exists(blob_key(sha256))

    def blob_batch(self) -> BlobBatch:
        """Blobs stored as one unit of work (an upload, say); see :class:`BlobBatch`."""
        return BlobBatch(self)

    def remove_stale_staging(self, older_than_seconds: float) -> int:
        """Remove what batches of dead processes left staged; how many were removed.

        Nothing to do for backends that stage nothing (the default)."""
        return 0

    def object_sha256(self, key: str) -> str:
        """sha256 of a stored object, streamed (for integrity checks of blobs)."""
        digest = hashlib.sha256()
        with self.open_read(key) as f:
            for chunk in iter_chunks(f):
                digest.update(chunk)
        return digest.hexdigest()

    def _open_source(self, path: str | os.PathLike[str]) -> BinaryIO:
        """Open the blob source for the write pass (a seam for tests)."""
        return open(path, "rb")

    @abc.abstractmethod
    def _write_blob(self, key: str, sha256: str, size: int, fileobj: BinaryIO) -> None:
        """Write ``fileobj`` to ``key`` atomically, verifying it hashes to ``sha256``."""


class BlobBatch:
    """Content-addressed blobs stored together: ``add_*`` each, then :meth:`publish`.

    Between add and publish a blob may be neither visible nor durable; :meth:`publish`
    makes every added blob durable and visible before it returns, and :meth:`discard`
    (also what leaving a ``with`` block without publishing does) drops the rest. This
    default stores each blob as it is added (on S3 every PUT is durable at once, so
    there is nothing to gain by waiting); :class:`~visionmesh.store.LocalStore` stages
    files and makes them durable together at publish, far cheaper than an fsync each.
    Safe to add from several threads at once.
    """

    # Whether adds wait on something else (the network) and are worth running on threads.
    parallel_adds = True

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def add_bytes(self, data: bytes) -> tuple[str, bool]:
        """(sha256, True when the blob was stored or added before: nothing was written)."""
        digest = hashlib.sha256(data).hexdigest()
        if self.store.has_blob(digest):
            return digest, True
        return digest, self._stage(blob_key(digest), digest, len(data), data)

    def add_file(self, path: str | os.PathLike[str]) -> tuple[str, bool]:
        """Like :meth:`add_bytes` for a file (hashed, then copied while hashed again)."""
        digest, size = file_sha256(path)
        if self.store.has_blob(digest):
            return digest, True
        with self.store._open_source(path) as f:
            return digest, self._stage(blob_key(digest), digest, size, f)

    def _stage(self, key: str, sha256: str, size: int, source: bytes | BinaryIO) -> bool:
        """Write one blob (bytes were hashed here; a file is verified as it is copied);
        True when this batch already holds it and nothing was written."""
        if isinstance(source, bytes):
            self.store.put_bytes(key, source, content_type="application/octet-stream")
        else:
            self.store._write_blob(key, sha256, size, source)
        return False

    def publish(self) -> None:  # noqa: B027 - stored as added
        """Make every added blob durable and visible."""

    def discard(self) -> None:  # noqa: B027 - stored as added
        """Drop what was added and not published."""

    def __enter__(self) -> BlobBatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.discard()
