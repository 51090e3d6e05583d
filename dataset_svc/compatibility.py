"""CheckCompatibility and GetConversionMatrix on the sdk's rules (``visionmesh.compat``).

With a ``model``, the trainers named in ``VISIONMESH_TRAINERS`` are asked (with the
caller's token, 3 s each) which tasks the model trains: a model that does not train the
task makes the report incompatible; a model no reachable trainer knows adds a warning.
"""

from __future__ import annotations

import grpc

from dataset_svc.errors import invalid_argument
from visionmesh import auth, compat, formats
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


def _check_model(
    report: compat.CompatibilityReport, model: str, task: str, trainers: dict[str, str]
) -> None:
    token = auth.current_token()
    metadata = auth.bearer_metadata(token) if token else None
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
            if info.name == model:
                tasks = [
                    formats.normalize_task(common_pb2.TaskType.Name(t)) for t in info.task_types
                ]
                if task not in tasks:
                    report.compatible = False
                    report.errors.append(
                        f"model {model!r} ({caps.framework}) does not train {task}; it trains "
                        + ", ".join(tasks)
                    )
                return
    where = f" (unreachable: {', '.join(unreachable)})" if unreachable else ""
    report.warnings.append(f"model {model!r} is not offered by any reachable trainer{where}")
