"""The TrainerService every framework's process serves, around one FrameworkAdapter.

The process stays light: it never imports torch or the framework (jobs run in
:mod:`trainers.runtime.worker` children, predictions in a :mod:`trainers.runtime.predictor`
child). Every RPC but GetCapabilities needs a signed-in caller; a job is visible to the
user who started it only (others get NOT_FOUND). StartTraining forwards the caller's token to
dataset_svc to snapshot the dataset and re-check its compatibility.

StreamMetrics sends each finished epoch once (history first, then live) and, when the job
ends, one last message without ``metrics`` carrying the final ``state``.
"""

from __future__ import annotations

import base64
import contextlib
import io
import logging
import re
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.api import httpbody_pb2
from google.protobuf import json_format

from trainers.runtime import lifecycle, records
from trainers.runtime.adapter import (
    FrameworkAdapter,
    Placement,
    SpecError,
    TrainSpec,
    parse_devices,
    single_device,
)
from trainers.runtime.jobs import Job, JobManager
from trainers.runtime.jobstore import ReplicaRefused
from trainers.runtime.models_io import ModelsIOMixin
from trainers.runtime.predictor import PredictError, PredictPool
from trainers.runtime.records import JobRecord, task_enum, task_name
from visionmesh import config
from visionmesh.errors import ServiceError, grpc_errors
from visionmesh.server import Service, parse_args, run, service_name
from visionmesh.store import KeyNotFound, open_store
from visionmesh.v1 import (
    common_pb2,
    compatibility_pb2,
    compatibility_pb2_grpc,
    dataset_pb2,
    dataset_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)

log = logging.getLogger("visionmesh.trainer")

__all__ = ["TrainerServicer", "main", "task_enum"]

DATASET_RE = re.compile(r"^datasets/[^/]+$")
SNAPSHOT_RE = re.compile(r"^datasets/[^/]+/snapshots/[^/]+$")
DOWNLOAD_PIECE_BYTES = 1024 * 1024
PAGE_TOKEN_RE = re.compile(r"^[0-9]{1,9}$")
# A waiting stream re-checks its job this often even without news (a safety net only:
# changes and the client going away wake it at once).
STREAM_RECHECK_SECONDS = 30.0


def gpu_names() -> list[str]:
    """Names of the NVIDIA GPUs this machine has (nvidia-smi; else one per /dev/nvidiaN)."""
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            out = subprocess.run(
                [exe, "--query-gpu=name", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            ).stdout
            return [line.strip() for line in out.splitlines() if line.strip()]
        except (OSError, subprocess.SubprocessError):
            return []
    nodes = [p for p in Path("/dev").glob("nvidia[0-9]*") if p.name[6:].isdigit()]
    return ["NVIDIA GPU"] * len(nodes)


def detect_device() -> str:
    """The device text of GetCapabilities: ``cuda:0 (<GPU name>)`` via nvidia-smi, else ``cpu``."""
    names = gpu_names()
    return f"cuda:0 ({names[0]})" if names else "cpu"


def check_image(data: bytes) -> None:
    """ServiceError(INVALID_ARGUMENT, field ``image``) unless PIL reads ``data`` as a picture.

    Runs in the server process before a prediction starts (or a model is loaded): a HEIC
    photo without a plugin, a PDF or a truncated header never reaches the predictor.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, (width, height) = image.format, image.size
            image.verify()
    except UnidentifiedImageError:
        head = data[4:12]
        hint = (
            " (it looks like HEIC/HEIF: convert it to JPEG or PNG first)"
            if head[:4] == b"ftyp" and head[4:8] in (b"heic", b"heix", b"mif1", b"msf1", b"avif")
            else ""
        )
        raise ServiceError(
            "INVALID_ARGUMENT",
            f"image ({len(data)} bytes) is not a picture this trainer can read{hint}; send "
            "JPEG, PNG, BMP, GIF, TIFF or WebP bytes",
            "image",
        ) from None
    except Image.DecompressionBombError as exc:
        raise ServiceError("INVALID_ARGUMENT", f"image is too large: {exc}", "image") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ServiceError(
            "INVALID_ARGUMENT", f"image is a damaged picture ({exc}); send it again", "image"
        ) from None
    if width <= 0 or height <= 0:
        raise ServiceError("INVALID_ARGUMENT", f"image ({fmt}) has no pixels", "image")


def _identity() -> tuple[str, str]:
    from visionmesh import auth

    identity = auth.current_identity()
    if identity is None:
        raise ServiceError("UNAUTHENTICATED", "this call needs 'authorization: Bearer <token>'")
    return f"users/{identity.username}", auth.current_token() or ""


def _parse_job_name(name: str, field: str = "name") -> tuple[str, str]:
    """(framework, job_id) of ``trainers/{framework}/jobs/{job_id}``."""
    match = records.JOB_NAME_RE.match(name or "")
    if not match:
        raise ServiceError(
            "INVALID_ARGUMENT",
            f"{field} {name!r} is not trainers/{{framework}}/jobs/{{job_id}}",
            field,
        )
    return match.group(1), match.group(2)


class DatasetClient:
    """dataset_svc calls made with the caller's token."""

    def __init__(self, addr: str) -> None:
        self.addr = addr
        self._channel: grpc.Channel | None = None
        self._lock = threading.Lock()

    def _stubs(self) -> tuple[Any, Any]:
        with self._lock:
            if self._channel is None:
                self._channel = grpc.insecure_channel(self.addr)
            return (
                dataset_pb2_grpc.DatasetServiceStub(self._channel),
                compatibility_pb2_grpc.CompatibilityServiceStub(self._channel),
            )

    def _call(self, what: str, fn: Callable[..., Any], request: Any, token: str) -> Any:
        from visionmesh.auth import bearer_metadata

        try:
            return fn(request, metadata=bearer_metadata(token), timeout=60)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise ServiceError(
                    "UNAVAILABLE", f"dataset service at {self.addr} unreachable ({what}): {details}"
                ) from None
            raise ServiceError(code, details or f"{what} failed") from None

    def snapshot(self, dataset: str, reason: str, token: str) -> Any:
        datasets, _ = self._stubs()
        if SNAPSHOT_RE.match(dataset):
            return self._call(
                "GetSnapshot",
                datasets.GetSnapshot,
                dataset_pb2.GetSnapshotRequest(name=dataset),
                token,
            ).snapshot
        return self._call(
            "CreateSnapshot",
            datasets.CreateSnapshot,
            dataset_pb2.CreateSnapshotRequest(
                parent=dataset, snapshot=dataset_pb2.Snapshot(reason=reason)
            ),
            token,
        ).snapshot

    def get_snapshot(self, name: str, token: str) -> Any:
        datasets, _ = self._stubs()
        return self._call(
            "GetSnapshot", datasets.GetSnapshot, dataset_pb2.GetSnapshotRequest(name=name), token
        ).snapshot

    def check(self, request: Any, token: str) -> Any:
        _, compat = self._stubs()
        return self._call("CheckCompatibility", compat.CheckCompatibility, request, token).report


@grpc_errors
class TrainerServicer(ModelsIOMixin, trainer_pb2_grpc.TrainerServiceServicer):
    def __init__(
        self,
        adapter: FrameworkAdapter,
        manager: JobManager | None = None,
        *,
        dataset: DatasetClient | None = None,
        predict_pool: PredictPool | None = None,
    ) -> None:
        self.adapter = adapter
        self.manager = manager
        self.dataset = dataset
        self.predict_pool = predict_pool
        self.device = "cpu"
        self.gpus = 0  # CUDA devices found (set with ``device`` by the detection thread)
        self.device_known = threading.Event()
        self.ready = threading.Event()
        self._pretrained: tuple[float, set[str]] = (0.0, set())

    # -- capabilities -----------------------------------------------------------------------
    def _pretrained_models(self) -> set[str]:
        stamp, names = self._pretrained
        if self.manager is None or time.monotonic() - stamp < 60:
            return names
        found = set()
        prefix = f"models/pretrained/{self.adapter.framework}/"
        with contextlib.suppress(Exception):
            stems = {k[len(prefix) :].rsplit(".", 1)[0] for k in self.manager.store.list(prefix)}
            for model in self.adapter.models():
                for task in model.task_types:
                    key = self.adapter.pretrained_key(model.name, task)
                    if key[len(prefix) :].rsplit(".", 1)[0] in stems:
                        found.add(model.name)
        self._pretrained = (time.monotonic(), found)
        return found

    def GetCapabilities(self, request, context):
        if request.framework and request.framework != self.adapter.framework:
            raise ServiceError(
                "NOT_FOUND",
                f"this trainer serves framework {self.adapter.framework!r}, "
                f"not {request.framework!r}",
            )
        pretrained = self._pretrained_models()
        return trainer_pb2.GetCapabilitiesResponse(
            framework=self.adapter.framework,
            framework_version=self.adapter.framework_version(),
            device=self.device,
            max_concurrent_jobs=self.manager.max_jobs if self.manager else 0,
            queue_capacity=self.manager.queue_capacity if self.manager else 0,
            models=[
                trainer_pb2.ModelInfo(
                    name=m.name,
                    task_types=[task_enum(t) for t in m.task_types],
                    family=m.family,
                    description=m.description,
                    pretrained_available=m.name in pretrained,
                )
                for m in self.adapter.models()
            ],
            hyperparameters=[
                trainer_pb2.HyperparameterInfo(
                    name=h.name,
                    type=h.type,
                    default_value=h.default,
                    description=h.description,
                    choices=list(h.choices),
                    min_value=h.min_value,
                    max_value=h.max_value,
                    extra=h.extra,
                )
                for h in [
                    *self.adapter.hyperparameters(),
                    *self.adapter.placement_hyperparameters(),
                ]
            ],
        )

    # -- helpers ----------------------------------------------------------------------------
    def _manager(self) -> JobManager:
        if self.manager is None:
            raise ServiceError("UNIMPLEMENTED", "this trainer runs no jobs")
        if not self.ready.wait(60):
            raise ServiceError("UNAVAILABLE", "the trainer is still loading its jobs; retry")
        return self.manager

    def _job(self, name: str) -> Job:
        owner, _ = _identity()
        framework, job_id = _parse_job_name(name)
        return self._job_by_id(framework, job_id, owner, name)

    def _job_by_id(self, framework: str, job_id: str, owner: str, name: str) -> Job:
        """The caller's job; NOT_FOUND naming the trainer that owns it when it is not ours."""
        manager = self._manager()
        own = self.adapter.framework
        if framework != own:
            raise ServiceError(
                "NOT_FOUND",
                f"{name} belongs to trainers/{framework}; this trainer is trainers/{own}: "
                f"ask trainers/{framework}",
            )
        try:
            return manager.get(job_id, owner)
        except ServiceError as exc:
            other = manager.owning_framework(job_id, owner)
            if exc.code == grpc.StatusCode.NOT_FOUND and other:
                raise ServiceError(
                    "NOT_FOUND",
                    f"{name} not found: job {job_id} belongs to trainers/{other} "
                    f"(its name is {records.job_name(other, job_id)})",
                ) from None
            raise

    def _check_parent(self, parent: str, *, allow_all: bool) -> None:
        """Accept an empty parent, this trainer's ``trainers/{framework}`` or ``trainers/-``."""
        own = records.trainer_name(self.adapter.framework)
        if not parent or parent == own or (allow_all and parent == "trainers/-"):
            return
        if not re.match(r"^trainers/[^/]+$", parent):
            raise ServiceError(
                "INVALID_ARGUMENT", f"parent {parent!r} is not trainers/{{framework}}", "parent"
            )
        raise ServiceError("NOT_FOUND", f"{parent} is not served here; this trainer is {own}")

    def _proto(self, job: Job) -> trainer_pb2.Job:
        return job.record.to_proto(self._manager().queue_position(job.record.job_id))

    def _defaults(self) -> dict[str, str]:
        return {h.name: h.default for h in self.adapter.hyperparameters() if not h.extra}

    def resolve_spec(self, spec: trainer_pb2.TrainingSpec) -> trainer_pb2.TrainingSpec:
        """The spec with every 0 replaced by the adapter's default; ServiceError when invalid."""
        out = trainer_pb2.TrainingSpec()
        out.CopyFrom(spec)
        if not (DATASET_RE.match(spec.dataset) or SNAPSHOT_RE.match(spec.dataset)):
            raise ServiceError(
                "INVALID_ARGUMENT",
                f"spec.dataset {spec.dataset!r} is not datasets/{{id}} or "
                "datasets/{id}/snapshots/{sid}",
                "spec.dataset",
            )
        if spec.task_type == common_pb2.TASK_TYPE_UNSPECIFIED:
            raise ServiceError("INVALID_ARGUMENT", "spec.task_type is required", "spec.task_type")
        if not spec.model:
            names = ", ".join(m.name for m in self.adapter.models())
            raise ServiceError(
                "INVALID_ARGUMENT", f"spec.model is required; one of: {names}", "spec.model"
            )
        defaults = self._defaults()

        def default(name: str, fallback: float) -> float:
            try:
                return float(defaults.get(name, fallback))
            except ValueError:
                return fallback

        out.epochs = spec.epochs or int(default("epochs", 10))
        out.batch_size = spec.batch_size or int(default("batch_size", 16))
        out.image_size = spec.image_size or int(default("image_size", 224))
        out.learning_rate = spec.learning_rate or default("learning_rate", 0.001)
        out.val_fraction = spec.val_fraction or 0.2
        out.keep_last_checkpoints = spec.keep_last_checkpoints or 2
        checks = [
            ("spec.epochs", 1 <= out.epochs <= 10000, "epochs must be 1..10000"),
            ("spec.batch_size", 1 <= out.batch_size <= 4096, "batch_size must be 1..4096"),
            ("spec.image_size", 32 <= out.image_size <= 8192, "image_size must be 32..8192"),
            ("spec.learning_rate", 0 < out.learning_rate <= 10, "learning_rate must be in (0, 10]"),
            ("spec.patience", out.patience >= 0, "patience must be >= 0 (0 disables)"),
            ("spec.val_fraction", 0 < out.val_fraction < 1, "val_fraction must be in (0, 1)"),
            ("spec.max_duration_seconds", out.max_duration_seconds >= 0, "must be >= 0"),
            ("spec.keep_last_checkpoints", 0 <= out.keep_last_checkpoints <= 1000, "0..1000"),
        ]
        for field, ok, message in checks:
            if not ok:
                raise ServiceError("INVALID_ARGUMENT", f"{field}: {message}", field)
        try:
            self.resolve_devices(out)
            self.adapter.check_extra_values(dict(out.extra))
            self.adapter.check_spec(
                TrainSpec.from_spec(json_format.MessageToDict(out), task_name(out.task_type))
            )
        except SpecError as exc:
            raise ServiceError("INVALID_ARGUMENT", exc.message, exc.field) from None
        return out

    def resolve_devices(self, spec: trainer_pb2.TrainingSpec) -> None:
        """Check ``spec.device`` / ``spec.devices`` (SpecError) and settle them in ``spec``:
        a GPU list sets ``devices`` to its length; several processes on an empty device
        become "cuda" when this trainer has a GPU, else "cpu"."""
        placement = parse_devices(spec.device, spec.devices)
        if placement.gpus and placement.world_size > 1:
            spec.devices = placement.world_size
        if placement.world_size <= 1:
            return
        if not placement.kind:
            self.device_known.wait(15)
            spec.device = "cuda" if self.gpus else "cpu"
            placement = parse_devices(spec.device, spec.devices)
        kinds = self.adapter.distributed_devices
        if placement.kind not in kinds:
            framework = self.adapter.framework
            if not kinds:
                why = f"the {framework} trainer trains a job in one process only"
            else:
                why = (
                    f"the {framework} trainer trains one job on several processes only with "
                    f"device {' or '.join(kinds)} (its own distributed training)"
                )
            raise SpecError(
                "spec.devices",
                f"spec.device {spec.device!r} with devices={placement.world_size}: {why}; "
                "train with devices=1 or on GPUs",
            )

    def check_device(self, device: str, devices: int = 0) -> None:
        """FAILED_PRECONDITION when the spec asks for GPUs this trainer does not have."""
        placement = parse_devices(device, devices)
        if placement.kind != "cuda":
            return
        self.device_known.wait(15)  # nvidia-smi answers within its 10 s timeout
        if placement.world_size > 1 or len(placement.gpus) > 1:
            self._check_gpu_count(device, placement)
            return
        index = placement.gpus[0] if placement.gpus else 0
        if self.gpus == 0:
            raise ServiceError(
                "FAILED_PRECONDITION",
                f"spec.device {device!r}: this {self.adapter.framework} trainer has no CUDA "
                f"device (GetCapabilities.device is {self.device!r}); train with device 'cpu' "
                "or leave it empty, or use a trainer that has a GPU",
                "spec.device",
            )
        if index >= self.gpus:
            raise ServiceError(
                "FAILED_PRECONDITION",
                f"spec.device {device!r}: this trainer has {self.gpus} GPU(s), "
                f"cuda:0..cuda:{self.gpus - 1}",
                "spec.device",
            )

    def _check_gpu_count(self, device: str, placement: Placement) -> None:
        needed = placement.gpus_needed()
        if needed <= self.gpus:
            return
        if placement.gpus:
            asked = f"spec.device {device!r} needs GPUs up to cuda:{needed - 1}"
        else:
            asked = (
                f"spec.device {device!r} with devices={placement.world_size} needs {needed} GPUs"
            )
        have = f"cuda:0..cuda:{self.gpus - 1}" if self.gpus else "none"
        raise ServiceError(
            "FAILED_PRECONDITION",
            f"{asked}, but this {self.adapter.framework} trainer has {self.gpus} GPU(s) "
            f"({have}; GetCapabilities.device is {self.device!r}); ask for fewer devices "
            "or use a trainer with more GPUs",
            "spec.devices" if not placement.gpus else "spec.device",
        )

    # -- RPCs -----------------------------------------------------------------------------
    def StartTraining(self, request, context):
        manager = self._manager()
        owner, token = _identity()
        self._check_parent(request.parent, allow_all=False)
        existing = manager.lookup_request(owner, request.request_id)
        if existing is not None:
            self._check_same_spec(existing, request)
            return trainer_pb2.StartTrainingResponse(job=self._proto(existing))
        try:
            job = self._start(request, owner, token)
        finally:
            if request.request_id:
                manager.release_request(owner, request.request_id)
        return trainer_pb2.StartTrainingResponse(job=self._proto(job))

    def _check_same_spec(self, existing: Job, request: Any) -> None:
        """ALREADY_EXISTS when a request_id comes back with a spec other than its job's."""
        try:
            asked = json_format.MessageToDict(self.resolve_spec(request.spec))
        except ServiceError:
            asked = json_format.MessageToDict(request.spec)
        first = existing.record.spec
        if asked == first:
            return
        fields = sorted(k for k in set(asked) | set(first) if asked.get(k) != first.get(k))
        raise ServiceError(
            "ALREADY_EXISTS",
            f"request_id {request.request_id!r} already started {existing.record.name} with "
            f"another spec (differing: {', '.join(fields)}); send a new request_id to start "
            "another job, or the original spec to get that job again",
            "request_id",
        )

    def _start(self, request: Any, owner: str, token: str) -> Job:
        manager = self._manager()
        spec = self.resolve_spec(request.spec)
        task = task_name(spec.task_type)
        self.check_device(spec.device, spec.devices)
        init_key = self.start_weights(spec, task, owner)  # pretrained / init_from weights
        manager.check_capacity()
        if self.dataset is None:
            raise ServiceError("UNAVAILABLE", "no dataset service configured")
        job_id = manager.new_job_id()
        name = records.job_name(self.adapter.framework, job_id)

        def check(dataset: str) -> Any:
            return self.dataset.check(  # type: ignore[union-attr]
                compatibility_pb2.CheckCompatibilityRequest(
                    dataset=dataset,
                    task_type=spec.task_type,
                    split_seed=spec.split_seed,
                    val_fraction=spec.val_fraction,
                ),
                token,
            )

        def refuse(dataset: str, report: Any, why: str = "") -> ServiceError:
            reasons = "; ".join(report.errors) or "no usable annotations"
            return ServiceError(
                "FAILED_PRECONDITION",
                f"{dataset} cannot train {task}: {reasons}{why}",
                "spec.task_type",
            )

        # Checked before the snapshot, so a refused start leaves no automatic snapshot.
        report = check(spec.dataset)
        if not report.compatible:
            raise refuse(spec.dataset, report)
        snapshot = self.dataset.snapshot(spec.dataset, f"training {name}", token)
        if snapshot.name != spec.dataset:  # a new snapshot: check exactly what will train
            report = check(snapshot.name)
            if not report.compatible:
                raise refuse(snapshot.name, report, " (the dataset changed while starting)")
        manifest_key = (
            snapshot.manifest_key or self.dataset.get_snapshot(snapshot.name, token).manifest_key
        )
        if not manifest_key:
            raise ServiceError("FAILED_PRECONDITION", f"{snapshot.name} has no manifest")
        conversion = ""
        if report.conversion:
            conversion = (
                compatibility_pb2.Conversion.Name(report.conversion)
                .removeprefix("CONVERSION_")
                .lower()
            )
        record = JobRecord(
            job_id=job_id,
            framework=self.adapter.framework,
            owner=owner,
            request_id=request.request_id,
            spec=json_format.MessageToDict(spec),
            task_type=task,
            model=spec.model,
            dataset=spec.dataset,
            snapshot=snapshot.name,
            manifest_key=manifest_key,
            split_seed=spec.split_seed,
            split_generated=report.split_generated,
            val_fraction=spec.val_fraction,
            conversion=conversion,
            total_epochs=spec.epochs,
            best_metric_name=self.adapter.best_metric(task),
            init_key=init_key,
        )
        return manager.submit(record)

    def GetJob(self, request, context):
        return trainer_pb2.GetJobResponse(job=self._proto(self._job(request.name)))

    def ListJobs(self, request, context):
        owner, _ = _identity()
        self._check_parent(request.parent, allow_all=True)
        jobs = self._manager().list(owner)
        for key, value in _parse_filter(request.filter):
            if key == "state":
                state = value.upper().removeprefix("JOB_STATE_")
                jobs = [j for j in jobs if j.record.state == state]
            elif key == "dataset":
                jobs = [
                    j
                    for j in jobs
                    if j.record.dataset == value
                    or j.record.snapshot == value
                    or j.record.snapshot.startswith(value + "/")
                ]
            elif key == "model":
                jobs = [j for j in jobs if j.record.model == value]
        size = request.page_size if request.page_size > 0 else 50
        size = min(size, 1000)
        if request.page_token and not PAGE_TOKEN_RE.match(request.page_token):
            raise ServiceError(
                "INVALID_ARGUMENT",
                f"page_token {request.page_token[:40]!r} is not one this trainer issued: send "
                "the next_page_token of the previous page, or none for the first page",
                "page_token",
            )
        start = int(request.page_token or 0)
        page = jobs[start : start + size]
        token = str(start + size) if start + size < len(jobs) else ""
        return trainer_pb2.ListJobsResponse(
            jobs=[self._proto(j) for j in page], next_page_token=token
        )

    def CancelJob(self, request, context):
        job = self._job(request.name)
        self._manager().cancel(job, request.stop_early)
        return trainer_pb2.CancelJobResponse(job=self._proto(job))

    def ResumeJob(self, request, context):
        job = self._job(request.name)
        self._manager().resume(job)
        return trainer_pb2.ResumeJobResponse(job=self._proto(job))

    @staticmethod
    def _subscribe(manager: JobManager, job: Job, context: grpc.ServicerContext) -> None:
        """Follow ``job``; the client going away wakes the stream, so an idle stream sleeps
        without polling and ends as soon as its client leaves."""
        wake = manager.subscribe(job)
        if not context.add_callback(wake):
            wake()

    def StreamMetrics(self, request, context):
        job = self._job(request.name)
        manager = self._manager()
        self._subscribe(manager, job, context)
        for item, state in manager.follow_metrics(
            job, request.from_epoch, context.is_active, STREAM_RECHECK_SECONDS
        ):
            reply = trainer_pb2.StreamMetricsResponse(
                state=trainer_pb2.JobState.Value(f"JOB_STATE_{state}")
            )
            if item is not None:
                reply.metrics.CopyFrom(records.epoch_to_proto(item))
            yield reply

    def StreamLogs(self, request, context):
        job = self._job(request.name)
        manager = self._manager()
        self._subscribe(manager, job, context)
        for chunk in manager.follow_logs(
            job, request.follow, context.is_active, STREAM_RECHECK_SECONDS
        ):
            yield trainer_pb2.StreamLogsResponse(lines=chunk)

    def Predict(self, request, context):
        job = self._job(request.name)
        manager = self._manager()
        if not request.image:
            raise ServiceError("INVALID_ARGUMENT", "image is empty", "image")
        check_image(request.image)
        which = (request.checkpoint or "best").removesuffix(".pt")
        if which not in ("best", "last") and not re.match(r"^epoch_\d+$", which):
            raise ServiceError(
                "INVALID_ARGUMENT", "checkpoint must be best, last or epoch_<n>", "checkpoint"
            )
        record = job.record
        key = records.checkpoint_key(record.job_id, f"{which}.pt")
        local = manager.cache_root / "predict" / record.job_id / f"{which}.pt"
        fresh = record.state in lifecycle.TERMINAL and local.is_file()
        if not fresh:
            try:
                manager.store.download(key, local)
            except KeyNotFound:
                raise ServiceError(
                    "FAILED_PRECONDITION",
                    f"{record.name} has no {which}.pt yet ({key}): wait for an epoch to finish",
                    "checkpoint",
                ) from None
        if self.predict_pool is None:
            raise ServiceError("UNIMPLEMENTED", "prediction is not available on this trainer")
        try:
            reply = self.predict_pool.predict(
                {
                    "checkpoint": str(local.resolve()),
                    "image": base64.b64encode(request.image).decode(),
                    "task_type": record.task_type,
                    "class_names": record.class_names,
                    "confidence": request.confidence_threshold or 0.25,
                    "max_detections": request.max_detections or 100,
                    "device": single_device(str(record.spec.get("device", ""))),
                }
            )
        except PredictError as exc:
            message = str(exc)
            unreadable = (
                "cannot identify image",
                "UnidentifiedImageError",
                "image file is truncated",
                "broken data stream",
            )
            if any(text in message for text in unreadable):
                raise ServiceError(
                    "INVALID_ARGUMENT", f"image is not a readable picture: {message}", "image"
                ) from None
            raise ServiceError("INTERNAL", f"prediction failed: {message}") from None
        return self._prediction(record, reply, key)

    def DownloadCheckpoint(self, request, context):
        owner, _ = _identity()
        match = records.CHECKPOINT_NAME_RE.match(request.name or "")
        if not match:
            raise ServiceError(
                "INVALID_ARGUMENT",
                f"name {request.name!r} is not trainers/{{framework}}/jobs/{{job_id}}/"
                "checkpoints/{best.pt|last.pt|epoch_<n>.pt}",
                "name",
            )
        framework, job_id, filename = match.groups()
        job = self._job_by_id(framework, job_id, owner, request.name.rsplit("/checkpoints/")[0])
        key = records.checkpoint_key(job.record.job_id, filename)
        try:
            reader = self._manager().store.open_read(key)
        except KeyNotFound:
            raise ServiceError(
                "NOT_FOUND",
                f"{job.record.name} has no {filename} ({key}): it is written when an epoch "
                "ends (best.pt when the metric improves)",
                "name",
            ) from None
        with reader:
            first = True
            while True:
                data = reader.read(DOWNLOAD_PIECE_BYTES)
                if not data and not first:
                    break
                yield httpbody_pb2.HttpBody(
                    content_type="application/octet-stream" if first else "", data=data
                )
                first = False
                if not context.is_active():
                    return

    @staticmethod
    def _prediction(record: JobRecord, reply: dict[str, Any], key: str) -> Any:
        pred = reply["prediction"]
        ids_by_name = dict(zip(record.class_names, record.category_ids, strict=False))

        def category(item: dict[str, Any]) -> tuple[int, str]:
            name = str(item.get("category_name", ""))
            if name in ids_by_name:
                return ids_by_name[name], name
            index = int(item.get("category_id", 0))
            if 0 <= index < len(record.category_ids):
                return record.category_ids[index], record.class_names[index]
            return index, name

        out = trainer_pb2.PredictResponse(
            task_type=task_enum(pred["task_type"]),
            image_width=int(pred["image_width"]),
            image_height=int(pred["image_height"]),
            inference_ms=float(reply.get("inference_ms", 0.0)),
            checkpoint_key=key,
        )
        for det in pred.get("detections", []):
            cid, cname = category(det)
            item = out.detections.add(category_id=cid, category_name=cname, score=det["score"])
            if det.get("box"):
                x, y, w, h = det["box"]
                item.box.CopyFrom(common_pb2.BoundingBox(x=x, y=y, width=w, height=h))
            for poly in det.get("polygons", []):
                item.polygons.add(coordinates=poly)
            for kp in det.get("keypoints", []):
                kx, ky, vis, score = (list(kp) + [0, 0, 0, 0])[:4]
                item.keypoints.add(x=kx, y=ky, visibility=int(vis), score=score)
        for cls in pred.get("classes", []):
            cid, cname = category(cls)
            out.classes.add(category_id=cid, category_name=cname, score=cls["score"])
        return out


def _parse_filter(text: str) -> list[tuple[str, str]]:
    out = []
    for part in re.split(r"\s+AND\s+|\s+", (text or "").strip()):
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("state", "dataset", "model"):
            raise ServiceError(
                "INVALID_ARGUMENT",
                f'unsupported filter {part!r}: use state=JOB_STATE_..., dataset="datasets/..." '
                "or model=NAME",
                "filter",
            )
        out.append((key, value.strip().strip('"')))
    return out


class _LazyVerifier:
    """Loads the JWT public key on first use, so a trainer may start before dataset_svc."""

    def __init__(self, settings: config.Settings) -> None:
        self.settings = settings
        self._verifier: Any = None

    def verify(self, token: Any) -> Any:
        from visionmesh import auth

        if self._verifier is None:
            try:
                self._verifier = auth.load_verifier(self.settings)
            except (FileNotFoundError, ValueError) as exc:
                raise auth.AuthError(str(exc)) from None
        return self._verifier.verify(token)


def build(
    adapter: FrameworkAdapter, settings: config.Settings | None = None, *, listen: str = ""
) -> tuple[TrainerServicer, JobManager, PredictPool, list[grpc.ServerInterceptor]]:
    """The servicer and its job manager; the manager registers as a replica of its framework
    here (jobstore.ReplicaRefused: a second replica on SQLite)."""
    from visionmesh import auth

    settings = settings or config.load()
    store = open_store(settings.store_url)
    manager = JobManager(
        adapter,
        store,
        home=settings.home,
        store_url=settings.store_url,
        database_url=settings.database_url,
        address=listen,
    )
    manager.open()
    predict_log = settings.home / "trainer-work" / adapter.framework / "predict.log"
    predict_log.parent.mkdir(parents=True, exist_ok=True)
    adapter_path = f"{type(adapter).__module__}:{type(adapter).__name__}"
    pool = PredictPool(adapter_path, log_path=predict_log)
    servicer = TrainerServicer(
        adapter, manager, dataset=DatasetClient(settings.dataset_addr), predict_pool=pool
    )
    public = [f"/{service_name(trainer_pb2, 'TrainerService')}/GetCapabilities"]
    interceptors = [auth.AuthInterceptor(_LazyVerifier(settings), public)]  # type: ignore[arg-type]

    def background() -> None:
        try:
            names = gpu_names()
            servicer.gpus = len(names)
            servicer.device = f"cuda:0 ({names[0]})" if names else "cpu"
        finally:
            servicer.device_known.set()

    def load() -> None:
        try:
            manager.start()
        finally:
            servicer.ready.set()

    threading.Thread(target=background, daemon=True, name="device").start()
    threading.Thread(target=load, daemon=True, name="recover").start()
    return servicer, manager, pool, interceptors


def main(adapter: FrameworkAdapter, argv: Sequence[str] | None = None) -> int:
    prog = f"trainers.{adapter.framework}"
    # the shipped frameworks have fixed ports; any other (a test or bench stub) a free one
    args = parse_args(prog, config.DEFAULT_ADDRESSES.get(adapter.framework, "127.0.0.1:0"), argv)
    try:
        servicer, manager, pool, interceptors = build(adapter, listen=args.listen)
    except ReplicaRefused as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return 2
    service = Service(
        service_name(trainer_pb2, "TrainerService"),
        trainer_pb2_grpc.add_TrainerServiceServicer_to_server,
        servicer,
    )
    return run(
        prog,
        [service],
        args.listen,
        grace=args.grace,
        interceptors=interceptors,
        on_drain=[manager.drain, pool.close],
    )
