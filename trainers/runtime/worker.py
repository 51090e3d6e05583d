"""One job's child process: ``python -m trainers.runtime.worker JOB_FILE``.

The trainer server starts it in its own process group with a job file (a WorkerConfig) and
a pipe (``VISIONMESH_EVENTS_FD``) on which the worker writes its events, one JSON line each
(:mod:`trainers.runtime.worker_protocol`).

The worker itself writes what must survive a crash of either process, in this order per
epoch: the epoch's line in ``runs/<job>/metrics.jsonl`` (epochs already there are never
written twice), then ``checkpoints/<job>/last.pt`` (+ ``best.pt``, ``epoch_<n>.pt`` per the
keep-last-k policy), then the event, so an epoch a subscriber has seen can be resumed from. It dies with its server (PR_SET_PDEATHSIG), stops after
the current epoch on SIGUSR1 (stop-early, deadline), and exits non-zero on any error.
stdout/stderr are the job's log.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from trainers.runtime import evaluation, records
from trainers.runtime.adapter import FrameworkAdapter
from trainers.runtime.lifecycle import PREPARING, RUNNING
from trainers.runtime.mlflow_log import Tracker
from trainers.runtime.prepare import prepare_dataset
from trainers.runtime.worker_protocol import (
    DoneEvent,
    EpochEvent,
    ErrorEvent,
    Event,
    PreparedEvent,
    StateEvent,
    WorkerConfig,
    encode,
)
from visionmesh.store import KeyNotFound, ObjectStore, open_store

PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux), then check it has not already."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if parent_pid and os.getppid() != parent_pid:
        os._exit(70)

    def watch() -> None:  # portable fallback
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(70)

    if parent_pid:
        threading.Thread(target=watch, daemon=True, name="parent-watch").start()


def load_adapter(path: str) -> FrameworkAdapter:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)()


class Events:
    def __init__(self, fd: int | None) -> None:
        self._file = os.fdopen(fd, "wb") if fd is not None else None
        self._lock = threading.Lock()

    def send(self, event: Event) -> None:
        if self._file is None:
            return
        line = encode(event)
        with self._lock:
            try:
                self._file.write(line)
                self._file.flush()
            except BrokenPipeError:  # the server is gone: nothing left to report to
                os._exit(71)


def resolve_device(device: str) -> str:
    """The spec's device, or "cuda:0" when a GPU is usable, else "cpu".

    Without NVIDIA device nodes the answer is "cpu" without importing torch: importing it
    here would start torch's thread pool before the framework configures it (ultralytics
    sets OMP_NUM_THREADS=1 on import), and a job must train exactly as a direct call would.
    """
    if device:
        return device
    if not (Path("/dev/nvidia0").exists() or Path("/proc/driver/nvidia/gpus").exists()):
        return "cpu"
    try:
        import torch

        return "cuda:0" if torch.cuda.is_available() else "cpu"
    except ImportError:
        return "cpu"


class RuntimeJob:
    """The JobContext the adapter sees (see trainers.runtime.adapter.JobContext)."""

    def __init__(
        self,
        cfg: WorkerConfig,
        store: ObjectStore,
        events: Events,
        adapter: FrameworkAdapter,
    ) -> None:
        self.cfg = cfg
        self.job_id = cfg.job_id
        self.store = store
        self.events = events
        self.adapter = adapter
        self.spec = cfg.train_spec
        self.work_dir = Path(cfg.work_dir)
        self.dataset_dir = Path()
        self.class_names: list[str] = []
        self.category_ids: list[int] = []
        self.images_per_epoch = 0
        self.resume_from: Path | None = None
        self.pretrained_weights: Path | None = None
        self.best_metric = cfg.best_metric
        self.keep_last = max(int(cfg.keep_last), 0)
        self.stop_requested = threading.Event()
        self.records: list[dict[str, Any]] = []
        self._last_time = time.time()
        self._run_epoch_seconds: list[float] = []
        self.tracker = Tracker(self.log)

    # -- JobContext -----------------------------------------------------------------------
    def should_stop(self) -> bool:
        return self.stop_requested.is_set()

    def log(self, line: str) -> None:
        print(line, flush=True)

    def report_epoch(
        self,
        epoch: int,
        values: Mapping[str, float],
        *,
        checkpoint: Path | None = None,
        images_seen: int = 0,
        is_best: bool | None = None,
    ) -> bool:
        now = time.time()
        seconds = max(now - self._last_time, 1e-6)
        self._last_time = now
        self._run_epoch_seconds.append(seconds)
        epoch = int(epoch)
        existing = next((r for r in self.records if r["epoch"] == epoch), None)
        record = None
        if existing is None:
            clean = {str(k): float(v) for k, v in values.items()}
            if is_best is None:
                value = clean.get(self.best_metric)
                prior = [r["values"].get(self.best_metric) for r in self.records if r["is_best"]]
                best = prior[-1] if prior else None
                is_best = value is not None and records.is_better(self.best_metric, value, best)
                if value is None and not any(r["is_best"] for r in self.records):
                    is_best = True  # no metric to compare: keep the first as best
            total = self.spec.epochs
            mean = sum(self._run_epoch_seconds) / len(self._run_epoch_seconds)
            images = images_seen or self.images_per_epoch
            record = {
                "epoch": epoch,
                "epochs": total,
                "values": clean,
                "epoch_seconds": seconds,
                "images_per_second": images / seconds if images else 0.0,
                "eta_seconds": max(total - epoch, 0) * mean,
                "is_best": bool(is_best),
                "time": now,
            }
            self.records.append(record)
            self.records.sort(key=lambda r: r["epoch"])
            self.store.put_bytes(
                records.run_key(self.job_id, "metrics.jsonl"), records.metrics_jsonl(self.records)
            )
            self.tracker.epoch(epoch, clean, {"epoch_seconds": seconds})
        else:
            is_best = bool(existing.get("is_best"))
            self.log(f"epoch {epoch} was already recorded before the interruption; not re-counted")
        # checkpoints before the event: an epoch anyone has seen can always be resumed from
        checkpoints = self._store_checkpoints(epoch, checkpoint, bool(is_best))
        self.events.send(EpochEvent(record=record, checkpoints=checkpoints))
        return self.should_stop()

    def replace_checkpoint(self, filename: str, path: Path) -> None:
        """Store the framework's final form of a checkpoint (e.g. ultralytics' best.pt with
        its optimizer stripped) in place of the one stored during training."""
        key = records.checkpoint_key(self.job_id, filename)
        if not Path(path).is_file() or not self.store.exists(key):
            return
        self.store.put_file(key, Path(path))
        epoch = max((r["epoch"] for r in self.records if r.get("is_best")), default=0)
        size = Path(path).stat().st_size
        item = {"filename": filename, "key": key, "size_bytes": size, "time": time.time()}
        if epoch:
            item["epoch"] = epoch
        self.events.send(EpochEvent(record=None, checkpoints=[item]))
        self.log(f"[visionmesh] {filename} replaced by the framework's final form ({size} bytes)")

    # -- internals ------------------------------------------------------------------------
    def _store_checkpoints(
        self, epoch: int, checkpoint: Path | None, is_best: bool
    ) -> list[dict[str, Any]]:
        if checkpoint is None or not Path(checkpoint).is_file():
            return []
        job = self.job_id
        size = Path(checkpoint).stat().st_size
        now = time.time()
        last = records.checkpoint_key(job, "last.pt")
        self.store.put_file(last, checkpoint)
        out = [
            {"filename": "last.pt", "key": last, "epoch": epoch, "size_bytes": size, "time": now}
        ]
        if is_best:
            best = records.checkpoint_key(job, "best.pt")
            self.store.copy(last, best)
            out.append(
                {
                    "filename": "best.pt",
                    "key": best,
                    "epoch": epoch,
                    "size_bytes": size,
                    "time": now,
                }
            )
        if self.keep_last > 0:
            name = f"epoch_{epoch}.pt"
            key = records.checkpoint_key(job, name)
            self.store.copy(last, key)
            out.append(
                {"filename": name, "key": key, "epoch": epoch, "size_bytes": size, "time": now}
            )
            kept = sorted(
                (
                    int(k.rsplit("epoch_", 1)[1].removesuffix(".pt"))
                    for k in self.store.list(records.checkpoint_key(job, "epoch_"))
                    if k.endswith(".pt")
                ),
            )
            for old in kept[: -self.keep_last]:
                with contextlib.suppress(KeyNotFound):
                    self.store.delete(records.checkpoint_key(job, f"epoch_{old}.pt"))
                out.append({"filename": f"epoch_{old}.pt", "deleted": True})
        return out


def run(cfg: WorkerConfig, events: Events) -> int:
    adapter = load_adapter(cfg.adapter)
    store = open_store(cfg.store_url)
    job = RuntimeJob(cfg, store, events, adapter)
    signal.signal(signal.SIGUSR1, lambda *_: job.stop_requested.set())
    if cfg.stop_requested:
        job.stop_requested.set()
    job.work_dir.mkdir(parents=True, exist_ok=True)

    events.send(StateEvent(PREPARING))
    prepared = prepare_dataset(
        store,
        manifest_key=cfg.manifest_key,
        snapshot=cfg.snapshot,
        task_type=cfg.task_type,
        layout=cfg.layout,
        split_seed=int(cfg.split_seed),
        val_fraction=float(cfg.val_fraction),
        cache_root=Path(cfg.cache_root),
        log=job.log,
        user=f"{adapter.framework}-{job.job_id}",
    )
    events.send(
        PreparedEvent(
            path=str(prepared.path),
            class_names=prepared.class_names,
            category_ids=prepared.category_ids,
            counts=prepared.counts,
            conversion=prepared.conversion,
            split_generated=prepared.split_generated,
            cached=prepared.cached,
            downloaded_blobs=prepared.downloaded_blobs,
            seconds=prepared.seconds,
        )
    )
    for warning in prepared.warnings:
        job.log(f"[visionmesh] dataset: {warning}")
    job.dataset_dir = prepared.path
    job.class_names = prepared.class_names
    job.category_ids = prepared.category_ids
    job.images_per_epoch = int(prepared.counts.get("train", 0))

    with contextlib.suppress(KeyNotFound):
        job.records = records.parse_metrics_jsonl(
            store.get_bytes(records.run_key(job.job_id, "metrics.jsonl"))
        )
    last_key = records.checkpoint_key(job.job_id, "last.pt")
    if cfg.resume and job.records and store.exists(last_key):
        if max(r["epoch"] for r in job.records) >= job.spec.epochs:
            job.log("every epoch is already recorded: nothing left to train")
            events.send(DoneEvent(stopped_early=False))
            return 0
        target = job.work_dir / "resume" / "last.pt"
        store.download(last_key, target)
        job.resume_from = target.resolve()
    elif job.records:
        # A fresh start over a job that has history (no checkpoint survived): start over.
        job.records = []
        store.put_bytes(records.run_key(job.job_id, "metrics.jsonl"), b"")
    if job.resume_from is None and cfg.pretrained_key:
        key = cfg.pretrained_key
        target = job.work_dir / "pretrained" / Path(key).name
        try:
            store.download(key, target)
        except KeyNotFound:
            raise RuntimeError(
                f"pretrained weights {key} are not in the object store; upload them there or "
                "train without pretrained"
            ) from None
        job.pretrained_weights = target.resolve()
        if cfg.init_from:
            _log_init(job, store, cfg.init_from, key)

    job.spec.device = resolve_device(job.spec.device)
    job.log(f"device {job.spec.device}")
    events.send(StateEvent(RUNNING, device=job.spec.device))
    job._last_time = time.time()
    job.tracker.start(
        job_name=cfg.job_name or job.job_id,
        framework=adapter.framework,
        spec=cfg.spec or asdict(cfg.train_spec),
    )
    try:
        adapter.train(job)
    except BaseException:
        job.tracker.finish("FAILED", [])
        raise
    artifacts: list[tuple[Path, str]] = []
    try:
        result = evaluation.run(job, adapter, store, job_name=cfg.job_name or job.job_id)
        if result is not None:
            folder = job.work_dir / "evaluation"
            artifacts = [(folder / "best.pt", "checkpoints")]
            artifacts += [(folder / name, "evaluation") for name in result["pictures"]]
    except Exception as exc:  # an evaluation problem must not fail a trained job
        traceback.print_exc()
        job.log(f"[visionmesh] evaluation failed: {type(exc).__name__}: {exc}")
    job.tracker.finish("SUCCEEDED", artifacts)
    events.send(DoneEvent(stopped_early=job.stop_requested.is_set()))
    return 0


def _log_init(job: RuntimeJob, store: ObjectStore, init_from: str, key: str) -> None:
    """Say in the job log what init_from starts from and whether the head is re-initialised."""
    classes: list[str] | None = None
    match = records.JOB_NAME_RE.match(init_from)
    if match:
        with contextlib.suppress(KeyNotFound, ValueError, TypeError):
            source = records.JobRecord.from_json(
                store.get_bytes(records.run_key(match.group(2), "job.json"))
            )
            classes = list(source.class_names)
    line = f"[visionmesh] init_from {init_from}: starting from {key}"
    if classes is not None:
        if classes == list(job.class_names):
            line += f" (same {len(classes)} classes: head kept)"
        else:
            line += (
                f" ({len(classes)} classes there, {len(job.class_names)} here: the "
                "classification head is re-initialised, the rest is kept)"
            )
    job.log(line)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cfg = WorkerConfig.from_json(Path(argv[0]).read_text())
    die_with_parent(cfg.parent_pid)
    fd = os.environ.get("VISIONMESH_EVENTS_FD")
    events = Events(int(fd) if fd else None)
    try:
        return run(cfg, events)
    except Exception as exc:
        traceback.print_exc()
        message = str(exc).strip() or type(exc).__name__
        if isinstance(exc, MemoryError):
            message = "out of memory"
        events.send(ErrorEvent(message=f"{type(exc).__name__}: {message}"[:2000]))
        return 1


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # don't wait for framework threads / dataloader workers
