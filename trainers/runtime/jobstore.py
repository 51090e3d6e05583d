"""The shared job list and queue of a framework's trainer replicas, in the catalog database.

One table is both the job list and the queue; a second holds each job's events (epochs,
state changes, log lines) so that any replica can follow a job another replica runs; a
third lists the live replicas. All three are created idempotently by the trainer (their own
``MetaData``, apart from dataset_svc's catalog) in the database of
``VISIONMESH_DATABASE_URL``:

``trainer_jobs``      job id, framework, owner, request id, state, the :class:`JobRecord` JSON,
                      create/update/queue time, ``lease_owner`` + ``lease_expiry`` (the replica
                      that runs it and until when), cancel/stop requests, resume flag, version
``trainer_events``    job id, seq (1, 2, ... per job, no gaps), kind, JSON payload, time
``trainer_replicas``  replica id, framework, address, host, pid, start time, heartbeat

A job runs on exactly one replica: :meth:`JobStore.claim` takes the oldest claimable
(QUEUED, or INTERRUPTED and free) job with ``SELECT ... FOR UPDATE SKIP LOCKED`` on
PostgreSQL (SQLite runs every transaction as ``BEGIN IMMEDIATE``, so claims are serial) and
writes its lease. The running replica renews its leases with :meth:`heartbeat` every third
of the lease time (``VISIONMESH_TRAINER_LEASE_SECONDS``, default 30); any replica's
:meth:`reap` turns a job whose lease ran out (its replica was SIGKILLed, lost its node or
hangs) INTERRUPTED and frees it, and the next :meth:`claim` resumes it from ``last.pt``
with ``resume_count + 1``. Every write of a job is a compare-and-set on its ``version`` and,
for a state change, on ``state IN sources_of(target)`` of the lifecycle table, so two
replicas cannot move one job differently; a write that requires the caller's lease
(``lease="mine"``) is refused once another replica took the job over (fencing).

Cross-replica fan-out: each event is a row plus ``NOTIFY`` on PostgreSQL (payload: job id,
seq, kind, replica); :class:`JobStore` LISTENs in a thread (psycopg) and calls its local
subscribers, which then read the rows since their last seq. Cancel and stop requests for a
job another replica runs are flags on its row plus a ``control`` NOTIFY (and the heartbeat
reads the flags too, so a lost notification costs at most a heartbeat interval). On SQLite
a second live replica of the same framework is refused at start (:class:`ReplicaRefused`),
so in-process wake-ups suffice there.

Why hand-written leases rather than procrastinate or pgqueuer (issue #17 prefers a library
where one fits): both are PostgreSQL-only, while SQLite must stay the embedded default with
the same code path; both run their workers as asyncio loops that call a task function,
while a training job here is a child process that a sync gRPC server's threads start,
signal (SIGUSR1 stop early, SIGTERM cancel) and watch for hours; both keep their own job
table with their own states (procrastinate: todo/doing/succeeded/failed/cancelled/aborting/
aborted), while the trainer needs one table that is both the queue and the job list
(ListJobs by owner, request-id idempotency, INTERRUPTED and a resume from ``last.pt`` that
counts ``resume_count``); so either library would have needed a second table kept in step
with theirs and a separate SQLite path, which is more code than the lease code here (claim,
heartbeat, reap: about 130 lines). The leases follow the usual pattern (SKIP LOCKED claim, lease expiry renewed by a
heartbeat, a reaper, a version compare-and-set).

Time: lease times are the database's clock on PostgreSQL (the offset to the local clock is
measured at start and at every heartbeat), so replicas on hosts with skewed clocks agree.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import IntegrityError

from trainers.runtime.lifecycle import (  # noqa: F401  (IllegalTransition: for callers)
    ACTIVE,
    INTERRUPTED,
    QUEUED,
    TERMINAL,
    IllegalTransition,
    sources_of,
    transition,
)
from trainers.runtime.records import JobRecord

log = logging.getLogger("visionmesh.trainer.jobstore")

CLAIMABLE = (QUEUED, INTERRUPTED)


DEFAULT_LEASE_SECONDS = 30.0


class ReplicaRefused(Exception):
    """A second live replica of one framework on SQLite."""


class QueueFull(Exception):
    def __init__(self, waiting: int, capacity: int) -> None:
        super().__init__(f"{waiting} job(s) waiting, capacity {capacity}")
        self.waiting = waiting
        self.capacity = capacity


class LeaseLost(Exception):
    """A write that needs the caller's lease on a job another replica holds (or none)."""


class NoSuchJob(KeyError):
    pass


def lease_seconds_from_env() -> float:
    try:
        value = float(os.environ.get("VISIONMESH_TRAINER_LEASE_SECONDS", "") or 0)
    except ValueError:
        value = 0
    return value if value > 0 else DEFAULT_LEASE_SECONDS


@dataclass
class JobRow:
    record: JobRecord
    lease_owner: str | None
    lease_expiry: float | None
    cancel_requested: bool
    stop_requested: bool
    resume: bool
    queued_at: float
    version: int

    @property
    def job_id(self) -> str:
        return self.record.job_id

    @property
    def state(self) -> str:
        return self.record.state


@dataclass
class Event:
    job_id: str
    seq: int
    kind: str
    payload: Any
    time: float


@dataclass
class Control:
    """The requests on a job this replica runs (read by :meth:`JobStore.heartbeat`)."""

    cancel: bool
    stop: bool


class Tables:
    def __init__(self, prefix: str) -> None:
        self.metadata = MetaData()
        self.jobs = Table(
            f"{prefix}jobs",
            self.metadata,
            Column("job_id", String(64), primary_key=True),
            Column("framework", String(32), nullable=False, index=True),
            Column("owner", String(200), nullable=False),
            # owner + "\n" + request id, or the job id when there is none: one job per request
            Column("request_key", String(400), nullable=False, unique=True),
            Column("state", String(16), nullable=False),
            Column("record", Text, nullable=False),
            Column("create_time", Float, nullable=False),
            Column("update_time", Float, nullable=False),
            Column("queued_at", Float, nullable=False),
            Column("lease_owner", String(200), nullable=True, index=True),
            Column("lease_expiry", Float, nullable=True),
            Column("cancel_requested", Boolean, nullable=False, default=False),
            Column("stop_requested", Boolean, nullable=False, default=False),
            Column("resume", Boolean, nullable=False, default=False),
            Column("version", Integer, nullable=False, default=1),
        )
        self.events = Table(
            f"{prefix}events",
            self.metadata,
            Column("id", Integer, primary_key=True, autoincrement=True),
            Column("job_id", String(64), nullable=False),
            Column("seq", Integer, nullable=False),
            Column("kind", String(16), nullable=False),
            Column("payload", Text, nullable=False),
            Column("time", Float, nullable=False),
            UniqueConstraint("job_id", "seq", name=f"{prefix}events_job_seq"),
        )
        self.replicas = Table(
            f"{prefix}replicas",
            self.metadata,
            Column("id", String(200), primary_key=True),
            Column("framework", String(32), nullable=False, index=True),
            Column("address", String(200), nullable=False, default=""),
            Column("host", String(200), nullable=False, default=""),
            Column("pid", Integer, nullable=False, default=0),
            Column("started", Float, nullable=False),
            Column("heartbeat", Float, nullable=False),
        )


def _sqlite_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
    # own transaction control (BEGIN IMMEDIATE below): pysqlite's implicit BEGIN is deferred
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_begin(connection: Connection) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, pool_size=8
        )
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    return create_engine(url, pool_size=8, max_overflow=16, pool_pre_ping=True)


def libpq_url(url: str) -> str:
    """``postgresql+psycopg://...`` as psycopg.connect takes it."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


Subscriber = Callable[[str, int, str], None]  # (job id, seq, kind)


class JobStore:
    """One replica's view of its framework's jobs (thread-safe; see the module docstring)."""

    def __init__(
        self,
        url: str,
        framework: str,
        replica: str,
        *,
        address: str = "",
        lease_seconds: float | None = None,
        table_prefix: str = "trainer_",
        engine: Engine | None = None,
    ) -> None:
        self.url = url
        self.framework = framework
        self.replica = replica
        self.address = address
        self.lease_seconds = float(lease_seconds or lease_seconds_from_env())
        self.prefix = table_prefix
        self.engine = engine or make_engine(url)
        self.backend = self.engine.dialect.name
        self.postgres = self.backend == "postgresql"
        self.t = Tables(table_prefix)
        self.channel = f"{table_prefix}{framework}".replace("-", "_")[:60]
        self._offset = 0.0
        self._subscribers: list[Subscriber] = []
        self._sub_lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._listening = threading.Event()
        self._closed = threading.Event()
        self.host = socket.gethostname()

    # -- setup ----------------------------------------------------------------------------
    def create_tables(self) -> None:
        with self.engine.begin() as conn:
            if self.postgres:  # concurrent CREATE TABLE IF NOT EXISTS can still collide
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self._lock_key("ddl")})
            self.t.metadata.create_all(conn, checkfirst=True)

    def open(self) -> None:
        """Create the tables, register this replica (refused on SQLite when another replica of
        the framework is alive) and take over the leases of this host's dead replicas."""
        self.create_tables()
        self._measure_clock()
        now = self.now()
        r = self.t.replicas
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(r).where(r.c.framework == self.framework, r.c.id != self.replica)
            ).all()
            dead: list[str] = []
            for row in rows:
                gone = row.host == self.host and not _pid_alive(row.pid)
                fresh = now - row.heartbeat < self.lease_seconds
                if gone or not fresh:
                    dead.append(row.id)
                elif not self.postgres:
                    raise ReplicaRefused(
                        f"another {self.framework} trainer replica ({row.id}"
                        f"{' at ' + row.address if row.address else ''}, heartbeat "
                        f"{max(now - row.heartbeat, 0):.0f}s ago) uses this SQLite database; "
                        "SQLite allows one trainer replica per framework: set "
                        "VISIONMESH_DATABASE_URL to a PostgreSQL database "
                        "(postgresql+psycopg://user@host/db) to run several replicas"
                    )
            if dead or not self.postgres:
                # dead replicas (and on SQLite: any other) hold nothing any more: reap at once
                holders = dead + [self.replica]
                cond = (
                    self.t.jobs.c.lease_owner.in_(holders)
                    if self.postgres
                    else self.t.jobs.c.lease_owner.is_not(None)
                )
                conn.execute(
                    update(self.t.jobs)
                    .where(self.t.jobs.c.framework == self.framework, cond)
                    .values(lease_expiry=0.0)
                )
                if dead:
                    conn.execute(delete(r).where(r.c.id.in_(dead)))
            else:
                conn.execute(
                    update(self.t.jobs)
                    .where(self.t.jobs.c.lease_owner == self.replica)
                    .values(lease_expiry=0.0)
                )
            conn.execute(delete(r).where(r.c.id == self.replica))
            self._register(conn, now)
        if self.postgres:
            self._start_listener()

    def _register(self, conn: Connection, now: float) -> None:
        """This replica's row in the replicas table (started and last seen ``now``)."""
        conn.execute(
            insert(self.t.replicas).values(
                id=self.replica,
                framework=self.framework,
                address=self.address,
                host=self.host,
                pid=os.getpid(),
                started=now,
                heartbeat=now,
            )
        )

    def close(self, *, unregister: bool = True) -> None:
        self._closed.set()
        if unregister:
            with contextlib.suppress(Exception), self.engine.begin() as conn:
                conn.execute(delete(self.t.replicas).where(self.t.replicas.c.id == self.replica))
        if self._listener is not None:
            self._listener.join(timeout=3)
        self.engine.dispose()

    def drop_tables(self) -> None:
        """Tests: remove this prefix's tables."""
        with self.engine.begin() as conn:
            self.t.metadata.drop_all(conn, checkfirst=True)

    # -- time -----------------------------------------------------------------------------
    def _measure_clock(self) -> None:
        if not self.postgres:
            return
        with self.engine.connect() as conn:
            before = time.time()
            db_now = conn.execute(text("SELECT extract(epoch FROM clock_timestamp())")).scalar()
            after = time.time()
        self._offset = float(db_now) - (before + after) / 2

    def now(self) -> float:
        return time.time() + self._offset

    def _lock_key(self, what: str) -> int:
        return zlib.crc32(f"{self.prefix}{self.framework}:{what}".encode()) - 2**31

    # -- rows -----------------------------------------------------------------------------
    def _row(self, row: Any) -> JobRow:
        return JobRow(
            record=JobRecord.from_json(row.record),
            lease_owner=row.lease_owner,
            lease_expiry=row.lease_expiry,
            cancel_requested=bool(row.cancel_requested),
            stop_requested=bool(row.stop_requested),
            resume=bool(row.resume),
            queued_at=float(row.queued_at),
            version=int(row.version),
        )

    def _claimable(self):  # type: ignore[no-untyped-def]
        j = self.t.jobs.c
        return (j.framework == self.framework) & j.state.in_(CLAIMABLE) & j.lease_owner.is_(None)

    def waiting(self, conn: Connection | None = None) -> int:
        """Jobs in the queue (claimable, not yet taken by a replica)."""
        query = select(func.count()).select_from(self.t.jobs).where(self._claimable())
        if conn is not None:
            return int(conn.execute(query).scalar_one())
        with self.engine.connect() as own:
            return int(own.execute(query).scalar_one())

    # -- submission -----------------------------------------------------------------------
    def submit(self, record: JobRecord, capacity: int | None = None) -> tuple[JobRow, bool]:
        """Queue ``record``; (row, True), or (the existing row, False) when its owner's
        request id already made a job. QueueFull when ``capacity`` jobs already wait."""
        request_key = f"{record.owner}\n{record.request_id}" if record.request_id else record.job_id
        j = self.t.jobs
        now = self.now()
        try:
            with self._tx() as conn:
                if self.postgres:  # one submitter at a time per framework: the bound holds
                    conn.execute(
                        text("SELECT pg_advisory_xact_lock(:k)"), {"k": self._lock_key("submit")}
                    )
                found = conn.execute(select(j).where(j.c.request_key == request_key)).first()
                if found is not None:
                    return self._row(found), False
                if capacity is not None:
                    waiting = self.waiting(conn)
                    if waiting >= capacity:
                        raise QueueFull(waiting, capacity)
                values = self._values(record, now)
                conn.execute(
                    insert(j).values(
                        job_id=record.job_id,
                        framework=record.framework,
                        owner=record.owner,
                        request_key=request_key,
                        create_time=record.create_time,
                        queued_at=now,
                        lease_owner=None,
                        lease_expiry=None,
                        cancel_requested=False,
                        stop_requested=False,
                        resume=False,
                        version=1,
                        **values,
                    )
                )
                self._notify(conn, record.job_id, 0, "queued")
        except IntegrityError:  # the same request on another replica won the race
            found = self.get_by_request(record.owner, record.request_id)
            if found is None:
                raise
            return found, False
        return self.get(record.job_id), True

    def import_record(self, record: JobRecord) -> bool:
        """A job.json from before the database held jobs: insert it unless known (True when
        inserted). Its lease is free, so an unfinished one is claimed like any other."""
        request_key = f"{record.owner}\n{record.request_id}" if record.request_id else record.job_id
        try:
            with self.engine.begin() as conn:
                exists = conn.execute(
                    select(self.t.jobs.c.job_id).where(
                        (self.t.jobs.c.job_id == record.job_id)
                        | (self.t.jobs.c.request_key == request_key)
                    )
                ).first()
                if exists is not None:
                    return False
                conn.execute(
                    insert(self.t.jobs).values(
                        job_id=record.job_id,
                        framework=record.framework,
                        owner=record.owner,
                        request_key=request_key,
                        create_time=record.create_time,
                        queued_at=record.create_time,
                        cancel_requested=False,
                        stop_requested=False,
                        resume=record.state in ACTIVE or record.state == INTERRUPTED,
                        version=1,
                        **self._values(record, record.update_time or self.now()),
                    )
                )
        except IntegrityError:
            return False
        return True

    @staticmethod
    def _values(record: JobRecord, now: float) -> dict[str, Any]:
        return {
            "state": record.state,
            "record": record.to_json().decode(),
            "update_time": now,
        }

    # -- queries --------------------------------------------------------------------------
    def get(self, job_id: str) -> JobRow:
        with self.engine.connect() as conn:
            row = conn.execute(select(self.t.jobs).where(self.t.jobs.c.job_id == job_id)).first()
        if row is None:
            raise NoSuchJob(job_id)
        return self._row(row)

    def find(self, job_id: str) -> JobRow | None:
        try:
            return self.get(job_id)
        except NoSuchJob:
            return None

    def get_by_request(self, owner: str, request_id: str) -> JobRow | None:
        if not request_id:
            return None
        j = self.t.jobs
        with self.engine.connect() as conn:
            row = conn.execute(select(j).where(j.c.request_key == f"{owner}\n{request_id}")).first()
        return None if row is None else self._row(row)

    def list(self, owner: str | None = None) -> list[JobRow]:
        j = self.t.jobs
        query = select(j).where(j.c.framework == self.framework)
        if owner is not None:
            query = query.where(j.c.owner == owner)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(j.c.create_time.desc())).all()
        return [self._row(r) for r in rows]

    def queue_positions(self) -> dict[str, int]:
        """job id -> 1-based place in the queue, for the claimable jobs."""
        j = self.t.jobs
        with self.engine.connect() as conn:
            ids = conn.execute(
                select(j.c.job_id).where(self._claimable()).order_by(j.c.queued_at, j.c.job_id)
            ).scalars()
            return {job_id: i + 1 for i, job_id in enumerate(ids)}

    def replicas(self) -> list[dict[str, Any]]:
        r = self.t.replicas
        with self.engine.connect() as conn:
            rows = conn.execute(select(r).where(r.c.framework == self.framework)).all()
        return [dict(row._mapping) for row in rows]

    def live_replicas(self) -> set[str]:
        """Ids of this framework's replicas whose heartbeat is younger than a lease."""
        now = self.now()
        return {r["id"] for r in self.replicas() if now - r["heartbeat"] < self.lease_seconds}

    # -- the queue ------------------------------------------------------------------------
    def claim(self, limit: int = 1) -> list[JobRow]:
        """Take up to ``limit`` claimable jobs, oldest first, for this replica. An INTERRUPTED
        job comes back with ``resume`` set and ``resume_count`` one higher."""
        if limit <= 0:
            return []
        j = self.t.jobs
        now = self.now()
        claimed: list[JobRow] = []
        with self.engine.begin() as conn:
            rows = conn.execute(
                select(j)
                .where(self._claimable())
                .order_by(j.c.queued_at, j.c.job_id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                found = self._row(row)
                record = found.record
                resume = found.resume
                if record.state == INTERRUPTED:
                    record.resume_count += 1
                    resume = True
                record.replica = self.replica
                record.touch()
                done = conn.execute(
                    update(j)
                    .where(j.c.job_id == record.job_id, j.c.version == found.version)
                    .where(j.c.lease_owner.is_(None))
                    .values(
                        lease_owner=self.replica,
                        lease_expiry=now + self.lease_seconds,
                        resume=resume,
                        cancel_requested=False,
                        stop_requested=False,
                        version=found.version + 1,
                        **self._values(record, now),
                    )
                )
                if done.rowcount == 1:
                    found.lease_owner = self.replica
                    found.lease_expiry = now + self.lease_seconds
                    found.resume = resume
                    found.version += 1
                    claimed.append(found)
        return claimed

    def heartbeat(self) -> dict[str, Control]:
        """Renew this replica's heartbeat and the leases of its jobs; job id -> its cancel/
        stop requests for every job this replica still holds (a job missing from the
        answer was taken over by another replica: stop running it)."""
        self._measure_clock()
        now = self.now()
        j, r = self.t.jobs, self.t.replicas
        with self.engine.begin() as conn:
            done = conn.execute(
                update(r).where(r.c.id == self.replica).values(heartbeat=now, pid=os.getpid())
            )
            if done.rowcount == 0:  # removed as dead while we were stalled: back again
                self._register(conn, now)
            # a lease not reaped yet is still ours (reap and renew serialize on the row)
            conn.execute(
                update(j)
                .where(j.c.lease_owner == self.replica)
                .values(lease_expiry=now + self.lease_seconds)
            )
            rows = conn.execute(
                select(j.c.job_id, j.c.cancel_requested, j.c.stop_requested).where(
                    j.c.lease_owner == self.replica
                )
            ).all()
        return {
            row.job_id: Control(bool(row.cancel_requested), bool(row.stop_requested))
            for row in rows
        }

    def reap(self) -> list[str]:
        """Free the jobs whose lease ran out: a PREPARING/RUNNING one becomes INTERRUPTED (to
        resume from its last checkpoint), a claimed one that had not started is free again.
        Returns the ids of the jobs made INTERRUPTED."""
        j = self.t.jobs
        now = self.now()
        interrupted: list[str] = []
        with self._tx() as conn:
            rows = conn.execute(
                select(j)
                .where(
                    j.c.framework == self.framework,
                    j.c.lease_owner.is_not(None),
                    j.c.lease_expiry < now,
                )
                .with_for_update(skip_locked=True)
            ).all()
            for row in rows:
                found = self._row(row)
                record = found.record
                values: dict[str, Any] = {"lease_owner": None, "lease_expiry": None}
                if record.state in ACTIVE:
                    was = record.state
                    transition(record, INTERRUPTED, now=now)
                    record.touch()
                    values.update(resume=True, **self._values(record, now))
                    interrupted.append(record.job_id)
                    self._append(
                        conn,
                        record.job_id,
                        "log",
                        [
                            f"[visionmesh] replica {found.lease_owner} stopped renewing its "
                            f"lease while the job was {was}: INTERRUPTED, resuming from its "
                            "last checkpoint on a live replica"
                        ],
                        now,
                    )
                    self._append(conn, record.job_id, "state", {"state": INTERRUPTED}, now)
                conn.execute(
                    update(j)
                    .where(j.c.job_id == record.job_id, j.c.version == found.version)
                    .values(version=found.version + 1, **values)
                )
                self._notify(conn, record.job_id, 0, "queued")
        if interrupted:
            log.info("%s: took back %d job(s) of dead replicas", self.framework, len(interrupted))
        return interrupted

    # -- writes ---------------------------------------------------------------------------
    def update(
        self,
        job_id: str,
        change: Callable[[JobRecord], None] | None = None,
        *,
        target: str | None = None,
        error: str = "",
        lease: str = "any",
        release: bool = False,
        requeue: bool = False,
        resume: bool | None = None,
        events: list[tuple[str, Any]] | None = None,
    ) -> JobRow:
        """Change one job: ``change(record)`` then, with ``target``, the state transition
        (IllegalTransition when the lifecycle table refuses it), written as a compare-and-set
        on the row's version and ``state IN sources_of(target)`` (retried on a lost race).

        ``lease``: "mine" requires this replica's lease (LeaseLost otherwise), "free" no
        lease at all (LeaseLost when a replica holds it), "any" either. ``release`` frees the
        lease, ``requeue`` puts the job at the end of the queue (fresh queue time, requests
        cleared). A state change is also a ``state`` event; ``events`` adds others (kind,
        payload) in the same transaction."""
        j = self.t.jobs
        for _ in range(50):
            found = self.get(job_id)
            if lease == "mine" and found.lease_owner != self.replica:
                raise LeaseLost(f"{job_id} is held by {found.lease_owner or 'no replica'}")
            if lease == "free" and found.lease_owner is not None:
                raise LeaseLost(f"{job_id} is held by {found.lease_owner}")
            record = found.record
            source = record.state
            if change is not None:
                change(record)
            now = self.now()
            if target is not None:
                record.state = source  # change() must not move the state itself
                transition(record, target, error=error, now=time.time())
            record.touch()
            values: dict[str, Any] = {"version": found.version + 1, **self._values(record, now)}
            if release:
                values.update(lease_owner=None, lease_expiry=None)
            if requeue:
                values.update(queued_at=now, cancel_requested=False, stop_requested=False)
            if resume is not None:
                values["resume"] = resume
            query = update(j).where(j.c.job_id == job_id, j.c.version == found.version)
            if target is not None:
                query = query.where(j.c.state.in_(sorted(sources_of(target))))
            if lease == "mine":
                query = query.where(j.c.lease_owner == self.replica)
            elif lease == "free":
                query = query.where(j.c.lease_owner.is_(None))
            with self._tx() as conn:
                if conn.execute(query.values(**values)).rowcount != 1:
                    continue  # someone else wrote first: read again and redo
                extra = list(events or [])
                if target is not None and target != source:
                    extra.append(("state", {"state": target, "error": record.error}))
                for kind, payload in extra:
                    self._append(conn, job_id, kind, payload, now)
                if requeue or (release and record.state in CLAIMABLE):
                    self._notify(conn, job_id, 0, "queued")
            found.record = record
            found.version += 1
            if release:
                found.lease_owner = found.lease_expiry = None
            if requeue:
                found.queued_at = now
                found.cancel_requested = found.stop_requested = False
            if resume is not None:
                found.resume = resume
            return found
        raise RuntimeError(f"could not update {job_id}: too many concurrent writers")

    def request(self, job_id: str, *, cancel: bool = False, stop: bool = False) -> JobRow:
        """Ask the replica that runs ``job_id`` to cancel it or stop it after this epoch."""
        j = self.t.jobs
        values: dict[str, Any] = {}
        if cancel:
            values["cancel_requested"] = True
        if stop:
            values["stop_requested"] = True
        with self._tx() as conn:
            conn.execute(update(j).where(j.c.job_id == job_id).values(**values))
            self._notify(conn, job_id, 0, "control")
        return self.get(job_id)

    # -- events ---------------------------------------------------------------------------
    def append_event(self, job_id: str, kind: str, payload: Any) -> int:
        with self._tx() as conn:
            return self._append(conn, job_id, kind, payload, self.now())

    def _append(self, conn: Connection, job_id: str, kind: str, payload: Any, now: float) -> int:
        e = self.t.events
        body = json.dumps(payload, separators=(",", ":"))
        for _ in range(100):
            seq = (
                conn.execute(
                    select(func.coalesce(func.max(e.c.seq), 0)).where(e.c.job_id == job_id)
                ).scalar_one()
                + 1
            )
            try:
                with conn.begin_nested():
                    conn.execute(
                        insert(e).values(job_id=job_id, seq=seq, kind=kind, payload=body, time=now)
                    )
            except IntegrityError:
                continue  # another writer took this seq: the next one
            self._notify(conn, job_id, seq, kind)
            return seq
        raise RuntimeError(f"could not append an event to {job_id}")

    def events(
        self, job_id: str, since: int = 0, kinds: tuple[str, ...] | None = None
    ) -> list[Event]:
        e = self.t.events
        query = select(e).where(e.c.job_id == job_id, e.c.seq > since)
        if kinds:
            query = query.where(e.c.kind.in_(kinds))
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(e.c.seq)).all()
        return [Event(r.job_id, r.seq, r.kind, json.loads(r.payload), r.time) for r in rows]

    def prune_logs(self, keep_seconds: float) -> int:
        """Delete the log events of this framework's jobs that ended (no lease) more than
        ``keep_seconds`` ago; their log stays in the store's ``runs/<job>/log.txt``, which the
        replica that ran the job wrote when it ended. Returns the rows deleted."""
        j, e = self.t.jobs, self.t.events
        ended = select(j.c.job_id).where(
            j.c.framework == self.framework,
            j.c.state.in_(TERMINAL),
            j.c.lease_owner.is_(None),
            j.c.update_time < self.now() - keep_seconds,
        )
        with self.engine.begin() as conn:
            result = conn.execute(delete(e).where(e.c.kind == "log", e.c.job_id.in_(ended)))
        return int(result.rowcount or 0)

    # -- notifications --------------------------------------------------------------------
    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """``callback(job_id, seq, kind)`` for every event and request of this framework,
        from any replica (seq 0 for a cancel/stop request); returns the unsubscribe."""
        with self._sub_lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._sub_lock, contextlib.suppress(ValueError):
                self._subscribers.remove(callback)

        return unsubscribe

    def _notify(self, conn: Connection, job_id: str, seq: int, kind: str) -> None:
        if self.postgres:
            payload = json.dumps({"j": job_id, "s": seq, "k": kind, "r": self.replica})
            conn.execute(text("SELECT pg_notify(:c, :p)"), {"c": self.channel, "p": payload})
        # local subscribers hear of it after the commit (the LISTEN thread skips our own)
        conn.info.setdefault("vm_notes", []).append((job_id, seq, kind))

    @contextlib.contextmanager
    def _tx(self) -> Iterator[Connection]:
        """A write transaction; the local subscribers are told of its events once committed."""
        with self.engine.begin() as conn:
            conn.info.pop("vm_notes", None)
            try:
                yield conn
            finally:
                notes = conn.info.pop("vm_notes", [])
        for note in notes:
            self._dispatch(*note)

    def _dispatch(self, job_id: str, seq: int, kind: str) -> None:
        with self._sub_lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            try:
                callback(job_id, seq, kind)
            except Exception:
                log.exception("job event subscriber failed")

    def _start_listener(self) -> None:
        self._listener = threading.Thread(target=self._listen, name="pg-listen", daemon=True)
        self._listener.start()
        self._listening.wait(10)

    def _listen(self) -> None:
        import psycopg

        while not self._closed.is_set():
            try:
                with psycopg.connect(libpq_url(self.url), autocommit=True) as conn:
                    conn.execute(f'LISTEN "{self.channel}"')
                    self._listening.set()
                    while not self._closed.is_set():
                        for note in conn.notifies(timeout=0.5):
                            self._on_notify(note.payload)
            except Exception:
                if self._closed.is_set():
                    return
                log.exception("LISTEN on %s failed; retrying", self.channel)
                time.sleep(1)

    def _on_notify(self, payload: str) -> None:
        try:
            data = json.loads(payload)
        except ValueError:
            return
        if data.get("r") == self.replica:
            return  # ours: dispatched at commit already
        self._dispatch(str(data["j"]), int(data["s"]), str(data["k"]))


def iter_events(
    store: JobStore, job_id: str, since: int, wait: Callable[[float], bool]
) -> Iterator[Event]:
    """Events of ``job_id`` after ``since`` as they come; ``wait(seconds)`` blocks until news
    (or the time passes) and returns False to end."""
    while True:
        batch = store.events(job_id, since)
        for item in batch:
            since = item.seq
            yield item
        if not wait(1.0):
            return
