"""What the trainer server and a job's worker (:mod:`trainers.runtime.worker`) say to each other.

The server writes a :class:`WorkerConfig` to ``<work_dir>/job-config.json`` and starts the
worker with it; the worker writes one event per line (JSON, ``{"event": <kind>, ...}``) on
the pipe named by ``VISIONMESH_EVENTS_FD``:

``state``     :class:`StateEvent`     PREPARING, then RUNNING (with the device); no other state
``prepared``  :class:`PreparedEvent`  the dataset is ready (trainers.runtime.prepare)
``epoch``     :class:`EpochEvent`     an epoch's record (None: checkpoints only) and checkpoints
``done``      :class:`DoneEvent`      training ended (stopped_early: on request)
``error``     :class:`ErrorEvent`     training failed (the worker then exits non-zero)

The manager applies a state through :func:`trainers.runtime.lifecycle.transition`.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

from trainers.runtime.adapter import TrainSpec
from trainers.runtime.lifecycle import WORKER_STATES


@dataclass
class WorkerConfig:
    job_id: str
    train_spec: TrainSpec
    work_dir: str
    best_metric: str = ""
    adapter: str = ""  # "module:Class" of the FrameworkAdapter
    store_url: str = ""
    cache_root: str = ""
    task_type: str = ""
    layout: str = ""
    manifest_key: str = ""
    snapshot: str = ""
    split_seed: int = 0
    val_fraction: float = 0.2
    resume: bool = False
    keep_last: int = 2
    pretrained_key: str = ""
    init_from: str = ""
    job_name: str = ""
    spec: dict[str, Any] = field(default_factory=dict)  # the job's TrainingSpec, as JSON
    stop_requested: bool = False
    parent_pid: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str | bytes) -> WorkerConfig:
        raw = json.loads(text)
        raw["train_spec"] = TrainSpec(**raw["train_spec"])
        return cls(**raw)


@dataclass(frozen=True)
class StateEvent:
    KIND: ClassVar[str] = "state"
    state: str
    device: str = ""

    def __post_init__(self) -> None:
        if self.state not in WORKER_STATES:
            raise ValueError(f"a worker may report {sorted(WORKER_STATES)}, not {self.state!r}")


@dataclass(frozen=True)
class PreparedEvent:
    KIND: ClassVar[str] = "prepared"
    path: str = ""
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    conversion: str = ""
    split_generated: bool = False
    cached: bool = False
    downloaded_blobs: int = 0
    seconds: float = 0.0


@dataclass(frozen=True)
class EpochEvent:
    KIND: ClassVar[str] = "epoch"
    record: dict[str, Any] | None = None  # None: only checkpoints changed
    checkpoints: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class DoneEvent:
    KIND: ClassVar[str] = "done"
    stopped_early: bool = False


@dataclass(frozen=True)
class ErrorEvent:
    KIND: ClassVar[str] = "error"
    message: str = "training failed"


Event = StateEvent | PreparedEvent | EpochEvent | DoneEvent | ErrorEvent
KINDS: dict[str, type[Event]] = {
    cls.KIND: cls for cls in (StateEvent, PreparedEvent, EpochEvent, DoneEvent, ErrorEvent)
}


def encode(event: Event) -> bytes:
    """One JSON line."""
    return (json.dumps({"event": event.KIND, **asdict(event)}) + "\n").encode()


def decode(line: bytes | str) -> Event:
    """The event of one line; ValueError when it is not one (unknown kind, bad state)."""
    raw = json.loads(line)
    if not isinstance(raw, dict):
        raise ValueError(f"not an event: {raw!r}")
    cls = KINDS.get(raw.pop("event", None))
    if cls is None:
        raise ValueError(f"unknown event {line!r}")
    known = {f.name for f in fields(cls)}
    try:
        return cls(**{k: v for k, v in raw.items() if k in known})
    except TypeError as exc:
        raise ValueError(f"bad {cls.KIND} event: {exc}") from None
