"""The head document: rows carry their own JSON text, and rows without it (written
before the column existed) render to exactly the same document."""

from __future__ import annotations

import json

from sqlalchemy import func, select, update

from dataset_svc import documents, imports
from dataset_svc.catalog import open_catalog
from dataset_svc.catalog.models import Annotation, Blob, Dataset, Image, User

DOCUMENT = {
    "categories": [{"id": 1, "name": "cat", "supercategory": ""}, {"id": 5, "name": "dog"}],
    "images": [
        {"id": 10, "file_name": 'train/a "quoted".png', "width": 40, "height": 30},
        {"id": 11, "file_name": "val/b.png", "width": 20, "height": 20, "split": "val"},
    ],
    "annotations": [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [1.5, 2, 10, 8.25], "area": 82.5},
        {"id": 2, "image_id": 10, "category_id": 5, "bbox": [0, 0, 4, 4],
         "segmentation": [[0, 0, 4, 0, 4, 4]], "area": 8, "iscrowd": 0},
        {"id": 3, "image_id": 11, "category_id": 1, "bbox": [2, 2, 6, 6],
         "keypoints": [3, 3, 2, 5, 5, 0, 7, 7, 1], "area": 36},
        {"id": 4, "image_id": 11, "category_id": 5},  # an image-level label
    ],
}  # fmt: skip


def test_stored_text_and_rendered_text_make_the_same_document(tmp_path):
    catalog = open_catalog(f"sqlite:///{tmp_path / 'catalog.db'}")
    with catalog.session() as session:
        session.add(User(id=1, username="ann", password_hash="x"))
        session.flush()
        session.add(Dataset(id="ds", display_name="d", visibility=1, owner_id=1))
        session.flush()
        ids = {}
        for n, image in enumerate(DOCUMENT["images"]):
            sha = f"{n:064x}"
            session.add(Blob(sha256=sha, size_bytes=100 + n))
            session.flush()
            row = Image(
                dataset_id="ds",
                path=image["file_name"],
                sha256=sha,
                width=image["width"],
                height=image["height"],
                size_bytes=100 + n,
                doc_json=documents.image_fragment(
                    image["file_name"], image["width"], image["height"], sha, 100 + n
                ),
            )
            session.add(row)
            session.flush()
            ids[image["file_name"]] = row.id
        imports._replace(session, "ds", DOCUMENT, ids)  # the import path: text written
        stored = documents.head_json(session, "ds", {"k": "v"}).data
        session.execute(update(Image).values(doc_json=None))
        session.execute(update(Annotation).values(doc_json=None))
        rendered = documents.head_json(session, "ds", {"k": "v"}).data
        refilled = session.scalar(select(func.count()).where(Annotation.doc_json.is_(None)))
        assert (
            refilled == 0
            and session.scalar(select(func.count()).where(Image.doc_json.is_(None))) == 0
        )
    catalog.close()
    assert rendered == stored
    doc = json.loads(stored)
    a_id, b_id = ids['train/a "quoted".png'], ids["val/b.png"]
    assert doc["images"] == [
        {"id": a_id, "file_name": 'train/a "quoted".png', "width": 40, "height": 30,
         "sha256": f"{0:064x}", "size_bytes": 100, "split": ""},
        {"id": b_id, "file_name": "val/b.png", "width": 20, "height": 20,
         "sha256": f"{1:064x}", "size_bytes": 101, "split": "val"},
    ]  # fmt: skip
    assert [a["image_id"] for a in doc["annotations"]] == [a_id, a_id, b_id, b_id]
    first, polygon, pose, label = doc["annotations"]
    assert first["bbox"] == [1.5, 2, 10, 8.25] and first["area"] == 82.5
    assert first["iscrowd"] == 0 and "segmentation" not in first
    assert polygon["segmentation"] == [[0, 0, 4, 0, 4, 4]]
    assert pose["keypoints"] == [3, 3, 2, 5, 5, 0, 7, 7, 1] and pose["num_keypoints"] == 2
    assert set(label) == {"id", "image_id", "category_id", "area", "iscrowd"}
