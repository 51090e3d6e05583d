"""Object store: the same tests against the local backend and S3 (moto server over HTTP)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import urllib.request
from pathlib import Path

import pytest

from tests._moto import MIN_PART_SIZE, MotoServer
from visionmesh.store import (
    BlobIntegrityError,
    KeyNotFound,
    LocalStore,
    ObjectStore,
    S3Store,
    blob_key,
    open_store,
    sha256_from_blob_key,
)
from visionmesh.store.base import TEMP_PREFIX


@pytest.fixture(scope="session")
def moto():
    with MotoServer() as server:
        yield server


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path, monkeypatch):
    if request.param == "local":
        s = open_store(tmp_path.joinpath("store").as_uri())
        assert isinstance(s, LocalStore)
    else:
        server = request.getfixturevalue("moto")
        server.apply_env(monkeypatch)
        bucket = server.create_bucket()
        s = open_store(f"s3://{bucket}/vm/prefix")
        assert isinstance(s, S3Store)
        s.test_client = server.client()  # raw access, to inspect what S3 holds
    yield s
    s.close()


def small_multipart(store: ObjectStore) -> None:
    """Make S3 use multipart uploads for anything above 2 parts' worth (no-op locally)."""
    if isinstance(store, S3Store):
        store.part_size = MIN_PART_SIZE
        store.multipart_threshold = 2 * MIN_PART_SIZE


def pending_uploads(store: ObjectStore) -> list:
    if not isinstance(store, S3Store):
        return []
    reply = store.test_client.list_multipart_uploads(Bucket=store.bucket)
    return reply.get("Uploads", [])


def stray_temp_files(store: ObjectStore) -> list[str]:
    if not isinstance(store, LocalStore):
        return []
    return [
        str(p) for p in store.root.rglob("*") if p.name.startswith(TEMP_PREFIX) or ".tmp-" in p.name
    ]


# -- basic operations ---------------------------------------------------------------------


def test_bytes_file_stream_roundtrip(store, tmp_path):
    store.put_bytes("runs/j1/job.json", b'{"a": 1}', content_type="application/json")
    assert store.exists("runs/j1/job.json")
    assert store.get_bytes("runs/j1/job.json") == b'{"a": 1}'
    assert store.size("runs/j1/job.json") == 8

    src = tmp_path / "last.pt"
    src.write_bytes(b"weights" * 100)
    store.put_file("checkpoints/j1/last.pt", src)
    assert store.get_bytes("checkpoints/j1/last.pt") == b"weights" * 100

    store.put_stream("runs/j1/log.txt", io.BytesIO(b"line\n" * 10))
    with store.open_read("runs/j1/log.txt") as f:
        assert f.read(5) == b"line\n"
        assert f.read() == b"line\n" * 9

    store.put_bytes("runs/j1/job.json", b"{}")  # overwrite
    assert store.get_bytes("runs/j1/job.json") == b"{}"

    store.put_bytes("empty", b"")
    assert store.get_bytes("empty") == b"" and store.size("empty") == 0


def test_download_is_atomic_and_creates_folders(store, tmp_path):
    store.put_bytes("a/b.bin", b"new content")
    dest = tmp_path / "cache" / "deep" / "b.bin"
    assert store.download("a/b.bin", dest) == dest
    assert dest.read_bytes() == b"new content"

    dest.write_bytes(b"old")
    with pytest.raises(KeyNotFound):
        store.download("a/missing.bin", dest)
    assert dest.read_bytes() == b"old", "a failed download must not touch the destination"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["b.bin"], "temp file left behind"


def test_copy_and_delete(store):
    store.put_bytes("src/x.txt", b"x")
    store.copy("src/x.txt", "dst/y.txt")
    assert store.get_bytes("dst/y.txt") == b"x"
    store.delete("src/x.txt")
    assert not store.exists("src/x.txt")
    assert store.exists("dst/y.txt")


def test_unicode_and_spaces_in_keys(store):
    key = "datasets/d1/images/train/ünïcode dir/cat #1+2.jpg"
    store.put_bytes(key, b"meow")
    assert store.get_bytes(key) == b"meow"
    assert list(store.list("datasets/d1/")) == [key]


# -- errors -------------------------------------------------------------------------------


def test_missing_key_raises_keynotfound(store, tmp_path):
    missing = "nope/missing.bin"
    assert not store.exists(missing)
    calls = [
        lambda: store.get_bytes(missing),
        lambda: store.open_read(missing),
        lambda: store.size(missing),
        lambda: store.delete(missing),
        lambda: store.copy(missing, "other"),
        lambda: store.download(missing, tmp_path / "out.bin"),
    ]
    for call in calls:
        with pytest.raises(KeyNotFound) as info:
            call()
        assert isinstance(info.value, KeyError)
        assert info.value.key == missing
        assert f"'{missing}' not found" in str(info.value)
    assert not (tmp_path / "out.bin").exists()
    assert not store.exists("other")


BAD_KEYS = [
    ("", "must not be empty"),
    ("/abs/key", "no leading '/'"),
    ("a//b", "empty path segment"),
    ("a/b/", "empty path segment"),
    ("../etc/passwd", "'..' segments"),
    ("a/../../b", "'..' segments"),
    ("./a", "'.' segments"),
    ("a\\b", "use '/' as separator"),
    ("a\x00b", "control characters"),
    ("k" * 1025, "longer than 1024 bytes"),
    (f"x/{TEMP_PREFIX}abc", "reserved"),
]


@pytest.mark.parametrize(("key", "reason"), BAD_KEYS, ids=range(len(BAD_KEYS)))
def test_invalid_keys_are_refused(store, key, reason, tmp_path):
    operations = [
        lambda: store.put_bytes(key, b"x"),
        lambda: store.put_stream(key, io.BytesIO(b"x")),
        lambda: store.get_bytes(key),
        lambda: store.exists(key),
        lambda: store.size(key),
        lambda: store.delete(key),
        lambda: store.copy("ok", key),
        lambda: store.download(key, tmp_path / "x"),
        lambda: store.presigned_url(key, 60),
    ]
    for operation in operations:
        with pytest.raises(ValueError, match="invalid object key") as info:
            operation()
        assert reason in str(info.value)
    assert list(store.list()) == []


@pytest.mark.parametrize("prefix", ["/a", "../", "a//b", "a/../b", "a\\"])
def test_invalid_prefixes_are_refused(store, prefix):
    with pytest.raises(ValueError, match="invalid prefix"):
        list(store.list(prefix))


# -- listing ------------------------------------------------------------------------------


def test_list_is_sorted_prefix_filtered_and_paginated(store):
    keys = [f"datasets/d1/images/{i:03d}.jpg" for i in range(23)]
    # Names whose order differs between "walk a folder tree" and "sort the full keys".
    keys += ["a.txt", "a/b", "a/c/d", "a0", "a-b", "ab/c", "b"]
    for key in keys:
        store.put_bytes(key, b"")
    calls = []
    if isinstance(store, S3Store):
        store.list_page_size = 5
        store.client.meta.events.register(
            "before-call.s3.ListObjectsV2", lambda **kw: calls.append(1)
        )

    assert list(store.list()) == sorted(keys)
    if isinstance(store, S3Store):
        assert len(calls) >= 6, "the listing must follow continuation tokens"

    images = [k for k in keys if k.startswith("datasets/")]
    assert list(store.list("datasets/d1/images/")) == images
    assert list(store.list("datasets/d1/images/01")) == images[10:20]
    assert list(store.list("a")) == sorted(k for k in keys if k.startswith("a"))
    assert list(store.list("a/")) == ["a/b", "a/c/d"]
    assert list(store.list("datasets/d2/")) == []
    assert list(store.list("zzz")) == []


def test_s3_prefix_isolates_keys(moto, monkeypatch):
    moto.apply_env(monkeypatch)
    store = open_store(f"s3://{moto.create_bucket()}/vm/prefix")
    store.test_client = moto.client()
    store.test_client.put_object(Bucket=store.bucket, Key="outside/x", Body=b"")
    store.test_client.put_object(Bucket=store.bucket, Key="vm/prefixed/x", Body=b"")
    store.put_bytes("inside/x", b"1")
    assert list(store.list()) == ["inside/x"]
    head = store.test_client.head_object(Bucket=store.bucket, Key="vm/prefix/inside/x")
    assert head["ContentLength"] == 1


# -- presigned URLs -----------------------------------------------------------------------


def test_presigned_url_is_fetchable(store):
    store.put_bytes("exports/d1/s1.coco.zip", b"PK zip bytes", content_type="application/zip")
    url = store.presigned_url("exports/d1/s1.coco.zip", expires_seconds=120)
    if isinstance(store, LocalStore):
        assert url.startswith("file:///")
    else:
        assert url.startswith(store.test_client.meta.endpoint_url)
        assert "X-Amz-Signature=" in url
    for bad in [0, -1, 7 * 24 * 3600 + 1]:
        with pytest.raises(ValueError, match="expires_seconds"):
            store.presigned_url("exports/d1/s1.coco.zip", bad)
    with urllib.request.urlopen(url, timeout=10) as response:  # file:// and http:// both
        assert response.read() == b"PK zip bytes"
        if isinstance(store, S3Store):
            assert response.headers["Content-Type"] == "application/zip"


# -- content-addressed blobs --------------------------------------------------------------


def test_blob_key_format():
    digest = hashlib.sha256(b"x").hexdigest()
    assert blob_key(digest) == f"blobs/sha256/{digest[:2]}/{digest}"
    assert sha256_from_blob_key(blob_key(digest)) == digest
    assert sha256_from_blob_key("blobs/sha256/zz/" + digest) is None
    for bad in ["", "ABC", digest.upper(), digest[:-1], digest + "0"]:
        with pytest.raises(ValueError, match="invalid sha256"):
            blob_key(bad)


def test_put_blob_from_file_hashes_and_dedups(store, tmp_path, monkeypatch):
    data = os.urandom(3000)
    digest = hashlib.sha256(data).hexdigest()
    first = tmp_path / "one" / "cat.jpg"
    first.parent.mkdir()
    first.write_bytes(data)

    assert store.put_blob_from_file(first) == digest
    assert store.get_bytes(blob_key(digest)) == data
    assert store.has_blob(digest)
    assert store.object_sha256(blob_key(digest)) == digest

    # Same bytes under another name: nothing is uploaded again.
    second = tmp_path / "two" / "same-cat.png"
    second.parent.mkdir()
    second.write_bytes(data)

    def no_upload(*args, **kwargs):
        raise AssertionError("dedup failed: the blob was uploaded twice")

    monkeypatch.setattr(store, "_write_blob", no_upload)
    monkeypatch.setattr(store, "put_bytes", no_upload)
    assert store.put_blob_from_file(second) == digest
    assert store.put_blob_bytes(data) == digest
    assert list(store.list("blobs/")) == [blob_key(digest)]


def test_put_blob_bytes(store):
    digest = store.put_blob_bytes(b"tiny")
    assert digest == hashlib.sha256(b"tiny").hexdigest()
    assert store.get_bytes(blob_key(digest)) == b"tiny"


def test_large_blob_and_stream_use_multipart(store, tmp_path):
    small_multipart(store)
    data = os.urandom(5 * MIN_PART_SIZE + 123)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    digest = store.put_blob_from_file(path)
    assert digest == hashlib.sha256(data).hexdigest()
    assert store.get_bytes(blob_key(digest)) == data

    store.put_stream("checkpoints/j1/best.pt", io.BytesIO(data))
    store.put_file("checkpoints/j1/last.pt", path)
    assert store.get_bytes("checkpoints/j1/best.pt") == data
    assert store.download("checkpoints/j1/last.pt", tmp_path / "dl.pt").read_bytes() == data
    if isinstance(store, S3Store):
        head = store.test_client.head_object(
            Bucket=store.bucket, Key=f"{store.prefix}/{blob_key(digest)}"
        )
        assert head["ETag"].strip('"').endswith("-6"), "expected a 6-part multipart upload"
    assert pending_uploads(store) == []


class FailingReader(io.RawIOBase):
    """Returns ``good`` bytes in small reads, then fails like a yanked disk."""

    def __init__(self, good: bytes) -> None:
        self.buffer = io.BytesIO(good)

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        n = self.buffer.readinto(memoryview(b)[:1024])
        if n == 0:
            raise OSError("simulated I/O error mid-upload")
        return n


@pytest.mark.parametrize("size", ["small", "multipart"])
def test_interrupted_blob_upload_leaves_no_object(store, tmp_path, monkeypatch, size):
    small_multipart(store)
    length = 1000 if size == "small" else 4 * MIN_PART_SIZE
    data = os.urandom(length)
    path = tmp_path / "img.jpg"
    path.write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()

    # The hashing pass reads the real file; the write pass dies after half the bytes.
    monkeypatch.setattr(store, "_open_source", lambda p: FailingReader(data[: length // 2]))
    with pytest.raises(OSError, match="simulated I/O error"):
        store.put_blob_from_file(path)
    assert not store.exists(blob_key(digest))
    assert list(store.list()) == []
    assert stray_temp_files(store) == []
    assert pending_uploads(store) == []

    monkeypatch.undo()
    small_multipart(store)
    assert store.put_blob_from_file(path) == digest  # a retry succeeds
    assert store.get_bytes(blob_key(digest)) == data


@pytest.mark.parametrize("size", ["small", "multipart"])
def test_blob_whose_source_changes_is_not_published(store, tmp_path, monkeypatch, size):
    small_multipart(store)
    length = 1000 if size == "small" else 4 * MIN_PART_SIZE
    path = tmp_path / "img.jpg"
    path.write_bytes(b"a" * length)
    digest = hashlib.sha256(b"a" * length).hexdigest()

    # The file is rewritten between the hashing pass and the write pass.
    monkeypatch.setattr(store, "_open_source", lambda p: io.BytesIO(b"b" * length))
    with pytest.raises(BlobIntegrityError, match="content changed"):
        store.put_blob_from_file(path)
    assert not store.exists(blob_key(digest))
    assert list(store.list()) == []
    assert stray_temp_files(store) == []
    assert pending_uploads(store) == []


def test_concurrent_puts_of_the_same_blob(store, tmp_path):
    data = os.urandom(20000)
    paths = []
    for i in range(4):
        p = tmp_path / f"copy{i}.bin"
        p.write_bytes(data)
        paths.append(p)
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda p=p: results.append(store.put_blob_from_file(p)))
        for p in paths
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    digest = hashlib.sha256(data).hexdigest()
    assert results == [digest] * 4
    assert store.get_bytes(blob_key(digest)) == data
    assert list(store.list()) == [blob_key(digest)]
    assert stray_temp_files(store) == []


# -- blob batches -------------------------------------------------------------------------


def test_blob_batch_publishes_everything_it_added(store, tmp_path):
    stored = store.put_blob_bytes(b"already here")
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(50_000))
    with store.blob_batch() as batch:
        assert batch.add_bytes(b"already here") == (stored, True)
        one, existed = batch.add_bytes(b"one")
        assert one == hashlib.sha256(b"one").hexdigest() and not existed
        assert batch.add_bytes(b"one") == (one, True)  # twice in one batch: written once
        two, existed = batch.add_file(big)
        assert two == hashlib.sha256(big.read_bytes()).hexdigest() and not existed
        if isinstance(store, LocalStore):  # staged: neither listed nor visible yet
            assert not store.has_blob(one) and list(store.list("blobs/")) == [blob_key(stored)]
        batch.publish()
    assert store.get_bytes(blob_key(one)) == b"one"
    assert store.get_bytes(blob_key(two)) == big.read_bytes()
    assert sorted(store.list("blobs/")) == sorted(blob_key(d) for d in (stored, one, two))
    assert stray_temp_files(store) == []


def test_local_blob_batch_discarded_publishes_nothing(tmp_path):
    store = LocalStore(tmp_path / "store")  # S3 stores each blob as added: nothing to discard
    with store.blob_batch() as batch:
        digest, _ = batch.add_bytes(b"never published")
        assert stray_temp_files(store)  # the staging folder
    assert not store.has_blob(digest)
    assert list(store.list()) == [] and stray_temp_files(store) == []


def test_blob_batch_refuses_a_file_that_changes(store, tmp_path, monkeypatch):
    path = tmp_path / "img.jpg"
    path.write_bytes(b"a" * 1000)
    monkeypatch.setattr(store, "_open_source", lambda p: io.BytesIO(b"b" * 1000))
    with store.blob_batch() as batch:
        with pytest.raises(BlobIntegrityError, match="content changed"):
            batch.add_file(path)
        batch.publish()
    assert list(store.list()) == [] and stray_temp_files(store) == []


def test_stale_staging_is_removed_fresh_staging_kept(store):
    if not isinstance(store, LocalStore):
        assert store.remove_stale_staging(0) == 0
        return
    dead, live = store.blob_batch(), store.blob_batch()
    dead_digest, _ = dead.add_bytes(b"from a server that died")
    live.add_bytes(b"from an upload still running")
    (dead_folder,) = [p for p in store.root.iterdir() if dead_digest in os.listdir(p)]
    old = dead_folder.stat().st_mtime - 7200
    os.utime(dead_folder, (old, old))
    assert store.remove_stale_staging(3600) == 1
    assert not dead_folder.exists()
    live.publish()  # the live batch is unharmed
    assert store.get_bytes(blob_key(hashlib.sha256(b"from an upload still running").hexdigest()))
    assert stray_temp_files(store) == []


# -- factory ------------------------------------------------------------------------------


def test_open_store_urls(tmp_path, monkeypatch):
    local = open_store(tmp_path.joinpath("s").as_uri())
    assert isinstance(local, LocalStore) and local.root == tmp_path / "s"
    assert open_store(str(tmp_path / "bare")).root == tmp_path / "bare"

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    s3 = open_store("s3://my-bucket/some/prefix/")
    assert isinstance(s3, S3Store)
    assert (s3.bucket, s3.prefix, s3.url) == (
        "my-bucket",
        "some/prefix",
        "s3://my-bucket/some/prefix",
    )
    assert s3.client.meta.endpoint_url == "http://127.0.0.1:9"
    assert open_store("s3://bare-bucket").prefix == ""

    with pytest.raises(ValueError, match="unsupported store URL"):
        open_store("ftp://host/x")
    with pytest.raises(ValueError, match="needs a bucket"):
        open_store("s3:///prefix")


def test_open_store_defaults_to_config(tmp_path, monkeypatch):
    monkeypatch.delenv("VISIONMESH_STORE_URL", raising=False)
    monkeypatch.setenv("VISIONMESH_HOME", str(tmp_path / "home"))
    store = open_store()
    assert isinstance(store, LocalStore)
    assert store.root == (tmp_path / "home" / "store").resolve()

    monkeypatch.setenv("VISIONMESH_STORE_URL", (tmp_path / "elsewhere").as_uri())
    assert Path(open_store().root) == tmp_path / "elsewhere"
