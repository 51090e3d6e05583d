"""Class folders for image classification: ImageFolder and YOLO classify.

Both are ``<split>/<class>/<file>``; ImageFolder drops the split level when no image has
a split. Each image takes its image-level label (convert detection-style annotations
with ``compat.convert(dataset, "image_classification")`` first: dominant class).
"""

from __future__ import annotations

import posixpath

from .model import IMAGE_LABEL, Dataset
from .paths import safe_folder_name, strip_layout
from .problems import ProblemList


def image_labels(dataset: Dataset, problems: ProblemList) -> dict[int, int]:
    """Image id -> category id of its image-level label (the first, when there are several)."""
    bg = dataset.background_ids()
    out: dict[int, int] = {}
    several = 0
    for a in dataset.annotations:
        if a.kind != IMAGE_LABEL or a.category_id in bg:
            continue
        if a.image_id in out:
            if out[a.image_id] != a.category_id:
                several += 1
            continue
        out[a.image_id] = a.category_id
    if several:
        problems.warning("", f"{several} image(s) have several labels; the first is used")
    return out


def write_class_folders(
    dataset: Dataset,
    split_of: dict[int, str] | None,
    problems: ProblemList,
) -> list[tuple[str, str]]:
    """[(image path, destination)] for every labelled image; nothing is written but images."""
    labels = image_labels(dataset, problems)
    folder = {c.id: safe_folder_name(c.name) for c in dataset.categories}
    plan: list[tuple[str, str]] = []
    used: set[str] = set()
    unlabelled = 0
    for im in dataset.images:
        cid = labels.get(im.id)
        if cid is None or cid not in folder:
            unlabelled += 1
            continue
        cls = folder[cid]
        rel = strip_layout(im.path)
        parts = rel.split("/")
        if len(parts) > 1 and parts[0] == cls:
            rel = "/".join(parts[1:])
        prefix = f"{split_of.get(im.id) or 'train'}/" if split_of is not None else ""
        dest = f"{prefix}{cls}/{rel}"
        if dest in used:
            stem, ext = posixpath.splitext(dest)
            problems.warning(
                im.path, f"another image is also named {dest}; written as {stem}_{im.id}{ext}"
            )
            dest = f"{stem}_{im.id}{ext}"
        used.add(dest)
        plan.append((im.path, dest))
    if unlabelled:
        problems.warning("", f"{unlabelled} image(s) without a class label left out")
    return plan
