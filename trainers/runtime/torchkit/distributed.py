"""Distributed data parallel for the torch loop: one job trained by several processes.

``TrainingSpec.devices`` > 1 (or a GPU list such as "0,1") makes
:meth:`trainers.runtime.torchkit.loop.TorchTrainer.run` train in ``world_size`` processes
with torch.distributed: NCCL on CUDA (one GPU per process), gloo on CPU. The job's worker
process is rank 0: it keeps the events pipe to the trainer server and its signals
(SIGUSR1 stop-early; SIGTERM to the process group cancels, and the other ranks are in
that group). :func:`launched` starts ranks 1..N-1 as ``spawn`` children of it, each
building the same engine trainer from a picklable copy of the job (:class:`RankJob`);
rank 0 hosts the rendezvous (a TCPStore on 127.0.0.1, a port the OS picks).

Rank 0 alone validates, saves checkpoints, reports epochs and logs; the other ranks train
their shard and follow rank 0's epoch values and stop decision (:class:`Team`), so the
job's metric stream is the one of a single-process job. A rank that dies (an error, a
signal, out of memory) takes the job down with an error that names it: a watcher thread
in rank 0 notices its exit at once; collectives that could still wait for it time out
after ``VISIONMESH_DIST_TIMEOUT_SECONDS`` (default 1800). Ranks 1..N-1 die with rank 0
(PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from trainers.runtime.adapter import Placement, TrainSpec

#: Seconds rank 0 gives itself to fail on its own once another rank died, before it exits.
DEAD_RANK_GRACE_SECONDS = 20.0


def timeout_seconds() -> float:
    """The collectives' and rendezvous' timeout (``VISIONMESH_DIST_TIMEOUT_SECONDS``)."""
    try:
        return max(float(os.environ.get("VISIONMESH_DIST_TIMEOUT_SECONDS", "1800")), 1.0)
    except ValueError:
        return 1800.0


@dataclass
class Team:
    """The processes that train one job, seen from one of them. ``Team()`` is one process:
    every collective returns its input."""

    rank: int = 0
    size: int = 1
    backend: str = ""

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if self.size == 1:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.size
        dist.all_gather_object(out, obj)
        return out

    def share(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if self.size == 1:
            return obj
        import torch.distributed as dist

        box = [obj if self.leader else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]


@dataclass
class RankJob:
    """The JobContext of ranks 1..N-1: rank 0's job fields, silent, never reporting."""

    spec: TrainSpec
    dataset_dir: Path
    class_names: list[str]
    work_dir: Path
    resume_from: Path | None
    pretrained_weights: Path | None
    category_ids: list[int] = field(default_factory=list)
    images_per_epoch: int = 0

    @classmethod
    def of(cls, job: Any) -> RankJob:
        return cls(
            spec=job.spec,
            dataset_dir=Path(job.dataset_dir),
            class_names=list(job.class_names),
            work_dir=Path(job.work_dir),
            resume_from=Path(job.resume_from) if job.resume_from else None,
            pretrained_weights=Path(job.pretrained_weights) if job.pretrained_weights else None,
            category_ids=list(getattr(job, "category_ids", []) or []),
            images_per_epoch=int(getattr(job, "images_per_epoch", 0) or 0),
        )

    def report_epoch(self, epoch: int, values: Mapping[str, float], **_: Any) -> bool:
        raise RuntimeError("only rank 0 reports epochs")

    def should_stop(self) -> bool:
        return False

    def log(self, line: str) -> None:
        """Silent: rank 0 speaks for the job."""


def _loopback_only() -> None:
    """Keep gloo's connections on the loopback interface (all ranks are on this machine)."""
    if "GLOO_SOCKET_IFNAME" not in os.environ and Path("/sys/class/net/lo").exists():
        os.environ["GLOO_SOCKET_IFNAME"] = "lo"


def _join(team: Team, port: int, store: Any, placement: Placement) -> None:
    """Join the process group of ``team`` (rank 0 passes the store it hosts)."""
    import torch
    import torch.distributed as dist

    _loopback_only()
    timeout = timedelta(seconds=timeout_seconds())
    if placement.kind == "cuda":
        torch.cuda.set_device(torch.device(placement.rank_device(team.rank)))
    if store is None:
        store = dist.TCPStore("127.0.0.1", port, team.size, is_master=False, timeout=timeout)
    dist.init_process_group(
        team.backend, store=store, rank=team.rank, world_size=team.size, timeout=timeout
    )


def rank_main(
    trainer_cls: type,
    job: RankJob,
    placement: Placement,
    rank: int,
    port: int,
    conn: Any,
    parent_pid: int,
) -> None:
    """Rank ``rank`` (1..N-1): join, train as ``trainer_cls`` does, leave; on an error, print
    it (stderr is the job's log), send its one-line form to rank 0 and exit 1."""
    from trainers.runtime.worker import die_with_parent

    die_with_parent(parent_pid)
    try:
        import torch.distributed as dist

        team = Team(rank, placement.world_size, backend_for(placement))
        _join(team, port, None, placement)
        trainer = trainer_cls(job)
        trainer.team = team
        trainer.train_loop()
        dist.destroy_process_group()
    except BaseException as exc:  # noqa: BLE001 - any failure ends this rank with a reason
        traceback.print_exc()
        with contextlib.suppress(Exception):
            conn.send(f"{type(exc).__name__}: {str(exc).strip()}"[:1000])
        os._exit(1)
    os._exit(0)


def backend_for(placement: Placement) -> str:
    return "nccl" if placement.kind == "cuda" else "gloo"


@dataclass
class _Rank:
    rank: int
    device: str
    process: Any
    conn: Any
    reason: str = ""

    def describe_exit(self) -> str:
        code = self.process.exitcode
        with contextlib.suppress(Exception):
            if not self.reason and self.conn.poll():
                self.reason = str(self.conn.recv())
        if self.reason:
            return f"failed: {self.reason}"
        if code is not None and code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = str(-code)
            hint = " (most likely out of memory)" if -code == signal.SIGKILL else ""
            return f"was killed by {name}{hint}"
        return f"exited with code {code}"


class _Watcher(threading.Thread):
    """Notices ranks 1..N-1 that end with an error while rank 0 still trains; logs it and,
    if rank 0 has not failed by itself within the grace period, ends the job."""

    def __init__(self, ranks: list[_Rank], log: Callable[[str], None]) -> None:
        super().__init__(daemon=True, name="dist-watch")
        self.ranks = ranks
        self.log = log
        self.failure = ""
        self._halt = threading.Event()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)

    def run(self) -> None:
        while not self._halt.wait(0.5):
            dead = [r for r in self.ranks if r.process.exitcode not in (None, 0)]
            if not dead:
                continue
            r = dead[0]
            self.failure = (
                f"distributed training: rank {r.rank} of {len(self.ranks) + 1} "
                f"(pid {r.process.pid}, {r.device}) {r.describe_exit()}"
            )
            self.log(f"[visionmesh] {self.failure}; stopping the job")
            if self._halt.wait(DEAD_RANK_GRACE_SECONDS):
                return  # rank 0 failed (or ended) by itself
            self.log(f"[visionmesh] {self.failure}: rank 0 is still waiting for it; exiting")
            for other in self.ranks:
                with contextlib.suppress(Exception):
                    other.process.kill()
            os._exit(1)


@contextlib.contextmanager
def launched(trainer_cls: type, job: Any, placement: Placement) -> Iterator[Team]:
    """Start ranks 1..N-1 of ``placement`` training a ``trainer_cls`` of ``job``, join the
    process group as rank 0 and yield its :class:`Team`; on leaving, wait for the ranks to
    finish (or stop them after an error) and leave the group."""
    import torch.distributed as dist
    import torch.multiprocessing as mp

    world = placement.world_size
    backend = backend_for(placement)
    timeout = timedelta(seconds=timeout_seconds())
    store = dist.TCPStore(
        "127.0.0.1", 0, world, is_master=True, timeout=timeout, wait_for_workers=False
    )
    ctx = mp.get_context("spawn")
    rank_job = RankJob.of(job)
    ranks: list[_Rank] = []
    for rank in range(1, world):
        recv, send = ctx.Pipe(duplex=False)
        process = ctx.Process(
            target=rank_main,
            args=(trainer_cls, rank_job, placement, rank, store.port, send, os.getpid()),
            name=f"visionmesh-rank{rank}",
        )
        process.start()
        send.close()
        ranks.append(_Rank(rank, placement.rank_device(rank), process, recv))
    job.log(
        f"distributed: world size {world}, backend {backend}, rendezvous 127.0.0.1:"
        f"{store.port}; rank 0 pid {os.getpid()} on {placement.rank_device(0)}, "
        + ", ".join(f"rank {r.rank} pid {r.process.pid} on {r.device}" for r in ranks)
    )
    watcher = _Watcher(ranks, job.log)
    watcher.start()
    ok = False
    try:
        _join(Team(0, world, backend), store.port, store, placement)
        yield Team(0, world, backend)
        deadline = time.monotonic() + 120
        for r in ranks:
            r.process.join(max(deadline - time.monotonic(), 0.1))
        unfinished = [r for r in ranks if r.process.exitcode != 0]
        if unfinished:
            r = unfinished[0]
            what = "did not finish" if r.process.exitcode is None else r.describe_exit()
            raise RuntimeError(f"distributed training: rank {r.rank} {what} after the last epoch")
        ok = True
    except Exception as exc:
        # A collective that lost a peer fails here before the watcher's next look.
        deadline = time.monotonic() + 3
        while not watcher.failure and time.monotonic() < deadline:
            if any(r.process.exitcode not in (None, 0) for r in ranks):
                time.sleep(0.6)
                break
            time.sleep(0.1)
        if watcher.failure:
            raise RuntimeError(watcher.failure) from exc
        raise
    finally:
        watcher.stop()
        _stop_ranks(ranks)
        if dist.is_initialized() and (ok or backend == "gloo"):
            with contextlib.suppress(Exception):
                dist.destroy_process_group()


def _stop_ranks(ranks: list[_Rank]) -> None:
    for r in ranks:
        if r.process.exitcode is None:
            with contextlib.suppress(Exception):
                r.process.terminate()
    deadline = time.monotonic() + 5
    for r in ranks:
        r.process.join(max(deadline - time.monotonic(), 0.1))
        if r.process.exitcode is None:
            with contextlib.suppress(Exception):
                r.process.kill()
                r.process.join(5)
