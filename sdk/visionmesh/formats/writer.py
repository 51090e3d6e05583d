"""``write(dataset, fmt, out_dir, task=...)``: one entry point for every writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .classify_write import write_class_folders
from .images import PLACE_MODES, place
from .json_write import write_coco, write_dice
from .model import IMAGE_LABEL, KEYPOINTS, POLYGON, Dataset
from .problems import Problem, ProblemList
from .source import DirectorySource, Source
from .tasks import (
    IMAGE_CLASSIFICATION,
    INSTANCE_SEGMENTATION,
    OBJECT_DETECTION,
    POSE_ESTIMATION,
    SEMANTIC_SEGMENTATION,
    normalize_task,
)
from .yolo_write import write_yolo

FORMATS = ("dice", "coco", "yolo", "imagefolder")


@dataclass
class WriteResult:
    out_dir: Path
    format: str
    task: str | None
    files: list[str] = field(default_factory=list)  # annotation files written, relative
    # (image path in the dataset, destination relative to out_dir) for every image the
    # output needs; placed when a source with local files was given, else for the caller.
    images: list[tuple[str, str]] = field(default_factory=list)
    images_placed: int = 0
    problems: list[Problem] = field(default_factory=list)


def infer_task(dataset: Dataset) -> str:
    """The task a dataset's richest annotations serve natively."""
    kinds = dataset.kinds()
    if KEYPOINTS in kinds:
        return POSE_ESTIMATION
    if POLYGON in kinds:
        return INSTANCE_SEGMENTATION
    if kinds - {IMAGE_LABEL}:
        return OBJECT_DETECTION
    return IMAGE_CLASSIFICATION


def write(
    dataset: Dataset,
    fmt: str,
    out_dir: str | Path,
    *,
    task: str | None = None,
    source: Source | None = None,
    images: str = "link",
    split_seed: int = 0,
    val_fraction: float = 0.2,
) -> WriteResult:
    """Write ``dataset`` as ``fmt`` (dice, coco, yolo, imagefolder) under ``out_dir``.

    The dataset should already suit ``task`` (see ``compat.prepare``); annotations a
    format cannot hold are left out with a warning. YOLO and classify folders need a
    split: images without one are split with ``split_seed`` (the dataset is not changed).
    ``images``: link (hard link, else copy), copy, symlink, or none (labels only); images
    are placed from a :class:`DirectorySource` only, else ``WriteResult.images`` tells the
    caller where each image goes.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if images not in PLACE_MODES:
        raise ValueError(f"images must be one of {', '.join(PLACE_MODES)}")
    task = normalize_task(task) if task else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    problems = ProblemList()
    result = WriteResult(out, fmt, task)
    if fmt == "dice":
        result.files = write_dice(dataset, out, task)
        result.images = [(im.path, im.path) for im in dataset.images]
    elif fmt == "coco":
        result.files = write_coco(dataset, out)
        result.images = [(im.path, im.path) for im in dataset.images]
    elif fmt == "yolo":
        task = task or infer_task(dataset)
        result.task = task
        split_of = _splits(dataset, split_seed, val_fraction, problems)
        if task == IMAGE_CLASSIFICATION:
            result.images = write_class_folders(dataset, split_of, problems)
        elif task == SEMANTIC_SEGMENTATION:
            raise ValueError("YOLO has no semantic segmentation format; write dice (masks) instead")
        else:
            result.files, result.images = write_yolo(dataset, out, task, split_of, problems)
    else:
        if task not in (None, IMAGE_CLASSIFICATION):
            raise ValueError("ImageFolder holds image classification only")
        result.task = IMAGE_CLASSIFICATION
        has_split = any(im.split for im in dataset.images)
        split_of = {im.id: im.split for im in dataset.images} if has_split else None
        result.images = write_class_folders(dataset, split_of, problems)
    if images != "none" and isinstance(source, DirectorySource):
        result.images_placed = _place_images(result.images, source, out, images, problems)
    result.problems = list(problems)
    return result


def _splits(
    dataset: Dataset, seed: int, val_fraction: float, problems: ProblemList
) -> dict[int, str]:
    from ..splits import SplitError, resolve_splits

    if all(im.split for im in dataset.images):
        return {im.id: im.split for im in dataset.images}
    try:
        res = resolve_splits(dataset, seed=seed, val_fraction=val_fraction)
    except SplitError as exc:
        problems.warning("", f"no split could be made ({exc}); every image goes to train")
        return {im.id: im.split or "train" for im in dataset.images}
    for message in res.warnings:
        problems.warning("", message)
    if res.generated:
        problems.warning("", f"images without a split were split with seed {seed}")
    return res.splits


def _place_images(
    plan: list[tuple[str, str]], source: Source, out: Path, mode: str, problems: ProblemList
) -> int:
    placed = 0
    for src_path, dest in plan:
        local = source.local_image(src_path)
        if local is None:
            problems.error(src_path, "image file not found; not written")
            continue
        target = out / dest
        if target.exists() or target.is_symlink():
            target.unlink()
        place(local, target, mode)
        placed += 1
    return placed
