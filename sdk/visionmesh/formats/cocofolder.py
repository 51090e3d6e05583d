"""Several COCO documents of one dataset, read per file and combined.

COCO's ``annotations/`` folder holds one file per kind and split: ``instances_<split>``,
``person_keypoints_<split>``, ``captions_<split>``, ``stuff_<split>``, ``panoptic_<split>``,
``image_info_<split>``; Roboflow puts one ``_annotations.coco.json`` in each split folder.
Each file is read on its own, its images taking the split its name (or folder) gives.
Then:

- keypoints files are merged onto the instances of the same split by annotation id (they
  are the same person annotations, with keypoints added);
- captions are not read (nothing here trains on them), with a note;
- images named by several files of one split are kept once;
- ids that restart or collide from file to file (``1`` in train and in val) are
  renumbered after the largest id seen, with a note; references follow.
"""

from __future__ import annotations

import posixpath
from typing import Any

from .model import Annotation, Category, Dataset, Image
from .problems import ProblemList, show

KINDS = (
    "instances",
    "person_keypoints",
    "captions",
    "stuff",
    "panoptic",
    "image_info",
    "labels",
)
KEYPOINTS_KIND = "person_keypoints"


def document_kind(name: str, doc: Any) -> str:
    """``instances``, ``person_keypoints``, ``captions``, ... by file name, else by content."""
    stem = posixpath.splitext(posixpath.basename(name))[0].lower()
    for kind in KINDS:
        if stem == kind or stem.startswith(kind + "_"):
            return kind
    anns = doc.get("annotations") if isinstance(doc, dict) else None
    first = anns[0] if isinstance(anns, list) and anns and isinstance(anns[0], dict) else {}
    if "caption" in first and "category_id" not in first:
        return "captions"
    if "segments_info" in first:
        return "panoptic"
    if "keypoints" in first:
        return KEYPOINTS_KIND
    return "instances"


def is_captions(doc: Any) -> bool:
    """A captions document: annotations with ``caption`` and no category."""
    anns = doc.get("annotations") if isinstance(doc, dict) else None
    if not isinstance(anns, list) or not anns or not isinstance(anns[0], dict):
        return False
    return "caption" in anns[0] and "category_id" not in anns[0]


def _merge_category(merged: Category, other: Category, problems: ProblemList) -> None:
    if merged.name != other.name:
        problems.error(
            other.origin or "",
            f"category id {other.id} is {show(other.name)} here but {show(merged.name)} in {merged.origin}",
        )
        return
    if other.keypoints and not merged.keypoints:
        merged.keypoints, merged.skeleton = other.keypoints, other.skeleton
    elif other.skeleton and not merged.skeleton:
        merged.skeleton = other.skeleton


def _max_int(values: Any) -> int:
    return max((v for v in values if type(v) is int), default=0)


def combine(parts: list[tuple[str, str, Dataset]], problems: ProblemList) -> Dataset:
    """One dataset from ``(document, kind, dataset)`` parts, in the order given."""
    merged = Dataset()
    cats: dict[Any, Category] = {}
    images_by_id: dict[Any, Image] = {}
    image_by_path: dict[tuple[str, str], Image] = {}
    ann_ids: set[Any] = set()
    by_key: dict[tuple[Any, Any], Annotation] = {}  # (image id, annotation id) -> annotation
    next_image = _max_int(im.id for _, _, ds in parts for im in ds.images) + 1
    next_ann = _max_int(a.id for _, _, ds in parts for a in ds.annotations) + 1
    # Instances first, so that keypoints files find the annotations they extend.
    order = sorted(range(len(parts)), key=lambda k: parts[k][1] == KEYPOINTS_KIND)
    for k in order:
        name, kind, ds = parts[k]
        for c in ds.categories:
            seen = cats.get(c.id) if type(c.id) is int else None
            if seen is None:
                if type(c.id) is int:
                    cats[c.id] = c
                merged.categories.append(c)
            else:
                _merge_category(seen, c, problems)
        image_map: dict[Any, Any] = {}  # this file's image id -> the merged one
        earlier_images = set(images_by_id)
        renumbered_images = 0
        for im in ds.images:
            key = (im.path, im.split)
            same = image_by_path.get(key) if isinstance(im.path, str) else None
            if same is not None and same is not im:
                if type(im.id) is int:
                    image_map[im.id] = same.id  # the same image, named by another file
                continue
            if type(im.id) is int and im.id in earlier_images:
                image_map[im.id] = next_image
                im.id = next_image
                next_image += 1
                renumbered_images += 1
            if type(im.id) is int:
                images_by_id.setdefault(im.id, im)
            if isinstance(im.path, str):
                image_by_path[key] = im
            merged.images.append(im)
        if renumbered_images:
            problems.note(
                name,
                f"{renumbered_images} image id(s) also used by an earlier file were "
                "renumbered (their annotations follow)",
            )
        earlier_anns = set(ann_ids)
        merged_kp = renumbered = 0
        for a in ds.annotations:
            if type(a.image_id) is int and a.image_id in image_map:
                a.image_id = image_map[a.image_id]
            if kind == KEYPOINTS_KIND and type(a.id) is int and type(a.image_id) is int:
                target = by_key.get((a.image_id, a.id))
                if target is not None and target.category_id == a.category_id:
                    if a.keypoints is not None:
                        target.keypoints = a.keypoints
                    merged_kp += 1
                    continue
            original = a.id
            if type(a.id) is int and a.id in earlier_anns:
                a.id = next_ann
                next_ann += 1
                renumbered += 1
            if type(original) is int:
                ann_ids.add(a.id)
                if type(a.image_id) is int:
                    by_key[(a.image_id, original)] = a
            merged.annotations.append(a)
        if merged_kp:
            problems.note(
                name, f"keypoints of {merged_kp} annotation(s) merged onto the instances by id"
            )
        if renumbered:
            problems.note(
                name,
                f"{renumbered} annotation id(s) already used by an earlier file (ids restart "
                f"per file) were renumbered from {next_ann - renumbered}",
            )
        for key, value in ds.info.items():
            merged.info.setdefault(key, value)
    return merged
