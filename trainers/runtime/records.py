"""Job records as persisted in the object store, and their protobuf form.

``runs/<job>/job.json``      the job (spec, state, snapshot, times, best, checkpoints, ...)
``runs/<job>/metrics.jsonl`` one JSON object per finished epoch (written by the job's worker)
``runs/<job>/log.txt``       the job's log (uploaded by the server while the job runs)
``checkpoints/<job>/last.pt, best.pt, epoch_<n>.pt``
``checkpoints/<job>/best.onnx, best.torchscript`` (ExportModel, beside the checkpoints)
``runs/<job>/evaluation.json`` + ``runs/<job>/evaluation/<picture>.png`` (GetEvaluation)
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from google.protobuf import timestamp_pb2

from trainers.runtime.lifecycle import QUEUED
from visionmesh.v1 import common_pb2, trainer_pb2

# trainers/{framework}/jobs/{job_id}
JOB_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
JOB_NAME_RE = re.compile(r"^trainers/([a-z0-9_-]{1,32})/jobs/([A-Za-z0-9_-]{1,64})$")
CHECKPOINT_NAME_RE = re.compile(
    r"^trainers/([a-z0-9_-]{1,32})/jobs/([A-Za-z0-9_-]{1,64})/checkpoints/"
    r"(best\.pt|last\.pt|epoch_[0-9]{1,6}\.pt|(?:best|last)\.(?:onnx|torchscript))$"
)
EXPORT_NAME_RE = re.compile(
    r"^trainers/([a-z0-9_-]{1,32})/jobs/([A-Za-z0-9_-]{1,64})/exports/([a-z]+)$"
)
EVALUATION_NAME_RE = re.compile(
    r"^trainers/([a-z0-9_-]{1,32})/jobs/([A-Za-z0-9_-]{1,64})/evaluation$"
)
WEIGHTS_NAME_RE = re.compile(r"^trainers/([a-z0-9_-]{1,32})/weights/([A-Za-z0-9_.-]{1,128})$")
# ModelFormat enum suffix -> (resource segment, file extension)
EXPORT_FORMATS = {"onnx": "onnx", "torchscript": "torchscript"}


def run_key(job_id: str, name: str) -> str:
    return f"runs/{job_id}/{name}"


def checkpoint_key(job_id: str, filename: str) -> str:
    return f"checkpoints/{job_id}/{filename}"


def trainer_name(framework: str) -> str:
    return f"trainers/{framework}"


def job_name(framework: str, job_id: str) -> str:
    """The job's resource name: ``trainers/{framework}/jobs/{job_id}`` (AIP-122)."""
    return f"{trainer_name(framework)}/jobs/{job_id}"


def task_enum(task: str) -> int:
    return common_pb2.TaskType.Value(f"TASK_TYPE_{task.upper()}")


def task_name(value: int) -> str:
    return common_pb2.TaskType.Name(value).removeprefix("TASK_TYPE_").lower()


def _ts(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if not seconds:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


@dataclass
class JobRecord:
    job_id: str
    framework: str
    owner: str  # users/<username>
    request_id: str
    spec: dict[str, Any]  # the resolved TrainingSpec (json_format of the proto, with defaults)
    task_type: str
    model: str
    dataset: str  # as requested
    snapshot: str = ""
    manifest_key: str = ""
    split_seed: int = 0
    split_generated: bool = False
    val_fraction: float = 0.2
    conversion: str = ""
    state: str = QUEUED
    error: str = ""
    create_time: float = field(default_factory=time.time)
    start_time: float = 0.0
    end_time: float = 0.0
    update_time: float = field(default_factory=time.time)
    current_epoch: int = 0
    total_epochs: int = 0
    best_epoch: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_metric_name: str = ""
    checkpoints: list[dict[str, Any]] = field(default_factory=list)
    resume_count: int = 0
    class_names: list[str] = field(default_factory=list)
    category_ids: list[int] = field(default_factory=list)
    # running seconds accumulated over previous runs (for the max-duration deadline)
    run_seconds: float = 0.0
    # why the current run should stop early: "", "stop_early", "deadline"
    stop_reason: str = ""
    # exports (ExportModel), one per format: {"format", "state", "error", "filename", "key",
    # "size_bytes", "source", "image_size", "create_time", "update_time"}
    exports: list[dict[str, Any]] = field(default_factory=list)
    # spec.init_from resolved at StartTraining: the object store key of the start weights
    init_key: str = ""
    # the trainer replica that runs the job (or ran it last): set when a replica claims it
    replica: str = ""

    @property
    def name(self) -> str:
        return job_name(self.framework, self.job_id)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=1, sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> JobRecord:
        raw = json.loads(data)
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in raw.items() if k in known})

    def touch(self) -> None:
        self.update_time = time.time()

    def to_proto(self, queue_position: int = 0) -> trainer_pb2.Job:
        from google.protobuf import json_format

        spec = trainer_pb2.TrainingSpec()
        json_format.ParseDict(self.spec, spec, ignore_unknown_fields=True)
        job = trainer_pb2.Job(
            name=self.name,
            state=trainer_pb2.JobState.Value(f"JOB_STATE_{self.state}"),
            spec=spec,
            framework=self.framework,
            snapshot=self.snapshot,
            split_seed=self.split_seed,
            split_generated=self.split_generated,
            owner=self.owner,
            request_id=self.request_id,
            error=self.error,
            current_epoch=self.current_epoch,
            total_epochs=self.total_epochs,
            best_epoch=self.best_epoch,
            best_metrics=self.best_metrics,
            conversion=self.conversion,
            resume_count=self.resume_count,
            queue_position=queue_position,
            best_metric_name=self.best_metric_name,
            replica=self.replica,
        )
        for attr in ("create_time", "start_time", "end_time", "update_time"):
            ts = _ts(getattr(self, attr))
            if ts is not None:
                getattr(job, attr).CopyFrom(ts)
        for ckpt in self.checkpoints:
            item = job.checkpoints.add(
                name=f"{self.name}/checkpoints/{ckpt['filename']}",
                filename=ckpt["filename"],
                key=ckpt["key"],
                epoch=int(ckpt.get("epoch", 0)),
                size_bytes=int(ckpt.get("size_bytes", 0)),
            )
            ts = _ts(ckpt.get("time"))
            if ts is not None:
                item.create_time.CopyFrom(ts)
        for export in self.exports:
            job.exports.append(export_to_proto(self, export))
        return job


def export_to_proto(record: JobRecord, export: dict[str, Any]) -> trainer_pb2.ModelExport:
    fmt = export["format"]
    msg = trainer_pb2.ModelExport(
        name=f"{record.name}/exports/{fmt}",
        format=trainer_pb2.ModelFormat.Value(f"MODEL_FORMAT_{fmt.upper()}"),
        state=trainer_pb2.ExportState.Value(f"EXPORT_STATE_{export['state']}"),
        error=export.get("error", ""),
        source=export.get("source", ""),
        image_size=int(export.get("image_size", 0)),
    )
    if export["state"] == "SUCCEEDED" and export.get("filename"):
        msg.file.CopyFrom(
            trainer_pb2.Checkpoint(
                name=f"{record.name}/checkpoints/{export['filename']}",
                filename=export["filename"],
                key=export.get("key", ""),
                size_bytes=int(export.get("size_bytes", 0)),
            )
        )
        ts = _ts(export.get("update_time"))
        if ts is not None:
            msg.file.create_time.CopyFrom(ts)
    for attr in ("create_time", "update_time"):
        ts = _ts(export.get(attr))
        if ts is not None:
            getattr(msg, attr).CopyFrom(ts)
    return msg


def epoch_to_proto(record: dict[str, Any]) -> trainer_pb2.EpochMetrics:
    msg = trainer_pb2.EpochMetrics(
        epoch=int(record["epoch"]),
        epochs=int(record.get("epochs", 0)),
        values={k: float(v) for k, v in record.get("values", {}).items()},
        epoch_seconds=float(record.get("epoch_seconds", 0.0)),
        images_per_second=float(record.get("images_per_second", 0.0)),
        eta_seconds=float(record.get("eta_seconds", 0.0)),
        is_best=bool(record.get("is_best", False)),
    )
    ts = _ts(record.get("time"))
    if ts is not None:
        msg.time.CopyFrom(ts)
    return msg


def parse_metrics_jsonl(data: bytes) -> list[dict[str, Any]]:
    """Epoch records, first occurrence of each epoch kept, sorted by epoch."""
    seen: dict[int, dict[str, Any]] = {}
    for line in data.decode(errors="replace").splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            record = json.loads(line)
            epoch = int(record["epoch"])
        except (ValueError, KeyError, TypeError):
            continue
        seen.setdefault(epoch, record)
    return [seen[e] for e in sorted(seen)]


def metrics_jsonl(records: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(r, sort_keys=True).encode() + b"\n" for r in records)


def lower_is_better(metric: str) -> bool:
    """A metric's direction: losses (``*loss``) are minimised, the rest (top1, mAP, mIoU)
    maximised. The one rule for "best epoch", used by the runtime and the torch loop."""
    return metric.endswith("loss")


def score(metric: str, value: float) -> float:
    """``value`` oriented so that higher is better (a loss negated)."""
    return -float(value) if lower_is_better(metric) else float(value)


def is_better(metric: str, value: float, best: float | None) -> bool:
    """True when ``value`` of ``metric`` beats ``best`` (None: nothing to beat yet)."""
    if best is None:
        return True
    return score(metric, value) > score(metric, best)
