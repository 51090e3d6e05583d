"""Snapshots pin their blobs lazily: ``retained_blobs`` replaces ``snapshot_blobs``.

A snapshot's blobs are the head's blobs when it is taken, and the head's rows keep them
alive. Only when an image leaves the head (deleted, or replaced by other bytes) while a
snapshot may reference it is its blob recorded, per dataset, in ``retained_blobs``. So a
snapshot writes no row per image, and the catalog holds one row per departed blob
instead of one per (snapshot, blob). ``snapshots.image_watermark`` (the highest image id
when the snapshot was taken) tells which departing images a snapshot may hold.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "snapshots",
        sa.Column("image_watermark", sa.BigInteger(), nullable=False, server_default="0"),
    )
    # Existing snapshots may hold any image there is now.
    op.execute("UPDATE snapshots SET image_watermark = (SELECT COALESCE(MAX(id), 0) FROM images)")
    op.create_table(
        "retained_blobs",
        sa.Column("dataset_id", sa.String(64), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name="fk_retained_blobs_dataset_id_datasets",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("dataset_id", "sha256", name="pk_retained_blobs"),
        sqlite_with_rowid=False,
    )
    op.create_index("ix_retained_blobs_sha256", "retained_blobs", ["sha256"])
    # Every blob an existing snapshot references stays retained (some are in the head too:
    # harmless, they are kept either way).
    op.execute(
        "INSERT INTO retained_blobs (dataset_id, sha256) "
        "SELECT DISTINCT s.dataset_id, b.sha256 FROM snapshot_blobs b "
        "JOIN snapshots s ON s.id = b.snapshot_id"
    )
    op.drop_index("ix_snapshot_blobs_sha256", "snapshot_blobs")
    op.drop_table("snapshot_blobs")


def downgrade() -> None:
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
    # Which snapshot held which blob is in the manifests only: pin, conservatively, every
    # retained and head blob of a dataset to each of its snapshots.
    op.execute(
        "INSERT INTO snapshot_blobs (snapshot_id, sha256) "
        "SELECT s.id, r.sha256 FROM snapshots s JOIN ("
        "SELECT dataset_id, sha256 FROM retained_blobs "
        "UNION SELECT dataset_id, sha256 FROM images) r ON r.dataset_id = s.dataset_id"
    )
    op.drop_index("ix_retained_blobs_sha256", "retained_blobs")
    op.drop_table("retained_blobs")
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("image_watermark")
