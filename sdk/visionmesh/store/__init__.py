"""Object store: one small interface, two backends (local folder, S3-compatible).

>>> store = open_store()                      # VISIONMESH_STORE_URL, default file://$HOME/store
>>> sha = store.put_blob_from_file("cat.jpg")  # blobs/sha256/ab/<hex>, deduplicated, atomic
>>> store.get_bytes(blob_key(sha))

URLs: ``file:///abs/path`` -> :class:`LocalStore`; ``s3://bucket[/prefix]`` ->
:class:`S3Store` (``AWS_ENDPOINT_URL`` for R2/MinIO, ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``). See :mod:`visionmesh.store.base` for
the key rules and error types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from visionmesh.store.base import (
    BLOB_PREFIX,
    BlobIntegrityError,
    KeyNotFound,
    ObjectStore,
    blob_key,
    file_sha256,
    sha256_from_blob_key,
    validate_key,
    validate_prefix,
)
from visionmesh.store.local import LocalStore

if TYPE_CHECKING:
    from visionmesh.store.s3 import S3Store

__all__ = [
    "BLOB_PREFIX",
    "BlobIntegrityError",
    "KeyNotFound",
    "LocalStore",
    "ObjectStore",
    "S3Store",
    "blob_key",
    "file_sha256",
    "open_store",
    "sha256_from_blob_key",
    "validate_key",
    "validate_prefix",
]


def open_store(url: str | None = None) -> ObjectStore:
    """Open the store at ``url`` (default: ``config.load().store_url``).

    ``file:///abs/path`` (``file://relative/path`` and a bare path are accepted too) or
    ``s3://bucket/optional/prefix``. Raises ValueError for any other scheme.
    """
    if url is None:
        from visionmesh import config

        url = config.load().store_url
    parsed = urlparse(url)
    if parsed.scheme == "s3":
        from visionmesh.store.s3 import S3Store

        return S3Store(parsed.netloc, unquote(parsed.path))
    if parsed.scheme == "file":
        # file:///abs -> netloc '' path '/abs'; file://var/store (relative, as config may build
        # from a relative home) -> netloc 'var' path '/store'.
        netloc = "" if parsed.netloc == "localhost" else parsed.netloc
        path = unquote(netloc + parsed.path)
        if not path:
            raise ValueError(f"store URL {url!r} has no path: use file:///absolute/path")
        return LocalStore(path)
    if parsed.scheme == "" and url:
        return LocalStore(url)
    raise ValueError(
        f"unsupported store URL {url!r}: use file:///absolute/path or s3://bucket/prefix"
    )


def __getattr__(name: str) -> object:  # lazy: importing boto3 costs ~0.3 s
    if name == "S3Store":
        from visionmesh.store.s3 import S3Store

        return S3Store
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
