"""ImportAnnotations over real gRPC gains what the formats library reads: COCO's
annotations/ folder with its splits, and refuses hostile or careless documents with the
field at fault (INVALID_ARGUMENT, never INTERNAL): a YAML alias bomb, a NUL or huge category
name, JSON nested thousands deep, YOLO labels without class names (unless allowed).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import grpc
import pytest

from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture, image_bytes
from tests._realworld import materialize, needs_realworld
from visionmesh.errors import bad_request_fields
from visionmesh.v1 import dataset_pb2

server = dataset_server_fixture([DEFAULT_BACKEND])
D = dataset_pb2


def files_of(root: Path, paths: list[str]) -> list[D.AnnotationFile]:
    return [D.AnnotationFile(path=p, content=(root / p).read_bytes()) for p in paths]


@needs_realworld
def test_coco_annotations_folder_imports_per_file_with_its_splits(server, tmp_path: Path) -> None:
    root = materialize("coco-mini", tmp_path)
    alice = server.user("alice")
    ds = alice.create_dataset("coco-mini")
    images = {
        str(p.relative_to(root)): p.read_bytes()
        for folder in ("train2017", "val2017")
        for p in sorted((root / folder).iterdir())
    }
    alice.upload(ds.name, images)
    docs = sorted(str(p.relative_to(root)) for p in (root / "annotations").glob("*.json"))
    reply = alice.datasets.ImportAnnotations(
        D.ImportAnnotationsRequest(parent=ds.name, files=files_of(root, docs)), timeout=60
    )
    assert reply.variant == "coco-instances+coco-keypoints"
    assert reply.image_count == 159 and reply.annotation_count == 739 + 624
    assert not reply.warnings  # captions skipped and keypoints merged are notes
    listed = alice.all_images(ds.name)
    assert Counter(im.split for im in listed) == {"train": 80, "val": 79}
    assert {im.split for im in listed if im.path.startswith("val2017/")} == {"val"}


def _yolo_dataset(server, name: str):
    bob = server.user("bob")
    ds = bob.create_dataset(name)
    bob.upload(
        ds.name,
        {
            "images/train/a.png": image_bytes(100, 50),
            "images/val/b.png": image_bytes(100, 50, (1, 1, 1)),
        },
    )
    labels = [
        D.AnnotationFile(path="labels/train/a.txt", content=b"3 0.5 0.5 0.2 0.2\n"),
        D.AnnotationFile(path="labels/val/b.txt", content=b"1 0.5 0.5 0.5 0.5\n"),
    ]
    return bob, ds, labels


def test_yolo_without_class_names_is_refused_unless_allowed(server) -> None:
    bob, ds, labels = _yolo_dataset(server, "no-names")
    with pytest.raises(grpc.RpcError) as err:
        bob.datasets.ImportAnnotations(D.ImportAnnotationsRequest(parent=ds.name, files=labels))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "class_names" in err.value.details() and "data.yaml" in err.value.details()
    assert "names" in bad_request_fields(err.value)
    reply = bob.datasets.ImportAnnotations(
        D.ImportAnnotationsRequest(parent=ds.name, files=labels, allow_warnings=True)
    )
    assert reply.category_count == 4
    assert any("no class names" in w.message for w in reply.warnings)


BOMB = b"""a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
names: [*g, *g, *g, *g]
"""


def test_yaml_alias_bomb_is_refused(server) -> None:
    bob, ds, labels = _yolo_dataset(server, "bomb")
    request = D.ImportAnnotationsRequest(
        parent=ds.name, files=[*labels, D.AnnotationFile(path="data.yaml", content=BOMB)]
    )
    with pytest.raises(grpc.RpcError) as err:
        bob.datasets.ImportAnnotations(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = bad_request_fields(err.value)
    assert "data.yaml" in fields and "alias" in fields["data.yaml"]
    got = bob.datasets.GetDataset(D.GetDatasetRequest(name=ds.name)).dataset
    assert got.annotation_count == 0 and not got.categories


@pytest.mark.parametrize(
    ("name", "field", "words"),
    [
        ("cat\x00dog", "categories[0].name", "control characters"),
        ("x" * 300, "categories[0].name", "at most 256"),
    ],
)
def test_category_names_are_bounded(server, name: str, field: str, words: str) -> None:
    alice = server.user("alice")
    ds = alice.create_dataset(f"names-{len(name)}")
    alice.upload(ds.name, {"a.png": image_bytes(20, 20)})
    doc = {
        "categories": [{"id": 1, "name": name}],
        "images": [{"id": 1, "file_name": "a.png", "width": 20, "height": 20}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
    }
    file = D.AnnotationFile(path="annotations.json", content=json.dumps(doc).encode())
    with pytest.raises(grpc.RpcError) as err:
        alice.datasets.ImportAnnotations(D.ImportAnnotationsRequest(parent=ds.name, files=[file]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert words in bad_request_fields(err.value)[field]


def test_deeply_nested_json_is_invalid_argument(server) -> None:
    alice = server.user("alice")
    ds = alice.create_dataset("deep")
    alice.upload(ds.name, {"a.png": image_bytes(20, 20)})
    deep = b'{"images": [], "categories": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    file = D.AnnotationFile(path="annotations.json", content=deep)
    with pytest.raises(grpc.RpcError) as err:
        alice.datasets.ImportAnnotations(D.ImportAnnotationsRequest(parent=ds.name, files=[file]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nested deeper than 1024" in bad_request_fields(err.value)["annotations.json"]
