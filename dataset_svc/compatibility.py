"""CheckCompatibility and GetConversionMatrix on the sdk's rules (``visionmesh.compat``).

With a ``model``, the trainers named in ``VISIONMESH_TRAINERS`` are asked (with the
caller's token, 3 s each) which tasks the model trains (their GetCapabilities are the one
model table): a model of another task, or one that no trainer offers while all of them
answered, is INVALID_ARGUMENT on ``model``; a model no reachable trainer knows while one
is unreachable adds a warning.
"""

from __future__ import annotations

import grpc

from visionmesh import auth, compat, formats
from visionmesh.errors import invalid_argument
from visionmesh.v1 import common_pb2, compatibility_pb2, trainer_pb2, trainer_pb2_grpc

KIND_ENUM = {
    formats.IMAGE_LABEL: compatibility_pb2.ANNOTATION_KIND_IMAGE_LABEL,
    formats.BOX: compatibility_pb2.ANNOTATION_KIND_BOX,
    formats.POLYGON: compatibility_pb2.ANNOTATION_KIND_POLYGON,
    formats.KEYPOINTS: compatibility_pb2.ANNOTATION_KIND_KEYPOINTS,
}
CONVERSION_ENUM = {
    compat.NATIVE: compatibility_pb2.CONVERSION_NATIVE,
    compat.POLYGON_TO_BBOX: compatibility_pb2.CONVERSION_POLYGON_TO_BBOX,
    compat.RASTERIZE: compatibility_pb2.CONVERSION_RASTERIZE,
    compat.DOMINANT_CLASS: compatibility_pb2.CONVERSION_DOMINANT_CLASS,
    compat.NONE: compatibility_pb2.CONVERSION_NONE,
}


def task_enum(task: str) -> int:
    return common_pb2.TaskType.Value(f"TASK_TYPE_{task.upper()}")


def task_of(task_type: int) -> str:
    if (
        task_type == common_pb2.TASK_TYPE_UNSPECIFIED
        or task_type not in common_pb2.TaskType.values()
    ):
        raise invalid_argument(
            "task_type is required: one of "
            + ", ".join(n for n in common_pb2.TaskType.keys() if not n.endswith("UNSPECIFIED")),
            "task_type",
        )
    return formats.normalize_task(common_pb2.TaskType.Name(task_type))


def matrix() -> compatibility_pb2.GetConversionMatrixResponse:
    return compatibility_pb2.GetConversionMatrixResponse(
        rules=[
            compatibility_pb2.ConversionRule(
                annotation_kind=KIND_ENUM[r.annotation_kind],
                task_type=task_enum(r.task),
                conversion=CONVERSION_ENUM[r.conversion],
                lossy=r.lossy,
                note=r.note,
            )
            for r in compat.conversion_rules()
        ]
    )


def report_message(report: compat.CompatibilityReport) -> compatibility_pb2.CompatibilityReport:
    return compatibility_pb2.CompatibilityReport(
        compatible=report.compatible,
        task_type=task_enum(report.task),
        conversion=CONVERSION_ENUM.get(report.conversion, compatibility_pb2.CONVERSION_UNSPECIFIED),
        lossy=report.lossy,
        total_image_count=report.total_images,
        usable_image_count=report.usable_images,
        dropped_annotation_count=report.dropped_annotations,
        class_counts=[
            common_pb2.ClassCount(
                category_id=c.category_id,
                category_name=c.category_name,
                split=c.split,
                image_count=c.image_count,
                annotation_count=c.annotation_count,
            )
            for c in report.class_counts
        ],
        warnings=report.warnings,
        errors=report.errors,
        annotation_kinds=[KIND_ENUM[k] for k in report.annotation_kinds if k in KIND_ENUM],
        split_generated=report.split_generated,
        split_seed=report.split_seed,
    )


def check(
    document: dict, request: compatibility_pb2.CheckCompatibilityRequest, trainers: dict[str, str]
) -> compatibility_pb2.CompatibilityReport:
    task = task_of(request.task_type)
    if not 0 <= request.val_fraction < 1:
        raise invalid_argument(
            f"val_fraction must be in [0, 1) (0 means 0.2), got {request.val_fraction}",
            "val_fraction",
        )
    dataset = formats.from_dice_dict(document).dataset
    report = compat.check(
        dataset, task, split_seed=request.split_seed, val_fraction=request.val_fraction or 0.2
    )
    if request.model:
        _check_model(report, request.model, task, trainers)
    return report_message(report)


# A name with one of these suffixes is that task's variant, whatever trainer offers it
# (ultralytics: yolo11n-seg, yolo26s-cls): certain without asking any trainer.
TASK_SUFFIXES = {
    "-seg": formats.normalize_task("TASK_TYPE_INSTANCE_SEGMENTATION"),
    "-cls": formats.normalize_task("TASK_TYPE_IMAGE_CLASSIFICATION"),
    "-pose": formats.normalize_task("TASK_TYPE_POSE_ESTIMATION"),
}
MAX_MODEL_CHARS = 128


def _suffix_task(model: str) -> tuple[str, str | None]:
    """(name without a task suffix, the suffix's task or None)."""
    for suffix, task in TASK_SUFFIXES.items():
        if model.endswith(suffix):
            return model.removesuffix(suffix), task
    return model, None


def _capabilities(
    trainers: dict[str, str],
) -> tuple[dict[str, tuple[str, list[str]]], list[str]]:
    """model name -> (framework, tasks) from every reachable trainer; the unreachable ones."""
    token = auth.current_token()
    metadata = auth.bearer_metadata(token) if token else None
    offered: dict[str, tuple[str, list[str]]] = {}
    unreachable = []
    for framework, addr in trainers.items():
        try:
            with grpc.insecure_channel(addr) as channel:
                caps = trainer_pb2_grpc.TrainerServiceStub(channel).GetCapabilities(
                    trainer_pb2.GetCapabilitiesRequest(), timeout=3, metadata=metadata
                )
        except grpc.RpcError:
            unreachable.append(framework)
            continue
        for info in caps.models:
            tasks = [
                formats.normalize_task(common_pb2.TaskType.Name(t))
                for t in info.task_types
                if t in common_pb2.TaskType.values() and t != common_pb2.TASK_TYPE_UNSPECIFIED
            ]
            offered.setdefault(info.name, (caps.framework or framework, tasks))
    return offered, unreachable


def _check_model(
    report: compat.CompatibilityReport, model: str, task: str, trainers: dict[str, str]
) -> None:
    """INVALID_ARGUMENT on ``model`` when it certainly cannot train ``task``.

    Certain: a task suffix of another task (``yolo11n-cls`` for detection); a model a
    trainer offers for other tasks only; a model no trainer offers while every trainer in
    VISIONMESH_TRAINERS answered. The trainers' GetCapabilities are the one model table.
    With a trainer unreachable, a model no reachable trainer offers is a warning.
    """
    if len(model) > MAX_MODEL_CHARS or not model.strip() or model != model.strip():
        raise invalid_argument(
            f"model {model[:40]!r} is not a model name", "model", "1-128 characters, no spaces"
        )
    base, suffix_task = _suffix_task(model)
    if suffix_task is not None and suffix_task != task:
        raise invalid_argument(
            f"model {model!r} is for {suffix_task}, not {task} (for {task} use {base!r} "
            "or another model that trains it)",
            "model",
        )
    offered, unreachable = _capabilities(trainers)
    found = offered.get(model) or (offered.get(base) if suffix_task else None)
    if found is not None:
        framework, tasks = found
        if task not in tasks:
            raise invalid_argument(
                f"model {model!r} ({framework}) does not train {task}; it trains "
                + ", ".join(tasks),
                "model",
            )
        return
    if unreachable:
        report.warnings.append(
            f"model {model!r} is not offered by any reachable trainer "
            f"(unreachable: {', '.join(unreachable)})"
        )
        return
    known = sorted(name for name, (_, tasks) in offered.items() if task in tasks)
    raise invalid_argument(
        f"no trainer offers a model named {model!r}"
        + (f"; for {task}: {', '.join(known[:20])}" if known else f"; none trains {task}"),
        "model",
    )
