"""Jobs of one trainer: queue, child processes, states, persistence, fan-out, recovery.

The server process never imports a framework: each job runs in its own child process
(:mod:`trainers.runtime.worker`, own process group, killed with its server).

Replicas: the jobs of a framework live in the catalog database (:mod:`trainers.runtime.jobstore`,
``VISIONMESH_DATABASE_URL``), one shared queue and job list for every replica of the
framework's trainer; each change is mirrored to ``runs/<job>/job.json`` in the object store
too. A replica (``VISIONMESH_TRAINER_REPLICA``, default ``host:port-<random>``) claims queued
jobs while it runs fewer than its limit, renews the leases of the jobs it runs with a heartbeat
(``VISIONMESH_TRAINER_LEASE_SECONDS``, default 30), and takes back the jobs of a replica that
stopped renewing them (INTERRUPTED, then resumed from ``checkpoints/<job>/last.pt``). Epochs,
state changes and log lines are events in the database (NOTIFY on PostgreSQL), so any replica
answers GetJob, ListJobs, StreamMetrics, StreamLogs, CancelJob and ResumeJob for any job of its
framework; a cancel or stop for a job another replica runs is a flag on its row that reaches
that replica by NOTIFY or, at the latest, its next heartbeat. SQLite (the default) allows one
replica per framework; a restarted replica resumes its jobs at once. ``job.json`` files from
before the database held jobs are imported on start. The log lines of jobs that ended more
than ``VISIONMESH_TRAINER_LOG_EVENTS_KEEP_SECONDS`` (default 7 days) ago leave the database;
their ``runs/<job>/log.txt`` keeps them.

Limits from the environment: ``VISIONMESH_TRAINER_MAX_JOBS`` (jobs this replica runs at once,
default 1) and ``VISIONMESH_TRAINER_QUEUE`` (jobs waiting in the framework's queue, all
replicas together, default 16; beyond it StartTraining answers RESOURCE_EXHAUSTED).

Local files: a cancelled job's work folder and predict cache are removed when it ends. The
dataset cache (``trainer-cache``, see :mod:`trainers.runtime.prepare`) is swept when any job
ends and every few minutes: a prepared dataset no job uses goes once its snapshot is gone
from the store (dataset or snapshot deleted), at once when only cancelled jobs used it, and
otherwise after ``VISIONMESH_TRAINER_CACHE_KEEP_SECONDS`` (default 3600) without a job, so a
rerun on the same data soon after downloads nothing; images nothing links to go with it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers.runtime import jobstore, lifecycle, prepare, records
from trainers.runtime import worker_protocol as protocol
from trainers.runtime.adapter import FrameworkAdapter, TrainSpec
from trainers.runtime.jobstore import JobRow, JobStore, LeaseLost
from trainers.runtime.records import JobRecord
from visionmesh.errors import ServiceError
from visionmesh.store import KeyNotFound, ObjectStore

log = logging.getLogger("visionmesh.trainer")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MAX_LOG_LINES = 20000
LOG_FLUSH_SECONDS = 2.0
LOG_EVENT_SECONDS = 0.2  # log lines of running jobs reach the database (and followers) this often
CANCEL_GRACE_SECONDS = 5.0
CACHE_SWEEP_SECONDS = 300.0


def env_int(name: str, default: int, minimum: int) -> int:
    try:
        return max(int(os.environ.get(name, "") or default), minimum)
    except ValueError:
        return default


def replica_id(address: str = "") -> str:
    """This replica's name: ``VISIONMESH_TRAINER_REPLICA`` (a pod name), else host:port plus a
    short random part (a restarted process is a new replica)."""
    explicit = os.environ.get("VISIONMESH_TRAINER_REPLICA", "").strip()
    if explicit:
        return explicit
    port = address.rsplit(":", 1)[-1] if ":" in address else ""
    host = socket.gethostname()
    return f"{host}:{port}-{uuid.uuid4().hex[:6]}" if port else f"{host}-{uuid.uuid4().hex[:6]}"


# JobRecord fields a replica copies from its Job into the database row; the state (and the
# times and error that go with it) change only through a checked transition.
_STATE_FIELDS = {"state"}
_RECORD_FIELDS = [f.name for f in dataclasses.fields(JobRecord) if f.name not in _STATE_FIELDS]


@dataclass
class Job:
    record: JobRecord
    metrics: list[dict[str, Any]] = field(default_factory=list)
    log_lines: list[str] | None = None  # None until loaded from the store
    log_dirty: bool = False
    log_flushed: float = 0.0
    proc: subprocess.Popen | None = None
    worker_ready: bool = False
    cancel_requested: bool = False
    stop_signal_pending: bool = False
    deadline_hit: bool = False
    done_event: protocol.DoneEvent | None = None
    error_event: str = ""
    resume: bool = False
    run_started: float = 0.0
    max_epoch_seconds: float = 0.0
    prepared: protocol.PreparedEvent | None = None
    # Streams of this job wait on it (shares the manager's lock; see JobManager.subscribe).
    changed: threading.Condition | None = None
    # the replica that holds the job's lease (runs it), "" when none
    replica: str = ""
    # this replica holds the lease: it runs the job and is the only writer of its record
    local: bool = False
    lease_lost: bool = False
    log_pending: list[str] = field(default_factory=list)  # not yet in the database
    remote_cancel: bool = False  # another replica asked for a cancel (being done)


class JobManager:
    def __init__(
        self,
        adapter: FrameworkAdapter,
        store: ObjectStore,
        *,
        home: Path,
        store_url: str,
        max_jobs: int | None = None,
        queue_capacity: int | None = None,
        database_url: str | None = None,
        replica: str | None = None,
        address: str = "",
    ) -> None:
        self.adapter = adapter
        self.framework = adapter.framework
        self.store = store
        self.store_url = store_url
        self.home = Path(home)
        self.work_root = self.home / "trainer-work" / self.framework
        self.cache_root = self.home / "trainer-cache"
        self.max_jobs = max_jobs or env_int("VISIONMESH_TRAINER_MAX_JOBS", 1, 1)
        self.queue_capacity = (
            queue_capacity
            if queue_capacity is not None
            else env_int("VISIONMESH_TRAINER_QUEUE", 16, 0)
        )
        self.replica = replica or replica_id(address)
        self._db = JobStore(
            database_url or f"sqlite:///{self.home / 'catalog.db'}",
            self.framework,
            self.replica,
            address=address,
        )
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        # every job this process has looked at (a cache; the database is the truth), and the
        # ones it runs
        self.jobs: dict[str, Job] = {}
        self.running: dict[str, threading.Thread] = {}
        self.pending_requests: dict[tuple[str, str], threading.Event] = {}
        self.draining = False
        self.cache_keep_seconds = env_int("VISIONMESH_TRAINER_CACHE_KEEP_SECONDS", 3600, 0)
        # log lines of ended jobs stay in the database this long, then only in log.txt
        self.log_events_keep_seconds = env_int(
            "VISIONMESH_TRAINER_LOG_EVENTS_KEEP_SECONDS", 7 * 24 * 3600, 0
        )
        self._stopped = threading.Event()
        self._opened = False
        self._claim = threading.Event()  # the queue may have news: try to claim
        self._threads: list[threading.Thread] = []
        self._wakeups: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._waker: threading.Thread | None = None
        self._last_sweep = 0.0
        self._positions: tuple[float, dict[str, int]] = (0.0, {})

    # -- lifecycle ------------------------------------------------------------------------
    def open(self) -> None:
        """Register this replica (ReplicaRefused: a second live replica on SQLite)."""
        with self.lock:
            if not self._opened:
                self._db.open()
                self._opened = True

    @property
    def db(self) -> JobStore:
        """The job store, this replica registered (on first use when :meth:`open` was not
        called: a manager used without :meth:`start`)."""
        if not self._opened:
            self.open()
        return self._db

    def start(self) -> None:
        self.open()
        self.db.subscribe(self._on_news)
        self.recover()
        for name, target in (
            ("scheduler", self._schedule),
            ("log-flush", self._flush_logs),
            ("log-events", self._pump_logs),
            ("heartbeat", self._heartbeat),
        ):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def recover(self) -> None:
        """Import the ``job.json`` files the database does not know yet (jobs from before it
        held them; an unfinished one becomes INTERRUPTED and resumes), then take back the jobs
        of dead replicas (on SQLite: the previous process's, at once)."""
        known = {row.job_id for row in self.db.list()}
        imported = 0
        for key in self.store.list("runs/"):
            if not key.endswith("/job.json") or key.count("/") != 2:
                continue
            if key.split("/")[1] in known:
                continue
            try:
                record = JobRecord.from_json(self.store.get_bytes(key))
            except (KeyNotFound, ValueError, TypeError) as exc:
                log.warning("skipping unreadable %s: %s", key, exc)
                continue
            if record.framework != self.framework:
                continue
            if record.state in lifecycle.ACTIVE:  # its process is gone
                lifecycle.transition(record, lifecycle.INTERRUPTED)
            if self.db.import_record(record):
                imported += 1
        if imported:
            log.info("%s: imported %d job(s) from job.json files", self.framework, imported)
        interrupted = self.db.reap()
        for job_id in interrupted:
            with contextlib.suppress(Exception):
                self.db.append_event(
                    job_id,
                    "log",
                    [
                        "[visionmesh] trainer restarted while the job was running: "
                        "INTERRUPTED, resuming from its last checkpoint"
                    ],
                )
        self._claim.set()

    def drain(self) -> None:
        """SIGTERM: stop claiming; running jobs are stopped and left INTERRUPTED (their
        last.pt from the last finished epoch is in the store) with their lease released, so
        another replica (or this one restarted) resumes them; queued jobs stay QUEUED."""
        with self.lock:
            self.draining = True
            running = [self.jobs[i] for i in self.running]
            self.cond.notify_all()
        self._claim.set()
        for job in running:
            self._kill(job, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for job in running:
            if job.proc is not None:
                try:
                    job.proc.wait(max(deadline - time.monotonic(), 0.1))
                except subprocess.TimeoutExpired:
                    self._kill(job, signal.SIGKILL)
        for thread in list(self.running.values()):
            thread.join(timeout=5)
        self._stopped.set()
        self._flush_all_logs()
        if self._opened:
            self._db.close()

    # -- persistence ----------------------------------------------------------------------
    def _mirror(self, job: Job) -> None:
        try:
            self.store.put_bytes(
                records.run_key(job.record.job_id, "job.json"),
                job.record.to_json(),
                content_type="application/json",
            )
        except Exception:
            log.exception("could not persist %s", job.record.name)

    def _write(
        self,
        job: Job,
        *,
        target: str | None = None,
        error: str = "",
        events: list[tuple[str, Any]] | None = None,
        **options: Any,
    ) -> JobRow | None:
        """Write ``job``'s record to its row (all but the state; with ``target`` the checked
        transition). The replica that runs the job writes under its lease; None when the
        database refused (another replica moved the job, or took it over): the Job then shows
        the row as it is."""
        mine = dict(job.record.__dict__)

        def change(record: JobRecord) -> None:
            for name in _RECORD_FIELDS:
                setattr(record, name, mine[name])

        lease = options.pop("lease", "mine" if job.local else "any")
        try:
            row = self.db.update(
                job.record.job_id,
                change,
                target=target,
                error=error,
                lease=lease,
                events=events,
                **options,
            )
        except (lifecycle.IllegalTransition, LeaseLost) as exc:
            log.warning("%s: not written: %s", job.record.name, exc)
            with contextlib.suppress(jobstore.NoSuchJob):
                self._refresh(job, self.db.get(job.record.job_id))
            return None
        except Exception:
            log.exception("could not write %s to the database", job.record.name)
            return None
        job.record.__dict__.update(row.record.__dict__)  # in place: callers hold it
        job.replica = row.lease_owner or ""
        return row

    def _persist(self, job: Job, events: list[tuple[str, Any]] | None = None) -> None:
        job.record.touch()
        self._write(job, events=events)
        self._mirror(job)
        self._news(job)

    def _set_state(self, job: Job, state: str, error: str = "", **options: Any) -> bool:
        record = job.record
        if not lifecycle.allowed(record.state, state):
            log.error(
                "refused: %s", lifecycle.IllegalTransition(record.job_id, record.state, state)
            )
            return False
        self._send_logs(job)  # what was logged before the change comes before it
        ok = self._write(job, target=state, error=error, **options) is not None
        if ok:
            self._mirror(job)
        self.cond.notify_all()
        self._news(job)
        return ok

    def _refresh(self, job: Job, row: JobRow) -> Job:
        """Show the row in ``job`` (a job this replica does not run)."""
        if not job.local:
            job.record.__dict__.update(row.record.__dict__)
        job.replica = row.lease_owner or ""
        return job

    def _cached(self, row: JobRow) -> Job:
        with self.lock:
            job = self.jobs.get(row.job_id)
            if job is None:
                job = self.jobs[row.job_id] = Job(row.record)
            return self._refresh(job, row)

    # -- logs -----------------------------------------------------------------------------
    def _history(self, job_id: str) -> list[str]:
        """The job's log: its log events, or (a job from before the database) log.txt."""
        lines = [line for e in self.db.events(job_id, kinds=("log",)) for line in e.payload]
        if lines:
            return lines
        with contextlib.suppress(KeyNotFound):
            text = self.store.get_bytes(records.run_key(job_id, "log.txt"))
            return text.decode(errors="replace").splitlines()
        return []

    def _ensure_log(self, job: Job) -> list[str]:
        if job.log_lines is None:
            job.log_lines = self._history(job.record.job_id)[-MAX_LOG_LINES:]
        return job.log_lines

    def _append_log(self, job: Job, line: str) -> None:
        with self.lock:
            if not job.local:  # a job no replica runs: straight to the database
                job.log_lines = None
                try:
                    self.db.append_event(job.record.job_id, "log", [line])
                except Exception:
                    log.exception("could not log to %s", job.record.name)
                job.log_dirty = True
                self._news(job)
                return
            lines = self._ensure_log(job)
            lines.append(line)
            if len(lines) > MAX_LOG_LINES:
                del lines[: len(lines) - MAX_LOG_LINES]
            job.log_pending.append(line)
            job.log_dirty = True

    def _send_logs(self, job: Job) -> None:
        """Write ``job``'s pending log lines as one event (under the lock, so batches keep
        their order whichever thread sends them)."""
        with self.lock:
            lines, job.log_pending = job.log_pending, []
            if lines:
                try:
                    self.db.append_event(job.record.job_id, "log", lines)
                except Exception:
                    log.exception("could not send the log of %s", job.record.name)

    def _pump_logs(self) -> None:
        while not self._stopped.wait(LOG_EVENT_SECONDS):
            with self.lock:
                pending = [j for j in self.jobs.values() if j.log_pending]
            for job in pending:
                self._send_logs(job)

    def _flush_log(self, job: Job) -> None:
        self._send_logs(job)
        with self.lock:
            if not job.log_dirty:
                return
            job.log_dirty = False
            job.log_flushed = time.monotonic()
            lines = list(job.log_lines) if job.local and job.log_lines is not None else None
        if lines is None:  # not run here: the whole log from the database
            lines = self._history(job.record.job_id)
        data = "".join(line + "\\n" for line in lines).encode()
        try:
            self.store.put_bytes(records.run_key(job.record.job_id, "log.txt"), data, "text/plain")
        except Exception:
            log.exception("could not upload the log of %s", job.record.name)

    def _flush_logs(self) -> None:
        while not self._stopped.wait(LOG_FLUSH_SECONDS):
            self._flush_all_logs()
            if time.monotonic() - self._last_sweep > CACHE_SWEEP_SECONDS:
                self.sweep_cache()
                self.prune_log_events()

    def prune_log_events(self) -> int:
        """Drop the database's log lines of jobs that ended long ago (see
        ``VISIONMESH_TRAINER_LOG_EVENTS_KEEP_SECONDS``); StreamLogs reads them from log.txt."""
        try:
            removed = self.db.prune_logs(self.log_events_keep_seconds)
        except Exception:
            log.exception("pruning old log events failed")
            return 0
        if removed:
            log.info("removed %d log event(s) of jobs that ended long ago", removed)
        return removed

    def _flush_all_logs(self) -> None:
        with self.lock:
            dirty = [j for j in self.jobs.values() if j.log_dirty or j.log_pending]
        for job in dirty:
            self._flush_log(job)

    # -- submission -----------------------------------------------------------------------
    def new_job_id(self) -> str:
        return uuid.uuid4().hex[:16]

    def lookup_request(self, owner: str, request_id: str) -> Job | None:
        """The job a previous call with this request_id created (on any replica), waiting
        for one in flight on this replica."""
        if not request_id:
            return None
        key = (owner, request_id)
        while True:
            row = self.db.get_by_request(owner, request_id)
            if row is not None:
                return self._cached(row)
            with self.lock:
                pending = self.pending_requests.get(key)
                if pending is None:
                    self.pending_requests[key] = threading.Event()
                    return None
            pending.wait(60)

    def release_request(self, owner: str, request_id: str) -> None:
        with self.lock:
            event = self.pending_requests.pop((owner, request_id), None)
        if event is not None:
            event.set()

    def _full(self, waiting: int) -> ServiceError:
        return ServiceError(
            "RESOURCE_EXHAUSTED",
            f"the {self.framework} trainer's queue is full ({waiting} job(s) "
            f"waiting, capacity {self.queue_capacity}); retry later or cancel a job",
        )

    def check_capacity(self) -> None:
        with self.lock:
            if self.draining:
                raise ServiceError(
                    "UNAVAILABLE", "this trainer is shutting down; try again shortly"
                )
        waiting = self.db.waiting()
        if waiting >= self.queue_capacity:
            raise self._full(waiting)

    def submit(self, record: JobRecord) -> Job:
        with self.lock:
            if self.draining:
                raise ServiceError(
                    "UNAVAILABLE", "this trainer is shutting down; try again shortly"
                )
        try:
            row, created = self.db.submit(record, self.queue_capacity)
        except jobstore.QueueFull as exc:
            raise self._full(exc.waiting) from None
        self._positions = (0.0, {})
        if created:  # the caller's record is the job's (as before the database)
            record.__dict__.update(row.record.__dict__)
            with self.lock:
                self.jobs.setdefault(record.job_id, Job(record))
        job = self._cached(row)
        if created:
            self._append_log(job, f"[visionmesh] {record.name} queued on {record.snapshot}")
            self._mirror(job)
        self._claim.set()
        return job

    # -- queries --------------------------------------------------------------------------
    def get(self, job_id: str, owner: str | None) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is not None and job.local:
                if owner is not None and job.record.owner != owner:
                    job = None
                else:
                    return job
        row = self.db.find(job_id) if records.JOB_ID_RE.match(job_id) else None
        if (
            row is None
            or row.record.framework != self.framework
            or (owner is not None and row.record.owner != owner)
        ):
            name = records.job_name(self.adapter.framework, job_id)
            raise ServiceError("NOT_FOUND", f"job {name} not found")
        return self._cached(row)

    def owning_framework(self, job_id: str, owner: str) -> str | None:
        """The framework of ``owner``'s job ``job_id`` when another trainer owns it.

        Trainers of one deployment share the object store, so the job's ``job.json`` tells
        which trainer to ask; None when there is no such job of this caller.
        """
        if not records.JOB_ID_RE.match(job_id):
            return None
        try:
            record = JobRecord.from_json(self.store.get_bytes(records.run_key(job_id, "job.json")))
        except (KeyNotFound, ValueError, TypeError):
            return None
        if record.owner != owner or record.framework == self.framework:
            return None
        return record.framework

    def queue_position(self, job_id: str) -> int:
        when, positions = self._positions
        if time.monotonic() - when > 0.1:  # ListJobs asks for each job of a page
            positions = self.db.queue_positions()
            self._positions = (time.monotonic(), positions)
        return positions.get(job_id, 0)

    def list(self, owner: str | None) -> list[Job]:
        self._positions = (0.0, {})
        return [self._cached_local(row) for row in self.db.list(owner)]

    def _cached_local(self, row: JobRow) -> Job:
        with self.lock:
            job = self.jobs.get(row.job_id)
            if job is not None and job.local:
                return job
        return self._cached(row)

    # -- control --------------------------------------------------------------------------
    def cancel(self, job: Job, stop_early: bool) -> None:
        if not job.local:
            self._cancel_elsewhere(job, stop_early)
            return
        with self.lock:
            state = job.record.state
            if state in lifecycle.TERMINAL:
                raise ServiceError(
                    "FAILED_PRECONDITION", f"{job.record.name} already ended ({state})"
                )
            if stop_early:
                job.record.stop_reason = "stop_early"
                self._append_log(job, "[visionmesh] stop requested: ending after this epoch")
                self._persist(job)
                self._request_stop(job)
                return
            job.cancel_requested = True
            self._append_log(job, "[visionmesh] cancel requested")
        self._kill(job, signal.SIGTERM)
        proc = job.proc
        if proc is not None:
            try:
                proc.wait(CANCEL_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self._kill(job, signal.SIGKILL)
        thread = self.running.get(job.record.job_id)
        if thread is not None:
            thread.join(timeout=10)

    def _cancel_elsewhere(self, job: Job, stop_early: bool) -> None:
        """Cancel (stop) a job this replica does not run: a waiting one here, a running one
        by a request to the replica that runs it (then wait for it to end)."""
        job_id = job.record.job_id
        row = self.db.get(job_id)
        self._refresh(job, row)
        state = row.state
        if state in lifecycle.TERMINAL:
            raise ServiceError("FAILED_PRECONDITION", f"{job.record.name} already ended ({state})")
        if row.lease_owner is None and state in jobstore.CLAIMABLE:
            has_epochs = any(True for _ in self.db.events(job_id, kinds=("epoch",))) or (
                job.record.current_epoch > 0
            )
            target = lifecycle.SUCCEEDED if stop_early and has_epochs else lifecycle.CANCELLED
            note = ("log", ["[visionmesh] cancelled before it ran"])
            done = self._write(job, target=target, lease="free", events=[note])
            if done is not None:
                if target == lifecycle.CANCELLED:
                    self._discard_checkpoints(job)
                job.log_dirty = True
                self._flush_log(job)
                self._after_end(job)
                return
            row = self.db.get(job_id)  # a replica claimed it meanwhile: ask that one
            if row.state in lifecycle.TERMINAL:
                return
        if stop_early:
            self.db.request(job_id, stop=True)
            self._append_log(job, "[visionmesh] stop requested: ending after this epoch")
            return
        self._append_log(job, "[visionmesh] cancel requested")
        self.db.request(job_id, cancel=True)
        changed = self._changed(job)
        deadline = time.monotonic() + CANCEL_GRACE_SECONDS + 25
        while time.monotonic() < deadline:
            row = self.db.get(job_id)
            self._refresh(job, row)
            if row.state in lifecycle.TERMINAL and row.lease_owner is None:
                return  # ended, and its replica is done with it (its log is complete)
            with changed:
                changed.wait(0.5)

    def resume(self, job: Job) -> None:
        thread = self.running.get(job.record.job_id)
        if thread is not None and job.record.state in lifecycle.TERMINAL:
            thread.join(timeout=30)  # the run just ended: let it finish its bookkeeping
        job_id = job.record.job_id
        self._refresh(job, self.db.get(job_id))
        record = job.record
        if record.state not in (lifecycle.INTERRUPTED, lifecycle.FAILED):
            raise ServiceError(
                "FAILED_PRECONDITION",
                f"{record.name} is {record.state}; only INTERRUPTED or FAILED jobs resume",
            )
        if not self.store.exists(records.checkpoint_key(job_id, "last.pt")):
            raise ServiceError(
                "FAILED_PRECONDITION",
                f"{record.name} has no checkpoint to resume from "
                f"({records.checkpoint_key(job_id, 'last.pt')} is absent)",
            )
        if job.replica:  # a replica runs it (a recovered INTERRUPTED job starting again)
            return
        self.check_capacity()

        def again(r: JobRecord) -> None:
            r.resume_count += 1
            r.error = ""
            r.end_time = 0.0
            r.stop_reason = ""
            r.run_seconds = 0.0  # an explicit resume gets max_duration_seconds afresh

        try:
            row = self.db.update(
                job_id,
                again,
                target=lifecycle.QUEUED,
                lease="free",
                requeue=True,
                resume=True,
                events=[("log", ["[visionmesh] resume requested"])],
            )
        except (lifecycle.IllegalTransition, LeaseLost):
            self._refresh(job, self.db.get(job_id))
            return  # another replica resumed (or took) it first
        self._refresh(job, row)
        job.log_lines = None
        self._positions = (0.0, {})
        self._mirror(job)
        self._claim.set()

    def _request_stop(self, job: Job) -> None:
        with self.lock:
            if job.proc is None or not job.worker_ready:
                job.stop_signal_pending = True
                return
        with contextlib.suppress(ProcessLookupError):
            os.kill(job.proc.pid, signal.SIGUSR1)

    def _kill(self, job: Job, sig: int) -> None:
        proc = job.proc
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)

    def _discard_checkpoints(self, job: Job) -> None:
        prefix = f"checkpoints/{job.record.job_id}/"
        for key in list(self.store.list(prefix)):
            with contextlib.suppress(KeyNotFound):
                self.store.delete(key)
        job.record.checkpoints = []
        job.record.exports = []  # their files lived beside the checkpoints
        self._persist(job)

    def _control(self, job: Job, control: jobstore.Control) -> None:
        """Act on a cancel / stop another replica asked for (job runs here)."""

        def act(stop_early: bool) -> None:
            with contextlib.suppress(ServiceError):
                self.cancel(job, stop_early)

        if control.cancel and not job.remote_cancel:
            job.remote_cancel = True  # once: the thread below does the rest
            threading.Thread(target=act, args=(False,), daemon=True).start()
        elif control.stop and job.record.stop_reason != "stop_early" and not job.cancel_requested:
            job.record.stop_reason = "stop_early"
            threading.Thread(target=act, args=(True,), daemon=True).start()

    def _heartbeat(self) -> None:
        interval = max(self.db.lease_seconds / 3, 0.2)
        while not self._stopped.wait(interval):
            try:
                controls = self.db.heartbeat()
            except Exception:
                log.exception("heartbeat failed")
                continue
            with self.lock:
                mine = [self.jobs[i] for i in self.running if self.jobs[i].local]
            for job in mine:
                control = controls.get(job.record.job_id)
                if control is None:
                    self._lost(job)
                else:
                    self._control(job, control)
            try:
                if self.db.reap():
                    self._claim.set()
            except Exception:
                log.exception("reaping expired leases failed")

    def _lost(self, job: Job) -> None:
        """Another replica took ``job`` over (this one missed its heartbeats): stop running
        it without writing anything more."""
        if job.lease_lost:
            return
        job.lease_lost = True
        log.warning("%s: lease lost to another replica; stopping its worker", job.record.name)
        self._kill(job, signal.SIGKILL)

    def _on_news(self, job_id: str, seq: int, kind: str) -> None:
        """An event or request from the database (any replica); never blocks long."""
        if kind == "queued":
            self._claim.set()
            return
        with self.lock:
            job = self.jobs.get(job_id)
        if job is None:
            return
        if kind == "control" and job.local:
            threading.Thread(target=self._check_control, args=(job,), daemon=True).start()
        self.wake(job)

    def _check_control(self, job: Job) -> None:
        with contextlib.suppress(Exception):
            row = self.db.get(job.record.job_id)
            if row.lease_owner == self.replica:
                self._control(job, jobstore.Control(row.cancel_requested, row.stop_requested))

    # -- streams waiting for news ---------------------------------------------------------
    def subscribe(self, job: Job) -> Callable[[], None]:
        """Be woken by news of ``job`` (its state, epochs and log lines; streams of other
        jobs are not woken by them). Returns the function that wakes its followers at once,
        from any thread without blocking: call it when the stream's client goes away."""
        self._changed(job)
        return lambda: self.wake(job)

    def _changed(self, job: Job) -> threading.Condition:
        """The condition ``job``'s followers wait on (holding :attr:`lock`)."""
        with self.lock:
            if job.changed is None:
                job.changed = threading.Condition(self.lock)
            return job.changed

    def follow_metrics(
        self, job: Job, from_epoch: int, active: Callable[[], bool], recheck: float
    ) -> Iterator[tuple[dict[str, Any] | None, str]]:
        """Each finished epoch from ``from_epoch`` on once, with the job's state (history
        first, then live as they come, from whichever replica runs the job), then
        ``(None, state)`` when the job has ended. Stops without the last item when
        ``active()`` turns false."""
        changed = self._changed(job)
        job_id = job.record.job_id
        sent: set[int] = set()
        seq = 0
        first = True
        while True:
            row = self.db.get(job_id)
            state = row.state
            batch = self.db.events(job_id, seq, kinds=("epoch",))
            items = [e.payload for e in batch]
            if batch:
                seq = batch[-1].seq
            elif first and row.record.current_epoch:  # a job from before the database
                with contextlib.suppress(KeyNotFound):
                    items = records.parse_metrics_jsonl(
                        self.store.get_bytes(records.run_key(job_id, "metrics.jsonl"))
                    )
            first = False
            pending = [m for m in items if m["epoch"] >= from_epoch and m["epoch"] not in sent]
            for item in sorted(pending, key=lambda m: m["epoch"]):
                sent.add(item["epoch"])
                yield item, state
            if pending:
                continue
            if state in lifecycle.TERMINAL:
                break
            if not active():
                return
            with changed:
                changed.wait(recheck)
        yield None, state

    def follow_logs(
        self, job: Job, follow: bool, active: Callable[[], bool], recheck: float
    ) -> Iterator[list[str]]:
        """The job's log in chunks of up to 500 lines; with ``follow``, new lines as they
        come until the job has ended and its run is over (or ``active()`` turns false)."""
        changed = self._changed(job)
        job_id = job.record.job_id
        seq = 0
        first = True
        while True:
            row = self.db.get(job_id)
            ended = row.state in lifecycle.TERMINAL and row.lease_owner is None
            batch = self.db.events(job_id, seq, kinds=("log",))
            lines = [line for e in batch for line in e.payload]
            if batch:
                seq = batch[-1].seq
            elif first:
                lines = self._history(job_id)  # a job from before the database: log.txt
            first = False
            for start in range(0, len(lines), 500):
                yield lines[start : start + 500]
            if lines:
                continue
            if ended or not follow or not active():
                return
            with changed:
                changed.wait(recheck)

    def _news(self, job: Job) -> None:
        """Wake the streams of ``job`` (takes the lock, which callers may already hold)."""
        if job.changed is not None:
            with self.lock:
                job.changed.notify_all()

    def wake(self, job: Job) -> None:
        """Wake ``job``'s streams soon, from any thread without blocking (a gRPC callback
        when a client goes away must not wait for the lock)."""
        self._wakeups.put(job)
        if self._waker is None:
            with self.lock:
                if self._waker is None:
                    self._waker = threading.Thread(target=self._wake_loop, daemon=True)
                    self._waker.name = "stream-waker"
                    self._waker.start()

    def _wake_loop(self) -> None:
        while True:
            batch = {id(job): job for job in [self._wakeups.get()]}
            with contextlib.suppress(queue.Empty):
                while len(batch) < 1000:
                    job = self._wakeups.get_nowait()
                    batch[id(job)] = job
            with self.lock:
                for job in batch.values():
                    self._news(job)

    # -- local files ----------------------------------------------------------------------
    def _after_end(self, job: Job) -> None:
        """A job ended (lock not held): drop what a discarded job left on local disk, give
        back its use of the dataset cache, and sweep the cache."""
        record = job.record
        if record.state not in lifecycle.TERMINAL:
            return  # INTERRUPTED (draining): it resumes from here
        cancelled = record.state == lifecycle.CANCELLED
        if cancelled:
            for folder in (
                self.work_root / record.job_id,
                self.cache_root / "predict" / record.job_id,
            ):
                shutil.rmtree(folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            prepare.release(
                self.cache_root, f"{self.framework}-{record.job_id}", kept=not cancelled
            )
        self.sweep_cache()

    def sweep_cache(self) -> dict[str, int]:
        """Remove stale prepared datasets and unlinked images (see the module docstring)."""
        self._last_sweep = time.monotonic()

        def manifest_exists(key: str) -> bool:
            try:
                return self.store.exists(key)
            except Exception:  # the store is unreachable: keep the entry
                return True

        try:
            removed = prepare.sweep_cache(
                self.cache_root,
                keep_seconds=self.cache_keep_seconds,
                manifest_exists=manifest_exists,
            )
        except Exception:
            log.exception("sweeping the dataset cache %s failed", self.cache_root)
            return {}
        if removed.get("prepared") or removed.get("images"):
            log.info(
                "dataset cache: removed %d prepared dataset(s), %d image(s)",
                removed["prepared"],
                removed["images"],
            )
        return removed

    # -- scheduling -----------------------------------------------------------------------
    def _schedule(self) -> None:
        """Claim jobs from the shared queue while this replica runs fewer than its limit."""
        while True:
            with self.lock:
                while not self.draining and len(self.running) >= self.max_jobs:
                    self.cond.wait(1.0)
                if self.draining:
                    return
                free = self.max_jobs - len(self.running)
            self._claim.clear()
            try:
                rows = self.db.claim(free)
            except Exception:
                log.exception("claiming jobs failed")
                rows = []
            if not rows:
                # a submit, resume or requeue anywhere (NOTIFY, or the local commit) and this
                # replica's reaper set _claim; the timeout is only a safety net
                self._claim.wait(max(self.db.lease_seconds / 3, 1.0))
                continue
            for row in rows:
                job = self._adopt(row)
                with self.lock:
                    thread = threading.Thread(
                        target=self._run_job, args=(job,), name=f"job-{row.job_id}", daemon=True
                    )
                    # started before it is published: whoever finds it in `running` (cancel,
                    # resume) may join it; it removes itself under this lock, so not before
                    thread.start()
                    self.running[row.job_id] = thread
                    self.cond.notify_all()

    def _adopt(self, row: JobRow) -> Job:
        """The Job of a row this replica just claimed: its epochs so far (an epoch its last
        worker recorded in metrics.jsonl but did not get to report is reported now, once),
        its log, and whether it resumes."""
        job_id = row.job_id
        metrics = {e.payload["epoch"]: e.payload for e in self.db.events(job_id, kinds=("epoch",))}
        if row.resume:
            with contextlib.suppress(KeyNotFound):
                saved = records.parse_metrics_jsonl(
                    self.store.get_bytes(records.run_key(job_id, "metrics.jsonl"))
                )
                for item in saved:
                    if item["epoch"] not in metrics:
                        metrics[item["epoch"]] = item
                        self.db.append_event(job_id, "epoch", item)
        history = self._history(job_id)[-MAX_LOG_LINES:]
        with self.lock:
            old = self.jobs.get(job_id)
            job = Job(row.record)
            job.changed = old.changed if old is not None else None
            job.local = True
            job.replica = self.replica
            job.resume = row.resume
            job.metrics = [metrics[e] for e in sorted(metrics)]
            job.max_epoch_seconds = max(
                (float(m.get("epoch_seconds", 0)) for m in job.metrics), default=0.0
            )
            job.log_lines = history
            self.jobs[job_id] = job
        if row.resume:
            self._append_log(
                job,
                f"[visionmesh] {self.replica} resumes the job from its last checkpoint "
                f"(resume {row.record.resume_count})",
            )
        return job

    def _run_job(self, job: Job) -> None:
        record = job.record
        try:
            self._run_child(job)
        except Exception as exc:  # never let a job take the scheduler down
            log.exception("job %s failed to run", record.name)
            with self.lock:
                self._set_state(job, lifecycle.FAILED, f"the trainer could not run the job: {exc}")
        finally:
            job.log_dirty = True
            self._flush_log(job)
            if not job.lease_lost:  # free for another run (resume) or another replica
                with contextlib.suppress(Exception):
                    self.db.update(record.job_id, lease="mine", release=True)
            with self.lock:
                self.running.pop(record.job_id, None)
                job.proc = None
                job.local = False
                job.replica = ""
                self.cond.notify_all()
                self._news(job)
            self._after_end(job)

    def _run_child(self, job: Job) -> None:
        record = job.record
        work_dir = self.work_root / record.job_id
        work_dir.mkdir(parents=True, exist_ok=True)
        spec = record.spec
        cfg = protocol.WorkerConfig(
            job_id=record.job_id,
            adapter=f"{type(self.adapter).__module__}:{type(self.adapter).__name__}",
            store_url=self.store_url,
            work_dir=str(work_dir.resolve()),
            cache_root=str(self.cache_root.resolve()),
            train_spec=TrainSpec.from_spec(spec, record.task_type),
            task_type=record.task_type,
            layout=self.adapter.dataset_format(record.task_type),
            manifest_key=record.manifest_key,
            snapshot=record.snapshot,
            split_seed=record.split_seed,
            val_fraction=record.val_fraction,
            resume=job.resume,
            keep_last=int(spec.get("keepLastCheckpoints", 0)) or 2,
            best_metric=record.best_metric_name,
            pretrained_key=record.init_key
            or (
                self.adapter.pretrained_key(record.model, record.task_type)
                if spec.get("pretrained")
                else ""
            ),
            init_from=str(spec.get("initFrom", "")),
            job_name=record.name,
            spec=record.spec,
            stop_requested=record.stop_reason == "stop_early",
            parent_pid=os.getpid(),
        )
        job_file = work_dir / "job-config.json"
        job_file.write_text(cfg.to_json())
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env["VISIONMESH_EVENTS_FD"] = str(write_fd)
        env["PYTHONUNBUFFERED"] = "1"
        with self.lock:
            if self.draining or job.cancel_requested:
                os.close(read_fd)
                os.close(write_fd)
                if job.cancel_requested:
                    self._set_state(job, lifecycle.CANCELLED)
                return
            job.worker_ready = False
            job.done_event = None
            job.error_event = ""
            job.deadline_hit = False
            self._append_log(
                job,
                f"[visionmesh] starting worker ({'resume' if job.resume else 'new run'})",
            )
            try:
                job.proc = subprocess.Popen(
                    [sys.executable, "-m", "trainers.runtime.worker", str(job_file)],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    pass_fds=(write_fd,),
                    env=env,
                    start_new_session=True,
                    cwd=str(work_dir),
                )
            finally:
                os.close(write_fd)
            proc = job.proc
        job.run_started = time.monotonic()
        readers = [
            threading.Thread(target=self._read_logs, args=(job, proc), daemon=True),
            threading.Thread(target=self._read_events, args=(job, read_fd), daemon=True),
        ]
        for reader in readers:
            reader.start()
        max_seconds = int(spec.get("maxDurationSeconds", 0))
        timer = None
        if max_seconds > 0:
            remaining = max(max_seconds - record.run_seconds, 0.5)
            timer = threading.Timer(remaining, self._deadline, args=(job, max_seconds))
            timer.daemon = True
            timer.start()
        rc = proc.wait()
        if timer is not None:
            timer.cancel()
        for reader in readers:
            reader.join(timeout=5)
        with self.lock:
            record.run_seconds += time.monotonic() - job.run_started
            self._finish(job, rc)

    def _deadline(self, job: Job, max_seconds: int) -> None:
        with self.lock:
            if job.proc is None or job.proc.poll() is not None:
                return
            job.deadline_hit = True
            job.record.stop_reason = "deadline"
            self._append_log(
                job, f"[visionmesh] max_duration_seconds={max_seconds} reached: stopping"
            )
            grace = max(30.0, 2 * job.max_epoch_seconds)
        self._request_stop(job)

        def hard_stop() -> None:
            if job.proc is not None and job.proc.poll() is None:
                self._append_log(job, "[visionmesh] the epoch did not end in time: killed")
                self._kill(job, signal.SIGKILL)

        killer = threading.Timer(grace, hard_stop)
        killer.daemon = True
        killer.start()

    def _finish(self, job: Job, rc: int) -> None:
        record = job.record
        if job.lease_lost:
            self._append_log(job, "[visionmesh] another replica took the job over")
            return
        outcome = lifecycle.RunOutcome(
            rc=rc,
            cancel_requested=job.cancel_requested,
            draining=self.draining,
            done=job.done_event is not None,
            stopped_early=job.done_event is not None and job.done_event.stopped_early,
            error_event=job.error_event,
            deadline_hit=job.deadline_hit,
            max_duration_seconds=record.spec.get("maxDurationSeconds"),
            current_epoch=record.current_epoch,
            total_epochs=record.total_epochs,
        )
        state, error, notes = lifecycle.final_state(outcome)
        for line in notes:
            self._append_log(job, line)
        if self._set_state(job, state, error) and state == lifecycle.CANCELLED:
            self._discard_checkpoints(job)
        self._append_log(job, f"[visionmesh] job {record.state}")

    # -- child output ---------------------------------------------------------------------
    def _read_logs(self, job: Job, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            text = ANSI.sub("", raw.decode(errors="replace").rstrip("\n"))
            text = text.split("\r")[-1].rstrip() if "\r" in text else text.rstrip()
            if text:
                self._append_log(job, text)
        proc.stdout.close()

    def _read_events(self, job: Job, fd: int) -> None:
        with os.fdopen(fd, "rb") as pipe:
            for raw in pipe:
                try:
                    event = protocol.decode(raw)
                except ValueError as exc:
                    log.warning("ignoring a bad event from %s: %s", job.record.name, exc)
                    continue
                try:
                    self._on_event(job, event)
                except Exception:
                    log.exception("bad event from %s: %r", job.record.name, event)

    def _on_event(self, job: Job, event: protocol.Event) -> None:
        record = job.record
        send_stop = False
        with self.lock:
            if isinstance(event, protocol.StateEvent):
                first = not job.worker_ready
                job.worker_ready = True
                send_stop = first and job.stop_signal_pending
                if event.state == lifecycle.RUNNING and event.device:
                    self._append_log(job, f"[visionmesh] running on {event.device}")
                if record.state != event.state and not job.cancel_requested:
                    self._set_state(job, event.state)
            elif isinstance(event, protocol.PreparedEvent):
                job.prepared = event
                how = "from the cache" if event.cached else "built"
                self._append_log(
                    job,
                    f"[visionmesh] dataset ready in {float(event.seconds):.2f}s ({how}; "
                    f"{event.downloaded_blobs} images downloaded; {event.counts})",
                )
                record.class_names = list(event.class_names)
                record.category_ids = [int(c) for c in event.category_ids]
                if not record.conversion:
                    record.conversion = str(event.conversion)
                self._persist(job)
            elif isinstance(event, protocol.EpochEvent):
                item = event.record
                fresh: list[tuple[str, Any]] = []
                if item is not None and all(m["epoch"] != item["epoch"] for m in job.metrics):
                    fresh.append(("epoch", item))
                    job.metrics.append(item)
                    job.metrics.sort(key=lambda m: m["epoch"])
                    job.max_epoch_seconds = max(
                        job.max_epoch_seconds, float(item.get("epoch_seconds", 0))
                    )
                    if item.get("is_best"):
                        record.best_epoch = int(item["epoch"])
                        record.best_metrics = dict(item.get("values", {}))
                if job.metrics:
                    record.current_epoch = max(m["epoch"] for m in job.metrics)
                by_name = {c["filename"]: c for c in record.checkpoints}
                for ckpt in event.checkpoints:
                    if ckpt.get("deleted"):
                        by_name.pop(ckpt["filename"], None)
                    else:
                        by_name[ckpt["filename"]] = ckpt
                order = {"best.pt": 0, "last.pt": 1}
                record.checkpoints = sorted(
                    by_name.values(),
                    key=lambda c: (order.get(c["filename"], 2), -int(c.get("epoch", 0))),
                )
                self._persist(job, events=fresh)
                self.cond.notify_all()
                self._news(job)
            elif isinstance(event, protocol.DoneEvent):
                job.done_event = event
            elif isinstance(event, protocol.ErrorEvent):
                job.error_event = str(event.message)
        if send_stop:
            self._request_stop(job)
