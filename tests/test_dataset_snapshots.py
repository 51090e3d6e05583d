"""Snapshots, diffs, integrity checks and garbage collection over real gRPC.

Deleting images never breaks a snapshot (its blobs stay until nothing references them),
CheckIntegrity finds blobs corrupted or removed on purpose and names the snapshots they
affect, and the manifest in the store is the DICE document the trainers read.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import subprocess
import sys
import zipfile

import grpc
import pytest

from tests._dataset import BACKENDS, dataset_server_fixture, image_bytes
from tests._servers import ROOT, child_env
from visionmesh import formats
from visionmesh.errors import bad_request_fields
from visionmesh.store import blob_key
from visionmesh.v1 import dataset_pb2

server = dataset_server_fixture(BACKENDS)
D = dataset_pb2
FILES = {
    "images/train/a.png": image_bytes(40, 30, (250, 0, 0)),
    "images/train/b.png": image_bytes(40, 30, (0, 250, 0)),
    "images/val/c.png": image_bytes(40, 30, (0, 0, 250)),
    "misc/d.png": image_bytes(20, 20, (9, 9, 9)),
}


def coco_doc(boxes: dict[str, list[tuple[int, list[float]]]]) -> bytes:
    """A COCO document: image file name -> [(category id, bbox)]."""
    images = [{"id": i + 1, "file_name": p, "width": 40, "height": 30} for i, p in enumerate(boxes)]
    annotations = []
    for i, p in enumerate(boxes):
        for cid, box in boxes[p]:
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": cid,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    doc = {
        "categories": [
            {"id": 3, "name": "cat", "supercategory": "animal"},
            {"id": 7, "name": "dog"},
        ],
        "images": images,
        "annotations": annotations,
    }
    return json.dumps(doc).encode()


def import_doc(client, parent, boxes, **kw):
    return client.datasets.ImportAnnotations(
        D.ImportAnnotationsRequest(
            parent=parent,
            files=[D.AnnotationFile(path="annotations.json", content=coco_doc(boxes))],
            **kw,
        )
    )


def run_gc(server):
    result = subprocess.run(
        [sys.executable, "-m", "dataset_svc.gc"],
        cwd=ROOT,
        env=child_env(server.env),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture(scope="module")
def history(server):
    """v1: four images with boxes; then a deleted, b replaced, e added, a box moved; v2 automatic."""
    alice = server.user("alice")
    ds = alice.create_dataset("history")
    alice.upload(ds.name, FILES)
    boxes = {
        "images/train/a.png": [(3, [1, 1, 10, 10])],
        "images/train/b.png": [(3, [2, 2, 5, 5]), (7, [10, 10, 8, 8])],
        "images/val/c.png": [(7, [0, 0, 40, 30])],
    }
    reply = import_doc(alice, ds.name, boxes)
    assert reply.variant == "dice-standard" and reply.annotation_count == 4
    v1 = alice.datasets.CreateSnapshot(
        D.CreateSnapshotRequest(
            parent=ds.name, snapshot=D.Snapshot(version_name="v1", description="first")
        )
    ).snapshot
    deleted = alice.datasets.DeleteImages(
        D.DeleteImagesRequest(parent=ds.name, images=["images/train/a.png"])
    )
    assert (deleted.deleted_count, deleted.deleted_annotation_count) == (1, 1)
    alice.upload(
        ds.name,
        {
            "images/train/b.png": image_bytes(40, 30, (0, 251, 0)),
            "images/val/e.png": image_bytes(40, 30, (5, 5, 5)),
        },
    )
    moved = {
        "images/train/b.png": [(3, [3, 3, 5, 5]), (7, [10, 10, 8, 8])],
        "images/val/c.png": [(7, [0, 0, 40, 30])],
        "images/val/e.png": [(3, [4, 4, 4, 4]), (3, [20, 20, 4, 4])],
    }
    import_doc(alice, ds.name, moved, replace_existing=True)
    v2 = alice.datasets.CreateSnapshot(
        D.CreateSnapshotRequest(parent=ds.name, snapshot=D.Snapshot(reason="training jobs/42"))
    ).snapshot
    return alice, ds, v1, v2


def test_snapshot_fields_and_manifest_in_the_store(server, history):
    alice, ds, v1, v2 = history
    assert v1.version_name == "v1" and not v1.automatic and v1.creator == f"users/{alice.username}"
    assert v2.automatic and v2.reason == "training jobs/42" and v2.version_name == ""
    assert (v1.image_count, v1.annotation_count) == (4, 4)
    assert {c.name for c in v1.categories} == {"cat", "dog"}
    counts = {
        (c.category_name, c.split): (c.image_count, c.annotation_count) for c in v1.class_counts
    }
    assert counts == {("cat", "train"): (2, 2), ("dog", "train"): (1, 1), ("dog", "val"): (1, 1)}
    sid = v1.name.rsplit("/", 1)[1]
    assert v1.manifest_key == f"datasets/{ds.name.split('/')[1]}/snapshots/{sid}/manifest.json"
    with server.store() as store:
        raw = store.get_bytes(v1.manifest_key)
    assert sha(raw) == v1.manifest_sha256
    manifest = json.loads(raw)
    assert manifest["info"]["dataset"] == ds.name and manifest["info"]["snapshot"] == v1.name
    assert manifest["info"]["version_name"] == "v1" and manifest["info"]["create_time"].endswith(
        "Z"
    )
    by_path = {im["file_name"]: im for im in manifest["images"]}
    assert set(by_path) == set(FILES)
    a = by_path["images/train/a.png"]
    assert (a["width"], a["height"], a["split"]) == (40, 30, "train")
    assert a["sha256"] == sha(FILES["images/train/a.png"]) and a["size_bytes"] == len(
        FILES["images/train/a.png"]
    )
    assert by_path["misc/d.png"]["split"] == ""
    # The formats library reads it back without a problem (reader and writer agree).
    read = formats.from_dice_dict(manifest)
    assert read.ok and not read.warnings, read.problems
    assert len(read.dataset.annotations) == 4
    boxes = sorted(ann["bbox"] for ann in manifest["annotations"])
    assert boxes[0] == [0, 0, 40, 30]
    # GetAnnotations of a snapshot is its manifest, byte for byte.
    doc = alice.datasets.GetAnnotations(D.GetAnnotationsRequest(parent=v1.name)).document
    assert doc.encode() == raw


def test_get_list_and_version_names(history):
    alice, ds, v1, v2 = history
    assert alice.datasets.GetSnapshot(D.GetSnapshotRequest(name=v1.name)).snapshot == v1
    first = alice.datasets.ListSnapshots(D.ListSnapshotsRequest(parent=ds.name, page_size=1))
    assert [s.name for s in first.snapshots] == [v2.name] and first.next_page_token
    second = alice.datasets.ListSnapshots(
        D.ListSnapshotsRequest(parent=ds.name, page_size=1, page_token=first.next_page_token)
    )
    assert [s.name for s in second.snapshots] == [v1.name] and not second.next_page_token
    with pytest.raises(grpc.RpcError) as err:
        alice.datasets.CreateSnapshot(
            D.CreateSnapshotRequest(parent=ds.name, snapshot=D.Snapshot(version_name="v1"))
        )
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "snapshot.version_name" in bad_request_fields(err.value)
    with pytest.raises(grpc.RpcError) as err:
        alice.datasets.CreateSnapshot(
            D.CreateSnapshotRequest(parent=ds.name, snapshot=D.Snapshot(version_name="v 1/.."))
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "snapshot.version_name" in bad_request_fields(err.value)
    missing = ds.name + "/snapshots/nosuchsnapshot"
    with pytest.raises(grpc.RpcError) as err:
        alice.datasets.GetSnapshot(D.GetSnapshotRequest(name=missing))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_diff_images_annotations_and_classes(history):
    alice, ds, v1, v2 = history
    for target in (v2.name, ds.name):
        diff = alice.datasets.DiffSnapshots(D.DiffSnapshotsRequest(base=v1.name, target=target))
        assert list(diff.added_images) == ["images/val/e.png"]
        assert list(diff.removed_images) == ["images/train/a.png"]
        assert list(diff.changed_images) == ["images/train/b.png"]
        # a's box removed, b's cat box moved, e's two boxes added, the rest unchanged.
        assert (
            diff.added_annotation_count,
            diff.removed_annotation_count,
            diff.changed_annotation_count,
        ) == (2, 1, 1)
        changes = {c.category_name: (c.base_count, c.target_count) for c in diff.class_changes}
        assert changes == {"cat": (2, 3)}
    same = alice.datasets.DiffSnapshots(
        D.DiffSnapshotsRequest(base=v2.name)
    )  # default target: head
    assert not (same.added_images or same.removed_images or same.changed_images)
    assert (
        same.added_annotation_count
        == same.removed_annotation_count
        == same.changed_annotation_count
        == 0
    )
    other = alice.create_dataset("other")
    with pytest.raises(grpc.RpcError) as err:
        alice.datasets.DiffSnapshots(D.DiffSnapshotsRequest(base=v1.name, target=other.name))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "target" in bad_request_fields(
        err.value
    )


def test_deleted_images_stay_in_snapshots_and_exports(server, history):
    alice, ds, v1, _ = history
    run_gc(server)  # a.png left the head, but v1 still references its blob
    with server.store() as store:
        assert store.exists(blob_key(sha(FILES["images/train/a.png"])))
    export = alice.datasets.ExportDataset(D.ExportDatasetRequest(name=v1.name))
    assert export.image_count == 4 and export.annotation_count == 4
    with server.store() as store:
        data = store.get_bytes(export.export_key)
    assert sha(data) == export.sha256 and len(data) == export.size_bytes
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("images/train/a.png") == FILES["images/train/a.png"]
        # b.png got other bytes after v1: v1 keeps the old ones.
        assert zf.read("images/train/b.png") == FILES["images/train/b.png"]
        assert {"annotations.json", "meta.json"} <= set(zf.namelist())
    head = alice.datasets.ExportDataset(D.ExportDatasetRequest(name=ds.name, annotations_only=True))
    assert re.search(r"/head\.dice-labels\.u[0-9]+\.zip$", head.export_key)
    assert head.image_count == 4


def test_check_integrity_finds_corrupt_and_missing_blobs(server, history):
    alice, ds, v1, v2 = history
    assert alice.datasets.CheckIntegrity(
        D.CheckIntegrityRequest(name=ds.name, verify_hashes=True)
    ).ok
    a_sha = sha(FILES["images/train/a.png"])  # only in v1 now
    c_sha = sha(FILES["images/val/c.png"])  # head, v1 and v2
    with server.store() as store:
        original = store.get_bytes(blob_key(a_sha))
        store.put_bytes(blob_key(a_sha), bytes(b ^ 0xFF for b in original))  # same size
        c_bytes = store.get_bytes(blob_key(c_sha))
        store.delete(blob_key(c_sha))
    try:
        quick = alice.datasets.CheckIntegrity(D.CheckIntegrityRequest(name=ds.name))
        assert not quick.ok and [(p.sha256, p.kind) for p in quick.problems] == [(c_sha, "missing")]
        full = alice.datasets.CheckIntegrity(
            D.CheckIntegrityRequest(name=ds.name, verify_hashes=True)
        )
        assert not full.ok and full.checked_blob_count == 6
        problems = {p.sha256: p for p in full.problems}
        assert problems[a_sha].kind == "corrupt"
        assert list(problems[a_sha].paths) == ["images/train/a.png"]
        assert list(problems[a_sha].affected_snapshots) == [v1.name]
        assert problems[c_sha].kind == "missing"
        assert list(problems[c_sha].paths) == ["images/val/c.png"]
        assert set(problems[c_sha].affected_snapshots) == {v1.name, v2.name}
    finally:
        with server.store() as store:
            store.put_bytes(blob_key(a_sha), original)
            store.put_bytes(blob_key(c_sha), c_bytes)
    assert alice.datasets.CheckIntegrity(
        D.CheckIntegrityRequest(name=ds.name, verify_hashes=True)
    ).ok


def test_images_that_came_after_every_snapshot_leave_nothing_behind(server):
    carol = server.user("carol")
    ds = carol.create_dataset("churn")
    kept, early = image_bytes(13, 13, (1, 2, 3)), image_bytes(13, 13, (4, 5, 6))
    carol.upload(ds.name, {"kept.png": kept, "early.png": early})
    carol.datasets.CreateSnapshot(
        D.CreateSnapshotRequest(parent=ds.name, snapshot=D.Snapshot(version_name="v1"))
    )
    late, late_replacement = image_bytes(13, 13, (7, 8, 9)), image_bytes(13, 13, (7, 8, 10))
    carol.upload(ds.name, {"late.png": late})
    carol.upload(ds.name, {"late.png": late_replacement})  # replaced: late is in no snapshot
    carol.datasets.DeleteImages(
        D.DeleteImagesRequest(parent=ds.name, images=["late.png", "early.png"])
    )
    run_gc(server)
    with server.store() as store:
        assert store.exists(blob_key(sha(early)))  # v1 holds it
        assert not store.exists(blob_key(sha(late)))
        assert not store.exists(blob_key(sha(late_replacement)))
        assert store.exists(blob_key(sha(kept)))  # still in the head


def test_deleting_the_dataset_lets_gc_remove_its_blobs(server):
    bob = server.user("bob")
    ds = bob.create_dataset("short lived")
    only_here = image_bytes(17, 17, (123, 45, 67))
    shared = FILES["images/val/c.png"]  # also used by alice's dataset
    bob.upload(ds.name, {"x.png": only_here, "y.png": shared})
    snap = bob.datasets.CreateSnapshot(
        D.CreateSnapshotRequest(parent=ds.name, snapshot=D.Snapshot(version_name="v1"))
    ).snapshot
    bob.datasets.DeleteDataset(D.DeleteDatasetRequest(name=ds.name))
    with server.store() as store:
        assert not store.exists(snap.manifest_key)  # manifests go with the dataset
        assert store.exists(blob_key(sha(only_here)))  # blobs wait for the GC
    run_gc(server)
    with server.store() as store:
        assert not store.exists(blob_key(sha(only_here)))
        assert store.exists(blob_key(sha(shared)))
    with pytest.raises(grpc.RpcError) as err:
        bob.datasets.GetSnapshot(D.GetSnapshotRequest(name=snap.name))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_image_urls(server, history):
    alice, ds, _, _ = history
    image = alice.all_images(ds.name)[0]
    reply = alice.datasets.GetImageUrl(D.GetImageUrlRequest(name=image.name, expire_seconds=60))
    if server.backend.endswith("+s3"):
        import urllib.request

        assert reply.url.startswith("http") and reply.expire_time.seconds > 0
        with urllib.request.urlopen(reply.url, timeout=10) as response:
            assert sha(response.read()) == image.sha256
    else:
        assert reply.url == f"/v1/{image.name}:content"
    with pytest.raises(grpc.RpcError) as err:
        alice.datasets.GetImageUrl(D.GetImageUrlRequest(name=ds.name + "/images/999999"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
