"""ImportAnnotations (validated, all-or-nothing, BadRequest paths), GetAnnotations, and the
CompatibilityService (rules matrix, per-task reports, splits), over real gRPC."""

from __future__ import annotations

import json

import grpc
import pytest

from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture, image_bytes
from visionmesh.errors import bad_request_fields
from visionmesh.v1 import common_pb2, compatibility_pb2, dataset_pb2

# A trainer address nothing listens on: model checks answer quickly with a warning.
server = dataset_server_fixture(
    [DEFAULT_BACKEND], extra_env={"VISIONMESH_TRAINERS": "timm=127.0.0.1:9"}
)
D, C, F = dataset_pb2, compatibility_pb2, common_pb2
T = common_pb2.TaskType


def polygon(x, y, s):
    return [[x, y, x + s, y, x + s, y + s, x, y + s]]


def document(annotations, categories=None, images=None):
    return json.dumps(
        {
            "categories": categories or [{"id": 1, "name": "square"}, {"id": 4, "name": "circle"}],
            "images": images
            or [
                {"id": i, "file_name": f"img{i}.png", "width": 64, "height": 64}
                for i in range(1, 11)
            ],
            "annotations": annotations,
        }
    ).encode()


def polygons_doc():
    anns = []
    for i in range(1, 11):
        cat = 1 if i % 2 else 4
        anns.append(
            {
                "id": i,
                "image_id": i,
                "category_id": cat,
                "segmentation": polygon(4, 4, 20),
                "bbox": [4, 4, 20, 20],
                "area": 400,
                "iscrowd": 0,
            }
        )
    return document(anns)


def do_import(client, parent, content, **kw):
    return client.datasets.ImportAnnotations(
        D.ImportAnnotationsRequest(
            parent=parent, files=[D.AnnotationFile(path="annotations.json", content=content)], **kw
        )
    )


@pytest.fixture(scope="module")
def shapes(server):
    alice = server.user("alice")
    ds = alice.create_dataset("shapes")
    alice.upload(
        ds.name, {f"img{i}.png": image_bytes(64, 64, (i * 20, 0, 0)) for i in range(1, 11)}
    )
    reply = do_import(alice, ds.name, polygons_doc())
    assert (reply.variant, reply.image_count, reply.annotation_count, reply.category_count) == (
        "dice-standard",
        10,
        10,
        2,
    )
    return alice, ds


def test_head_annotations_and_health(shapes):
    alice, ds = shapes
    doc = json.loads(
        alice.datasets.GetAnnotations(D.GetAnnotationsRequest(parent=ds.name)).document
    )
    assert {c["id"]: c["name"] for c in doc["categories"]} == {1: "square", 4: "circle"}
    assert len(doc["images"]) == 10 and all(im["sha256"] for im in doc["images"])
    assert doc["annotations"][0]["segmentation"] == polygon(4, 4, 20)
    got = alice.datasets.GetDataset(D.GetDatasetRequest(name=ds.name)).dataset
    assert got.labeled and got.annotation_variant == "dice-standard" and got.annotation_count == 10
    assert set(got.health.annotation_kinds) == {"box", "polygon"}
    assert {(c.category_name, c.annotation_count) for c in got.health.class_counts} == {
        ("square", 5),
        ("circle", 5),
    }
    assert got.health.unlabeled_image_count == 0
    labeled = alice.datasets.ListImages(D.ListImagesRequest(parent=ds.name, filter="labeled=true"))
    assert labeled.total_size == 10 and all(i.annotation_count == 1 for i in labeled.images)


def test_invalid_documents_are_refused_whole_with_json_paths(shapes):
    alice, ds = shapes
    bad = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]},
        {"id": 2, "image_id": 2, "category_id": 1, "bbox": [60, 60, 30, 30]},  # outside 64x64
        {"id": 3, "image_id": 3, "category_id": 99, "bbox": [1, 1, 5, 5]},  # unknown category
        {"id": 4, "image_id": 4, "category_id": 1, "segmentation": [[1, 2, 3]]},  # odd count
    ]
    with pytest.raises(grpc.RpcError) as err:
        do_import(alice, ds.name, document(bad), replace_existing=True)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = bad_request_fields(err.value)
    assert "annotations[1].bbox" in fields
    assert any(f.startswith("annotations[2]") for f in fields)
    assert any(f.startswith("annotations[3].segmentation") for f in fields)
    assert "not imported" in err.value.details()
    missing_image = document(
        [], images=[{"id": 1, "file_name": "nope.png", "width": 64, "height": 64}]
    )
    with pytest.raises(grpc.RpcError) as err:
        do_import(alice, ds.name, missing_image, replace_existing=True)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # All or nothing: the earlier import is intact.
    got = alice.datasets.GetDataset(D.GetDatasetRequest(name=ds.name)).dataset
    assert got.annotation_count == 10 and {c.name for c in got.categories} == {"square", "circle"}


def test_unrecognized_files_and_datasets_without_images(shapes):
    alice, ds = shapes
    with pytest.raises(grpc.RpcError) as err:
        alice.datasets.ImportAnnotations(
            D.ImportAnnotationsRequest(
                parent=ds.name, files=[D.AnnotationFile(path="notes.md", content=b"# hi")]
            )
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "files" in bad_request_fields(
        err.value
    )
    with pytest.raises(grpc.RpcError) as err:
        alice.datasets.ImportAnnotations(
            D.ImportAnnotationsRequest(
                parent=ds.name, files=[D.AnnotationFile(path="../up.json", content=b"{}")]
            )
        )
    assert "files[0].path" in bad_request_fields(err.value)
    empty = alice.create_dataset("empty")
    with pytest.raises(grpc.RpcError) as err:
        do_import(alice, empty.name, polygons_doc())
    assert (
        err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "upload" in err.value.details()
    )


def test_yolo_labels_with_class_names_and_warnings(server):
    bob = server.user("bob")
    ds = bob.create_dataset("yolo")
    bob.upload(
        ds.name,
        {
            "images/train/a.png": image_bytes(100, 50),
            "images/val/b.png": image_bytes(100, 50, (1, 1, 1)),
        },
    )
    labels = [
        D.AnnotationFile(
            path="labels/train/a.txt", content=b"0 0.5 0.5 0.2 0.2\n1 0.25 0.25 0.1 0.1\n"
        ),
        D.AnnotationFile(path="labels/val/b.txt", content=b"1 0.5 0.5 0.5 0.5\n"),
    ]
    reply = bob.datasets.ImportAnnotations(
        D.ImportAnnotationsRequest(
            parent=ds.name,
            files=labels,
            class_names=["cat", "dog"],
            format=F.ANNOTATION_FORMAT_YOLO,
        )
    )
    assert reply.variant == "yolo-detect" and reply.annotation_count == 3
    doc = json.loads(bob.datasets.GetAnnotations(D.GetAnnotationsRequest(parent=ds.name)).document)
    assert [c["name"] for c in doc["categories"]] == ["cat", "dog"]
    box = next(a["bbox"] for a in doc["annotations"] if a["category_id"] == 0)
    assert box == pytest.approx([40, 20, 20, 10])


def test_conversion_matrix(server):
    rules = server.user("alice").compat.GetConversionMatrix(C.GetConversionMatrixRequest()).rules
    assert len(rules) == 20
    cell = {(r.annotation_kind, r.task_type): r for r in rules}
    assert (
        cell[(C.ANNOTATION_KIND_POLYGON, T.Value("TASK_TYPE_OBJECT_DETECTION"))].conversion
        == C.CONVERSION_POLYGON_TO_BBOX
    )
    box_cls = cell[(C.ANNOTATION_KIND_BOX, T.Value("TASK_TYPE_IMAGE_CLASSIFICATION"))]
    assert box_cls.conversion == C.CONVERSION_DOMINANT_CLASS and box_cls.lossy
    assert (
        cell[(C.ANNOTATION_KIND_IMAGE_LABEL, T.Value("TASK_TYPE_OBJECT_DETECTION"))].conversion
        == C.CONVERSION_NONE
    )


@pytest.mark.parametrize(
    ("task", "compatible", "conversion"),
    [
        ("TASK_TYPE_INSTANCE_SEGMENTATION", True, C.CONVERSION_NATIVE),
        ("TASK_TYPE_OBJECT_DETECTION", True, C.CONVERSION_NATIVE),
        ("TASK_TYPE_SEMANTIC_SEGMENTATION", True, C.CONVERSION_RASTERIZE),
        ("TASK_TYPE_IMAGE_CLASSIFICATION", True, C.CONVERSION_DOMINANT_CLASS),
        ("TASK_TYPE_POSE_ESTIMATION", False, C.CONVERSION_NONE),
    ],
)
def test_check_compatibility_per_task(shapes, task, compatible, conversion):
    alice, ds = shapes
    report = alice.compat.CheckCompatibility(
        C.CheckCompatibilityRequest(dataset=ds.name, task_type=T.Value(task), split_seed=7)
    ).report
    assert report.compatible is compatible and report.conversion == conversion
    assert report.task_type == T.Value(task) and report.total_image_count == 10
    assert set(report.annotation_kinds) >= {C.ANNOTATION_KIND_POLYGON}
    if compatible:
        assert report.usable_image_count == 10 and report.split_generated and report.split_seed == 7
        assert {c.split for c in report.class_counts} == {"train", "val"}
    else:
        assert report.errors and "keypoints" in report.errors[0]


def test_check_compatibility_on_a_snapshot_with_model_and_bad_input(shapes):
    alice, ds = shapes
    snap = alice.datasets.CreateSnapshot(
        D.CreateSnapshotRequest(parent=ds.name, snapshot=D.Snapshot(reason="training jobs/7"))
    ).snapshot
    report = alice.compat.CheckCompatibility(
        C.CheckCompatibilityRequest(
            dataset=snap.name, task_type=T.Value("TASK_TYPE_OBJECT_DETECTION"), model="yolo11n"
        )
    ).report
    assert report.compatible and any("yolo11n" in w for w in report.warnings)
    for request, field in [
        (C.CheckCompatibilityRequest(dataset=ds.name), "task_type"),
        (
            C.CheckCompatibilityRequest(dataset=ds.name, task_type=1, val_fraction=1.5),
            "val_fraction",
        ),
        (C.CheckCompatibilityRequest(dataset="nonsense", task_type=1), "dataset"),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            alice.compat.CheckCompatibility(request)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and field in bad_request_fields(
            err.value
        )


def test_export_for_a_task_converts_or_refuses(shapes):
    alice, ds = shapes
    ok = alice.datasets.ExportDataset(
        D.ExportDatasetRequest(
            name=ds.name,
            format=F.ANNOTATION_FORMAT_YOLO,
            task_type=T.Value("TASK_TYPE_IMAGE_CLASSIFICATION"),
        )
    )
    assert ok.image_count == 10 and "yolo-image_classification" in ok.export_key
    with pytest.raises(grpc.RpcError) as err:
        alice.datasets.ExportDataset(
            D.ExportDatasetRequest(
                name=ds.name,
                format=F.ANNOTATION_FORMAT_COCO,
                task_type=T.Value("TASK_TYPE_POSE_ESTIMATION"),
            )
        )
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "pose" in err.value.details()


def test_keypoints_survive_import_snapshot_and_read_back(server):
    from visionmesh import formats

    carol = server.user("carol")
    ds = carol.create_dataset("pose")
    carol.upload(ds.name, {f"train/p{i}.png": image_bytes(64, 64, (i, i, 0)) for i in range(4)})
    categories = [
        {
            "id": 1,
            "name": "person",
            "keypoints": ["head", "left", "right"],
            "skeleton": [[1, 2], [1, 3]],
        }
    ]
    images = [
        {"id": i + 1, "file_name": f"train/p{i}.png", "width": 64, "height": 64} for i in range(4)
    ]
    annotations = [
        {
            "id": i + 1,
            "image_id": i + 1,
            "category_id": 1,
            "bbox": [10, 10, 30, 30],
            "keypoints": [20, 12, 2, 12, 30, 1, 30, 30, 0],
            "area": 900,
            "iscrowd": 0,
        }
        for i in range(4)
    ]
    do_import(carol, ds.name, document(annotations, categories, images))
    snap = carol.datasets.CreateSnapshot(
        D.CreateSnapshotRequest(parent=ds.name, snapshot=D.Snapshot(version_name="pose-v1"))
    ).snapshot
    assert list(snap.categories[0].keypoints) == ["head", "left", "right"]
    assert list(snap.categories[0].skeleton) == [1, 2, 1, 3]
    manifest = json.loads(
        carol.datasets.GetAnnotations(D.GetAnnotationsRequest(parent=snap.name)).document
    )
    ann = manifest["annotations"][0]
    assert ann["keypoints"] == [20, 12, 2, 12, 30, 1, 30, 30, 0] and ann["num_keypoints"] == 2
    assert manifest["categories"][0]["skeleton"] == [[1, 2], [1, 3]]
    assert formats.from_dice_dict(manifest).ok
    report = carol.compat.CheckCompatibility(
        C.CheckCompatibilityRequest(
            dataset=snap.name, task_type=T.Value("TASK_TYPE_POSE_ESTIMATION")
        )
    ).report
    assert report.compatible and report.conversion == C.CONVERSION_NATIVE
    got = carol.datasets.GetDataset(D.GetDatasetRequest(name=ds.name)).dataset
    assert set(got.health.annotation_kinds) == {"box", "keypoints"}
