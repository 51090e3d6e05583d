"""Jobs of one trainer: queue, child processes, states, persistence, fan-out, recovery.

The server process never imports a framework: each job runs in its own child process
(:mod:`trainers.runtime.worker`, own process group, killed with its server). The manager keeps
every job of its framework in memory, mirrors each change to ``runs/<job>/job.json`` in the
object store, and on start picks up the jobs a previous process left PREPARING/RUNNING
(INTERRUPTED, then re-queued to resume from ``checkpoints/<job>/last.pt``) or QUEUED.

Limits from the environment: ``VISIONMESH_TRAINER_MAX_JOBS`` (jobs running at once, default
1) and ``VISIONMESH_TRAINER_QUEUE`` (queued jobs, default 16; beyond it StartTraining answers
RESOURCE_EXHAUSTED).

Local files: a cancelled job's work folder and predict cache are removed when it ends. The
dataset cache (``trainer-cache``, see :mod:`trainers.runtime.prepare`) is swept when any job
ends and every few minutes: a prepared dataset no job uses goes once its snapshot is gone
from the store (dataset or snapshot deleted), at once when only cancelled jobs used it, and
otherwise after ``VISIONMESH_TRAINER_CACHE_KEEP_SECONDS`` (default 3600) without a job, so a
rerun on the same data soon after downloads nothing; images nothing links to go with it.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainers.runtime import prepare, records
from trainers.runtime.adapter import FrameworkAdapter, TrainSpec
from trainers.runtime.records import JobRecord
from visionmesh.store import KeyNotFound, ObjectStore

log = logging.getLogger("visionmesh.trainer")

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
MAX_LOG_LINES = 20000
LOG_FLUSH_SECONDS = 2.0
CANCEL_GRACE_SECONDS = 5.0
CACHE_SWEEP_SECONDS = 300.0


class JobError(Exception):
    """A refusal the servicer turns into a gRPC status (``code`` is a grpc.StatusCode name)."""

    def __init__(self, code: str, message: str, field: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.field = field


def env_int(name: str, default: int, minimum: int) -> int:
    try:
        return max(int(os.environ.get(name, "") or default), minimum)
    except ValueError:
        return default


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
    done_event: dict[str, Any] | None = None
    error_event: str = ""
    resume: bool = False
    run_started: float = 0.0
    max_epoch_seconds: float = 0.0
    prepared: dict[str, Any] = field(default_factory=dict)
    # Streams of this job wait on it (shares the manager's lock; see JobManager.watch).
    changed: threading.Condition | None = None


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
        self.lock = threading.RLock()
        self.cond = threading.Condition(self.lock)
        self.jobs: dict[str, Job] = {}
        self.queue: collections.deque[str] = collections.deque()
        self.running: dict[str, threading.Thread] = {}
        self.requests: dict[tuple[str, str], str] = {}
        self.pending_requests: dict[tuple[str, str], threading.Event] = {}
        self.draining = False
        self.cache_keep_seconds = env_int("VISIONMESH_TRAINER_CACHE_KEEP_SECONDS", 3600, 0)
        self._stopped = threading.Event()
        self._scheduler: threading.Thread | None = None
        self._flusher: threading.Thread | None = None
        self._wakeups: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._waker: threading.Thread | None = None
        self._last_sweep = 0.0

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self.recover()
        self._scheduler = threading.Thread(target=self._schedule, name="scheduler", daemon=True)
        self._scheduler.start()
        self._flusher = threading.Thread(target=self._flush_logs, name="log-flush", daemon=True)
        self._flusher.start()

    def recover(self) -> None:
        """Load this framework's jobs from the store; continue the unfinished ones."""
        loaded = []
        for key in self.store.list("runs/"):
            if not key.endswith("/job.json") or key.count("/") != 2:
                continue
            try:
                record = JobRecord.from_json(self.store.get_bytes(key))
            except (KeyNotFound, ValueError, TypeError) as exc:
                log.warning("skipping unreadable %s: %s", key, exc)
                continue
            if record.framework != self.framework:
                continue
            job = Job(record)
            with contextlib.suppress(KeyNotFound):
                job.metrics = records.parse_metrics_jsonl(
                    self.store.get_bytes(records.run_key(record.job_id, "metrics.jsonl"))
                )
            loaded.append(job)
        loaded.sort(key=lambda j: j.record.create_time)
        with self.lock:
            for job in loaded:
                record = job.record
                self.jobs[record.job_id] = job
                if record.request_id:
                    self.requests[(record.owner, record.request_id)] = record.job_id
                if record.state in records.ACTIVE:
                    self._append_log(
                        job,
                        f"[visionmesh] trainer restarted while the job was {record.state}: "
                        "INTERRUPTED, resuming from its last checkpoint",
                    )
                    self._set_state(job, records.INTERRUPTED)
                if record.state == records.INTERRUPTED:
                    record.resume_count += 1
                    job.resume = True
                    self.queue.append(record.job_id)
                    self._persist(job)
                elif record.state == records.QUEUED:
                    self.queue.append(record.job_id)
            if self.queue:
                log.info("%s: %d job(s) to continue after restart", self.framework, len(self.queue))
            self.cond.notify_all()

    def drain(self) -> None:
        """SIGTERM: stop scheduling; running jobs are stopped and left INTERRUPTED (their
        last.pt from the last finished epoch is in the store); queued jobs stay QUEUED."""
        with self.lock:
            self.draining = True
            running = [self.jobs[i] for i in self.running]
            self.cond.notify_all()
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

    # -- persistence ----------------------------------------------------------------------
    def _persist(self, job: Job) -> None:
        job.record.touch()
        try:
            self.store.put_bytes(
                records.run_key(job.record.job_id, "job.json"),
                job.record.to_json(),
                content_type="application/json",
            )
        except Exception:
            log.exception("could not persist %s", job.record.name)

    def _set_state(self, job: Job, state: str, error: str = "") -> None:
        record = job.record
        record.state = state
        if error:
            record.error = error
        now = time.time()
        if state in (records.PREPARING, records.RUNNING) and not record.start_time:
            record.start_time = now
        if state in records.TERMINAL:
            record.end_time = now
        self._persist(job)
        self.cond.notify_all()
        self._news(job)

    # -- logs -----------------------------------------------------------------------------
    def _ensure_log(self, job: Job) -> list[str]:
        if job.log_lines is None:
            lines: list[str] = []
            with contextlib.suppress(KeyNotFound):
                text = self.store.get_bytes(records.run_key(job.record.job_id, "log.txt"))
                lines = text.decode(errors="replace").splitlines()
            job.log_lines = lines[-MAX_LOG_LINES:]
        return job.log_lines

    def _append_log(self, job: Job, line: str) -> None:
        with self.lock:
            lines = self._ensure_log(job)
            lines.append(line)
            if len(lines) > MAX_LOG_LINES:
                del lines[: len(lines) - MAX_LOG_LINES]
            job.log_dirty = True
            self.cond.notify_all()
            self._news(job)

    def _flush_log(self, job: Job) -> None:
        with self.lock:
            if not job.log_dirty or job.log_lines is None:
                return
            data = "".join(line + "\n" for line in job.log_lines).encode()
            job.log_dirty = False
            job.log_flushed = time.monotonic()
        try:
            self.store.put_bytes(records.run_key(job.record.job_id, "log.txt"), data, "text/plain")
        except Exception:
            log.exception("could not upload the log of %s", job.record.name)

    def _flush_logs(self) -> None:
        while not self._stopped.wait(LOG_FLUSH_SECONDS):
            self._flush_all_logs()
            if time.monotonic() - self._last_sweep > CACHE_SWEEP_SECONDS:
                self.sweep_cache()

    def _flush_all_logs(self) -> None:
        with self.lock:
            dirty = [j for j in self.jobs.values() if j.log_dirty]
        for job in dirty:
            self._flush_log(job)

    # -- submission -----------------------------------------------------------------------
    def new_job_id(self) -> str:
        return uuid.uuid4().hex[:16]

    def lookup_request(self, owner: str, request_id: str) -> Job | None:
        """The job a previous call with this request_id created, waiting for one in flight."""
        if not request_id:
            return None
        key = (owner, request_id)
        while True:
            with self.lock:
                job_id = self.requests.get(key)
                if job_id is not None:
                    return self.jobs[job_id]
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

    def check_capacity(self) -> None:
        with self.lock:
            if self.draining:
                raise JobError("UNAVAILABLE", "this trainer is shutting down; try again shortly")
            if len(self.queue) >= self.queue_capacity:
                raise JobError(
                    "RESOURCE_EXHAUSTED",
                    f"the {self.framework} trainer's queue is full ({len(self.queue)} job(s) "
                    f"waiting, capacity {self.queue_capacity}); retry later or cancel a job",
                )

    def submit(self, record: JobRecord) -> Job:
        with self.lock:
            self.check_capacity()
            job = Job(record)
            job.log_lines = []
            self.jobs[record.job_id] = job
            if record.request_id:
                self.requests[(record.owner, record.request_id)] = record.job_id
            self._append_log(job, f"[visionmesh] {record.name} queued on {record.snapshot}")
            self._persist(job)
            self.queue.append(record.job_id)
            self.cond.notify_all()
            return job

    # -- queries --------------------------------------------------------------------------
    def get(self, job_id: str, owner: str | None) -> Job:
        with self.lock:
            job = self.jobs.get(job_id)
            if job is None or (owner is not None and job.record.owner != owner):
                name = records.job_name(self.adapter.framework, job_id)
                raise JobError("NOT_FOUND", f"job {name} not found")
            return job

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
        with self.lock:
            try:
                return self.queue.index(job_id) + 1
            except ValueError:
                return 0

    def list(self, owner: str | None) -> list[Job]:
        with self.lock:
            jobs = [j for j in self.jobs.values() if owner is None or j.record.owner == owner]
        return sorted(jobs, key=lambda j: j.record.create_time, reverse=True)

    # -- control --------------------------------------------------------------------------
    def cancel(self, job: Job, stop_early: bool) -> None:
        ended = False
        with self.lock:
            state = job.record.state
            if state in records.TERMINAL:
                raise JobError("FAILED_PRECONDITION", f"{job.record.name} already ended ({state})")
            if state in (records.QUEUED, records.INTERRUPTED):
                with contextlib.suppress(ValueError):
                    self.queue.remove(job.record.job_id)
                if job.record.job_id not in self.running:
                    self._append_log(job, "[visionmesh] cancelled before it ran")
                    if stop_early and job.metrics:
                        self._set_state(job, records.SUCCEEDED)
                    else:
                        self._set_state(job, records.CANCELLED)
                        self._discard_checkpoints(job)
                    ended = True
            if not ended and stop_early:
                job.record.stop_reason = "stop_early"
                self._append_log(job, "[visionmesh] stop requested: ending after this epoch")
                self._persist(job)
                self._request_stop(job)
                return
            if not ended:
                job.cancel_requested = True
                self._append_log(job, "[visionmesh] cancel requested")
        if ended:
            self._after_end(job)
            return
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

    def resume(self, job: Job) -> None:
        thread = self.running.get(job.record.job_id)
        if thread is not None and job.record.state in records.TERMINAL:
            thread.join(timeout=30)  # the run just ended: let it finish its bookkeeping
        with self.lock:
            record = job.record
            if record.state not in (records.INTERRUPTED, records.FAILED):
                raise JobError(
                    "FAILED_PRECONDITION",
                    f"{record.name} is {record.state}; only INTERRUPTED or FAILED jobs resume",
                )
            if not self.store.exists(records.checkpoint_key(record.job_id, "last.pt")):
                raise JobError(
                    "FAILED_PRECONDITION",
                    f"{record.name} has no checkpoint to resume from "
                    f"({records.checkpoint_key(record.job_id, 'last.pt')} is absent)",
                )
            if record.job_id in self.queue or record.job_id in self.running:
                return
            self.check_capacity()
            record.resume_count += 1
            record.error = ""
            record.end_time = 0.0
            record.stop_reason = ""
            record.run_seconds = 0.0  # an explicit resume gets max_duration_seconds afresh
            job.resume = True
            self._append_log(job, "[visionmesh] resume requested")
            self._set_state(job, records.QUEUED)
            self.queue.append(record.job_id)
            self.cond.notify_all()

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

    # -- streams waiting for news ---------------------------------------------------------
    def watch(self, job: Job) -> threading.Condition:
        """The condition a stream waits on (holding :attr:`lock`) for news of ``job``: its
        state, epochs and log lines. Streams of other jobs are not woken by them."""
        with self.lock:
            if job.changed is None:
                job.changed = threading.Condition(self.lock)
            return job.changed

    def _news(self, job: Job) -> None:
        """Wake the streams of ``job`` (lock held)."""
        if job.changed is not None:
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
        if record.state not in records.TERMINAL:
            return  # INTERRUPTED (draining): it resumes from here
        cancelled = record.state == records.CANCELLED
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
        while True:
            with self.lock:
                while not self.draining and (not self.queue or len(self.running) >= self.max_jobs):
                    self.cond.wait(1.0)
                if self.draining:
                    return
                job_id = self.queue.popleft()
                job = self.jobs[job_id]
                thread = threading.Thread(
                    target=self._run_job, args=(job,), name=f"job-{job_id}", daemon=True
                )
                # started before it is published: whoever finds it in `running` (cancel,
                # resume) may join it; it removes itself under this lock, so not before
                thread.start()
                self.running[job_id] = thread
                self.cond.notify_all()

    def _train_spec(self, record: JobRecord) -> TrainSpec:
        spec = record.spec
        return TrainSpec(
            task_type=record.task_type,
            model=record.model,
            epochs=int(spec.get("epochs", 1)),
            batch_size=int(spec.get("batchSize", 16)),
            image_size=int(spec.get("imageSize", 640)),
            learning_rate=float(spec.get("learningRate", 0.01)),
            seed=int(spec.get("seed", 0)),
            patience=int(spec.get("patience", 0)),
            device=str(spec.get("device", "")),
            pretrained=bool(spec.get("pretrained", False)),
            extra=dict(spec.get("extra", {})),
            devices=max(int(spec.get("devices", 0)), 1),
        )

    def _run_job(self, job: Job) -> None:
        record = job.record
        try:
            self._run_child(job)
        except Exception as exc:  # never let a job take the scheduler down
            log.exception("job %s failed to run", record.name)
            with self.lock:
                self._set_state(job, records.FAILED, f"the trainer could not run the job: {exc}")
        finally:
            self._flush_log(job)
            with self.lock:
                self.running.pop(record.job_id, None)
                job.proc = None
                self.cond.notify_all()
                self._news(job)
            self._after_end(job)

    def _run_child(self, job: Job) -> None:
        record = job.record
        work_dir = self.work_root / record.job_id
        work_dir.mkdir(parents=True, exist_ok=True)
        spec = record.spec
        cfg = {
            "job_id": record.job_id,
            "adapter": f"{type(self.adapter).__module__}:{type(self.adapter).__name__}",
            "store_url": self.store_url,
            "work_dir": str(work_dir.resolve()),
            "cache_root": str(self.cache_root.resolve()),
            "train_spec": self._train_spec(record).__dict__,
            "task_type": record.task_type,
            "layout": self.adapter.dataset_format(record.task_type),
            "manifest_key": record.manifest_key,
            "snapshot": record.snapshot,
            "split_seed": record.split_seed,
            "val_fraction": record.val_fraction,
            "resume": job.resume,
            "keep_last": int(spec.get("keepLastCheckpoints", 0)) or 2,
            "best_metric": record.best_metric_name,
            "pretrained_key": record.init_key
            or (
                self.adapter.pretrained_key(record.model, record.task_type)
                if spec.get("pretrained")
                else ""
            ),
            "init_from": str(spec.get("initFrom", "")),
            "job_name": record.name,
            "spec": record.spec,
            "stop_requested": record.stop_reason == "stop_early",
            "parent_pid": os.getpid(),
        }
        job_file = work_dir / "job-config.json"
        job_file.write_text(json.dumps(cfg, indent=1))
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env["VISIONMESH_EVENTS_FD"] = str(write_fd)
        env["PYTHONUNBUFFERED"] = "1"
        with self.lock:
            if self.draining or job.cancel_requested:
                os.close(read_fd)
                os.close(write_fd)
                if job.cancel_requested:
                    self._set_state(job, records.CANCELLED)
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
        deadline_msg = (
            f"stopped after max_duration_seconds={record.spec.get('maxDurationSeconds')} "
            f"(epoch {record.current_epoch} of {record.total_epochs}; checkpoints kept)"
        )
        if job.cancel_requested:
            self._append_log(job, "[visionmesh] cancelled; checkpoints discarded")
            self._set_state(job, records.CANCELLED)
            self._discard_checkpoints(job)
        elif self.draining:
            self._append_log(job, "[visionmesh] trainer shutting down: job INTERRUPTED")
            self._set_state(job, records.INTERRUPTED)
        elif job.done_event is not None and rc == 0:
            if job.deadline_hit:
                self._set_state(job, records.FAILED, deadline_msg)
            else:
                if job.done_event.get("stopped_early"):
                    self._append_log(job, "[visionmesh] stopped early on request")
                record.error = ""
                self._set_state(job, records.SUCCEEDED)
        elif job.error_event:
            self._set_state(job, records.FAILED, job.error_event)
        elif job.deadline_hit:
            self._set_state(job, records.FAILED, deadline_msg)
        else:
            if rc < 0:
                name = signal.Signals(-rc).name if -rc in signal.Signals._value2member_map_ else rc
                why = f"the training process was killed by {name}"
                if rc == -signal.SIGKILL:
                    why += " (most likely out of memory)"
            else:
                why = f"the training process exited with code {rc}"
            self._set_state(job, records.FAILED, why + "; see the job's log")
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
                    event = json.loads(raw)
                except ValueError:
                    continue
                try:
                    self._on_event(job, event)
                except Exception:
                    log.exception("bad event from %s: %r", job.record.name, event)

    def _on_event(self, job: Job, event: dict[str, Any]) -> None:
        kind = event.get("event")
        record = job.record
        send_stop = False
        with self.lock:
            if kind == "state":
                first = not job.worker_ready
                job.worker_ready = True
                send_stop = first and job.stop_signal_pending
                state = event["state"]
                if state == records.RUNNING and event.get("device"):
                    self._append_log(job, f"[visionmesh] running on {event['device']}")
                if record.state != state and not job.cancel_requested:
                    self._set_state(job, state)
            elif kind == "prepared":
                job.prepared = event
                how = "from the cache" if event.get("cached") else "built"
                self._append_log(
                    job,
                    f"[visionmesh] dataset ready in {float(event.get('seconds', 0)):.2f}s ({how}; "
                    f"{event.get('downloaded_blobs', 0)} images downloaded; {event.get('counts')})",
                )
                record.class_names = list(event.get("class_names", []))
                record.category_ids = [int(c) for c in event.get("category_ids", [])]
                if not record.conversion:
                    record.conversion = str(event.get("conversion", ""))
                self._persist(job)
            elif kind == "epoch":
                item = event.get("record")
                if item is not None and all(m["epoch"] != item["epoch"] for m in job.metrics):
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
                for ckpt in event.get("checkpoints", []):
                    if ckpt.get("deleted"):
                        by_name.pop(ckpt["filename"], None)
                    else:
                        by_name[ckpt["filename"]] = ckpt
                order = {"best.pt": 0, "last.pt": 1}
                record.checkpoints = sorted(
                    by_name.values(),
                    key=lambda c: (order.get(c["filename"], 2), -int(c.get("epoch", 0))),
                )
                self._persist(job)
                self.cond.notify_all()
                self._news(job)
            elif kind == "done":
                job.done_event = event
            elif kind == "error":
                job.error_event = str(event.get("message", "training failed"))
        if send_stop:
            self._request_stop(job)
