"""The one place where DESIGN.md section 4's rules are enforced.

- A private dataset is visible to its owner only; a public one to every signed-in user.
- Only the owner uploads, edits, imports, snapshots, exports-to-store and deletes.
- A dataset the caller may not see answers NOT_FOUND (no existence leak); one the caller
  sees but does not own answers PERMISSION_DENIED to a write.

Every RPC that touches a dataset goes through :func:`readable_dataset` or
:func:`writable_dataset`; listings filter with :func:`visible_to`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, Engine, bindparam, or_, select
from sqlalchemy.orm import Session

from dataset_svc.catalog.db import PreparedQuery
from dataset_svc.catalog.models import VISIBILITY_PUBLIC, Dataset, User
from visionmesh.errors import not_found, permission_denied


def visible_to(user: User | None) -> ColumnElement[bool]:
    """SQL condition: datasets ``user`` may see (None: the one bound as ``caller_id``)."""
    caller = bindparam("caller_id") if user is None else user.id
    return or_(Dataset.owner_id == caller, Dataset.visibility == VISIBILITY_PUBLIC)


def can_read(user: User, dataset: Dataset) -> bool:
    return dataset.owner_id == user.id or dataset.visibility == VISIBILITY_PUBLIC


def can_write(user: User, dataset: Dataset) -> bool:
    return dataset.owner_id == user.id


def _not_found(dataset_id: str) -> Exception:
    return not_found(
        f"dataset datasets/{dataset_id} not found (or not visible to you): "
        "check the name with ListDatasets"
    )


def readable_dataset(
    session: Session, user: User, dataset_id: str, *, lock: bool = False
) -> Dataset:
    """The dataset if ``user`` may see it, else NOT_FOUND."""
    query = select(Dataset).where(Dataset.id == dataset_id)
    if lock:
        query = query.with_for_update()
    dataset = session.scalars(query).one_or_none()
    if dataset is None or not can_read(user, dataset):
        raise _not_found(dataset_id)
    return dataset


# Built once: building a statement costs more than running it.
_READABLE_ROW = (
    select(Dataset.__table__, User.username.label("owner_username"))
    .join(User, User.id == Dataset.owner_id)
    .where(Dataset.id == bindparam("dataset_id"))
)
_prepared: dict[Engine, PreparedQuery] = {}


def readable_row(connection: Connection, user: User, dataset_id: str) -> Any:
    """:func:`readable_dataset` for read-only handlers on a plain connection: the dataset's
    columns and its owner's ``owner_username`` in one Core query."""
    query = _prepared.get(connection.engine)
    if query is None:
        query = _prepared[connection.engine] = PreparedQuery(_READABLE_ROW, connection.engine)
    row = query.first(connection, {"dataset_id": dataset_id})
    if row is None or not can_read(user, row):  # type: ignore[arg-type]
        raise _not_found(dataset_id)
    return row


def writable_dataset(
    session: Session, user: User, dataset_id: str, action: str, *, lock: bool = False
) -> Dataset:
    """The dataset if ``user`` owns it; NOT_FOUND if invisible, PERMISSION_DENIED if not owner.

    ``action`` completes the message, e.g. "upload images to".
    """
    dataset = readable_dataset(session, user, dataset_id, lock=lock)
    if not can_write(user, dataset):
        raise permission_denied(
            f"only the owner of datasets/{dataset_id} may {action} it; "
            "create your own dataset or ask the owner"
        )
    return dataset
