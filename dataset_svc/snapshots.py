"""Snapshots: frozen versions of a dataset, as a manifest in the object store.

Manifest (a fixed point: the trainers read it directly from the store) at
``datasets/<dataset_id>/snapshots/<snapshot_id>/manifest.json``: a DICE standard
(COCO-compatible) JSON document as built by :mod:`dataset_svc.documents`, with

- ``info``: ``dataset`` and ``snapshot`` resource names, ``version_name``, ``description``,
  ``automatic``, ``reason``, ``creator`` (users/...), ``create_time`` (RFC 3339 UTC),
  ``format`` = "dice-standard", ``manifest_version`` = 1;
- ``categories``: ``id``, ``name``, ``supercategory`` (+ ``keypoints``, ``skeleton``);
- ``images``: ``id``, ``file_name`` (original relative path), ``width``, ``height``,
  ``split`` ("train", "val", "test" or ""), ``sha256`` (blob ``blobs/sha256/<2 hex>/<hex>``),
  ``size_bytes``;
- ``annotations``: COCO ``id``, ``image_id``, ``category_id``, ``bbox`` [x, y, w, h] pixels,
  ``segmentation`` polygons, ``keypoints`` [x, y, v]* (+ ``num_keypoints``), ``area``,
  ``iscrowd``; an annotation with none of bbox/segmentation/keypoints is an image-level
  class label.

Creating one costs O(images + annotations) catalog reads and one object write; image bytes
are never copied and no row per image is written: the head's rows keep its blobs alive,
and an image that leaves the head later has its blob retained then (:mod:`dataset_svc.retention`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import Iterator
from typing import Any, Protocol

import grpc
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from dataset_svc import documents, names, retention
from dataset_svc.catalog.db import lock_blob_references
from dataset_svc.catalog.models import Dataset, Snapshot, User, utcnow
from dataset_svc.validation import text_problem
from visionmesh.errors import ServiceError, already_exists, invalid_fields, not_found
from visionmesh.store import KeyNotFound, ObjectStore

VERSION_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
MAX_REASON = 255
MAX_DESCRIPTION = 10_000


class SnapshotFields(Protocol):
    """What a request sets of a new snapshot (a ``Snapshot`` message)."""

    version_name: str
    description: str
    reason: str


def manifest_key(dataset_id: str, snapshot_id: str) -> str:
    return f"datasets/{dataset_id}/snapshots/{snapshot_id}/manifest.json"


def validate(message: SnapshotFields) -> None:
    problems = []
    if message.version_name and not VERSION_NAME.match(message.version_name):
        problems.append(
            (
                "snapshot.version_name",
                "1-64 characters: letters, digits, '.', '_' and '-', starting with a letter "
                "or digit (e.g. v1, 2024-06-01)",
            )
        )
    if problem := text_problem(message.reason, MAX_REASON):
        problems.append(("snapshot.reason", problem))
    if problem := text_problem(message.description, MAX_DESCRIPTION, multiline=True):
        problems.append(("snapshot.description", problem))
    if problems:
        raise invalid_fields(
            "invalid snapshot: " + "; ".join(f"{f}: {d}" for f, d in problems), problems
        )


def _name_taken(dataset_id: str, version_name: str, taken: str | None) -> ServiceError:
    which = f" ({names.snapshot_name(dataset_id, taken)})" if taken else ""
    return already_exists(
        f"datasets/{dataset_id} already has a snapshot named {version_name!r}{which}: "
        "choose another version_name",
        "snapshot.version_name",
    )


def _check_version_name_free(session: Session, dataset_id: str, version_name: str) -> None:
    taken = session.scalar(
        select(Snapshot.id).where(
            Snapshot.dataset_id == dataset_id, Snapshot.version_name == version_name
        )
    )
    if taken:
        raise _name_taken(dataset_id, version_name, taken)


def create(
    session: Session,
    store: ObjectStore,
    dataset: Dataset,
    creator: User,
    message: SnapshotFields,
    written: list[str] | None = None,
) -> Snapshot:
    """Add the snapshot's row, then write its manifest (its key appended to ``written``:
    see :func:`manifests_removed_unless_committed`)."""
    validate(message)
    version_name = message.version_name or None
    # Taken first: no image leaves the head (unretained) while the snapshot reads it, and
    # concurrent snapshots of one version name queue here, so the check below sees the
    # winner's row and every later one answers ALREADY_EXISTS.
    lock_blob_references(session)
    if version_name is not None:
        _check_version_name_free(session, dataset.id, version_name)
    snapshot_id = names.new_id()
    now = utcnow()
    info = {
        "dataset": names.dataset_name(dataset.id),
        "snapshot": names.snapshot_name(dataset.id, snapshot_id),
        "version_name": version_name or "",
        "description": message.description,
        "automatic": bool(message.reason) and not version_name,
        "reason": message.reason,
        "creator": names.user_name(creator.username),
        "create_time": now.isoformat().replace("+00:00", "Z"),
        "format": "dice-standard",
        "manifest_version": 1,
        "annotation_variant": dataset.annotation_variant,
    }
    head = documents.head_json(session, dataset.id, info)
    key = manifest_key(dataset.id, snapshot_id)
    row = Snapshot(
        id=snapshot_id,
        dataset_id=dataset.id,
        version_name=version_name,
        description=message.description,
        automatic=info["automatic"],
        reason=message.reason,
        creator_id=creator.id,
        create_time=now,
        image_count=head.image_count,
        annotation_count=head.annotation_count,
        categories=head.categories,
        class_counts=head.class_counts,
        manifest_key=key,
        manifest_sha256=hashlib.sha256(head.data).hexdigest(),
        image_watermark=retention.watermark(session),
    )
    session.add(row)
    try:
        session.flush()  # the row first: a refused snapshot writes nothing to the store
    except IntegrityError:
        if version_name is None:
            raise
        raise _name_taken(dataset.id, version_name, None) from None
    store.put_bytes(key, head.data, content_type="application/json")
    if written is not None:
        written.append(key)
    return row


@contextlib.contextmanager
def manifests_removed_unless_committed(store: ObjectStore) -> Iterator[list[str]]:
    """Wrap the transaction that creates snapshots: the manifests written (keys collected
    in the list yielded) are removed again when it does not commit."""
    written: list[str] = []
    try:
        yield written
    except Exception:
        for key in written:
            with contextlib.suppress(Exception):
                store.delete(key)
        raise


def get(session: Session, dataset_id: str, snapshot_id: str) -> Snapshot:
    row = session.scalars(
        select(Snapshot).where(Snapshot.id == snapshot_id, Snapshot.dataset_id == dataset_id)
    ).one_or_none()
    if row is None:
        raise not_found(
            f"snapshot {names.snapshot_name(dataset_id, snapshot_id)} not found: "
            "see ListSnapshots for its dataset"
        )
    return row


def creator_names(session: Session, rows: list[Snapshot]) -> dict[int, str]:
    ids = {r.creator_id for r in rows}
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.username).where(User.id.in_(ids))).all())


def list_page(
    session: Session, dataset_id: str, offset: int, limit: int
) -> tuple[list[Snapshot], int]:
    total = (
        session.scalar(select(func.count(Snapshot.id)).where(Snapshot.dataset_id == dataset_id))
        or 0
    )
    rows = list(
        session.scalars(
            select(Snapshot)
            .where(Snapshot.dataset_id == dataset_id)
            .order_by(Snapshot.create_time.desc(), Snapshot.id)
            .offset(offset)
            .limit(limit)
        )
    )
    return rows, total


def read_manifest_bytes(store: ObjectStore, row: Snapshot) -> bytes:
    try:
        data = store.get_bytes(row.manifest_key)
    except KeyNotFound:
        raise ServiceError(
            grpc.StatusCode.DATA_LOSS,
            f"the manifest of {names.snapshot_name(row.dataset_id, row.id)} is missing from "
            f"the object store ({row.manifest_key}); restore it from a backup",
        ) from None
    if hashlib.sha256(data).hexdigest() != row.manifest_sha256:
        raise ServiceError(
            grpc.StatusCode.DATA_LOSS,
            f"the manifest of {names.snapshot_name(row.dataset_id, row.id)} "
            f"({row.manifest_key}) does not match its recorded sha256; restore it from a backup",
        )
    return data


def read_manifest(store: ObjectStore, row: Snapshot) -> dict[str, Any]:
    return json.loads(read_manifest_bytes(store, row))
