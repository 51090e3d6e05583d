"""The ultralytics adapter: YOLO11 / YOLO26 for detection, segmentation, classification, pose.

This module is imported by the trainer server, so it never imports ultralytics or torch;
training and prediction run in child processes through :mod:`trainers.ultralytics._yolo`.

Model names: ``yolo11n`` ... ``yolo26x`` (one name for every task: the task picks the
``-seg`` / ``-cls`` / ``-pose`` variant), or the explicit variant (``yolo11n-seg``).
Models are built from their ``.yaml`` (random init) unless ``pretrained`` is set, which
loads ``models/pretrained/ultralytics/<variant>.pt`` from the object store.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import Any

from trainers.runtime.adapter import (
    IMAGE_CLASSIFICATION,
    INSTANCE_SEGMENTATION,
    OBJECT_DETECTION,
    POSE_ESTIMATION,
    FrameworkAdapter,
    Hyperparameter,
    JobContext,
    ModelSpec,
    Prediction,
    SpecError,
    TrainSpec,
)

FAMILIES = ("yolo11", "yolo26")
SCALES = ("n", "s", "m", "l", "x")
TASK_SUFFIX = {
    OBJECT_DETECTION: "",
    INSTANCE_SEGMENTATION: "-seg",
    IMAGE_CLASSIFICATION: "-cls",
    POSE_ESTIMATION: "-pose",
}
TASKS = tuple(TASK_SUFFIX)
BEST_METRIC = {
    OBJECT_DETECTION: "val/map50_95",
    INSTANCE_SEGMENTATION: "val/mask_map50_95",
    POSE_ESTIMATION: "val/pose_map50_95",
    IMAGE_CLASSIFICATION: "val/top1",
}
SCALE_WORDS = {"n": "nano", "s": "small", "m": "medium", "l": "large", "x": "extra large"}

# Arguments the runtime owns: an `extra` may not set them.
RESERVED_EXTRAS = {
    "model",
    "data",
    "epochs",
    "batch",
    "imgsz",
    "lr0",
    "seed",
    "patience",
    "device",
    "pretrained",
    "project",
    "name",
    "exist_ok",
    "resume",
    "mode",
    "task",
    "save",
    "save_dir",
    "cfg",
    "tracker",
    "source",
}
# Extras documented in GetCapabilities (any other key of ultralytics' default.yaml works too).
DOCUMENTED_EXTRAS = (
    ("optimizer", "string", "auto", "SGD, Adam, AdamW, NAdam, RAdam, RMSProp, MuSGD or auto"),
    ("momentum", "float", "0.937", "SGD momentum / Adam beta1"),
    ("weight_decay", "float", "0.0005", "optimizer weight decay"),
    ("warmup_epochs", "float", "3.0", "warmup epochs"),
    ("cos_lr", "bool", "false", "cosine learning-rate schedule"),
    ("lrf", "float", "0.01", "final learning rate as a fraction of the initial one"),
    ("mosaic", "float", "1.0", "mosaic augmentation probability"),
    ("close_mosaic", "int", "10", "disable mosaic for the last N epochs"),
    ("fliplr", "float", "0.5", "horizontal flip probability"),
    ("workers", "int", "2", "data loader worker processes"),
    ("amp", "bool", "true", "automatic mixed precision (CUDA only)"),
    ("deterministic", "bool", "true", "deterministic algorithms"),
    ("rect", "bool", "false", "rectangular batches"),
    ("single_cls", "bool", "false", "train as a single class"),
    ("dropout", "float", "0.0", "dropout (classification)"),
    ("val", "bool", "true", "validate every epoch"),
)
# Bounds and choices of the documented extras: StartTraining refuses other values up front.
EXTRA_LIMITS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "optimizer": (
        "",
        "",
        ("SGD", "Adam", "Adamax", "AdamW", "NAdam", "RAdam", "RMSprop", "MuSGD", "auto"),
    ),
    "momentum": ("0", "1", ()),
    "weight_decay": ("0", "", ()),
    "warmup_epochs": ("0", "", ()),
    "lrf": ("0", "1", ()),
    "mosaic": ("0", "1", ()),
    "close_mosaic": ("0", "", ()),
    "fliplr": ("0", "1", ()),
    "workers": ("0", "", ()),
    "dropout": ("0", "1", ()),
}


@functools.lru_cache(maxsize=1)
def default_cfg_keys() -> frozenset[str]:
    """Keys of ultralytics' cfg/default.yaml, read without importing ultralytics."""
    import yaml

    spec = importlib.util.find_spec("ultralytics")
    if spec is None or not spec.submodule_search_locations:
        return frozenset()
    path = Path(next(iter(spec.submodule_search_locations))) / "cfg" / "default.yaml"
    try:
        return frozenset(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError):
        return frozenset()


class UltralyticsAdapter(FrameworkAdapter):
    framework = "ultralytics"
    distributed_devices = ("cuda",)  # ultralytics' own DDP runs on GPUs only

    def models(self) -> list[ModelSpec]:
        return [
            ModelSpec(
                name=f"{family}{scale}",
                task_types=TASKS,
                family=family,
                description=(
                    f"{family.upper()} {SCALE_WORDS[scale]}: detection ({family}{scale}.yaml), "
                    f"segmentation (-seg), classification (-cls), pose (-pose)"
                ),
            )
            for family in FAMILIES
            for scale in SCALES
        ]

    def hyperparameters(self) -> list[Hyperparameter]:
        typed = [
            Hyperparameter("epochs", "int", "100", "training epochs", min_value="1"),
            Hyperparameter("batch_size", "int", "16", "images per batch", min_value="1"),
            Hyperparameter("image_size", "int", "640", "input size in pixels", min_value="32"),
            Hyperparameter("learning_rate", "float", "0.01", "initial learning rate (lr0)"),
            Hyperparameter("seed", "int", "0", "random seed"),
            Hyperparameter(
                "patience", "int", "100", "epochs without improvement before stopping; 0 off"
            ),
            Hyperparameter("pretrained", "bool", "false", "start from stored weights"),
        ]
        extras = [
            Hyperparameter(
                name,
                kind,
                default,
                desc,
                extra=True,
                min_value=EXTRA_LIMITS.get(name, ("", "", ()))[0],
                max_value=EXTRA_LIMITS.get(name, ("", "", ()))[1],
                choices=EXTRA_LIMITS.get(name, ("", "", ()))[2],
            )
            for name, kind, default, desc in DOCUMENTED_EXTRAS
        ]
        return typed + extras

    def dataset_format(self, task_type: str) -> str:
        if task_type == IMAGE_CLASSIFICATION:
            return "imagefolder"
        if task_type in TASK_SUFFIX:
            return "yolo"
        raise ValueError(f"ultralytics cannot train {task_type}")

    def best_metric(self, task_type: str) -> str:
        return BEST_METRIC.get(task_type, "val/map50_95")

    def resolve_model(self, model: str, task_type: str) -> str:
        base = model.removesuffix(".yaml").removesuffix(".pt")
        for suffix in ("-seg", "-cls", "-pose"):
            if base.endswith(suffix):
                return base
        return base + TASK_SUFFIX.get(task_type, "")

    def check_spec(self, spec: TrainSpec) -> None:
        if spec.task_type not in TASK_SUFFIX:
            raise SpecError(
                "spec.task_type",
                f"ultralytics trains {', '.join(TASKS)}; not {spec.task_type}",
            )
        base = spec.model
        for task, suffix in TASK_SUFFIX.items():
            if suffix and base.endswith(suffix):
                if task != spec.task_type:
                    raise SpecError(
                        "spec.model",
                        f"model {spec.model!r} is a {task} model; the job's task is "
                        f"{spec.task_type} (use {base.removesuffix(suffix)!r})",
                    )
                base = base.removesuffix(suffix)
        if base not in {m.name for m in self.models()}:
            names = ", ".join(m.name for m in self.models())
            raise SpecError(
                "spec.model", f"ultralytics has no model {spec.model!r}; choose one of: {names}"
            )
        known = default_cfg_keys()
        for key in spec.extra:
            if key in RESERVED_EXTRAS:
                raise SpecError(
                    f"spec.extra[{key}]",
                    f"{key!r} is set by the platform (use the typed TrainingSpec field)",
                )
            if known and key not in known:
                raise SpecError(f"spec.extra[{key}]", f"ultralytics has no setting {key!r}")
        if spec.extra.get("cache", "").lower() == "disk":
            raise SpecError(
                "spec.extra[cache]", "cache=disk writes next to the read-only dataset; use ram"
            )

    def train(self, job: JobContext) -> None:
        from trainers.ultralytics import _yolo

        _yolo.train(self, job)

    def export(
        self, checkpoint: Path, fmt: str, *, image_size: int, out_dir: Path, device: str
    ) -> Path:
        from trainers.ultralytics import _yolo

        return _yolo.export(checkpoint, fmt, image_size=image_size, out_dir=out_dir, device=device)

    def evaluate(self, job: JobContext, checkpoint: Path) -> dict[str, Any] | None:
        from trainers.ultralytics import _yolo

        return _yolo.evaluate(self, job, checkpoint)

    def check_weights(self, path: Path, model: str, task_type: str) -> str:
        from trainers.ultralytics import _yolo

        return _yolo.check_weights(self, path, model, task_type)

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
        from trainers.ultralytics import _yolo

        return _yolo.predict(
            checkpoint,
            image,
            task_type=task_type,
            class_names=class_names,
            confidence=confidence,
            max_detections=max_detections,
            device=device,
        )
