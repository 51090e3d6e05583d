"""Bytes out of dataset_svc over gRPC: image content and thumbnails (GetImageContent),
export zips (DownloadExport, each caller's own), and the compatibility of every task in one
call (SummarizeCompatibility). Local folder and S3 (moto) stores."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile

import grpc
import pytest
from PIL import Image

from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture, image_bytes
from visionmesh.v1 import common_pb2, compatibility_pb2, dataset_pb2

server = dataset_server_fixture([DEFAULT_BACKEND, "sqlite+s3"])
D = dataset_pb2
F = common_pb2

FILES = {
    "train/red.jpg": image_bytes(320, 200, (220, 20, 20), "JPEG"),
    "train/green.png": image_bytes(100, 300, (20, 200, 20)),
    "val/blue.png": image_bytes(40, 30, (20, 20, 220)),
}
DOC = {
    "categories": [{"id": 1, "name": "thing"}, {"id": 2, "name": "other"}],
    "images": [
        {"id": i, "file_name": path, "width": Image.open(io.BytesIO(data)).width,
         "height": Image.open(io.BytesIO(data)).height}
        for i, (path, data) in enumerate(FILES.items(), start=1)
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 100, 80]},
        {"id": 2, "image_id": 2, "category_id": 2, "bbox": [5, 5, 50, 50]},
        {"id": 3, "image_id": 3, "category_id": 1, "bbox": [1, 1, 20, 20]},
    ],
}  # fmt: skip


@pytest.fixture(scope="module")
def public(server):
    """alice's public dataset with three images and boxes."""
    alice = server.user("alice")
    ds = alice.create_dataset("boxes", F.VISIBILITY_PUBLIC)
    alice.upload(ds.name, FILES)
    alice.datasets.ImportAnnotations(
        D.ImportAnnotationsRequest(
            parent=ds.name,
            files=[D.AnnotationFile(path="annotations.json", content=json.dumps(DOC).encode())],
        ),
        timeout=60,
    )
    return alice, ds, {im.path: im for im in alice.all_images(ds.name)}


def content(client, name, size=0):
    pieces = list(
        client.datasets.GetImageContent(
            D.GetImageContentRequest(name=name, thumbnail_size=size), timeout=30
        )
    )
    return pieces[0].content_type, b"".join(p.data for p in pieces)


def test_image_content_is_the_uploaded_bytes(server, public):
    alice, _, images = public
    bob = server.user("bob")  # a reader of the public dataset
    for path, data in FILES.items():
        for client in (alice, bob):
            content_type, got = content(client, images[path].name)
            assert got == data
            assert content_type == ("image/jpeg" if path.endswith(".jpg") else "image/png")


def test_thumbnails_fit_the_size_and_are_kept(server, public):
    alice, _, images = public
    for path, (w, h) in {"train/red.jpg": (64, 40), "train/green.png": (21, 64)}.items():
        content_type, data = content(alice, images[path].name, 64)
        assert content_type == "image/jpeg"
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "JPEG" and abs(im.width - w) <= 1 and abs(im.height - h) <= 1
            r, g, b = im.convert("RGB").getpixel((im.width // 2, im.height // 2))
            assert (r > 150) == path.endswith("red.jpg") and (g > 150) == path.endswith(".png")
        sha = images[path].sha256
        with server.store() as store:
            assert store.get_bytes(f"thumbnails/64/{sha[:2]}/{sha}.jpg") == data
        assert content(alice, images[path].name, 64)[1] == data  # served from the store
    # smaller than the size: never enlarged
    _, data = content(alice, images["val/blue.png"].name, 256)
    assert Image.open(io.BytesIO(data)).size == (40, 30)


def test_image_content_errors(server, public):
    alice, ds, images = public
    name = images["train/red.jpg"].name
    for size in (-1, 8, 5000):
        with pytest.raises(grpc.RpcError) as err:
            content(alice, name, size)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "thumbnail_size" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        content(alice, f"{ds.name}/images/999999")
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    private = alice.create_dataset("secret")
    up = alice.upload(private.name, {"a.png": image_bytes()})
    with pytest.raises(grpc.RpcError) as err:
        content(server.user("bob"), up.images[0].name)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        list(server.anonymous()[1].GetImageContent(D.GetImageContentRequest(name=name)))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def download(client, name):
    return b"".join(
        p.data
        for p in client.datasets.DownloadExport(D.DownloadExportRequest(name=name), timeout=60)
    )


def test_exports_are_each_callers_own(server, public):
    alice, ds, _ = public
    bob = server.user("bob")
    mine = alice.datasets.ExportDataset(D.ExportDatasetRequest(name=ds.name), timeout=60)
    assert mine.export.startswith(f"{ds.name}/exports/")
    assert mine.url == f"/v1/{mine.export}:download" or mine.url.startswith("http")
    data = download(alice, mine.export)
    assert hashlib.sha256(data).hexdigest() == mine.sha256 and len(data) == mine.size_bytes
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.read("train/red.jpg") == FILES["train/red.jpg"]

    # bob reads the public dataset and exports it: his own object; alice's is untouched
    theirs = bob.datasets.ExportDataset(
        D.ExportDatasetRequest(name=ds.name, annotations_only=True), timeout=60
    )
    assert theirs.export != mine.export and theirs.export_key != mine.export_key
    with server.store() as store:
        assert hashlib.sha256(store.get_bytes(mine.export_key)).hexdigest() == mine.sha256
    assert hashlib.sha256(download(bob, theirs.export)).hexdigest() == theirs.sha256
    # ... and may not download alice's, nor she his
    for client, name in ((bob, mine.export), (alice, theirs.export)):
        with pytest.raises(grpc.RpcError) as err:
            download(client, name)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as err:
        download(alice, f"{ds.name}/exports/../../blobs")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_imagefolder_export_holds_the_images_it_counts(server, public):
    alice, ds, _ = public
    reply = alice.datasets.ExportDataset(
        D.ExportDatasetRequest(name=ds.name, format=F.ANNOTATION_FORMAT_IMAGEFOLDER), timeout=60
    )
    with zipfile.ZipFile(io.BytesIO(download(alice, reply.export))) as zf:
        files = [n for n in zf.namelist() if not n.endswith("/")]
    assert reply.image_count == 3 and len(files) == 3, files
    # boxes -> dominant class: each image in its class folder, splits kept
    assert sorted(files) == ["train/other/green.png", "train/thing/red.jpg", "val/thing/blue.png"]


def test_summarize_compatibility_answers_every_task(server, public):
    alice, ds, _ = public
    reply = alice.compat.SummarizeCompatibility(
        compatibility_pb2.SummarizeCompatibilityRequest(dataset=ds.name), timeout=60
    )
    tasks = [r.task_type for r in reply.reports]
    assert tasks == [t for t in F.TaskType.values() if t != F.TASK_TYPE_UNSPECIFIED]
    for report in reply.reports:
        single = alice.compat.CheckCompatibility(
            compatibility_pb2.CheckCompatibilityRequest(
                dataset=ds.name, task_type=report.task_type
            ),
            timeout=60,
        ).report
        assert report == single
    by_task = {r.task_type: r for r in reply.reports}
    assert by_task[F.TASK_TYPE_OBJECT_DETECTION].compatible
    assert by_task[F.TASK_TYPE_IMAGE_CLASSIFICATION].lossy
    assert not by_task[F.TASK_TYPE_INSTANCE_SEGMENTATION].compatible
    assert by_task[F.TASK_TYPE_INSTANCE_SEGMENTATION].errors
