"""The dataset head as a DICE standard (COCO-compatible) document: ONE serializer.

Snapshot manifests, GetAnnotations (head), diffs, exports and compatibility checks all
use :func:`head_json`, so they see the same thing::

    {
      "info": {...},
      "categories": [{"id", "name", "supercategory", "keypoints"?, "skeleton"?, ...}, ...],
      "images": [{"id", "file_name", "width", "height", "split", "sha256", "size_bytes"}, ...],
      "annotations": [{"id", "image_id", "category_id", "bbox"?, "segmentation"?,
                       "keypoints"?, "area", "iscrowd"}, ...]
    }

``file_name`` is the image's original relative path; ``sha256`` names its blob
(``blobs/sha256/<first two hex>/<hex>``). An annotation without ``bbox``,
``segmentation`` or ``keypoints`` is an image-level class label (classification). Image
ids are catalog image ids, annotation ids catalog annotation ids; entries are in id order.
This is what the formats library's ``to_dice_dict`` writes and ``from_dice_dict`` reads
(tests check they agree).

Each image and annotation row keeps its own member text (``doc_json``: everything but
``id``, and for images ``split``, which imports change), written when the row is written
(:func:`image_fragment`, :func:`annotation_fragment`); a document joins those texts, so a
100,000-image snapshot costs two one-column reads. Rows from before the column existed
are rendered on first use and their text stored.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import Connection, Select, bindparam, distinct, func, select, update
from sqlalchemy.orm import Session

from dataset_svc.catalog.models import Annotation, Category, Image

_dumps = json.dumps
_BATCH = 500


@dataclass
class HeadJson:
    data: bytes
    image_count: int = 0
    annotation_count: int = 0
    categories: list[dict[str, Any]] = field(default_factory=list)
    class_counts: list[dict[str, Any]] = field(default_factory=list)


def category_dict(row: Category) -> dict[str, Any]:
    """A category as a DICE/COCO document entry (extra fields such as keypoints kept)."""
    entry: dict[str, Any] = {
        "id": row.category_id,
        "name": row.name,
        "supercategory": row.supercategory,
    }
    entry.update(row.extra or {})
    return entry


def _string(text: str) -> str:
    """A JSON string literal (fast path for the plain paths nearly every image has)."""
    if '"' not in text and "\\" not in text and text.isprintable():
        return f'"{text}"'
    return _dumps(text, ensure_ascii=False)


def _json(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()


def image_fragment(path: str, width: int, height: int, sha256: str, size_bytes: int) -> str:
    """An image's members in the document, but for ``id`` and ``split``."""
    return (
        f'"file_name":{_string(path)},"width":{int(width)},"height":{int(height)},'
        f'"sha256":"{sha256}","size_bytes":{int(size_bytes)}'
    )


def annotation_fragment(
    image_id: int,
    category_id: int,
    bbox: Any,
    segmentation: Any,
    keypoints: Any,
    area: float,
    iscrowd: int,
) -> str:
    """An annotation's members in the document, but for ``id`` (geometry as stored)."""
    text = f'"image_id":{int(image_id)},"category_id":{int(category_id)}'
    if bbox is not None:
        text += f',"bbox":{_json(bbox)}'
    if segmentation is not None:
        text += f',"segmentation":{_json(segmentation)}'
    if keypoints is not None:
        visible = sum(1 for v in keypoints[2::3] if v)
        text += f',"keypoints":{_json(keypoints)},"num_keypoints":{visible}'
    area = float(area)
    return text + f',"area":{repr(area) if math.isfinite(area) else "0.0"},"iscrowd":{int(iscrowd)}'


def _fetch_all(connection: Connection, query: Select[Any]) -> list[tuple[Any, ...]]:
    """Plain tuples straight from the DBAPI cursor: these columns (ints, text) need no
    result processing, and skipping Row objects matters at 100,000 rows."""
    result = connection.execute(query)
    try:
        return result.cursor.fetchall()
    finally:
        result.close()


def _fill_image_fragments(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """Render and store the text of image rows written before ``doc_json`` existed."""
    filled: dict[int, str] = {}
    for start in range(0, len(ids), _BATCH):
        for i, path, w, h, sha256, size in session.execute(
            select(
                Image.id, Image.path, Image.width, Image.height, Image.sha256, Image.size_bytes
            ).where(Image.id.in_(ids[start : start + _BATCH]))
        ):
            filled[i] = image_fragment(path, w, h, sha256, size)
    _store(session, Image, filled)
    return filled


def _fill_annotation_fragments(session: Session, ids: Sequence[int]) -> dict[int, str]:
    """Render and store the text of annotation rows written before ``doc_json`` existed."""
    filled: dict[int, str] = {}
    a = Annotation
    for start in range(0, len(ids), _BATCH):
        for row in session.execute(
            select(
                a.id, a.image_id, a.category_id, a.bbox, a.segmentation, a.keypoints, a.area,
                a.iscrowd,
            ).where(a.id.in_(ids[start : start + _BATCH]))
        ):  # fmt: skip
            filled[row[0]] = annotation_fragment(*row[1:])
    _store(session, Annotation, filled)
    return filled


def _store(session: Session, model: type[Image] | type[Annotation], texts: dict[int, str]) -> None:
    if texts:
        table = model.__table__
        session.execute(
            update(table)
            .where(table.c.id == bindparam("row_id"))
            .values(doc_json=bindparam("text")),
            [{"row_id": k, "text": v} for k, v in texts.items()],
        )


def head_json(session: Session, dataset_id: str, info: dict[str, Any]) -> HeadJson:
    """The head document as compact UTF-8 JSON, with its counts and per-class counts."""
    categories = [
        category_dict(row)
        for row in session.scalars(
            select(Category).where(Category.dataset_id == dataset_id).order_by(Category.category_id)
        )
    ]
    connection = session.connection()
    images = _fetch_all(
        connection,
        select(Image.id, Image.doc_json, Image.split)
        .where(Image.dataset_id == dataset_id)
        .order_by(Image.id),
    )
    missing = [i for i, text, _ in images if text is None]
    filled = _fill_image_fragments(session, missing) if missing else {}
    image_parts = [
        f'{{"id":{i},{text if text is not None else filled[i]},"split":"{split}"}}'
        for i, text, split in images
    ]
    annotations = _fetch_all(
        connection,
        select(Annotation.id, Annotation.doc_json)
        .where(Annotation.dataset_id == dataset_id)
        .order_by(Annotation.id),
    )
    missing = [i for i, text in annotations if text is None]
    filled = _fill_annotation_fragments(session, missing) if missing else {}
    annotation_parts = [
        f'{{"id":{i},{text if text is not None else filled[i]}}}' for i, text in annotations
    ]
    # Per (category, split): annotations, and distinct images holding the category.
    per_class = session.execute(
        select(
            Annotation.category_id,
            Image.split,
            func.count(Annotation.id),
            func.count(distinct(Annotation.image_id)),
        )
        .join(Image, Image.id == Annotation.image_id)
        .where(Annotation.dataset_id == dataset_id)
        .group_by(Annotation.category_id, Image.split)
        .order_by(Annotation.category_id, Image.split)
    ).all()
    head = (
        '{"info":'
        + _dumps(info, ensure_ascii=False, separators=(",", ":"))
        + ',"categories":'
        + _dumps(categories, ensure_ascii=False, separators=(",", ":"))
        + ',"images":['
    )
    data = (
        head + ",".join(image_parts) + '],"annotations":[' + ",".join(annotation_parts) + "]}"
    ).encode()
    names = {c["id"]: c["name"] for c in categories}
    class_counts = [
        {
            "category_id": cid,
            "category_name": names.get(cid, ""),
            "split": split,
            "image_count": n_images,
            "annotation_count": n,
        }
        for cid, split, n, n_images in per_class
    ]
    return HeadJson(data, len(image_parts), len(annotation_parts), categories, class_counts)


def head_document(session: Session, dataset_id: str, info: dict[str, Any]) -> dict[str, Any]:
    """The head document as a dict (parsed from :func:`head_json`)."""
    return json.loads(head_json(session, dataset_id, info).data)
