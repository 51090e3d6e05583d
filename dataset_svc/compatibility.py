"""CheckCompatibility and GetConversionMatrix on the sdk's rules (``visionmesh.compat``).

With a ``model``, the trainers named in ``VISIONMESH_TRAINERS`` are asked (with the
caller's token, 3 s each: :func:`dataset_svc.services.compatibility.trainer_models`, passed
in by the servicer) which tasks the model trains (their GetCapabilities are the one
model table): a model of another task, or one that no trainer offers while all of them
answered, is INVALID_ARGUMENT on ``model``; a model no reachable trainer knows while one
is unreachable adds a warning.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from visionmesh import compat, formats
from visionmesh.errors import invalid_argument

# model name -> (framework, tasks) of every reachable trainer, and the unreachable ones
Offered = tuple[dict[str, tuple[str, list[str]]], list[str]]


def check(
    document: dict[str, Any],
    task: str,
    *,
    split_seed: int,
    val_fraction: float,
    model: str,
    trainer_models: Callable[[], Offered],
) -> compat.CompatibilityReport:
    """The report of training ``task`` (a formats task name) on ``document``; with a
    ``model``, ``trainer_models`` (asked only when needed) says which trainer offers it."""
    if not 0 <= val_fraction < 1:
        raise invalid_argument(
            f"val_fraction must be in [0, 1) (0 means 0.2), got {val_fraction}",
            "val_fraction",
        )
    dataset = formats.from_dice_dict(document).dataset
    report = compat.check(dataset, task, split_seed=split_seed, val_fraction=val_fraction or 0.2)
    if model:
        _check_model(report, model, task, trainer_models)
    return report


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


def _check_model(
    report: compat.CompatibilityReport,
    model: str,
    task: str,
    trainer_models: Callable[[], Offered],
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
    offered, unreachable = trainer_models()
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
