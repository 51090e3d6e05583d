"""DESIGN.md section 4 over real gRPC, for every DatasetService/CompatibilityService RPC.

alice owns a private and a public dataset (each with an image and a snapshot); bob is
another signed-in user. An invisible dataset answers NOT_FOUND (exactly as a dataset that
does not exist), a visible one that bob does not own answers PERMISSION_DENIED to every
write, and every read of the public one works for bob.
"""

from __future__ import annotations

import grpc
import pytest

from tests._dataset import BACKENDS, dataset_server_fixture, image_bytes
from visionmesh.uploads import upload_requests
from visionmesh.v1 import common_pb2, compatibility_pb2, dataset_pb2

server = dataset_server_fixture(BACKENDS)
PRIVATE, PUBLIC = common_pb2.VISIBILITY_PRIVATE, common_pb2.VISIBILITY_PUBLIC


@pytest.fixture(scope="module")
def world(server):
    alice, bob = server.user("alice"), server.user("bob")
    found = {}
    for label, visibility in (("private", PRIVATE), ("public", PUBLIC)):
        ds = alice.create_dataset(f"{label} set", visibility)
        up = alice.upload(
            ds.name, {"train/a.png": image_bytes(color=(1, 2, 3)), "val/b.png": image_bytes()}
        )
        snap = alice.datasets.CreateSnapshot(
            dataset_pb2.CreateSnapshotRequest(
                parent=ds.name, snapshot=dataset_pb2.Snapshot(version_name="v1")
            )
        ).snapshot
        found[label] = {
            "dataset": ds.name,
            "image": up.images[0].name,
            "path": up.images[0].path,
            "snapshot": snap.name,
        }
    found["missing"] = {
        "dataset": "datasets/doesnotexist1",
        "image": "datasets/doesnotexist1/images/1",
        "path": "train/a.png",
        "snapshot": "datasets/doesnotexist1/snapshots/nosuchsnap1",
    }
    return alice, bob, found


D = dataset_pb2
READS = {
    "GetDataset": lambda c, r: c.datasets.GetDataset(D.GetDatasetRequest(name=r["dataset"])),
    "ListImages": lambda c, r: c.datasets.ListImages(D.ListImagesRequest(parent=r["dataset"])),
    "GetImageUrl": lambda c, r: c.datasets.GetImageUrl(D.GetImageUrlRequest(name=r["image"])),
    "GetAnnotations(head)": lambda c, r: c.datasets.GetAnnotations(
        D.GetAnnotationsRequest(parent=r["dataset"])
    ),
    "GetAnnotations(snapshot)": lambda c, r: c.datasets.GetAnnotations(
        D.GetAnnotationsRequest(parent=r["snapshot"])
    ),
    "ListSnapshots": lambda c, r: c.datasets.ListSnapshots(
        D.ListSnapshotsRequest(parent=r["dataset"])
    ),
    "GetSnapshot": lambda c, r: c.datasets.GetSnapshot(D.GetSnapshotRequest(name=r["snapshot"])),
    "DiffSnapshots": lambda c, r: c.datasets.DiffSnapshots(
        D.DiffSnapshotsRequest(base=r["snapshot"], target=r["dataset"])
    ),
    "CheckIntegrity": lambda c, r: c.datasets.CheckIntegrity(
        D.CheckIntegrityRequest(name=r["dataset"])
    ),
    "ExportDataset": lambda c, r: c.datasets.ExportDataset(
        D.ExportDatasetRequest(name=r["snapshot"], annotations_only=True)
    ),
    "CheckCompatibility": lambda c, r: c.compat.CheckCompatibility(
        compatibility_pb2.CheckCompatibilityRequest(
            dataset=r["dataset"], task_type=common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION
        )
    ),
}
WRITES = {
    "UpdateDataset": lambda c, r: c.datasets.UpdateDataset(
        D.UpdateDatasetRequest(dataset=D.Dataset(name=r["dataset"], display_name="mine now"))
    ),
    "UploadImages": lambda c, r: c.datasets.UploadImages(
        upload_requests(r["dataset"], [("x/new.png", image_bytes(color=(9, 9, 9)))])
    ),
    "DeleteImages": lambda c, r: c.datasets.DeleteImages(
        D.DeleteImagesRequest(parent=r["dataset"], images=[r["image"]])
    ),
    "ImportAnnotations": lambda c, r: c.datasets.ImportAnnotations(
        D.ImportAnnotationsRequest(
            parent=r["dataset"], format=common_pb2.ANNOTATION_FORMAT_IMAGEFOLDER
        )
    ),
    "CreateSnapshot": lambda c, r: c.datasets.CreateSnapshot(
        D.CreateSnapshotRequest(parent=r["dataset"], snapshot=D.Snapshot(reason="bob was here"))
    ),
    "DeleteDataset": lambda c, r: c.datasets.DeleteDataset(
        D.DeleteDatasetRequest(name=r["dataset"])
    ),
}


def _code(call, client, refs):
    try:
        call(client, refs)
    except grpc.RpcError as err:
        return err.code(), err.details()
    return grpc.StatusCode.OK, ""


@pytest.mark.parametrize("rpc", sorted(READS))
def test_reads_follow_visibility(world, rpc):
    alice, bob, refs = world
    call = READS[rpc]
    assert _code(call, alice, refs["private"])[0] == grpc.StatusCode.OK
    assert _code(call, alice, refs["public"])[0] == grpc.StatusCode.OK
    assert _code(call, bob, refs["public"])[0] == grpc.StatusCode.OK
    hidden, hidden_msg = _code(call, bob, refs["private"])
    missing, missing_msg = _code(call, bob, refs["missing"])
    assert hidden == missing == grpc.StatusCode.NOT_FOUND
    # No existence leak: the message has the same shape for both.
    assert hidden_msg.replace(refs["private"]["dataset"], "X") == missing_msg.replace(
        refs["missing"]["dataset"], "X"
    )


@pytest.mark.parametrize("rpc", sorted(WRITES))
def test_writes_are_owner_only(world, rpc):
    alice, bob, refs = world
    call = WRITES[rpc]
    assert _code(call, bob, refs["private"])[0] == grpc.StatusCode.NOT_FOUND
    assert _code(call, bob, refs["missing"])[0] == grpc.StatusCode.NOT_FOUND
    code, message = _code(call, bob, refs["public"])
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "owner" in message
    # Nothing changed.
    got = alice.datasets.GetDataset(D.GetDatasetRequest(name=refs["public"]["dataset"])).dataset
    assert got.display_name == "public set" and got.image_count == 2
    assert len(alice.datasets.ListSnapshots(D.ListSnapshotsRequest(parent=got.name)).snapshots) == 1


def test_owner_may_write(server, world):
    alice, _, _ = world
    ds = alice.create_dataset("scratch", PUBLIC)
    refs = {"dataset": ds.name}
    up = alice.upload(ds.name, {"k/one.png": image_bytes(color=(5, 5, 5))})
    refs["image"] = up.images[0].name
    for rpc in ("UpdateDataset", "CreateSnapshot", "DeleteImages", "DeleteDataset"):
        assert _code(WRITES[rpc], alice, refs)[0] == grpc.StatusCode.OK, rpc


def test_list_shows_own_and_public_only(world):
    alice, bob, refs = world
    names_bob = {d.name for d in bob.datasets.ListDatasets(D.ListDatasetsRequest()).datasets}
    names_alice = {d.name for d in alice.datasets.ListDatasets(D.ListDatasetsRequest()).datasets}
    assert refs["public"]["dataset"] in names_bob
    assert refs["private"]["dataset"] not in names_bob
    assert {refs["public"]["dataset"], refs["private"]["dataset"]} <= names_alice


def test_making_a_dataset_private_hides_it(world):
    alice, bob, _ = world
    ds = alice.create_dataset("flip", PUBLIC)
    assert bob.datasets.GetDataset(D.GetDatasetRequest(name=ds.name)).dataset.name == ds.name
    alice.datasets.UpdateDataset(
        D.UpdateDatasetRequest(dataset=D.Dataset(name=ds.name, visibility=PRIVATE))
    )
    with pytest.raises(grpc.RpcError) as err:
        bob.datasets.GetDataset(D.GetDatasetRequest(name=ds.name))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
