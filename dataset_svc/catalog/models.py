"""The catalog schema (SQLAlchemy 2). Alembic migrations in ``migrations/`` create it.

- ``users``: sign-up records (argon2 password hashes); ``username_key`` is the username
  case folded, unique, so ``Alice`` and ``alice`` are one account.
- ``datasets``: id, human name, visibility, owner; ``labeled`` once an annotation document
  was imported; ``annotation_variant`` the variant it was read as.
- ``blobs``: every content-addressed object the catalog relies on
  (``blobs/sha256/ab/<hex>``), with its size; a row does not keep an object alive.
- ``images``: the dataset head: original relative path (unique per dataset), blob hash,
  decoded width/height, split.
- ``categories`` and ``annotations``: the head's annotation document, one row per COCO
  annotation (geometry as JSON), image-level labels have no geometry.
- ``snapshots``: frozen versions; their content is the manifest in the object store.
- ``retained_blobs``: blobs that left a dataset's head (image deleted or replaced by other
  bytes) while a snapshot of it may reference them (``snapshots.image_watermark``); with ``images`` this is what keeps
  blobs alive for GC (see :mod:`dataset_svc.retention`). A snapshot itself writes no row
  per image: its blobs are the head's when it is taken.
- ``blob_guard``: one row that serializes "add references to blobs" with the garbage
  collector (see :mod:`dataset_svc.gc`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# none_as_null: Python None is SQL NULL (not JSON null), so "IS NULL" finds it.
Json = JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


# ``datasets.visibility`` holds the numbers of the API's ``visionmesh.v1.Visibility`` (the
# catalog stores what the wire carries; tests/test_dataset_domain.py checks they agree).
VISIBILITY_UNSPECIFIED = 0
VISIBILITY_PRIVATE = 1
VISIBILITY_PUBLIC = 2


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class User(Base):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    # The username case folded: what uniqueness and sign-in compare (dataset_svc.users).
    username_key: Mapped[str] = mapped_column(String(80))
    password_hash: Mapped[str] = mapped_column(String(255))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    __table_args__ = (Index("uq_users_username_key", "username_key", unique=True),)


class Dataset(Base):
    __tablename__ = "datasets"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    visibility: Mapped[int] = mapped_column(Integer)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    update_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    labeled: Mapped[bool] = mapped_column(Boolean, default=False)
    annotation_variant: Mapped[str] = mapped_column(String(64), default="")

    __table_args__ = (Index(None, "visibility"),)


class Blob(Base):
    __tablename__ = "blobs"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(64), default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Image(Base):
    __tablename__ = "images"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    path: Mapped[str] = mapped_column(String(1024))
    sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"), index=True)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    content_type: Mapped[str] = mapped_column(String(64), default="")
    split: Mapped[str] = mapped_column(String(8), default="")
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    # This row in the DICE document, but for "id" and "split" (dataset_svc.documents).
    doc_json: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        UniqueConstraint("dataset_id", "path"),
        # (dataset_id) alone: SQLite then reads a dataset's rows in id order, unsorted.
        Index(None, "dataset_id"),
    )


class Category(Base):
    __tablename__ = "categories"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    category_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    name: Mapped[str] = mapped_column(String(255))
    supercategory: Mapped[str] = mapped_column(String(255), default="")
    # Keypoint names and skeleton for pose, plus any other fields of the document.
    extra: Mapped[dict[str, Any]] = mapped_column(Json, default=dict)


class Annotation(Base):
    __tablename__ = "annotations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"))
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    category_id: Mapped[int] = mapped_column(BigInteger)
    # COCO fields: bbox [x, y, w, h] in pixels, segmentation polygons, keypoints [x, y, v]*.
    bbox: Mapped[list[float] | None] = mapped_column(Json, nullable=True)
    segmentation: Mapped[Any | None] = mapped_column(Json, nullable=True)
    keypoints: Mapped[list[float] | None] = mapped_column(Json, nullable=True)
    area: Mapped[float] = mapped_column(Float, default=0.0)
    iscrowd: Mapped[int] = mapped_column(Integer, default=0)
    # This row in the DICE document, but for "id" (dataset_svc.documents).
    doc_json: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index(None, "dataset_id"),)


class Snapshot(Base):
    __tablename__ = "snapshots"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), index=True
    )
    version_name: Mapped[str | None] = mapped_column(String(64), nullable=True)
    description: Mapped[str] = mapped_column(Text, default="")
    automatic: Mapped[bool] = mapped_column(Boolean, default=False)
    reason: Mapped[str] = mapped_column(String(255), default="")
    creator_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    create_time: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    image_count: Mapped[int] = mapped_column(BigInteger, default=0)
    annotation_count: Mapped[int] = mapped_column(BigInteger, default=0)
    categories: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    class_counts: Mapped[list[dict[str, Any]]] = mapped_column(Json, default=list)
    manifest_key: Mapped[str] = mapped_column(String(1024))
    manifest_sha256: Mapped[str] = mapped_column(String(64))
    # The highest image id in the catalog when taken: images with a higher id came after.
    image_watermark: Mapped[int] = mapped_column(BigInteger, default=0)

    __table_args__ = (UniqueConstraint("dataset_id", "version_name"),)


class RetainedBlob(Base):
    __tablename__ = "retained_blobs"

    dataset_id: Mapped[str] = mapped_column(
        ForeignKey("datasets.id", ondelete="CASCADE"), primary_key=True
    )
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True, index=True)

    __table_args__ = ({"sqlite_with_rowid": False},)


class BlobGuard(Base):
    __tablename__ = "blob_guard"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger, default=0)
    last_gc_time: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
