"""Initial catalog: users, datasets, blobs, images, categories, annotations, snapshots,
snapshot blob references and the blob guard row.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _time(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    guard = op.create_table(
        "blob_guard",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        _time("last_gc_time", nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_blob_guard"),
    )
    op.bulk_insert(guard, [{"id": 1, "version": 0, "last_gc_time": None}])
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        _time("create_time"),
        sa.PrimaryKeyConstraint("sha256", name="pk_blobs"),
    )
    op.create_table(
        "users",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.String(255), nullable=False),
        _time("create_time"),
        sa.PrimaryKeyConstraint("id", name="pk_users"),
        sa.UniqueConstraint("username", name="uq_users_username"),
    )
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("display_name", sa.String(200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("visibility", sa.Integer(), nullable=False),
        sa.Column("owner_id", BIG_ID, nullable=False),
        _time("create_time"),
        _time("update_time"),
        sa.Column("labeled", sa.Boolean(), nullable=False),
        sa.Column("annotation_variant", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name="fk_datasets_owner_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
    )
    op.create_index("ix_datasets_owner_id", "datasets", ["owner_id"])
    op.create_index("ix_datasets_visibility", "datasets", ["visibility"])
    op.create_table(
        "categories",
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("category_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("supercategory", sa.String(255), nullable=False),
        sa.Column("extra", JSON, nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name="fk_categories_dataset_id_datasets",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dataset_id", "category_id", name="pk_categories"),
    )
    op.create_table(
        "images",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("path", sa.String(1024), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("content_type", sa.String(64), nullable=False),
        sa.Column("split", sa.String(8), nullable=False),
        _time("create_time"),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name="fk_images_dataset_id_datasets",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(["sha256"], ["blobs.sha256"], name="fk_images_sha256_blobs"),
        sa.PrimaryKeyConstraint("id", name="pk_images"),
        sa.UniqueConstraint("dataset_id", "path", name="uq_images_dataset_id_path"),
    )
    op.create_index("ix_images_dataset_id", "images", ["dataset_id"])
    op.create_index("ix_images_sha256", "images", ["sha256"])
    op.create_table(
        "snapshots",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("version_name", sa.String(64), nullable=True),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("automatic", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(255), nullable=False),
        sa.Column("creator_id", BIG_ID, nullable=False),
        _time("create_time"),
        sa.Column("image_count", sa.BigInteger(), nullable=False),
        sa.Column("annotation_count", sa.BigInteger(), nullable=False),
        sa.Column("categories", JSON, nullable=False),
        sa.Column("class_counts", JSON, nullable=False),
        sa.Column("manifest_key", sa.String(1024), nullable=False),
        sa.Column("manifest_sha256", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(["creator_id"], ["users.id"], name="fk_snapshots_creator_id_users"),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name="fk_snapshots_dataset_id_datasets",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_snapshots"),
        sa.UniqueConstraint(
            "dataset_id", "version_name", name="uq_snapshots_dataset_id_version_name"
        ),
    )
    op.create_index("ix_snapshots_dataset_id", "snapshots", ["dataset_id"])
    op.create_table(
        "annotations",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("image_id", BIG_ID, nullable=False),
        sa.Column("category_id", sa.BigInteger(), nullable=False),
        sa.Column("bbox", JSON, nullable=True),
        sa.Column("segmentation", JSON, nullable=True),
        sa.Column("keypoints", JSON, nullable=True),
        sa.Column("area", sa.Float(), nullable=False),
        sa.Column("iscrowd", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name="fk_annotations_dataset_id_datasets",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name="fk_annotations_image_id_images", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_annotations"),
    )
    op.create_index("ix_annotations_dataset_id", "annotations", ["dataset_id"])
    op.create_index("ix_annotations_image_id", "annotations", ["image_id"])
    op.create_table(
        "snapshot_blobs",
        sa.Column("snapshot_id", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["snapshot_id"],
            ["snapshots.id"],
            name="fk_snapshot_blobs_snapshot_id_snapshots",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("snapshot_id", "sha256", name="pk_snapshot_blobs"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_snapshot_blobs_sha256", "snapshot_blobs", ["sha256"])


def downgrade() -> None:
    for table in (
        "snapshot_blobs",
        "annotations",
        "snapshots",
        "images",
        "categories",
        "datasets",
        "users",
        "blobs",
        "blob_guard",
    ):
        op.drop_table(table)
