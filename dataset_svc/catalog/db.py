"""Engine, sessions and migrations for the catalog.

``open_catalog(url)`` creates the engine (SQLite by default, PostgreSQL via
``postgresql+psycopg://...``), brings the schema to the newest Alembic revision
(``alembic upgrade head``, run programmatically at every start) and returns a
:class:`Catalog` whose :meth:`Catalog.session` is a transaction: committed when the block
ends normally, rolled back on any exception.
"""

from __future__ import annotations

import contextlib
import threading
from collections import namedtuple
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Connection, Engine, Select, create_engine, event, update
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from dataset_svc.catalog.models import BlobGuard

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
# Read connections kept open for Catalog.reader (well under either backend's pool size).
READERS = 8
_migrate_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": 30, "check_same_thread": False},
            pool_size=16,
            max_overflow=16,
        )
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)


def alembic_config(engine: Engine) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option(
        "sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%")
    )
    return cfg


def migrate(engine: Engine) -> None:
    """``alembic upgrade head`` on ``engine`` (idempotent)."""
    with _migrate_lock, engine.begin() as connection:
        cfg = alembic_config(engine)
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")


class Catalog:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._readers: list[Connection] = []
        self._readers_lock = threading.Lock()
        self._closed = False

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """One transaction: commit on success, roll back on any exception."""
        with self._sessions() as session, session.begin():
            yield session

    @contextlib.contextmanager
    def reader(self) -> Iterator[Connection]:
        """A plain connection for read-only Core queries: a fraction of an ORM session's
        cost per call (the hot read RPCs use it; see dataset_svc.cache).

        Up to ``READERS`` such connections stay open between calls (checking one out of the
        engine's pool and wrapping it costs as much as the query); each call ends with a
        rollback, so the next one reads what was committed since. One that failed is closed.
        """
        with self._readers_lock:
            connection = self._readers.pop() if self._readers else None
        if connection is None:
            connection = self.engine.connect()
        reusable = False
        try:
            yield connection
            reusable = True
        finally:
            try:
                connection.rollback()
            except Exception:
                reusable = False
            with self._readers_lock:
                if reusable and len(self._readers) < READERS and not self._closed:
                    self._readers.append(connection)
                    connection = None  # type: ignore[assignment]
            if connection is not None:
                connection.close()

    def close(self) -> None:
        with self._readers_lock:
            self._closed = True
            readers, self._readers = self._readers, []
        for connection in readers:
            with contextlib.suppress(Exception):
                connection.close()
        self.engine.dispose()


class PreparedQuery:
    """A Core SELECT compiled once, run on a reader connection's DBAPI cursor.

    For a read RPC that runs one small query per call (GetDataset's dataset row): on SQLite
    about 20 µs instead of SQLAlchemy's 90 µs per execute, which is most of what such a
    call costs. Values go through the columns' own result processors, so rows hold what a
    Core query returns (datetimes, bools), as named tuples. Only SQLite's driver, which
    opens no transaction for a SELECT, takes this path; other backends run the statement
    through SQLAlchemy as usual.
    """

    def __init__(self, statement: Select[Any], engine: Engine) -> None:
        self.statement = statement
        dialect = engine.dialect
        self.raw = dialect.name == "sqlite" and dialect.positional
        self.compiled = statement.compile(dialect=dialect)
        self.sql = self.compiled.string
        self.binds = list(self.compiled.positiontup or [])
        self.bind_processors = dict(self.compiled._bind_processors)
        columns = list(statement.selected_columns)
        self.row_type = namedtuple("Row", [c.key for c in columns])  # type: ignore[misc]
        self.processors = [c.type._cached_result_processor(dialect, None) for c in columns]

    def _run(self, connection: Connection, params: dict[str, Any]) -> list[Any]:
        values = self.compiled.construct_params(params)
        args = []
        for name in self.binds:
            value = values[name]
            process = self.bind_processors.get(name)
            args.append(value if process is None else process(value))
        cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            return cursor.execute(self.sql, args).fetchall()
        finally:
            cursor.close()

    def _row(self, found: Any) -> Any:
        return self.row_type(
            *(
                value if fn is None else fn(value)
                for fn, value in zip(self.processors, found, strict=True)
            )
        )

    def first(self, connection: Connection, params: dict[str, Any]) -> Any | None:
        if not self.raw:
            return connection.execute(self.statement, params).first()
        found = self._run(connection, params)
        return self._row(found[0]) if found else None

    def all(self, connection: Connection, params: dict[str, Any]) -> list[Any]:
        if not self.raw:
            return list(connection.execute(self.statement, params).all())
        return [self._row(found) for found in self._run(connection, params)]

    def all_unprocessed(self, connection: Connection, params: dict[str, Any]) -> list[Any]:
        """Rows as the driver returned them (SQLite: datetimes as text); :meth:`process`
        makes one what :meth:`all` would have returned. For rows mostly served from a cache
        keyed by their raw values."""
        if not self.raw:
            return list(connection.execute(self.statement, params).all())
        return [self.row_type(*found) for found in self._run(connection, params)]

    def process(self, row: Any) -> Any:
        return self._row(row) if self.raw else row


def lock_blob_references(session: Session) -> None:
    """Serialize with the garbage collector: call first in any transaction that adds
    references to blobs (upload commit, snapshot) and in each GC batch.

    An UPDATE of the single guard row takes a row lock on PostgreSQL and the write lock
    on SQLite, held until the transaction ends.
    """
    session.execute(
        update(BlobGuard).where(BlobGuard.id == 1).values(version=BlobGuard.version + 1)
    )


def open_catalog(url: str, *, run_migrations: bool = True) -> Catalog:
    engine = make_engine(url)
    if run_migrations:
        migrate(engine)
    return Catalog(engine)
