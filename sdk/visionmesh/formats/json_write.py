"""DICE standard (+ meta.json) and plain COCO documents; class masks for semantic segmentation."""

from __future__ import annotations

import hashlib
import json
import posixpath
from collections import defaultdict
from pathlib import Path
from typing import Any

from .. import __version__
from .coco import to_coco_dict, to_dice_dict
from .geometry import rasterize
from .model import Dataset
from .tasks import DICE_FILE_STEMS, SEMANTIC_SEGMENTATION

DICE_FORMAT_VERSION = "1.0"


def dice_file_name(task: str | None) -> str:
    stem = DICE_FILE_STEMS.get(task or "")
    return f"annotations_{stem}.json" if stem else "annotations.json"


def _dump(doc: Any, path: Path) -> str:
    """Write compact JSON; returns its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def write_dice(dataset: Dataset, out: Path, task: str | None) -> list[str]:
    """``annotations[_<task>].json`` (DICE standard) and ``meta.json``."""
    name = dice_file_name(task)
    doc = to_dice_dict(dataset)
    offsets = _renumber_for_dice(doc)
    digest = _dump(doc, out / name)
    files = [name]
    meta: dict[str, Any] = {
        "format": "dice",
        "format_version": DICE_FORMAT_VERSION,
        "annotation_file": name,
        "annotations_sha256": digest,
        "task_type": task or dataset.info.get("task_type") or "",
        "image_count": len(dataset.images),
        "annotation_count": len(dataset.annotations),
        "category_count": len(dataset.categories),
        "classes": [c.name for c in dataset.categories],
        "splits": {k or "none": v for k, v in sorted(dataset.split_counts().items())},
        "created_by": f"visionmesh {__version__}",
    }
    if offsets:
        # DICE ids start at 1: ids of the source were shifted (new = old + offset).
        meta["id_offsets"] = offsets
    if task == SEMANTIC_SEGMENTATION:
        meta["mask_dir"] = "masks"
        meta["mask_classes"] = mask_classes(dataset)
        files += write_masks(dataset, out)
    _dump_pretty(meta, out / "meta.json")
    files.append("meta.json")
    return files


def _renumber_for_dice(doc: dict[str, Any]) -> dict[str, int]:
    """Shift image and annotation ids below 1 (COCO exports from 0) to start at 1, as the
    DICE schema asks; references follow. Returns the offsets applied per kind."""
    offsets: dict[str, int] = {}
    for kind in ("images", "annotations"):
        ids = [x["id"] for x in doc[kind] if type(x.get("id")) is int]
        low = min(ids, default=1)
        if low < 1:
            offsets[kind] = 1 - low
    if "images" in offsets:
        k = offsets["images"]
        for im in doc["images"]:
            if type(im.get("id")) is int:
                im["id"] += k
        for a in doc["annotations"]:
            if type(a.get("image_id")) is int:
                a["image_id"] += k
    if "annotations" in offsets:
        k = offsets["annotations"]
        for a in doc["annotations"]:
            if type(a.get("id")) is int:
                a["id"] += k
    return offsets


def _dump_pretty(doc: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def write_coco(dataset: Dataset, out: Path) -> list[str]:
    """``annotations/instances_<split>.json`` per split (``instances_default.json`` for none)."""
    by_split = defaultdict(list)
    for im in dataset.images:
        by_split[im.split or "default"].append(im)
    files = []
    for split in sorted(by_split):
        name = f"annotations/instances_{split}.json"
        _dump(to_coco_dict(dataset, by_split[split]), out / name)
        files.append(name)
    if not files:
        name = "annotations/instances_default.json"
        _dump(to_coco_dict(dataset, []), out / name)
        files.append(name)
    return files


def mask_classes(dataset: Dataset) -> list[dict[str, Any]]:
    """Pixel value -> class: 0 is background, then categories in id order."""
    cats = sorted((c for c in dataset.categories if not c.is_background), key=lambda c: c.id)
    return [{"value": 0, "name": "background"}] + [
        {"value": k + 1, "name": c.name, "category_id": c.id} for k, c in enumerate(cats)
    ]


def mask_path(image_path: str) -> str:
    return "masks/" + posixpath.splitext(image_path)[0] + ".png"


def write_masks(dataset: Dataset, out: Path) -> list[str]:
    """One 8-bit PNG per image, each polygon filled with its class value."""
    values = {m["category_id"]: m["value"] for m in mask_classes(dataset)[1:]}
    if len(values) > 255:
        raise ValueError(f"{len(values)} classes do not fit 8-bit masks")
    from PIL import Image as PILImage  # here: only masks need Pillow

    by_image = dataset.annotations_by_image()
    files = []
    for im in dataset.images:
        shapes = [
            (values[a.category_id], a.segmentation)
            for a in by_image.get(im.id, ())
            if a.segmentation and a.category_id in values and not a.iscrowd
        ]
        mask = rasterize(im.width, im.height, shapes)
        rel = mask_path(im.path)
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        PILImage.fromarray(mask).save(out / rel)
        files.append(rel)
    return files
