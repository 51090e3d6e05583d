"""DiffSnapshots: what changed between two documents of one dataset.

Images are matched by path: added, removed, or changed (same path, other bytes).
Annotations are compared per image path by content (category and geometry): identical
ones cancel out; a remaining pair on the same image with the same category counts as
changed (e.g. a moved box); the rest are added or removed. So re-importing the same
labels shows no change even though annotation ids differ.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class ClassChange:
    category_id: int
    category_name: str
    base_count: int
    target_count: int


@dataclass
class Diff:
    added_images: list[str]
    removed_images: list[str]
    changed_images: list[str]
    added_annotation_count: int = 0
    removed_annotation_count: int = 0
    changed_annotation_count: int = 0
    class_changes: list[ClassChange] = field(default_factory=list)


def _content_key(ann: dict[str, Any]) -> str:
    return json.dumps(
        [ann.get("category_id"), ann.get("bbox"), ann.get("segmentation"), ann.get("keypoints")],
        sort_keys=True,
    )


def _by_path(document: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    path_of = {im["id"]: im["file_name"] for im in document["images"]}
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for ann in document["annotations"]:
        path = path_of.get(ann["image_id"])
        if path is not None:
            out[path].append(ann)
    return out


def diff(base: dict[str, Any], target: dict[str, Any]) -> Diff:
    base_images = {im["file_name"]: im.get("sha256", "") for im in base["images"]}
    target_images = {im["file_name"]: im.get("sha256", "") for im in target["images"]}
    result = Diff(
        added_images=sorted(set(target_images) - set(base_images)),
        removed_images=sorted(set(base_images) - set(target_images)),
        changed_images=sorted(
            p for p in set(base_images) & set(target_images) if base_images[p] != target_images[p]
        ),
    )
    base_anns, target_anns = _by_path(base), _by_path(target)
    added = removed = changed = 0
    for path in set(base_anns) | set(target_anns):
        before = Counter(_content_key(a) for a in base_anns.get(path, []))
        after = Counter(_content_key(a) for a in target_anns.get(path, []))
        gone = before - after
        new = after - before
        gone_by_cat = Counter(json.loads(k)[0] for k in gone.elements())
        new_by_cat = Counter(json.loads(k)[0] for k in new.elements())
        pairs = sum((gone_by_cat & new_by_cat).values())
        changed += pairs
        removed += sum(gone.values()) - pairs
        added += sum(new.values()) - pairs
    result.added_annotation_count = added
    result.removed_annotation_count = removed
    result.changed_annotation_count = changed
    base_counts = Counter(a["category_id"] for a in base["annotations"])
    target_counts = Counter(a["category_id"] for a in target["annotations"])
    names = {c["id"]: c.get("name", "") for c in base["categories"]}
    names.update({c["id"]: c.get("name", "") for c in target["categories"]})
    for category_id in sorted(set(base_counts) | set(target_counts) | set(names)):
        if base_counts[category_id] != target_counts[category_id]:
            result.class_changes.append(
                ClassChange(
                    category_id=category_id,
                    category_name=names.get(category_id, ""),
                    base_count=base_counts[category_id],
                    target_count=target_counts[category_id],
                )
            )
    return result
