"""Dataset CRUD, listing (filters, order, pagination), counts and the health summary.

Everything here answers catalog rows or plain dataclasses (:class:`DatasetPage`,
:class:`Summary`, :class:`Health`); :mod:`dataset_svc.messages` makes messages of them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from sqlalchemy import (
    Connection,
    Engine,
    Integer,
    Select,
    and_,
    bindparam,
    delete,
    distinct,
    exists,
    func,
    select,
)
from sqlalchemy.orm import Session

from dataset_svc import cache, documents, filters, names, pagination
from dataset_svc.catalog.db import PreparedQuery
from dataset_svc.catalog.models import (
    VISIBILITY_PRIVATE,
    VISIBILITY_PUBLIC,
    VISIBILITY_UNSPECIFIED,
    Annotation,
    Category,
    Dataset,
    Image,
    RetainedBlob,
    Snapshot,
    User,
    utcnow,
)
from dataset_svc.permissions import visible_to
from dataset_svc.validation import text_problem
from visionmesh.errors import invalid_argument, invalid_fields
from visionmesh.store import KeyNotFound, ObjectStore

log = logging.getLogger("dataset_svc")

MAX_DISPLAY_NAME = 200
MAX_DESCRIPTION = 10_000
WRITABLE_FIELDS = ("display_name", "description", "visibility")

LIST_FILTERS = {
    "display_name": {":", "="},
    "owner": {"="},
    "visibility": {"="},
    "labeled": {"="},
}


def _image_count():  # type: ignore[no-untyped-def]
    return (
        select(func.count(Image.id))
        .where(Image.dataset_id == Dataset.id)
        .correlate(Dataset)
        .scalar_subquery()
    )


def _annotation_count():  # type: ignore[no-untyped-def]
    return (
        select(func.count(Annotation.id))
        .where(Annotation.dataset_id == Dataset.id)
        .correlate(Dataset)
        .scalar_subquery()
    )


VISIBILITIES = {"VISIBILITY_PRIVATE": VISIBILITY_PRIVATE, "VISIBILITY_PUBLIC": VISIBILITY_PUBLIC}


class DatasetFields(Protocol):
    """The writable fields of a dataset as a request carries them (a ``Dataset`` message)."""

    display_name: str
    description: str
    visibility: int


ORDER_FIELDS = {
    "create_time": lambda: Dataset.create_time,
    "update_time": lambda: Dataset.update_time,
    "display_name": lambda: Dataset.display_name,
    "image_count": _image_count,
    "annotation_count": _annotation_count,
}


def validate_fields(message: DatasetFields, fields: Iterable[str]) -> None:
    problems = []
    for field in fields:
        if field == "display_name":
            name = message.display_name.strip()
            if not 1 <= len(name) <= MAX_DISPLAY_NAME:
                problems.append(
                    ("dataset.display_name", f"must be 1-{MAX_DISPLAY_NAME} characters")
                )
            elif problem := text_problem(name, MAX_DISPLAY_NAME):
                problems.append(("dataset.display_name", problem))
        elif field == "description":
            if problem := text_problem(message.description, MAX_DESCRIPTION, multiline=True):
                problems.append(("dataset.description", problem))
        elif field == "visibility":
            if message.visibility not in (VISIBILITY_PRIVATE, VISIBILITY_PUBLIC):
                problems.append(
                    ("dataset.visibility", "must be VISIBILITY_PRIVATE or VISIBILITY_PUBLIC")
                )
    if problems:
        raise invalid_fields(
            "invalid dataset: " + "; ".join(f"{f} {why}" for f, why in problems), problems
        )


def create(session: Session, owner: User, message: DatasetFields) -> Dataset:
    fields = ["display_name", "description"]
    if message.visibility != VISIBILITY_UNSPECIFIED:
        fields.append("visibility")
    validate_fields(message, fields)
    now = utcnow()
    row = Dataset(
        id=names.new_id(),
        display_name=message.display_name.strip(),
        description=message.description,
        visibility=message.visibility or VISIBILITY_PRIVATE,
        owner_id=owner.id,
        create_time=now,
        update_time=now,
        labeled=False,
        annotation_variant="",
    )
    session.add(row)
    session.flush()
    return row


def update(
    session: Session, row: Dataset, message: DatasetFields, mask_paths: Sequence[str]
) -> Dataset:
    if mask_paths:
        unknown = [p for p in mask_paths if p not in WRITABLE_FIELDS]
        if unknown:
            raise invalid_argument(
                f"update_mask: {', '.join(unknown)} cannot be changed "
                f"(writable: {', '.join(WRITABLE_FIELDS)})",
                "update_mask",
            )
        fields = list(mask_paths)
    else:  # every writable field that is set
        fields = [
            f
            for f in WRITABLE_FIELDS
            if (f != "visibility" and getattr(message, f))
            or (f == "visibility" and message.visibility)
        ]
    validate_fields(message, fields)
    for field in fields:
        value = getattr(message, field)
        setattr(row, field, value.strip() if field == "display_name" else value)
    if fields:
        row.update_time = utcnow()
    return row


def delete_dataset(session: Session, dataset_id: str) -> list[str]:
    """Delete every row of a dataset; returns its snapshot ids (for store cleanup)."""
    snapshot_ids = list(
        session.scalars(select(Snapshot.id).where(Snapshot.dataset_id == dataset_id))
    )
    session.execute(delete(RetainedBlob).where(RetainedBlob.dataset_id == dataset_id))
    session.execute(delete(Snapshot).where(Snapshot.dataset_id == dataset_id))
    session.execute(delete(Annotation).where(Annotation.dataset_id == dataset_id))
    session.execute(delete(Category).where(Category.dataset_id == dataset_id))
    session.execute(delete(Image).where(Image.dataset_id == dataset_id))
    session.execute(delete(Dataset).where(Dataset.id == dataset_id))
    return snapshot_ids


def delete_objects(store: ObjectStore, dataset_id: str) -> None:
    """After :func:`delete_dataset` committed: its manifests and exports leave the store
    now (blobs at the next GC, which also removes whatever this could not)."""
    for prefix in (f"datasets/{dataset_id}/", f"exports/{dataset_id}/"):
        try:
            for key in list(store.list(prefix)):
                with contextlib.suppress(KeyNotFound):
                    store.delete(key)
        except Exception:  # the GC removes what is left
            log.exception("could not remove objects under %s", prefix)


def touch(row: Dataset) -> None:
    row.update_time = utcnow()


# -- reading ---------------------------------------------------------------------------------


def _parse_order(order_by: str) -> list[Any]:
    clauses: list[Any] = []
    text = order_by.strip() or "create_time desc"
    parts = text.split(",")
    if len(text) > 200 or len(parts) > len(ORDER_FIELDS):
        raise invalid_argument(
            f"order_by: at most {len(ORDER_FIELDS)} fields ({', '.join(ORDER_FIELDS)}), each once",
            "order_by",
        )
    seen: set[str] = set()
    for part in parts:
        words = part.split()
        if not words or len(words) > 2 or words[0] not in ORDER_FIELDS:
            raise invalid_argument(
                f"order_by {order_by!r}: use a comma-separated list of "
                f"{', '.join(ORDER_FIELDS)}, each optionally followed by desc",
                "order_by",
            )
        if words[0] in seen:
            raise invalid_argument(f"order_by {order_by!r}: {words[0]} appears twice", "order_by")
        seen.add(words[0])
        if len(words) == 2 and words[1].lower() not in ("asc", "desc"):
            raise invalid_argument(
                f"order_by {order_by!r}: direction must be asc or desc", "order_by"
            )
        column = ORDER_FIELDS[words[0]]()
        clauses.append(column.desc() if len(words) == 2 and words[1].lower() == "desc" else column)
    clauses.append(Dataset.id)
    return clauses


def _apply_filters(query: Select[Any], text: str) -> Select[Any]:
    for term in filters.parse(text, LIST_FILTERS):
        if term.field == "display_name":
            if term.op == ":":
                pattern = "%" + term.value.lower().replace("%", r"\%").replace("_", r"\_") + "%"
                query = query.where(func.lower(Dataset.display_name).like(pattern, escape="\\"))
            else:
                query = query.where(Dataset.display_name == term.value)
        elif term.field == "owner":
            username = term.value.removeprefix("users/")
            query = query.where(User.username == username)
        elif term.field == "visibility":
            value = term.value.upper()
            value = value if value.startswith("VISIBILITY_") else f"VISIBILITY_{value}"
            if value not in ("VISIBILITY_PUBLIC", "VISIBILITY_PRIVATE"):
                raise invalid_argument(
                    f"filter: visibility must be VISIBILITY_PUBLIC or VISIBILITY_PRIVATE, "
                    f"got {term.value!r}",
                    "filter",
                )
            query = query.where(Dataset.visibility == VISIBILITIES[value])
        elif term.field == "labeled":
            query = query.where(Dataset.labeled == filters.parse_bool(term))
    return query


_LIST_STATEMENTS: cache.LRU[tuple[Select[Any], PreparedQuery]] = cache.LRU(256)


def _list_statement(
    filter_text: str, order_by: str, engine: Engine
) -> tuple[Select[Any], PreparedQuery]:
    """The page query of a (filter, order_by), built once: caller, offset and limit bound."""
    key = (filter_text, order_by, engine)
    found = _LIST_STATEMENTS.get(key)
    if found is None:
        base = (
            select(Dataset.__table__, User.username.label("owner_username"))
            .join(User, User.id == Dataset.owner_id)
            .where(visible_to(None))
        )
        base = _apply_filters(base, filter_text)
        statement = (
            base.add_columns(func.count().over().label("total_size"))
            .order_by(*_parse_order(order_by))
            .offset(bindparam("offset", type_=Integer))
            .limit(bindparam("limit", type_=Integer))
        )
        found = (statement, PreparedQuery(statement, engine))
        _LIST_STATEMENTS.put(key, found)
    return found


@dataclass
class DatasetPage:
    """A page of ListDatasets: rows with their ``owner_username`` (as stored when read on a
    plain connection: ``materialize`` turns one into a processed row), the total, the token."""

    rows: list[Any]
    total_size: int
    next_page_token: str
    materialize: Callable[[Any], Any] | None = None


def list_visible(
    db: Session | Connection,
    user: User,
    *,
    filter_text: str = "",
    order_by: str = "",
    page_size: int = 0,
    page_token: str = "",
) -> DatasetPage:
    """One Core query for the page and the total (a window count)."""
    page = pagination.page(page_size, page_token, filter_text, order_by)
    engine = db.engine if isinstance(db, Connection) else db.get_bind()
    statement, prepared = _list_statement(filter_text, order_by, engine)
    params = {"caller_id": user.id, "offset": page.offset, "limit": page.size}
    if isinstance(db, Connection):  # rows as stored; processed only when not cached
        rows = prepared.all_unprocessed(db, params)
    else:
        rows = list(db.execute(statement, params).all())
    if rows:
        total = rows[0].total_size
    else:  # past the end (or nothing at all): the window had no row to carry the count
        counted = statement.with_only_columns(func.count()).order_by(None).offset(None).limit(None)
        total = db.scalar(counted, {"caller_id": user.id}) or 0
    return DatasetPage(
        rows,
        total,
        page.next_token(len(rows), total),
        prepared.process if isinstance(db, Connection) else None,
    )


def counts(
    session: Session | Connection, dataset_ids: Sequence[str]
) -> dict[str, tuple[int, int, int]]:
    """dataset id -> (image_count, annotation_count, total_bytes of distinct blobs)."""
    result = {d: [0, 0, 0] for d in dataset_ids}
    if not dataset_ids:
        return {}
    for dataset_id, n in session.execute(
        select(Image.dataset_id, func.count(Image.id))
        .where(Image.dataset_id.in_(dataset_ids))
        .group_by(Image.dataset_id)
    ):
        result[dataset_id][0] = n
    for dataset_id, n in session.execute(
        select(Annotation.dataset_id, func.count(Annotation.id))
        .where(Annotation.dataset_id.in_(dataset_ids))
        .group_by(Annotation.dataset_id)
    ):
        result[dataset_id][1] = n
    distinct_blobs = (
        select(Image.dataset_id, Image.sha256, Image.size_bytes)
        .where(Image.dataset_id.in_(dataset_ids))
        .distinct()
        .subquery()
    )
    for dataset_id, total in session.execute(
        select(distinct_blobs.c.dataset_id, func.sum(distinct_blobs.c.size_bytes)).group_by(
            distinct_blobs.c.dataset_id
        )
    ):
        result[dataset_id][2] = int(total or 0)
    return {k: (v[0], v[1], v[2]) for k, v in result.items()}


def categories_of(
    session: Session | Connection, dataset_ids: Sequence[str]
) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = defaultdict(list)
    if dataset_ids:
        for row in session.execute(
            select(Category.__table__)
            .where(Category.dataset_id.in_(dataset_ids))
            .order_by(Category.dataset_id, Category.category_id)
        ):
            result[row.dataset_id].append(documents.category_dict(row))
    return result


class Summary(NamedTuple):
    """What a dataset's rows sum up to (cached per ``update_time``)."""

    image_count: int
    annotation_count: int
    total_bytes: int
    categories: list[dict[str, Any]]  # DICE/COCO category entries


def summaries(session: Session | Connection, rows: Sequence[Any]) -> dict[str, Summary]:
    """dataset id -> its :class:`Summary`, from the cache (keyed by update_time) or the rows."""
    found: dict[str, Summary] = {}
    keys = {d.id: cache.stats.key(d.id, d.update_time, "summary") for d in rows}
    for d in rows:
        if (hit := cache.stats.get(keys[d.id])) is not None:
            found[d.id] = hit
    missing = [d.id for d in rows if d.id not in found]
    if missing:
        stats = counts(session, missing)
        cats = categories_of(session, missing)
        for dataset_id in missing:
            found[dataset_id] = Summary(*stats[dataset_id], cats.get(dataset_id, []))
            cache.stats.put(keys[dataset_id], found[dataset_id])
    return found


@dataclass
class Health:
    """A dataset's health summary (the fields of the API's ``DatasetHealth``)."""

    # per class and split: category_id, category_name, split, image_count, annotation_count
    class_counts: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    images_per_split: dict[str, int] = dataclasses.field(default_factory=dict)
    unlabeled_image_count: int = 0
    min_width: int = 0
    max_width: int = 0
    min_height: int = 0
    max_height: int = 0
    mean_width: float = 0.0
    mean_height: float = 0.0
    annotation_kinds: list[str] = dataclasses.field(default_factory=list)


def health(session: Session | Connection, row: Any) -> Health:
    """:func:`health_summary` of a dataset row, cached per ``update_time``."""
    key = cache.stats.key(row.id, row.update_time, "health")
    found = cache.stats.get(key)
    if found is None:
        found = health_summary(session, row.id)
        cache.stats.put(key, found)
    return found


def owner_username(session: Session, row: Dataset) -> str:
    return session.scalar(select(User.username).where(User.id == row.owner_id)) or ""


def health_summary(session: Session | Connection, dataset_id: str) -> Health:
    """Counts per class and split, images per split, image sizes, unlabeled images."""
    result = Health()
    names_by_id = dict(
        session.execute(
            select(Category.category_id, Category.name).where(Category.dataset_id == dataset_id)
        ).all()
    )
    for category_id, split, n_images, n_annotations in session.execute(
        select(
            Annotation.category_id,
            Image.split,
            func.count(distinct(Annotation.image_id)),
            func.count(Annotation.id),
        )
        .join(Image, Image.id == Annotation.image_id)
        .where(Annotation.dataset_id == dataset_id)
        .group_by(Annotation.category_id, Image.split)
        .order_by(Annotation.category_id, Image.split)
    ):
        result.class_counts.append(
            {
                "category_id": category_id,
                "category_name": names_by_id.get(category_id, ""),
                "split": split,
                "image_count": n_images,
                "annotation_count": n_annotations,
            }
        )
    for split, n in session.execute(
        select(Image.split, func.count(Image.id))
        .where(Image.dataset_id == dataset_id)
        .group_by(Image.split)
    ):
        result.images_per_split[split] = n
    result.unlabeled_image_count = (
        session.scalar(
            select(func.count(Image.id)).where(
                Image.dataset_id == dataset_id,
                ~exists().where(Annotation.image_id == Image.id),
            )
        )
        or 0
    )
    sizes = session.execute(
        select(
            func.min(Image.width),
            func.max(Image.width),
            func.min(Image.height),
            func.max(Image.height),
            func.avg(Image.width),
            func.avg(Image.height),
        ).where(Image.dataset_id == dataset_id)
    ).one()
    if sizes[0] is not None:
        result.min_width, result.max_width = int(sizes[0]), int(sizes[1])
        result.min_height, result.max_height = int(sizes[2]), int(sizes[3])
        result.mean_width, result.mean_height = float(sizes[4]), float(sizes[5])
    in_dataset = Annotation.dataset_id == dataset_id
    kinds = {
        "image_label": and_(
            Annotation.bbox.is_(None),
            Annotation.segmentation.is_(None),
            Annotation.keypoints.is_(None),
        ),
        "box": Annotation.bbox.is_not(None),
        "polygon": Annotation.segmentation.is_not(None),
        "keypoints": Annotation.keypoints.is_not(None),
    }
    for kind, condition in kinds.items():
        if session.scalar(select(exists().where(in_dataset, condition))):
            result.annotation_kinds.append(kind)
    return result
