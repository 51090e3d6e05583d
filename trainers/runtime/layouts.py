"""Write the training layout a framework reads, from a snapshot manifest (DICE standard).

Built on the shared libraries, so a trainer prepares a snapshot exactly as CheckCompatibility
predicts: ``visionmesh.formats.read.from_dice_dict`` parses the manifest,
``visionmesh.compat.prepare`` converts the annotations for the task (DESIGN.md section 7) and
splits images without a split with the job's seed, and the ``visionmesh.formats`` writers lay
it out. The layouts are the ones ``TrainerAdapter.dataset_format`` names:

- "yolo": ultralytics' ``data.yaml`` with ``images/`` and ``labels/`` per split (class
  folders for classification);
- "imagefolder": ``<split>/<class>/<image>`` class folders;
- "coco": plain COCO ``annotations_<split>.json`` per split, images under ``images/``.

Images are hard-linked from the local blob cache (copied when linking is impossible).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from trainers.runtime.adapter import IMAGE_CLASSIFICATION


class LayoutError(ValueError):
    """The manifest cannot be laid out for the task (the message says why)."""


def _place(src: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.exists() or dest.is_symlink():
        dest.unlink()
    try:
        os.link(src, dest)
    except OSError:
        shutil.copyfile(src, dest)


def _folder_name(name: str) -> str:
    """The class folder the formats writers use for a category name."""
    try:
        from visionmesh.formats.paths import safe_folder_name
    except ImportError:  # pragma: no cover - the writer's own rule, should the helper move
        cleaned = name.replace("/", "_").replace("\\", "_").strip()
        return cleaned if cleaned not in ("", ".", "..") else f"_{cleaned.strip('.')}_"
    return safe_folder_name(name)


def _problems(problems: list[Any], limit: int = 5) -> str:
    shown = [f"{p.path}: {p.message}" if p.path else p.message for p in problems[:limit]]
    more = f" (+{len(problems) - limit} more)" if len(problems) > limit else ""
    return "; ".join(shown) + more


def hold_out_val(dataset: Any) -> int:
    """A job needs val images to measure itself. When the snapshot gives train images but no
    val (a folder of train/ only), its train images are split with the job's seed for this
    job, as images without a split are; the dataset keeps its own splits. Returns how many
    train images were opened to the split (0 when val was given or nothing was train)."""
    if any(im.split == "val" for im in dataset.images):
        return 0
    train = [im for im in dataset.images if im.split == "train"]
    for im in train:
        im.split = ""
    return len(train)


def write_layout(
    manifest: bytes,
    *,
    task_type: str,
    layout: str,
    split_seed: int,
    val_fraction: float,
    out_dir: Path,
    final_dir: Path,
    image_file: Callable[[str], Path],
) -> dict[str, Any]:
    """Write the layout into ``out_dir`` (to be renamed to ``final_dir``); return its info."""
    from visionmesh import compat
    from visionmesh.formats import from_dice_dict, to_coco_dict, write

    read = from_dice_dict(json.loads(manifest))
    if read.errors:
        raise LayoutError(f"the snapshot manifest is invalid: {_problems(read.errors)}")
    held_out = hold_out_val(read.dataset)
    dataset, report = compat.prepare(
        read.dataset, task_type, split_seed=split_seed, val_fraction=val_fraction or 0.2
    )
    if dataset is None:
        reasons = "; ".join(report.errors) or "no usable annotations"
        raise LayoutError(f"this snapshot cannot train {task_type}: {reasons}")
    sha = {im.path: im.sha256 for im in dataset.images}
    # YOLO class index = rank of the category id, background left out (yolo_write's rule)
    categories = sorted((c for c in dataset.categories if not c.is_background), key=lambda c: c.id)
    names = [c.name for c in categories]
    ids = [c.id for c in categories]
    counts: dict[str, int] = {}
    out_dir = Path(out_dir)

    if layout in ("yolo", "imagefolder"):
        if layout == "imagefolder" and task_type != IMAGE_CLASSIFICATION:
            raise LayoutError(f"the imagefolder layout holds classification, not {task_type}")
        result = write(
            dataset,
            layout,
            out_dir,
            task=task_type,
            images="none",
            split_seed=split_seed,
            val_fraction=val_fraction or 0.2,
        )
        errors = [p for p in result.problems if p.severity == "error"]
        if errors:
            raise LayoutError(f"could not write the {layout} layout: {_problems(errors)}")
        for src, dest in result.images:
            if not sha.get(src):
                raise LayoutError(f"image {src} has no sha256 in the snapshot manifest")
            _place(image_file(sha[src]), out_dir / dest)
            split = dest.split("/")[1] if layout == "yolo" else dest.split("/")[0]
            counts[split] = counts.get(split, 0) + 1
        if layout == "yolo" and task_type == IMAGE_CLASSIFICATION:
            layout = "imagefolder"  # the yolo writer's classify output is class folders
        if layout == "yolo":
            data_yaml = out_dir / "data.yaml"
            data = yaml.safe_load(data_yaml.read_text())
            data = {"path": str(final_dir), **data}
            data_yaml.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
        else:
            # class folders: the framework indexes the folders present, sorted by name
            folder_of = {c.id: _folder_name(c.name) for c in categories}
            present = {dest.split("/")[1] for _, dest in result.images}
            order = sorted(
                (c for c in categories if folder_of[c.id] in present), key=lambda c: folder_of[c.id]
            )
            names = [c.name for c in order]
            ids = [c.id for c in order]
    elif layout == "coco":
        for split in ("train", "val", "test"):
            members = [im for im in dataset.images if im.split == split]
            if not members:
                continue
            doc = to_coco_dict(dataset, members)
            (out_dir / f"annotations_{split}.json").write_text(json.dumps(doc))
            for im in members:
                _place(image_file(sha[im.path]), out_dir / "images" / im.path)
            counts[split] = len(members)
    else:
        raise LayoutError(f"unknown dataset layout {layout!r}")
    if not counts.get("train") or not counts.get("val"):
        raise LayoutError(
            f"training needs images in both train and val; this split gives {counts or 'none'}"
        )
    warnings = list(report.warnings)
    if held_out:
        warnings.insert(
            0,
            f"the snapshot gives train images and no val: {counts.get('val', 0)} of its "
            f"{held_out} train images are held out for validation in this job (split seed "
            f"{split_seed}, val fraction {val_fraction or 0.2}); the dataset's splits are "
            "unchanged",
        )
    return {
        "class_names": list(names),
        "category_ids": [int(i) for i in ids],
        "counts": counts,
        "conversion": report.conversion,
        "lossy": report.lossy,
        "split_generated": report.split_generated or bool(held_out),
        "dropped_annotations": report.dropped_annotations,
        "warnings": warnings,
    }
