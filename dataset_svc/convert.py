"""Catalog rows to protobuf messages."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from google.protobuf import timestamp_pb2

from dataset_svc import names
from dataset_svc.catalog.models import Category, Dataset, Image, Snapshot, User
from visionmesh.v1 import auth_pb2, common_pb2, dataset_pb2


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite returns naive datetimes; they are stored as UTC
        value = value.replace(tzinfo=UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def user(row: User) -> auth_pb2.User:
    return auth_pb2.User(
        name=names.user_name(row.username),
        username=row.username,
        create_time=timestamp(row.create_time),
    )


def category_dict(row: Category) -> dict[str, Any]:
    """A category as a DICE/COCO document entry (extra fields such as keypoints kept)."""
    entry: dict[str, Any] = {
        "id": row.category_id,
        "name": row.name,
        "supercategory": row.supercategory,
    }
    entry.update(row.extra or {})
    return entry


def category(entry: dict[str, Any]) -> common_pb2.Category:
    return common_pb2.Category(
        id=int(entry["id"]),
        name=str(entry.get("name", "")),
        supercategory=str(entry.get("supercategory") or ""),
        keypoints=[str(k) for k in entry.get("keypoints") or []],
        skeleton=[int(v) for pair in entry.get("skeleton") or [] for v in _flat(pair)],
    )


def _flat(value: Any) -> Iterable[Any]:
    return value if isinstance(value, list | tuple) else [value]


def class_count(entry: dict[str, Any]) -> common_pb2.ClassCount:
    return common_pb2.ClassCount(
        category_id=int(entry["category_id"]),
        category_name=str(entry.get("category_name", "")),
        split=str(entry.get("split", "")),
        image_count=int(entry.get("image_count", 0)),
        annotation_count=int(entry.get("annotation_count", 0)),
    )


def dataset(
    row: Dataset,
    owner: str,
    *,
    image_count: int = 0,
    annotation_count: int = 0,
    total_bytes: int = 0,
    categories: Iterable[dict[str, Any]] = (),
    health: dataset_pb2.DatasetHealth | None = None,
) -> dataset_pb2.Dataset:
    return dataset_pb2.Dataset(
        name=names.dataset_name(row.id),
        display_name=row.display_name,
        description=row.description,
        visibility=row.visibility,
        owner=names.user_name(owner),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        image_count=image_count,
        annotation_count=annotation_count,
        labeled=row.labeled,
        categories=[category(c) for c in categories],
        annotation_variant=row.annotation_variant,
        health=health,
        total_bytes=total_bytes,
    )


def image(row: Image, annotation_count: int = 0) -> dataset_pb2.Image:
    return dataset_pb2.Image(
        name=names.image_name(row.dataset_id, row.id),
        path=row.path,
        sha256=row.sha256,
        width=row.width,
        height=row.height,
        size_bytes=row.size_bytes,
        content_type=row.content_type,
        split=row.split,
        create_time=timestamp(row.create_time),
        annotation_count=annotation_count,
    )


def snapshot(row: Snapshot, creator: str) -> dataset_pb2.Snapshot:
    return dataset_pb2.Snapshot(
        name=names.snapshot_name(row.dataset_id, row.id),
        version_name=row.version_name or "",
        description=row.description,
        automatic=row.automatic,
        reason=row.reason,
        create_time=timestamp(row.create_time),
        creator=names.user_name(creator),
        image_count=row.image_count,
        annotation_count=row.annotation_count,
        categories=[category(c) for c in row.categories or []],
        class_counts=[class_count(c) for c in row.class_counts or []],
        manifest_key=row.manifest_key,
        manifest_sha256=row.manifest_sha256,
    )
