"""Catalog migrations keep what older revisions recorded."""

from __future__ import annotations

import pytest
from alembic import command
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from dataset_svc.catalog.db import alembic_config, make_engine, migrate


def test_snapshot_blob_pins_become_retained_blobs(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    with engine.begin() as connection:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0001")
        for statement in (
            "INSERT INTO users (id, username, password_hash, create_time) "
            "VALUES (1, 'u', 'x', '2026-01-01')",
            "INSERT INTO datasets (id, display_name, description, visibility, owner_id, "
            "create_time, update_time, labeled, annotation_variant) "
            "VALUES ('ds', 'd', '', 1, 1, '2026-01-01', '2026-01-01', 0, '')",
            "INSERT INTO blobs (sha256, size_bytes, content_type, create_time) "
            "VALUES ('aa', 1, '', '2026-01-01'), ('bb', 1, '', '2026-01-01')",
            "INSERT INTO images (id, dataset_id, path, sha256, width, height, size_bytes, "
            "content_type, split, create_time) "
            "VALUES (7, 'ds', 'b.png', 'bb', 1, 1, 1, '', '', '2026-01-01')",
            "INSERT INTO snapshots (id, dataset_id, version_name, description, automatic, "
            "reason, creator_id, create_time, image_count, annotation_count, categories, "
            "class_counts, manifest_key, manifest_sha256) VALUES ('s1', 'ds', 'v1', '', 0, "
            "'', 1, '2026-01-01', 2, 0, '[]', '[]', 'k', 'h')",
            # a.png (blob aa) left the head after s1 was taken.
            "INSERT INTO snapshot_blobs (snapshot_id, sha256) VALUES ('s1', 'aa'), ('s1', 'bb')",
        ):
            connection.execute(text(statement))
    migrate(engine)
    with engine.connect() as connection:
        retained = connection.execute(text("SELECT dataset_id, sha256 FROM retained_blobs"))
        assert sorted(retained) == [("ds", "aa"), ("ds", "bb")]
        watermark = connection.execute(text("SELECT image_watermark FROM snapshots")).scalar()
        assert watermark == 7
    engine.dispose()


def test_usernames_get_a_case_folded_unique_key(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'catalog.db'}")
    with engine.begin() as connection:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0003")
        # Before 0004 these were three accounts; Alice and alice fold to one key.
        connection.execute(
            text(
                "INSERT INTO users (id, username, password_hash, create_time) VALUES "
                "(1, 'Alice', 'x', '2026-01-01'), (2, 'bob', 'x', '2026-01-01'), "
                "(3, 'alice', 'x', '2026-01-01')"
            )
        )
    migrate(engine)
    with engine.connect() as connection:
        keys = dict(connection.execute(text("SELECT username, username_key FROM users")).all())
        assert keys == {"Alice": "alice", "bob": "bob", "alice": "alice#3"}
    with engine.begin() as connection, pytest.raises(IntegrityError):
        connection.execute(
            text(
                "INSERT INTO users (username, username_key, password_hash, create_time) "
                "VALUES ('BOB', 'bob', 'x', '2026-01-01')"
            )
        )
    engine.dispose()
