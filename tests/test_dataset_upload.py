"""UploadImages over real gRPC: structure kept, dedup, limits, and all-or-nothing commits.

An upload killed half-way (client cancels, server SIGKILLed) or racing the garbage
collector leaves no image rows and no row referencing a missing blob.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time

import grpc
import pytest

from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture, image_bytes, shared_data
from tests._servers import ROOT, child_env
from visionmesh.errors import bad_request_fields
from visionmesh.store import BLOB_PREFIX, blob_key
from visionmesh.uploads import MESSAGE_BYTES, folder_files, upload_requests
from visionmesh.v1 import dataset_pb2

LIMITS = {
    "VISIONMESH_MAX_IMAGE_BYTES": "150000",
    "VISIONMESH_MAX_IMAGE_PIXELS": "4000000",
    "VISIONMESH_MAX_UPLOAD_BYTES": "3000000",
    "VISIONMESH_UPLOAD_SPOOL_BYTES": "20000",  # bigger files wait in temp files
}
server = dataset_server_fixture([DEFAULT_BACKEND], extra_env=LIMITS)
D = dataset_pb2
Conflict = D.UploadImagesHeader.OnConflict


def noise_png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    out = io.BytesIO()
    Image.frombytes("RGB", (width, height), os.urandom(width * height * 3)).save(out, "PNG")
    return out.getvalue()


def run_gc(server, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "dataset_svc.gc", *args],
        cwd=ROOT,
        env=child_env(server.env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def stored_blobs(server) -> set[str]:
    with server.store() as store:
        return {k.rsplit("/", 1)[1] for k in store.list(BLOB_PREFIX)}


def test_upload_requests_pack_small_files_and_stream_big_ones(tmp_path):
    big = tmp_path / "big.png"
    big.write_bytes(os.urandom(2500))
    files = [("a.png", b"a" * 300), ("b.png", b"b" * 300), ("big.png", big), ("c.png", b"c" * 600)]
    stream = list(upload_requests("datasets/x", files, message_bytes=1000))
    assert stream[0].WhichOneof("payload") == "header"
    kinds = [m.WhichOneof("payload") for m in stream[1:]]
    assert kinds == ["chunks", "chunk", "chunk", "chunk", "chunk", "end"]
    assert stream[-1].end.file_count == 4
    assert [c.path for c in stream[1].chunks.chunks] == ["a.png", "b.png"]
    pieces = [m.chunk for m in stream[2:5]]
    assert [p.path for p in pieces] == ["big.png", "", ""]
    assert b"".join(p.data for p in pieces) == big.read_bytes()
    assert max(len(p.data) for p in pieces) == 1000
    assert stream[5].chunk.path == "c.png" and stream[5].chunk.data == b"c" * 600


@pytest.mark.parametrize(
    "message_bytes", [1000, MESSAGE_BYTES], ids=["pieces-per-file", "files-per-message"]
)
def test_folder_structure_split_and_dedup(server, message_bytes):
    folder = shared_data("cls-imagenet-10")
    alice = server.user("alice")
    ds = alice.create_dataset("imagenet-10")
    files = folder_files(folder)
    already_stored = stored_blobs(server)  # the other parametrization stored some
    reply = alice.upload(ds.name, files, message_bytes=message_bytes)
    assert sorted(i.path for i in reply.images) == sorted(p for p, _ in files)
    assert reply.received_bytes == sum(p.stat().st_size for _, p in files)
    # "x copy.JPEG" and "x copy 2.JPEG" are byte-identical to "x.JPEG": stored once.
    copies = [p for p, _ in files if " copy" in p]
    new_blobs = {hashlib.sha256(p.read_bytes()).hexdigest() for _, p in files} - already_stored
    assert copies and len(new_blobs) <= len(files) - len(copies)
    assert reply.deduplicated_count == len(files) - len(new_blobs)
    assert new_blobs <= stored_blobs(server)
    by_path = {i.path: i for i in reply.images}
    sample = next(p for p, _ in files if p.startswith("val/"))
    assert by_path[sample].split == "val" and by_path[sample].content_type == "image/jpeg"
    assert by_path[sample].width > 0 and by_path[sample].height > 0
    original = next(p for p in copies if p.endswith(" copy.JPEG")).replace(" copy", "")
    assert by_path[original].sha256 == by_path[original.replace(".JPEG", " copy.JPEG")].sha256
    listed = alice.all_images(ds.name)
    assert {i.path for i in listed} == set(by_path)
    got = alice.datasets.GetDataset(D.GetDatasetRequest(name=ds.name)).dataset
    assert got.image_count == len(files)
    assert got.total_bytes == sum({i.sha256: i.size_bytes for i in listed}.values())
    val = alice.datasets.ListImages(
        D.ListImagesRequest(parent=ds.name, filter='split="val"', page_size=1000)
    )
    assert val.total_size == sum(1 for p, _ in files if p.startswith("val/"))
    prefixed = alice.datasets.ListImages(
        D.ListImagesRequest(parent=ds.name, filter='path:"train/n0144"')
    )
    assert prefixed.total_size and all(i.path.startswith("train/n0144") for i in prefixed.images)


def test_path_prefix_and_conflicts(server):
    alice = server.user("alice")
    ds = alice.create_dataset("conflicts")
    first = alice.upload(
        ds.name, {"a.png": image_bytes(color=(1, 0, 0))}, path_prefix="images/train"
    )
    assert first.images[0].path == "images/train/a.png" and first.images[0].split == "train"
    image_id = first.images[0].name
    new = {"a.png": image_bytes(color=(0, 1, 0))}
    skipped = alice.upload(
        ds.name, new, path_prefix="images/train", on_conflict=Conflict.ON_CONFLICT_SKIP
    )
    assert not skipped.images and skipped.skipped[0].path == "images/train/a.png"
    with pytest.raises(grpc.RpcError) as err:
        alice.upload(
            ds.name, new, path_prefix="images/train", on_conflict=Conflict.ON_CONFLICT_FAIL
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    replaced = alice.upload(ds.name, new, path_prefix="images/train")  # default: replace
    assert replaced.images[0].name == image_id
    assert replaced.images[0].sha256 != first.images[0].sha256
    assert [i.sha256 for i in alice.all_images(ds.name)] == [replaced.images[0].sha256]


def test_non_images_oversize_and_bombs_are_skipped_with_reasons(server):
    alice = server.user("alice")
    ds = alice.create_dataset("rejects")
    files = {
        "ok.png": image_bytes(),
        "notes.txt": b"not an image",
        "fake.jpg": b"\xff\xd8\xff\xe0 truncated",
        "huge.png": noise_png(250, 250),  # > 150 kB
        "bomb.png": image_bytes(2500, 2000),  # 5 Mpx > 4 Mpx, tiny on the wire
        "empty.png": b"",
    }
    reply = alice.upload(ds.name, files)
    assert [i.path for i in reply.images] == ["ok.png"]
    reasons = {s.path: s.reason for s in reply.skipped}
    assert set(reasons) == set(files) - {"ok.png"}
    assert "not an image" in reasons["notes.txt"] and "not an image" in reasons["fake.jpg"]
    assert "150000-byte limit" in reasons["huge.png"]
    assert "decompression bomb" in reasons["bomb.png"]
    assert "empty" in reasons["empty.png"]


def gif(width: int, height: int, frames: int) -> bytes:
    import io

    from PIL import Image

    images = [Image.new("RGB", (width, height), (i % 256, i // 256 * 40, 0)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=10)
    return out.getvalue()


def test_images_are_decoded_whole_before_they_are_accepted(server):
    alice = server.user("alice")
    ds = alice.create_dataset("decoded")
    whole_png = noise_png(40, 30)
    animation = gif(100, 100, 3)
    bomb = gif(100, 100, 401)  # 401 frames x 10,000 pixels > the 4,000,000-pixel limit
    before = stored_blobs(server)
    reply = alice.upload(
        ds.name,
        {
            "ok.png": whole_png,
            "cut.png": whole_png[: len(whole_png) // 2],
            "anim.gif": animation,
            "cut.gif": animation[: len(animation) - 40],
            "frames.gif": bomb,
        },
    )
    assert sorted(i.path for i in reply.images) == ["anim.gif", "ok.png"]
    reasons = {r.path: r.reason for r in reply.skipped}
    assert set(reasons) == {"cut.png", "cut.gif", "frames.gif"}
    assert "truncated" in reasons["cut.png"] and "truncated" in reasons["cut.gif"]
    assert "401 frames" in reasons["frames.gif"]
    assert len(stored_blobs(server) - before) == 2


def test_bad_streams_are_invalid_and_commit_nothing(server):
    alice = server.user("alice")
    ds = alice.create_dataset("bad streams")
    cases = {
        "chunk.path": upload_requests(ds.name, [("../escape.png", image_bytes())]),
        "header.parent": upload_requests("nonsense", [("a.png", image_bytes())]),
        "header.path_prefix": upload_requests(
            ds.name, [("a.png", image_bytes())], path_prefix="/abs"
        ),
        "header": iter(
            [D.UploadImagesRequest(chunk=D.FileChunk(path="a.png", data=image_bytes()))]
        ),
    }
    for field, stream in cases.items():
        with pytest.raises(grpc.RpcError) as err:
            alice.datasets.UploadImages(stream, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert field in bad_request_fields(err.value), (field, err.value.details())
    good_then_bad = without_end(upload_requests(ds.name, [("fine.png", image_bytes())])) + [
        D.UploadImagesRequest(chunk=D.FileChunk(path="/etc/passwd", data=b"x")),
        D.UploadImagesRequest(end=D.UploadImagesEnd(file_count=2)),
    ]
    with pytest.raises(grpc.RpcError):
        alice.datasets.UploadImages(iter(good_then_bad), timeout=30)
    assert alice.all_images(ds.name) == []


def test_too_large_upload_is_resource_exhausted(server):
    alice = server.user("alice")
    ds = alice.create_dataset("too large")
    files = [(f"n{i}.png", noise_png(600, 600)) for i in range(3)]  # ~1.1 MB each, 3 MB cap
    with pytest.raises(grpc.RpcError) as err:
        alice.upload(ds.name, [("small.png", image_bytes()), *files])
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "split it" in err.value.details()
    assert alice.all_images(ds.name) == []


def without_end(stream) -> list:
    """An upload stream left open: everything but its end message."""
    return [m for m in stream if m.WhichOneof("payload") != "end"]


def test_only_a_stream_with_its_end_message_commits(server):
    alice = server.user("alice")
    ds = alice.create_dataset("end of stream")
    files = [("a.png", image_bytes()), ("b.png", image_bytes(color=(1, 2, 3)))]
    complete = list(upload_requests(ds.name, files))
    after_end = complete + [D.UploadImagesRequest(chunk=D.FileChunk(path="c.png", data=b"x"))]
    wrong_count = complete[:-1] + [D.UploadImagesRequest(end=D.UploadImagesEnd(file_count=3))]
    for field, stream, words in [
        ("end", without_end(complete), 'finish with {"end": {"file_count": 2}}'),
        ("end.file_count", wrong_count, "end.file_count is 3 but the stream carried 2"),
        ("end", after_end, "nothing may follow the end message"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            alice.datasets.UploadImages(iter(stream), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, words
        assert field in bad_request_fields(err.value) and words in err.value.details()
        assert alice.all_images(ds.name) == []
    reply = alice.datasets.UploadImages(iter(complete), timeout=30)
    assert sorted(i.path for i in reply.images) == ["a.png", "b.png"]


class Gate:
    """An upload stream that pauses after its first files until released."""

    def __init__(self, parent: str, before: dict[str, bytes], after: dict[str, bytes]) -> None:
        self.parent, self.before, self.after = parent, before, after
        self.paused = threading.Event()
        self.release = threading.Event()

    def __iter__(self):
        yield from without_end(upload_requests(self.parent, self.before.items()))
        self.paused.set()
        self.release.wait(60)
        for path, data in self.after.items():
            yield D.UploadImagesRequest(chunk=D.FileChunk(path=path, data=data))
        count = len(self.before) + len(self.after)
        yield D.UploadImagesRequest(end=D.UploadImagesEnd(file_count=count))


def _assert_clean(server, client, dataset_name) -> None:
    assert client.all_images(dataset_name) == []
    got = client.datasets.GetDataset(D.GetDatasetRequest(name=dataset_name)).dataset
    assert got.image_count == 0 and got.total_bytes == 0
    check = client.datasets.CheckIntegrity(D.CheckIntegrityRequest(name=dataset_name))
    assert check.ok


def staged_blobs(server) -> set[str]:
    """Blobs an upload wrote but has not published (the local store's batch folders)."""
    with server.store() as store:
        return {p.name for p in store.root.glob(".vmtmp-batch-*/*")}


def _wait_received(server, digests, timeout=10) -> None:
    deadline = time.monotonic() + timeout
    while not digests <= stored_blobs(server) | staged_blobs(server):
        assert time.monotonic() < deadline, "the server never stored the first files"
        time.sleep(0.05)


def test_client_cancel_half_way_commits_nothing(server):
    import hashlib

    alice = server.user("alice")
    ds = alice.create_dataset("cancelled")
    before = {f"train/{i}.png": image_bytes(color=(i, 7, 7)) for i in range(3)}
    gate = Gate(ds.name, before, {"train/late.png": image_bytes(color=(8, 8, 8))})
    future = alice.datasets.UploadImages.future(iter(gate), timeout=60)
    assert gate.paused.wait(30)
    ordered = [hashlib.sha256(b).hexdigest() for b in before.values()]
    digests = set(ordered)
    _wait_received(server, set(ordered[:-1]))  # the last file ends only when the next begins
    assert not digests & stored_blobs(server)  # staged: nothing is visible before the end
    future.cancel()
    gate.release.set()
    with pytest.raises(grpc.FutureCancelledError):
        future.result()
    time.sleep(0.3)
    _assert_clean(server, alice, ds.name)
    assert not staged_blobs(server)  # the cancelled upload dropped its staging itself
    assert "blobs seen" in run_gc(server)
    assert not digests & stored_blobs(server)
    uploads_tmp = server.home.joinpath("tmp", "uploads")
    assert not uploads_tmp.exists() or not any(uploads_tmp.iterdir())


def test_upload_racing_the_gc_is_aborted_not_half_committed(server):
    alice = server.user("alice")
    ds = alice.create_dataset("gc race")
    data = image_bytes(color=(42, 42, 42))
    # A stored blob nothing references (garbage), which the upload then deduplicates against.
    with server.store() as store:
        digest = store.put_blob_bytes(data)
    # a.png is complete (and deduplicated) once the next file starts.
    before = {"a.png": data, "b.png": image_bytes(color=(43, 43, 43))}
    gate = Gate(ds.name, before, {"c.png": image_bytes(color=(44, 44, 44))})
    future = alice.datasets.UploadImages.future(iter(gate), timeout=60)
    assert gate.paused.wait(30)
    time.sleep(0.5)
    run_gc(server)  # deletes the unreferenced blob meanwhile
    assert digest not in stored_blobs(server)
    gate.release.set()
    with pytest.raises(grpc.RpcError) as err:
        future.result()
    assert err.value.code() == grpc.StatusCode.ABORTED and "retry" in err.value.details()
    _assert_clean(server, alice, ds.name)
    reply = alice.upload(ds.name, {"a.png": data})  # a retry works
    assert reply.images[0].sha256 == digest and digest in stored_blobs(server)


def test_server_killed_half_way_commits_nothing(server):
    """Runs last in this module: it SIGKILLs and restarts the server."""
    import hashlib

    alice = server.user("alice")
    username, token = alice.username, alice.token
    ds = alice.create_dataset("killed")
    before = {f"val/{i}.png": image_bytes(color=(i, 9, 9)) for i in range(3)}
    before["val/big.png"] = noise_png(120, 120)  # over the spool size: in a temp file
    before["val/last.png"] = image_bytes(color=(4, 9, 9))
    gate = Gate(ds.name, before, {"val/late.png": image_bytes(color=(1, 9, 1))})
    future = alice.datasets.UploadImages.future(iter(gate), timeout=60)
    assert gate.paused.wait(30)
    ordered = [hashlib.sha256(b).hexdigest() for b in before.values()]
    digests = set(ordered)
    _wait_received(server, set(ordered[:-1]))  # the last file ends only when the next begins
    server.process.kill()  # SIGKILL: no drain, no cleanup
    gate.release.set()
    with pytest.raises(grpc.RpcError) as err:
        future.result()
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert set(ordered[:-1]) <= staged_blobs(server)  # left behind by the dead server
    leftovers = list(server.home.joinpath("tmp", "uploads").iterdir())
    assert leftovers  # the big file's temp folder
    server.restart()
    assert not any(p.exists() for p in leftovers)  # the restart removed the temp files
    alice = server.client(username, token)  # tokens survive a restart (same key pair)
    _assert_clean(server, alice, ds.name)
    run_gc(server)  # fresh staging may belong to a live upload: kept
    assert set(ordered[:-1]) <= staged_blobs(server)
    assert "1 stale staging folders removed" in run_gc(server, "--stale-staging-seconds", "0")
    assert not staged_blobs(server)
    assert not digests & stored_blobs(server)
    with server.store() as store:
        for image in alice.all_images(ds.name):
            assert store.exists(blob_key(image.sha256))
