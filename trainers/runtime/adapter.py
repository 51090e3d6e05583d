"""The contract between the shared trainer runtime and one framework.

An adapter is thin: it says what the framework can train (cheaply, without importing the
framework, so the server starts fast) and, inside a job's child process, maps a prepared
dataset folder and a spec onto the framework's own training loop, reporting each epoch
through :class:`JobContext`. Everything else (queue, states, persistence, checkpoints in
the object store, metric fan-out, resume, dataset cache and layouts) is the runtime's.

Prepared dataset layouts (``JobContext.dataset_dir``, read-only, written by the runtime from
the snapshot manifest by :mod:`trainers.runtime.layouts`; splits are "train" and "val"):

- ``"yolo"`` (detect / segment / pose): ``data.yaml`` with an absolute ``path``,
  ``train: images/train``, ``val: images/val``, ``names`` (index -> name) and ``kpt_shape``
  for pose; ``images/{train,val}/<relative path>``; ``labels/{train,val}/<stem>.txt``.
- ``"imagefolder"`` (classification, also ultralytics' classify layout):
  ``{train,val}/<class name>/<file>``.
- ``"coco"``: ``annotations_train.json`` and ``annotations_val.json`` (COCO, original category
  ids, polygons kept so adapters can rasterize masks) with ``file_name`` relative to
  ``images/``; ``images/<relative path>``.

``JobContext.class_names`` lists the classes in the index order the layout uses (YOLO class
index, sorted ImageFolder folder names, or COCO categories sorted by id).

Beyond ``train`` and ``predict``, the contract has these parts (all optional for an
adapter; the runtime has a default for each):

- ``JobContext.report_epoch(..., is_best=None)``: an adapter whose framework picks its own
  best checkpoint (ultralytics' fitness) passes ``is_best``; when None the runtime compares
  ``FrameworkAdapter.best_metric(task)`` by its direction (:func:`records.is_better`:
  lower is better for ``*loss`` names, higher for the rest).
- ``JobContext.category_ids``: the dataset's category ids in ``class_names`` order;
  ``JobContext.images_per_epoch``: training images in the prepared dataset.
- ``FrameworkAdapter.best_metric(task)``: the normalized metric that picks best.pt (shown
  as ``Job.best_metric_name``). Default: val/top1 for classification, val/map50_95 else.
- ``FrameworkAdapter.pretrained_key(model, task)``: object store key of pretrained weights;
  default ``models/pretrained/<framework>/<model>.pt``. The runtime checks it exists at
  StartTraining (FAILED_PRECONDITION naming the key) and downloads it for the job.
- ``FrameworkAdapter.check_spec(spec)``: raise :class:`SpecError` (field, message) for a
  spec this framework cannot run (unknown model for the task, bad ``extra`` key); called in
  the server process at StartTraining, so it must not import the framework. Default: the
  model must be one of ``models()`` for the task. ``FrameworkAdapter.check_extra(extra)``
  checks ``extra`` against the ``extra=True`` entries of ``hyperparameters()`` (known key,
  type, range, choices) for adapters that declare every extra key they accept.
- :class:`EngineAdapter`: a FrameworkAdapter whose ``train`` and ``predict`` live in one
  module (``engine_module``) imported only in the job / predict child, after ``child_env``
  is set (e.g. :data:`HUB_OFFLINE_ENV`, which keeps huggingface_hub off the network). The
  torch engines (timm, hf) build on :mod:`trainers.runtime.torchkit`.
- ``FrameworkAdapter.resolve_model(model, task)``: the name that is actually built
  (e.g. ultralytics maps "yolo11n" + segmentation to "yolo11n-seg"); default: unchanged.
- After training, ``export(checkpoint, fmt, ...)`` writes an ONNX or TorchScript file (run
  in an export child process); ``evaluate(job, checkpoint)`` returns the raw evaluation of
  best.pt on the val split (see :mod:`trainers.runtime.evaluation` for its shape; an engine
  module names it ``evaluate_job``; the runtime names classes, draws the pictures and
  stores it); ``check_weights(path, model, task)`` loads an uploaded weights file for that
  model and task (UploadWeights keeps it only if this returns) and describes it in words.
  ``JobContext.pretrained_weights`` also carries ``init_from`` weights (a finished job's
  best.pt or uploaded weights).
- Predict: ``Prediction`` entries may give ``category_id`` as the class index
  (position in ``class_names``); the runtime maps each entry to the dataset's category id by
  ``category_name`` (falling back to that index), so either convention works.
"""

from __future__ import annotations

import abc
import importlib
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

# Task names used across the project (the TaskType enum's suffix in lower case).
IMAGE_CLASSIFICATION = "image_classification"
OBJECT_DETECTION = "object_detection"
INSTANCE_SEGMENTATION = "instance_segmentation"
SEMANTIC_SEGMENTATION = "semantic_segmentation"
POSE_ESTIMATION = "pose_estimation"

#: Environment that keeps huggingface_hub (used by timm and transformers) off the network.
HUB_OFFLINE_ENV: Mapping[str, str] = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
    "DO_NOT_TRACK": "1",
}


@dataclass(frozen=True)
class ModelSpec:
    """A model a trainer can build (GetCapabilities' ModelInfo)."""

    name: str
    task_types: tuple[str, ...]
    family: str = ""
    description: str = ""


@dataclass(frozen=True)
class Hyperparameter:
    """A hyperparameter the adapter accepts (GetCapabilities' HyperparameterInfo)."""

    name: str
    type: str  # "int" | "float" | "bool" | "string"
    default: str
    description: str = ""
    choices: tuple[str, ...] = ()
    min_value: str = ""
    max_value: str = ""
    extra: bool = False  # passed through TrainingSpec.extra rather than a typed field


@dataclass
class TrainSpec:
    """A resolved TrainingSpec: every number filled with the adapter's default."""

    task_type: str
    model: str
    epochs: int
    batch_size: int
    image_size: int
    learning_rate: float
    seed: int
    patience: int
    device: str  # "cpu", "cuda", "cuda:0", or a GPU list "0,1" / "cuda:0,1"
    pretrained: bool
    extra: dict[str, str] = field(default_factory=dict)
    #: processes that train the job together (distributed data parallel); 1 = one
    devices: int = 1

    def placement(self) -> Placement:
        """``device`` and ``devices`` parsed (:func:`parse_devices`)."""
        return parse_devices(self.device, self.devices)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], task_type: str) -> TrainSpec:
        """The TrainSpec of a resolved TrainingSpec in its JSON form (``json_format``'s
        camelCase dict, as JobRecord.spec keeps it); ``task_type`` as records.task_name."""
        return cls(
            task_type=task_type,
            model=str(spec.get("model", "")),
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


#: The most processes one job may train on (``TrainingSpec.devices``).
MAX_DEVICES = 64


@dataclass(frozen=True)
class Placement:
    """Where one job trains: ``TrainingSpec.device`` and ``devices`` parsed.

    ``kind`` is "cpu", "cuda" or "" (CUDA when present, else CPU); ``gpus`` the CUDA
    indices the job's processes use in rank order, () for "the first ``world_size``" (or the
    default device); ``world_size`` the number of processes (1: no distributed training).
    """

    kind: str
    gpus: tuple[int, ...]
    world_size: int

    def rank_device(self, rank: int) -> str:
        """The torch device name of process ``rank`` ("cpu", "cuda:1")."""
        if self.kind != "cuda":
            return "cpu"
        return f"cuda:{self.gpus[rank] if self.gpus else rank}"

    def gpus_needed(self) -> int:
        """CUDA devices the machine must have: one more than the highest index used."""
        if self.kind != "cuda":
            return 0
        return max(self.gpus) + 1 if self.gpus else self.world_size


def parse_devices(device: str, devices: int = 0) -> Placement:
    """Parse ``TrainingSpec.device`` with ``TrainingSpec.devices``; :class:`SpecError` if bad.

    ``device``: "" (CUDA when present, else CPU), "cpu", "cuda", "cuda:N", or a GPU list
    "0,1" / "cuda:0,1" (one process per GPU). ``devices`` (0 or 1: one process) asks for
    that many processes: the first N GPUs with "cuda" (or ""), N gloo processes with "cpu".
    A list sets it to the list's length; another count, or a count > 1 with "cuda:N",
    contradicts the device and is refused.
    """
    text = device or ""
    count = int(devices or 0)
    if count < 0 or count > MAX_DEVICES:
        raise SpecError("spec.devices", f"devices must be 0..{MAX_DEVICES}, not {count}")
    if text in ("", "cpu", "cuda"):
        return Placement(text, (), max(count, 1))
    listed = text.removeprefix("cuda:")
    parts = listed.split(",")
    if not all(p.isascii() and p.isdigit() for p in parts):
        raise SpecError(
            "spec.device",
            f"device must be cpu, cuda, cuda:N or a GPU list such as 0,1 or cuda:0,1, "
            f"not {device!r}",
        )
    gpus = tuple(int(p) for p in parts)
    if len(set(gpus)) != len(gpus):
        raise SpecError("spec.device", f"device {device!r} names a GPU twice")
    if len(gpus) == 1 and count > 1:
        raise SpecError(
            "spec.devices",
            f"device {device!r} names one GPU but devices is {count}: name them all "
            f"(such as {','.join(str(gpus[0] + i) for i in range(count))}) or use cuda "
            f"with devices={count} for the first {count}",
        )
    if count not in (0, len(gpus)) and len(gpus) > 1:
        raise SpecError(
            "spec.devices",
            f"device {device!r} names {len(gpus)} GPUs but devices is {count}: leave "
            "devices at 0 (the list sets it) or make them agree",
        )
    return Placement("cuda", gpus, len(gpus))


def single_device(device: str) -> str:
    """One torch device for work that runs in one process (predict, evaluation, export):
    the first GPU of a list ("0,1" -> "cuda:0"), else ``device`` unchanged."""
    try:
        placement = parse_devices(device)
    except SpecError:
        return device
    if placement.gpus and (len(placement.gpus) > 1 or not device.startswith("cuda")):
        return f"cuda:{placement.gpus[0]}"
    return device


@dataclass
class Prediction:
    """What Predict returns, framework-neutral. Coordinates in pixels of the input image."""

    task_type: str
    image_width: int
    image_height: int
    # each: {"category_id", "category_name", "score", "box": (x, y, w, h) | None,
    #        "polygons": [[x1, y1, ...], ...], "keypoints": [(x, y, visibility, score), ...]}
    detections: list[dict[str, Any]] = field(default_factory=list)
    # each: {"category_id", "category_name", "score"}, best first
    classes: list[dict[str, Any]] = field(default_factory=list)


class SpecError(ValueError):
    """A TrainingSpec this adapter cannot run; ``field`` names it (``spec.model``)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


class JobContext(Protocol):
    """What the runtime gives an adapter inside the job's child process."""

    spec: TrainSpec
    # The prepared dataset, read-only, in the layout ``dataset_format(task)`` asked for.
    dataset_dir: Path
    # Category ids and names in the order the prepared dataset indexes them.
    class_names: list[str]
    # Writable scratch folder of this job (framework output, temporary files).
    work_dir: Path
    # A framework checkpoint to resume from (last.pt of an interrupted run), or None.
    resume_from: Path | None
    # Pretrained weights fetched from models/pretrained/<framework>/..., or None.
    pretrained_weights: Path | None
    # The dataset's category ids in ``class_names`` order.
    category_ids: list[int]
    # Training images in the prepared dataset.
    images_per_epoch: int

    def report_epoch(
        self,
        epoch: int,
        values: Mapping[str, float],
        *,
        checkpoint: Path | None = None,
        images_seen: int = 0,
        is_best: bool | None = None,
    ) -> bool:
        """Record a finished epoch (1-based) with normalized metric names.

        ``checkpoint`` is the framework's resumable last checkpoint for this epoch; the
        runtime stores it as last.pt (and best.pt / epoch_<n>.pt per policy). Epochs are
        de-duplicated: reporting an epoch that is already recorded is ignored. Returns True
        when the runtime asks the job to stop after this epoch (stop-early, deadline).
        """

    def should_stop(self) -> bool:
        """True once stop-early or the deadline was requested; finish the epoch and return."""

    def log(self, line: str) -> None:
        """Append a line to the job's log (StreamLogs)."""


def check_value(h: Hyperparameter, raw: str, field: str) -> None:
    """SpecError (on ``field``) unless ``raw`` fits ``h``'s type, min/max and choices."""
    value = raw.strip()
    what = f"{field} ({h.name})"
    if h.type in ("int", "float"):
        try:
            number = int(value) if h.type == "int" else float(value)
        except ValueError:
            raise SpecError(field, f"{what} must be {_article(h.type)}, not {raw!r}") from None
        if not math.isfinite(number):
            raise SpecError(field, f"{what} must be a finite number, not {raw!r}")
        low = float(h.min_value) if h.min_value else -math.inf
        high = float(h.max_value) if h.max_value else math.inf
        if not low <= number <= high:
            bounds = f"[{h.min_value or '-inf'}, {h.max_value or 'inf'}]"
            raise SpecError(field, f"{what} must be within {bounds}, not {raw!r}")
    elif h.type == "bool" and value.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise SpecError(field, f"{what} must be true or false, not {raw!r}")
    if h.choices and value not in h.choices and value.lower() not in h.choices:
        raise SpecError(field, f"{what} must be one of {', '.join(h.choices)}, not {raw!r}")


def _article(kind: str) -> str:
    return {"int": "an integer", "float": "a number"}.get(kind, kind)


class FrameworkAdapter(abc.ABC):
    """One framework. Subclasses live in trainers/<framework>/adapter.py."""

    #: "ultralytics", "timm" or "hf"
    framework: str = ""
    #: distribution whose version GetCapabilities reports, when not named like ``framework``
    package: str = ""
    #: device kinds ("cpu", "cuda") on which one job can train in several processes
    #: (``TrainingSpec.devices`` > 1 or a GPU list); empty: one process only
    distributed_devices: tuple[str, ...] = ()

    @abc.abstractmethod
    def models(self) -> list[ModelSpec]:
        """Models this trainer can build; must not import the framework."""

    def placement_hyperparameters(self) -> list[Hyperparameter]:
        """``device`` and ``devices``: where a job trains; the runtime handles them for every
        framework, and GetCapabilities lists them after :meth:`hyperparameters`."""
        kinds = " or ".join(self.distributed_devices)
        several = (
            f"processes that train one job together ({kinds}; distributed data parallel)"
            if kinds
            else "this trainer trains a job in one process"
        )
        return [
            Hyperparameter(
                "device", "string", "", "cpu, cuda, cuda:N or a GPU list 0,1; empty picks CUDA"
            ),
            Hyperparameter(
                "devices", "int", "1", several, min_value="1", max_value=str(MAX_DEVICES)
            ),
        ]

    @abc.abstractmethod
    def hyperparameters(self) -> list[Hyperparameter]:
        """Typed hyperparameters with defaults, and the pass-through ``extra`` keys."""

    @abc.abstractmethod
    def dataset_format(self, task_type: str) -> str:
        """Layout the runtime should prepare: "yolo", "imagefolder" or "coco" (the module
        docstring describes each; :mod:`trainers.runtime.layouts` writes them)."""

    def best_metric(self, task_type: str) -> str:
        """Normalized metric that picks best.pt (higher is better unless it ends in "loss")."""
        return "val/top1" if task_type == IMAGE_CLASSIFICATION else "val/map50_95"

    def resolve_model(self, model: str, task_type: str) -> str:
        """The model name actually built for ``task_type`` (default: ``model`` unchanged)."""
        return model

    def pretrained_key(self, model: str, task_type: str) -> str:
        """Object store key of pretrained weights for ``model`` (see ``TrainingSpec.pretrained``)."""
        return f"models/pretrained/{self.framework}/{self.resolve_model(model, task_type)}.pt"

    def check_spec(self, spec: TrainSpec) -> None:
        """Raise :class:`SpecError` if this trainer cannot run ``spec`` (server side, cheap)."""
        known = [m for m in self.models() if spec.task_type in m.task_types]
        if not any(m.name == spec.model for m in known):
            names = ", ".join(m.name for m in known) or "none"
            raise SpecError(
                "spec.model",
                f"{self.framework} has no model {spec.model!r} for {spec.task_type}; "
                f"choose one of: {names}",
            )

    def check_extra(self, extra: Mapping[str, str]) -> None:
        """Raise SpecError for an unknown ``extra`` key or a value of the wrong type / choice.

        Known keys are the ``extra=True`` entries of :meth:`hyperparameters`.
        """
        known = {h.name for h in self.hyperparameters() if h.extra}
        for key in extra:
            if key not in known:
                raise SpecError(
                    f"spec.extra[{key}]",
                    f"unknown extra option {key!r}; known: {', '.join(sorted(known))}",
                )
        self.check_extra_values(extra)

    def check_extra_values(self, extra: Mapping[str, str]) -> None:
        """Raise SpecError for a value of a declared ``extra`` key that its type, bounds or
        choices refuse (``momentum=abc``, ``workers=-5``); undeclared keys pass untouched.

        The runtime calls it for every adapter at StartTraining; :meth:`check_extra` also
        refuses undeclared keys.
        """
        known = {h.name: h for h in self.hyperparameters() if h.extra}
        for key, raw in extra.items():
            h = known.get(key)
            if h is not None:
                check_value(h, str(raw), f"spec.extra[{key}]")

    # -- after training (optional; child processes only) --------------------------------------
    def export(
        self, checkpoint: Path, fmt: str, *, image_size: int, out_dir: Path, device: str
    ) -> Path:
        """Write ``checkpoint`` as ``fmt`` ("onnx" or "torchscript") under ``out_dir``."""
        raise NotImplementedError(f"the {self.framework} trainer cannot export models")

    def evaluate(self, job: JobContext, checkpoint: Path) -> dict[str, Any] | None:
        """The raw evaluation of ``checkpoint`` on the val split, or None (not supported)."""
        return None

    def check_weights(self, path: Path, model: str, task_type: str) -> str:
        """Load ``path`` as weights of ``model`` for ``task_type``; raise ValueError if not."""
        raise NotImplementedError(f"the {self.framework} trainer cannot check weights")

    def framework_version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version(self.package or self.framework)
        except PackageNotFoundError:
            return ""

    @abc.abstractmethod
    def train(self, job: JobContext) -> None:
        """Train in the job's child process, calling ``job.report_epoch`` once per epoch."""

    @abc.abstractmethod
    def predict(
        self,
        checkpoint: Path,
        image: bytes,
        *,
        task_type: str,
        class_names: list[str],
        confidence: float,
        max_detections: int,
        device: str,
    ) -> Prediction:
        """Run one image through a checkpoint this adapter wrote."""


class EngineAdapter(FrameworkAdapter):
    """An adapter whose training and inference live in one module, imported in the child.

    The server process never imports ``engine_module`` (it imports the framework); the job
    and predict children import it through :meth:`engine`, after setting ``child_env``
    (the framework reads such switches at import). The module has ``train(job)`` and
    ``predict(checkpoint, image, **options)`` taking :meth:`FrameworkAdapter.predict`'s
    keyword arguments (ignoring those it has no use for).
    """

    #: dotted name of the module with ``train(job)`` and ``predict(...)``
    engine_module: str = ""
    #: environment set in the child before ``engine_module`` is imported
    child_env: Mapping[str, str] = {}

    def engine(self) -> Any:
        """Set ``child_env`` and import ``engine_module`` (child processes only)."""
        os.environ.update(self.child_env)
        return importlib.import_module(self.engine_module)

    def train(self, job: JobContext) -> None:
        self.engine().train(job)

    def predict(self, checkpoint: Path, image: bytes, **options: Any) -> Prediction:
        """``options``: the keyword arguments of :meth:`FrameworkAdapter.predict`."""
        return self.engine().predict(Path(checkpoint), image, **options)

    def export(
        self, checkpoint: Path, fmt: str, *, image_size: int, out_dir: Path, device: str
    ) -> Path:
        return self.engine().export(
            Path(checkpoint), fmt, image_size=image_size, out_dir=Path(out_dir), device=device
        )

    def evaluate(self, job: JobContext, checkpoint: Path) -> dict[str, Any] | None:
        return self.engine().evaluate_job(job, Path(checkpoint))

    def check_weights(self, path: Path, model: str, task_type: str) -> str:
        return self.engine().check_weights(Path(path), model, task_type)
