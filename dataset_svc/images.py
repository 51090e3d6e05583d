"""ListImages, DeleteImages and GetImageUrl.

GetImageUrl answers, for the S3 backend, a presigned GET URL valid ``expire_seconds``
(default one hour); for the local-folder backend, the gateway path
``/v1/datasets/{dataset_id}/images/{image_id}:content`` that the gateway serves to a
signed-in caller allowed to see the dataset (no expiry: access is checked per request).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, delete, exists, func, select
from sqlalchemy.orm import Session

from dataset_svc import filters, names, pagination, retention
from dataset_svc.catalog.models import Annotation, Image
from visionmesh.errors import invalid_argument, invalid_fields, not_found
from visionmesh.store import LocalStore, ObjectStore, blob_key

LIST_FILTERS = {"split": {"="}, "path": {":", "="}, "labeled": {"="}}
MAX_EXPIRE_SECONDS = 7 * 24 * 3600


def _apply_filters(query: Select, text: str) -> Select:  # type: ignore[type-arg]
    for term in filters.parse(text, LIST_FILTERS):
        if term.field == "split":
            if term.value not in ("train", "val", "test", ""):
                raise invalid_argument(
                    f'filter: split must be "train", "val", "test" or "", got {term.value!r}',
                    "filter",
                )
            query = query.where(Image.split == term.value)
        elif term.field == "path":
            if term.op == "=":
                query = query.where(Image.path == term.value)
            else:
                pattern = term.value.replace("\\", "\\\\").replace("%", r"\%").replace("_", r"\_")
                query = query.where(Image.path.like(pattern + "%", escape="\\"))
        elif term.field == "labeled":
            has = exists().where(Annotation.image_id == Image.id)
            query = query.where(has if filters.parse_bool(term) else ~has)
    return query


@dataclass
class ImagePage:
    rows: list[Image]
    annotation_counts: dict[int, int]  # image id -> its annotations (absent: none)
    total_size: int
    next_page_token: str


def list_page(
    session: Session,
    dataset_id: str,
    *,
    parent: str,
    filter_text: str = "",
    page_size: int = 0,
    page_token: str = "",
) -> ImagePage:
    """A page of the dataset's images (path order); the token is bound to parent and filter."""
    page = pagination.page(page_size, page_token, parent, filter_text)
    query = _apply_filters(select(Image).where(Image.dataset_id == dataset_id), filter_text)
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = list(
        session.scalars(query.order_by(Image.path, Image.id).offset(page.offset).limit(page.size))
    )
    counts = (
        dict(
            session.execute(
                select(Annotation.image_id, func.count(Annotation.id))
                .where(Annotation.image_id.in_([r.id for r in rows]))
                .group_by(Annotation.image_id)
            ).all()
        )
        if rows
        else {}
    )
    return ImagePage(rows, counts, total, page.next_token(len(rows), total))


def _in_batches(values: list, size: int = 500) -> list[list]:  # type: ignore[type-arg]
    return [values[i : i + size] for i in range(0, len(values), size)]


def resolve(session: Session, dataset_id: str, refs: list[str]) -> list[int]:
    """Image ids for resource names or relative paths; INVALID_ARGUMENT naming unknown ones."""
    by_name: dict[int, int] = {}  # index in refs -> image id
    by_path: dict[int, str] = {}
    problems: list[tuple[str, str]] = []
    for i, ref in enumerate(refs):
        if ref.startswith("datasets/"):
            ref_dataset, image_id = names.parse_image(ref, f"images[{i}]")
            if ref_dataset != dataset_id:
                problems.append((f"images[{i}]", f"{ref} is not an image of datasets/{dataset_id}"))
            else:
                by_name[i] = image_id
        else:
            by_path[i] = ref
    known_ids: set[int] = set()
    for batch in _in_batches(sorted(set(by_name.values()))):
        known_ids.update(
            session.scalars(
                select(Image.id).where(Image.dataset_id == dataset_id, Image.id.in_(batch))
            )
        )
    id_of_path: dict[str, int] = {}
    for batch in _in_batches(sorted(set(by_path.values()))):
        id_of_path.update(
            session.execute(
                select(Image.path, Image.id).where(
                    Image.dataset_id == dataset_id, Image.path.in_(batch)
                )
            ).all()
        )
    ids: set[int] = set()
    for i, image_id in by_name.items():
        if image_id in known_ids:
            ids.add(image_id)
        else:
            problems.append((f"images[{i}]", f"{refs[i]} does not exist"))
    for i, path in by_path.items():
        if path in id_of_path:
            ids.add(id_of_path[path])
        else:
            problems.append((f"images[{i}]", f"no image at path {path!r} in datasets/{dataset_id}"))
    if problems:
        raise invalid_fields(
            f"{len(problems)} of the images to delete are unknown, nothing was deleted "
            f"(first: {problems[0][1]})",
            sorted(problems),
        )
    return sorted(ids)


def delete_images(session: Session, dataset_id: str, image_ids: list[int]) -> tuple[int, int]:
    """Delete head rows only; blobs a snapshot may reference are retained first (GC decides
    about the rest)."""
    retention.retain_departing(session, dataset_id, image_ids)
    deleted_annotations = 0
    for batch in _in_batches(image_ids):
        deleted_annotations += session.execute(
            delete(Annotation).where(Annotation.image_id.in_(batch))
        ).rowcount
        session.execute(delete(Image).where(Image.id.in_(batch)))
    return len(image_ids), deleted_annotations


def get(session: Session, dataset_id: str, image_id: int) -> Image:
    row = session.scalars(
        select(Image).where(Image.id == image_id, Image.dataset_id == dataset_id)
    ).one_or_none()
    if row is None:
        raise not_found(f"image {names.image_name(dataset_id, image_id)} not found: see ListImages")
    return row


@dataclass
class ImageUrl:
    url: str
    expire_time: datetime | None = None  # None: no expiry (the gateway checks each request)


def url(store: ObjectStore, row: Image, expire_seconds: int) -> ImageUrl:
    if expire_seconds < 0 or expire_seconds > MAX_EXPIRE_SECONDS:
        raise invalid_argument(
            f"expire_seconds must be 0..{MAX_EXPIRE_SECONDS} (7 days), got {expire_seconds}",
            "expire_seconds",
        )
    seconds = expire_seconds or 3600
    if isinstance(store, LocalStore):
        return ImageUrl(f"/v1/{names.image_name(row.dataset_id, row.id)}:content")
    presigned = store.presigned_url(blob_key(row.sha256), seconds) or ""
    return ImageUrl(presigned, datetime.now(UTC) + timedelta(seconds=seconds))
