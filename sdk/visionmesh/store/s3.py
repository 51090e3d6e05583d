"""S3-compatible backend via boto3: ``s3://bucket/prefix`` (AWS S3, Cloudflare R2, MinIO).

Configuration comes from the usual environment: ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` (R2/MinIO; path-style addressing is used with a custom endpoint),
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY`` (or any boto3 credential source) and
``AWS_DEFAULT_REGION`` (default ``us-east-1``; R2 accepts ``auto``).

S3 publishes an object only when a PutObject or CompleteMultipartUpload succeeds, so no
partial object is ever visible; a failed multipart upload is aborted.
"""

from __future__ import annotations

import contextlib
import hashlib
import mimetypes
import os
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from visionmesh.store.base import (
    BlobIntegrityError,
    KeyNotFound,
    ObjectStore,
    iter_chunks,
    validate_expiry,
    validate_key,
    validate_prefix,
)

# One boto3 session per process: it caches the service models (a new session costs ~0.1 s).
_session: Any = None
_session_lock = threading.Lock()

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_PART_CHECKSUMS = {
    "ChecksumCRC32",
    "ChecksumCRC32C",
    "ChecksumCRC64NVME",
    "ChecksumSHA1",
    "ChecksumSHA256",
}


def _is_missing(exc: Exception) -> bool:
    from botocore.exceptions import ClientError

    return isinstance(exc, ClientError) and str(exc.response.get("Error", {}).get("Code")) in (
        _MISSING_CODES
    )


class S3Store(ObjectStore):
    """Objects in ``bucket`` under ``prefix`` (keys are stored as ``<prefix>/<key>``).

    :meth:`presigned_url` returns a SigV4 presigned GET URL (no existence check).
    ``list_page_size``, ``multipart_threshold`` and ``part_size`` are tunable attributes.
    """

    list_page_size = 1000
    multipart_threshold = 16 * 1024 * 1024
    part_size = 8 * 1024 * 1024

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        client: Any = None,
    ) -> None:
        if not bucket:
            raise ValueError("S3 store URL needs a bucket: s3://bucket[/prefix]")
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        self.bucket = bucket
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
        self._key_prefix = f"{prefix}/" if prefix else ""
        if client is None:
            client = self._make_client(endpoint_url, region)
        self.client = client

    @staticmethod
    def _make_client(endpoint_url: str | None, region: str | None) -> Any:
        import boto3
        from botocore.config import Config

        endpoint_url = (
            endpoint_url
            or os.environ.get("AWS_ENDPOINT_URL_S3", "").strip()
            or os.environ.get("AWS_ENDPOINT_URL", "").strip()
            or None
        )
        region = region or os.environ.get("AWS_DEFAULT_REGION", "").strip() or None
        region = region or os.environ.get("AWS_REGION", "").strip() or "us-east-1"
        options: dict[str, Any] = {}
        if endpoint_url:
            # Third-party S3 (R2, MinIO, moto): path-style URLs, and checksums only where the
            # API requires them (older servers reject botocore's default CRC32 headers).
            options = {
                "s3": {"addressing_style": "path"},
                "request_checksum_calculation": "when_required",
                "response_checksum_validation": "when_required",
            }
        config = Config(
            signature_version="s3v4",
            retries={"max_attempts": 5, "mode": "standard"},
            max_pool_connections=32,
            **options,
        )
        # Keys from the environment as it is now (the shared session caches what it resolves);
        # without them boto3's usual chain applies (profile, SSO, instance role...).
        keys: dict[str, str] = {}
        key_id = os.environ.get("AWS_ACCESS_KEY_ID", "").strip()
        secret = os.environ.get("AWS_SECRET_ACCESS_KEY", "").strip()
        if key_id and secret:
            keys = {"aws_access_key_id": key_id, "aws_secret_access_key": secret}
            token = os.environ.get("AWS_SESSION_TOKEN", "").strip()
            if token:
                keys["aws_session_token"] = token
        global _session
        with _session_lock:  # boto3 sessions are not thread-safe; the clients they make are
            if _session is None:
                _session = boto3.session.Session()
            return _session.client(
                "s3", endpoint_url=endpoint_url, region_name=region, config=config, **keys
            )

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    def _k(self, key: str) -> str:
        return self._key_prefix + validate_key(key)

    def _missing(self, key: str) -> KeyNotFound:
        return KeyNotFound(key, self.url)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()

    # -- writes ----------------------------------------------------------------------------
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, **extra)

    def put_file(
        self, key: str, path: str | os.PathLike[str], content_type: str | None = None
    ) -> None:
        content_type = content_type or mimetypes.guess_type(os.fspath(path))[0]
        with open(path, "rb") as f:
            self.put_stream(key, f, content_type)

    def put_stream(self, key: str, fileobj: BinaryIO, content_type: str | None = None) -> None:
        full = self._k(key)
        extra = {"ContentType": content_type} if content_type else {}
        first = _read_full(fileobj, self.multipart_threshold)
        if len(first) < self.multipart_threshold:
            self.client.put_object(Bucket=self.bucket, Key=full, Body=first, **extra)
            return
        self._multipart(full, _chain_parts(first, fileobj, self.part_size), extra)

    def _multipart(self, full_key: str, parts: Iterator[bytes], extra: dict[str, str]) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=full_key, **extra)
        upload_id = upload["UploadId"]
        try:
            done = []
            for number, body in enumerate(parts, start=1):
                reply = self.client.upload_part(
                    Bucket=self.bucket,
                    Key=full_key,
                    UploadId=upload_id,
                    PartNumber=number,
                    Body=body,
                )
                part = {"PartNumber": number, "ETag": reply["ETag"]}
                # Echo any checksum botocore added, or S3 refuses to complete the upload.
                part.update({k: v for k, v in reply.items() if k in _PART_CHECKSUMS})
                done.append(part)
            self.client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=full_key,
                UploadId=upload_id,
                MultipartUpload={"Parts": done},
            )
        except BaseException:
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=full_key, UploadId=upload_id
                )
            raise

    def _write_blob(self, key: str, sha256: str, size: int, fileobj: BinaryIO) -> None:
        full = self._k(key)
        digest = hashlib.sha256()

        def check() -> None:
            if digest.hexdigest() != sha256:
                raise BlobIntegrityError(
                    f"content changed while storing {key}: now hashes to {digest.hexdigest()}"
                )

        extra = {"ContentType": "application/octet-stream"}
        if size < self.multipart_threshold:
            data = fileobj.read()
            digest.update(data)
            check()
            self.client.put_object(Bucket=self.bucket, Key=full, Body=data, **extra)
            return

        def hashed_parts() -> Iterator[bytes]:
            for part in _chain_parts(b"", fileobj, self.part_size):
                digest.update(part)
                yield part
            check()  # raising here aborts the upload before it is completed

        self._multipart(full, hashed_parts(), extra)

    def delete(self, key: str) -> None:
        if not self.exists(key):
            raise self._missing(key)
        self.client.delete_object(Bucket=self.bucket, Key=self._k(key))

    def copy(self, src: str, dst: str) -> None:
        source = {"Bucket": self.bucket, "Key": self._k(src)}
        target = self._k(dst)
        try:
            # Managed copy: one CopyObject, or a multipart copy above 5 GB.
            self.client.copy(source, self.bucket, target)
        except Exception as exc:
            if _is_missing(exc):
                raise self._missing(src) from None
            raise

    # -- reads -----------------------------------------------------------------------------
    def _get(self, key: str) -> Any:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._k(key))
        except Exception as exc:
            if _is_missing(exc):
                raise self._missing(key) from None
            raise

    def get_bytes(self, key: str) -> bytes:
        body = self._get(key)["Body"]
        with contextlib.closing(body):
            return body.read()

    def open_read(self, key: str) -> BinaryIO:
        # botocore's StreamingBody is an io.IOBase: read(n), iteration, close, ``with``.
        return self._get(key)["Body"]

    def download(self, key: str, dest_path: str | os.PathLike[str]) -> Path:
        dest = Path(dest_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                try:
                    self.client.download_fileobj(self.bucket, self._k(key), f)
                except Exception as exc:
                    if _is_missing(exc):
                        raise self._missing(key) from None
                    raise
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o600)  # private, like everything under VISIONMESH_HOME
            os.replace(tmp, dest)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return dest

    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._k(key))
        except Exception as exc:
            if _is_missing(exc):
                return None
            raise

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise self._missing(key)
        return int(head["ContentLength"])

    def list(self, prefix: str = "") -> Iterator[str]:
        validate_prefix(prefix)
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket,
            Prefix=self._key_prefix + prefix,
            PaginationConfig={"PageSize": self.list_page_size},
        )
        strip = len(self._key_prefix)
        for page in pages:
            for item in page.get("Contents", ()):
                yield item["Key"][strip:]

    def presigned_url(self, key: str, expires_seconds: int = 3600) -> str | None:
        return self.client.generate_presigned_url(
            "get_object",
            Params={"Bucket": self.bucket, "Key": self._k(key)},
            ExpiresIn=validate_expiry(expires_seconds),
        )


def _read_full(fileobj: BinaryIO, n: int) -> bytes:
    """Read up to ``n`` bytes, looping over short reads (sockets, pipes)."""
    chunks = []
    remaining = n
    while remaining > 0:
        chunk = fileobj.read(min(remaining, 1024 * 1024))
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _chain_parts(first: bytes, fileobj: BinaryIO, part_size: int) -> Iterator[bytes]:
    """``first`` followed by the rest of ``fileobj``, re-cut into ``part_size`` parts."""
    buffer = bytearray(first)
    sent = 0
    for chunk in iter_chunks(fileobj, min(part_size, 1024 * 1024)):
        buffer += chunk
        while len(buffer) >= part_size:
            yield bytes(buffer[:part_size])
            del buffer[:part_size]
            sent += 1
    if buffer or not sent:
        yield bytes(buffer)
