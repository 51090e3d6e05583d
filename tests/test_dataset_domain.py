"""The boundary inside dataset_svc: domain modules answer catalog rows and plain dataclasses,
:mod:`dataset_svc.messages` alone builds protobuf messages of them (with the servicers).

Called directly on a real SQLite catalog and a local-folder store (the gRPC behaviour is
the dataset tests' business)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from google.protobuf.message import Message

from dataset_svc import datasets, diff, documents, images, imports, integrity, messages
from dataset_svc.catalog import models, open_catalog
from dataset_svc.catalog.models import Blob, Image, User
from visionmesh.errors import ServiceError
from visionmesh.store import LocalStore, blob_key
from visionmesh.v1 import common_pb2, dataset_pb2

ROOT = Path(__file__).resolve().parent.parent
# Where *_pb2 may be imported: the messages module, the servicers and the process wiring
# (errors.py: the error details, until the shared errors module replaces it).
EDGE = {"messages.py", "server.py"}


def test_only_the_edge_of_dataset_svc_imports_protobuf():
    found = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "dataset_svc").rglob("*.py")
        if re.search(r"_pb2\b", path.read_text())
        and path.parent.name != "services"
        and path.name not in EDGE
    )
    assert found == []


def test_catalog_visibility_numbers_are_the_apis():
    assert models.VISIBILITY_UNSPECIFIED == common_pb2.VISIBILITY_UNSPECIFIED
    assert models.VISIBILITY_PRIVATE == common_pb2.VISIBILITY_PRIVATE
    assert models.VISIBILITY_PUBLIC == common_pb2.VISIBILITY_PUBLIC


@pytest.fixture
def catalog(tmp_path):
    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    yield catalog
    catalog.close()


def _add_images(session, dataset_id: str, sizes: dict[str, tuple[int, int]]) -> None:
    for n, (path, (width, height)) in enumerate(sizes.items()):
        sha = f"{dataset_id}{n}".encode().hex().ljust(64, "0")
        session.add(Blob(sha256=sha, size_bytes=100 + n))
        session.flush()
        session.add(
            Image(
                dataset_id=dataset_id,
                path=path,
                split=path.split("/")[0],
                sha256=sha,
                width=width,
                height=height,
                size_bytes=100 + n,
                doc_json=documents.image_fragment(path, width, height, sha, 100 + n),
            )
        )
    session.flush()


def _user(session) -> User:
    user = User(username="ann", username_key="ann", password_hash="x")
    session.add(user)
    session.flush()
    return user


def _plain_dataset(session, owner: User) -> models.Dataset:
    fields = SimpleNamespace(display_name="d", description="", visibility=0)
    return datasets.create(session, owner, fields)


DOCUMENT = {
    "categories": [{"id": 1, "name": "cat", "supercategory": "animal"}, {"id": 2, "name": "dog"}],
    "images": [
        {"id": 1, "file_name": "train/a.png", "width": 40, "height": 30},
        {"id": 2, "file_name": "val/b.png", "width": 20, "height": 10},
    ],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 8], "area": 80},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 4, 4], "area": 16},
    ],
}  # fmt: skip


def test_datasets_answer_rows_and_messages_builds_the_listing(catalog):
    with catalog.session() as session:
        ann = _user(session)
        # what the servicer passes: the request's Dataset message (any object with the fields)
        row = datasets.create(
            session,
            ann,
            dataset_pb2.Dataset(display_name=" pets ", visibility=common_pb2.VISIBILITY_PUBLIC),
        )
        assert isinstance(row, models.Dataset) and row.display_name == "pets"
        _add_images(session, row.id, {"train/a.png": (40, 30), "val/b.png": (20, 10)})
        document = SimpleNamespace(path="doc.json", content=json.dumps(DOCUMENT).encode())
        imported = imports.import_annotations(session, row, [document], fmt="dice")
        assert isinstance(imported, imports.Imported) and imported.annotation_count == 2
        assert messages.import_annotations(imported) == dataset_pb2.ImportAnnotationsResponse(
            variant=imported.variant, image_count=2, annotation_count=2, category_count=2
        )

        page = datasets.list_visible(session, ann, filter_text="visibility=public", page_size=5)
        assert isinstance(page, datasets.DatasetPage) and page.total_size == 1
        assert [r.id for r in page.rows] == [row.id] and page.rows[0].owner_username == "ann"
        assert not any(isinstance(r, Message) for r in page.rows)
        summary = datasets.summaries(session, page.rows)[row.id]
        assert summary[:3] == (2, 2, 201)
        assert [c["name"] for c in summary.categories] == ["cat", "dog"]

        response = messages.list_datasets(page, functools.partial(datasets.summaries, session))
        assert isinstance(response, dataset_pb2.ListDatasetsResponse)
        assert response.total_size == 1 and response.next_page_token == ""
        (message,) = response.datasets
        assert message.name == f"datasets/{row.id}" and message.owner == "users/ann"
        assert (message.image_count, message.annotation_count, message.total_bytes) == (2, 2, 201)
        assert message.visibility == common_pb2.VISIBILITY_PUBLIC and message.labeled
        assert message.categories[0] == common_pb2.Category(
            id=1, name="cat", supercategory="animal"
        )
        assert not message.HasField("health")

        health = datasets.health(session, row)
        assert isinstance(health, datasets.Health)
        assert health.images_per_split == {"train": 1, "val": 1}
        assert health.unlabeled_image_count == 1 and health.annotation_kinds == ["box"]
        built = messages.health(health)
        assert (built.min_width, built.max_width, built.mean_height) == (20, 40, 20.0)
        assert [(c.category_name, c.split, c.annotation_count) for c in built.class_counts] == [
            ("cat", "train", 1),
            ("dog", "train", 1),
        ]

        image_page = images.list_page(session, row.id, parent=f"datasets/{row.id}", page_size=1)
        assert isinstance(image_page, images.ImagePage) and image_page.total_size == 2
        assert isinstance(image_page.rows[0], Image)
        listed = messages.list_images(image_page)
        assert [i.path for i in listed.images] == ["train/a.png"]
        assert listed.images[0].annotation_count == 2 and listed.next_page_token


def test_integrity_and_diff_answer_dataclasses(catalog, tmp_path):
    store = LocalStore(tmp_path / "store")
    with catalog.session() as session:
        row = _plain_dataset(session, _user(session))
        _add_images(session, row.id, {"train/a.png": (4, 4)})
        sha = session.query(Image.sha256).scalar()
        report = integrity.check(session, store, row.id, verify_hashes=False)
    assert isinstance(report, integrity.IntegrityReport) and not report.ok
    assert messages.integrity(report) == dataset_pb2.CheckIntegrityResponse(
        checked_blob_count=1,
        problems=[dataset_pb2.BlobProblem(sha256=sha, kind="missing", paths=["train/a.png"])],
        ok=False,
    )

    target = json.loads(json.dumps(DOCUMENT))
    target["annotations"][0]["bbox"] = [2, 2, 10, 8]  # moved: changed
    target["images"].append({"id": 3, "file_name": "train/c.png", "width": 5, "height": 5})
    result = diff.diff(DOCUMENT, target)
    assert isinstance(result, diff.Diff) and result.changed_annotation_count == 1
    assert messages.diff(result) == dataset_pb2.DiffSnapshotsResponse(
        added_images=["train/c.png"], changed_annotation_count=1
    )


def test_deleting_a_dataset_removes_its_rows_then_its_objects(catalog, tmp_path):
    store = LocalStore(tmp_path / "store")
    with catalog.session() as session:
        row = _plain_dataset(session, _user(session))
        dataset_id = row.id
    kept = blob_key("0" * 64)
    for key in (
        f"datasets/{dataset_id}/snapshots/s/manifest.json",
        f"exports/{dataset_id}/x.zip",
        kept,
    ):
        store.put_bytes(key, b"{}")
    with catalog.session() as session:
        datasets.delete_dataset(session, dataset_id)
    datasets.delete_objects(store, dataset_id)
    assert list(store.list("datasets/")) == [] and list(store.list("exports/")) == []
    assert store.get_bytes(kept) == b"{}"  # blobs go at the next GC


def test_messages_reads_the_upload_stream_framing():
    chunk = dataset_pb2.FileChunk
    requests = [
        dataset_pb2.UploadImagesRequest(chunk=chunk(path="a.png", data=b"1")),
        dataset_pb2.UploadImagesRequest(
            chunks=dataset_pb2.FileChunks(chunks=[chunk(data=b"2"), chunk(path="b.png", data=b"3")])
        ),
        dataset_pb2.UploadImagesRequest(end=dataset_pb2.UploadImagesEnd(file_count=2)),
    ]
    stream = messages.UploadChunks(iter(requests))
    assert [(c.path, c.data) for c in stream] == [("a.png", b"1"), ("", b"2"), ("b.png", b"3")]
    assert stream.end_file_count == 2
    late = messages.UploadChunks(iter([*requests, requests[0]]))
    with pytest.raises(ServiceError, match="nothing may follow the end message"):
        list(late)
    assert messages.on_conflict(0) == "replace"
    assert (
        messages.on_conflict(dataset_pb2.UploadImagesHeader.OnConflict.ON_CONFLICT_SKIP) == "skip"
    )
