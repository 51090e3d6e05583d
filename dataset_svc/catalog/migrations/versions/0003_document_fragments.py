"""Each image and annotation row keeps its DICE JSON text (``doc_json``).

A snapshot manifest or GetAnnotations then joins stored text instead of formatting every
column of every row (see dataset_svc.documents). Rows written before this revision have
none; the first document built from them fills it in.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("images", sa.Column("doc_json", sa.Text(), nullable=True))
    op.add_column("annotations", sa.Column("doc_json", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("annotations") as batch:
        batch.drop_column("doc_json")
    with op.batch_alter_table("images") as batch:
        batch.drop_column("doc_json")
