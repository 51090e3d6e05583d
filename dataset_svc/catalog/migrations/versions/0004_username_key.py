"""Usernames are unique regardless of case: ``users.username_key`` (case folded, unique).

Existing accounts get their username case folded. Should two existing accounts fold to
the same key (``Alice`` and ``alice`` from before this revision), the older keeps it and
each later one gets ``<key>#<id>``: both can still sign in by their exact name, and no
new account can take any of these names again.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("users", sa.Column("username_key", sa.String(80), nullable=True))
    bind = op.get_bind()
    users = sa.table(
        "users",
        sa.column("id", sa.BigInteger),
        sa.column("username", sa.String),
        sa.column("username_key", sa.String),
    )
    seen: set[str] = set()
    updates = []
    for user_id, username in bind.execute(
        sa.select(users.c.id, users.c.username).order_by(users.c.id)
    ):
        key = username.casefold()
        if key in seen:
            key = f"{key}#{user_id}"
        seen.add(key)
        updates.append({"uid": user_id, "key": key})
    if updates:
        bind.execute(
            users.update()
            .where(users.c.id == sa.bindparam("uid"))
            .values(username_key=sa.bindparam("key")),
            updates,
        )
    if bind.dialect.name != "sqlite":  # SQLite would copy the table, which others reference
        op.alter_column("users", "username_key", existing_type=sa.String(80), nullable=False)
    op.create_index("uq_users_username_key", "users", ["username_key"], unique=True)


def downgrade() -> None:
    op.drop_index("uq_users_username_key", table_name="users")
    op.drop_column("users", "username_key")
