"""A labeled folder from ../shared/data uploads with its structure, imports, snapshots,
exports, and the export re-imports identical (DICE and COCO exactly, YOLO to the pixel)."""

from __future__ import annotations

import io
import json
import zipfile

import pytest

from tests._dataset import BACKENDS, dataset_server_fixture, shared_data
from visionmesh.uploads import folder_files
from visionmesh.v1 import common_pb2, dataset_pb2

server = dataset_server_fixture(BACKENDS)
D = dataset_pb2
F = common_pb2
# coco8 has no data.yaml: its class names come with the request (an import without names
# is refused unless allow_warnings).
COCO_NAMES = {"class_names": [f"class{i}" for i in range(80)]}
FOLDERS = {
    "det-coco8": ("yolo-detect", COCO_NAMES),
    "seg-coco8": ("yolo-segment", COCO_NAMES),
    "cls-imagenet-10": (
        "imagefolder",
        {"format": F.ANNOTATION_FORMAT_IMAGEFOLDER, "allow_warnings": True},
    ),
}


def canonical(
    doc: dict, *, sha: bool = True, digits: int | None = None, bbox: bool = True
) -> tuple:
    """What must survive a round trip: categories, images by path, annotations by image path."""

    def rounded(value):
        if value is None or digits is None:
            return json.dumps(value)
        if isinstance(value, list):
            return json.dumps(
                [
                    round(v, digits)
                    if isinstance(v, float | int)
                    else [round(x, digits) for x in v]
                    for v in value
                ]
            )
        return json.dumps(value)

    path = {im["id"]: im["file_name"] for im in doc["images"]}
    return (
        sorted((c["id"], c["name"]) for c in doc["categories"]),
        sorted(
            (
                im["file_name"],
                im["width"],
                im["height"],
                im.get("split", ""),
                im.get("sha256") if sha else None,
            )
            for im in doc["images"]
        ),
        sorted(
            (
                path[a["image_id"]],
                a["category_id"],
                rounded(a.get("bbox")) if bbox else None,
                rounded(a.get("segmentation")),
                a.get("iscrowd", 0),
            )
            for a in doc["annotations"]
        ),
    )


def head_doc(client, parent) -> dict:
    return json.loads(
        client.datasets.GetAnnotations(D.GetAnnotationsRequest(parent=parent)).document
    )


def unzip(server, key, dest):
    with server.store() as store:
        data = store.get_bytes(key)
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        zf.extractall(dest)
    return dest


def reimport(client, folder, name, **kw):
    ds = client.create_dataset(name)
    reply = client.upload_folder(ds.name, folder)
    assert not reply.skipped
    client.import_folder_labels(ds.name, folder, allow_warnings=True, **kw)
    return ds


@pytest.mark.parametrize("folder_name", sorted(FOLDERS))
def test_labeled_folder_round_trip(server, folder_name, tmp_path):
    folder = shared_data(folder_name)
    variant, import_kw = FOLDERS[folder_name]
    alice = server.user("alice")
    ds = alice.create_dataset(folder_name)
    up = alice.upload_folder(ds.name, folder)
    images = folder_files(folder, images_only=True)
    assert sorted(i.path for i in up.images) == sorted(p for p, _ in images)  # structure kept
    imported = alice.import_folder_labels(ds.name, folder, **import_kw)
    assert imported.variant == variant and imported.image_count == len(images)
    original = head_doc(alice, ds.name)
    assert original["annotations"]

    snap = alice.datasets.CreateSnapshot(
        D.CreateSnapshotRequest(parent=ds.name, snapshot=D.Snapshot(version_name="v1"))
    ).snapshot
    assert canonical(head_doc(alice, snap.name)) == canonical(original)

    # DICE (annotations.json + meta.json + images at their original paths): exact.
    export = alice.datasets.ExportDataset(
        D.ExportDatasetRequest(name=snap.name, format=F.ANNOTATION_FORMAT_DICE)
    )
    dice_dir = unzip(server, export.export_key, tmp_path / "dice")
    meta = json.loads((dice_dir / "meta.json").read_text())
    assert meta["image_count"] == len(images) and meta["annotation_count"] == len(
        original["annotations"]
    )
    again = reimport(alice, dice_dir, f"{folder_name} again")
    assert canonical(head_doc(alice, again.name)) == canonical(original)

    # COCO (annotations/instances_<split>.json): exact.
    export = alice.datasets.ExportDataset(
        D.ExportDatasetRequest(name=snap.name, format=F.ANNOTATION_FORMAT_COCO)
    )
    coco_dir = unzip(server, export.export_key, tmp_path / "coco")
    again = reimport(alice, coco_dir, f"{folder_name} coco", format=F.ANNOTATION_FORMAT_COCO)
    # COCO requires a bbox: polygon-only annotations come back with their extent added.
    has_boxes = all(a.get("bbox") is not None for a in original["annotations"])
    got = canonical(head_doc(alice, again.name), bbox=has_boxes)
    assert got == canonical(original, bbox=has_boxes)

    # YOLO: normalized text coordinates, so equal to the pixel (class ids are YOLO indices).
    if folder_name != "cls-imagenet-10":
        export = alice.datasets.ExportDataset(
            D.ExportDatasetRequest(name=snap.name, format=F.ANNOTATION_FORMAT_YOLO)
        )
        yolo_dir = unzip(server, export.export_key, tmp_path / "yolo")
        assert (yolo_dir / "data.yaml").is_file()
        again = reimport(alice, yolo_dir, f"{folder_name} yolo", format=F.ANNOTATION_FORMAT_YOLO)
        yolo = canonical(head_doc(alice, again.name), digits=0)
        base = canonical(original, digits=0)
        assert yolo[1] == base[1]
        assert len(yolo[2]) == len(base[2])
        assert [a[0] for a in yolo[2]] == [a[0] for a in base[2]]
