"""YOLO label folders for detect / segment / pose, with data.yaml.

Layout: ``images/<split>/<rel>`` and ``labels/<split>/<rel stem>.txt`` where ``rel`` is the
image's path without its leading ``images``/split folders. Class indices are the rank of
the category id (0..K-1 in id order, ``__background__`` left out), so 0-based contiguous
ids are kept as they are. Coordinates are normalized and clipped to [0, 1].
"""

from __future__ import annotations

import os
import posixpath
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import yaml

from .geometry import bbox_of_annotation, merge_polygons
from .model import Annotation, Dataset, Image
from .paths import strip_layout
from .problems import ProblemList
from .tasks import INSTANCE_SEGMENTATION, OBJECT_DETECTION, POSE_ESTIMATION
from .textnum import grouped_lines

# Images formatted together: enough to keep numpy's per-call overhead small, few enough
# that the chunk's arrays (a few MB) are reused heap memory (at 2048 images glibc mapped
# fresh pages for them every chunk: ~26,000 page faults for 20,000 images).
_CHUNK = 512


class LabelWriter:
    """Writes small files fast: plain ``os.write``, each folder created once."""

    def __init__(self, root: Path) -> None:
        self.root = str(root) + os.sep
        self._made: set[str] = set()
        self.count = 0

    def write(self, rel: str, data: bytes) -> None:
        folder = posixpath.dirname(rel)
        if folder not in self._made:
            os.makedirs(self.root + folder, exist_ok=True)
            self._made.add(folder)
        fd = os.open(self.root + rel, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        self.count += 1

    def write_many(self, files: list[tuple[str, bytes]]) -> None:
        for rel, data in files:
            self.write(rel, data)


def class_index(dataset: Dataset) -> tuple[dict[int, int], list[str]]:
    """Category id -> YOLO class index, and the names in index order."""
    cats = sorted((c for c in dataset.categories if not c.is_background), key=lambda c: c.id)
    return {c.id: k for k, c in enumerate(cats)}, [c.name for c in cats]


def output_names(
    images: list[Image], split_of: dict[int, str], problems: ProblemList
) -> dict[int, tuple[str, str]]:
    """Image id -> (image path, label path) in the YOLO layout; clashing names get the id."""
    out: dict[int, tuple[str, str]] = {}
    used: set[str] = set()
    for im in images:
        split = split_of.get(im.id) or "train"
        rel = strip_layout(im.path)
        stem, ext = posixpath.splitext(rel)
        label = f"labels/{split}/{stem}.txt"
        if label in used:
            problems.warning(
                im.path, f"another image is also named {stem}; written as {stem}_{im.id}"
            )
            stem = f"{stem}_{im.id}"
            label = f"labels/{split}/{stem}.txt"
        used.add(label)
        out[im.id] = (f"images/{split}/{stem}{ext}", label)
    return out


def write_yolo(
    dataset: Dataset,
    out: Path,
    task: str,
    split_of: dict[int, str],
    problems: ProblemList,
) -> tuple[list[str], list[tuple[str, str]]]:
    """Write labels and data.yaml. Returns (files written, [(image path, destination)])."""
    index, names = class_index(dataset)
    names_out = output_names(dataset.images, split_of, problems)
    by_image = dataset.annotations_by_image()
    kpt_shape = None
    if task == POSE_ESTIMATION:
        kpt_shape = _kpt_shape(dataset, index, problems)
        if kpt_shape is None:
            return [], []
    writer = LabelWriter(out)
    skipped = {"crowd": 0, "no geometry": 0, "clipped": 0, "unlabelled": 0}
    images = dataset.images
    # Files of one chunk are written on a thread while the next chunk is formatted.
    with ThreadPoolExecutor(1, thread_name_prefix="yolo-labels") as files:
        pending: Future | None = None
        for start in range(0, len(images), _CHUNK):
            chunk = images[start : start + _CHUNK]
            if task == POSE_ESTIMATION:
                texts = _pose_chunk(chunk, by_image, index, kpt_shape[0], skipped)
            else:
                texts = _vector_chunk(chunk, by_image, index, task, skipped)
            labels = [names_out[im.id][1] for im in chunk]
            if pending is not None:
                pending.result()  # raises what writing failed with
            pending = files.submit(writer.write_many, list(zip(labels, texts, strict=True)))
        if pending is not None:
            pending.result()
    if skipped["crowd"]:
        problems.warning(
            "", f"{skipped['crowd']} crowd annotation(s) left out (YOLO has no crowd regions)"
        )
    if skipped["no geometry"]:
        what = {OBJECT_DETECTION: "a box", INSTANCE_SEGMENTATION: "a polygon"}.get(
            task, "keypoints"
        )
        problems.warning("", f"{skipped['no geometry']} annotation(s) without {what} left out")
    if skipped["unlabelled"]:
        problems.warning(
            "",
            f"{skipped['unlabelled']} annotation(s) without any labelled keypoint left out "
            "(as ultralytics' convert_coco does)",
        )
    if skipped["clipped"]:
        problems.warning(
            "", f"{skipped['clipped']} coordinate(s) outside the image clipped to its edge"
        )
    splits = sorted({names_out[i][0].split("/")[1] for i in names_out})
    _write_data_yaml(out, splits, names, kpt_shape, dataset.info.get("flip_idx"), problems)
    files = ["data.yaml"] + [names_out[im.id][1] for im in images]
    plan = [(im.path, names_out[im.id][0]) for im in images]
    return files, plan


def _usable(a: Annotation, index: dict[int, int], skipped: dict[str, int]) -> bool:
    if a.category_id not in index:
        return False  # background markers and unknown categories
    if a.iscrowd:
        skipped["crowd"] += 1
        return False
    return True


def _vector_chunk(
    chunk: list[Image],
    by_image: dict[int, list[Annotation]],
    index: dict[int, int],
    task: str,
    skipped: dict[str, int],
) -> list[bytes]:
    """Label text for a chunk of images: gather geometry, then normalize and format at once."""
    classes: list[int] = []
    owner: list[int] = []
    shapes: list = []  # polygons (lists or 1-D arrays) or boxes
    segment = task == INSTANCE_SEGMENTATION
    add_class, add_owner, add_shape = classes.append, owner.append, shapes.append
    for k, im in enumerate(chunk):
        for a in by_image.get(im.id, ()):
            cls = index.get(a.category_id)
            if cls is None:
                continue  # background markers
            if a.iscrowd:
                skipped["crowd"] += 1
                continue
            if segment:
                polys = a.segmentation
                if not polys:
                    skipped["no geometry"] += 1
                    continue
                add_shape(polys[0] if len(polys) == 1 else merge_polygons(polys))
            else:
                box = a.bbox if a.bbox is not None else bbox_of_annotation(a)
                if box is None:
                    skipped["no geometry"] += 1
                    continue
                add_shape(box)
            add_class(cls)
            add_owner(k)
    if not classes:
        return [b"" for _ in chunk]
    owners = np.asarray(owner, dtype=np.int64)
    inv = 1.0 / np.asarray([(im.width, im.height) for im in chunk], dtype=np.float64)
    if segment:
        counts = np.fromiter(map(len, shapes), dtype=np.int64, count=len(shapes))
        pts = np.concatenate(shapes).astype(np.float64, copy=False).reshape(-1, 2)
        pts *= np.repeat(inv[owners], counts // 2, axis=0)
    else:
        counts = np.full(len(shapes), 4, dtype=np.int64)
        b = np.asarray(shapes, dtype=np.float64)
        b[:, 0] += b[:, 2] / 2
        b[:, 1] += b[:, 3] / 2
        pts = b.reshape(-1, 2) * np.repeat(inv[owners], 2, axis=0)
    outside = (pts < -1e-9) | (pts > 1 + 1e-9)
    if outside.any():
        skipped["clipped"] += int(outside.sum())
        np.clip(pts, 0.0, 1.0, out=pts)
    # Rows are in image order: each image owns one contiguous run of them.
    return grouped_lines(classes, pts, counts, np.searchsorted(owners, np.arange(len(chunk) + 1)))


def _kpt_shape(dataset: Dataset, index: dict[int, int], problems: ProblemList) -> list[int] | None:
    counts = {
        len(a.keypoints) // 3 for a in dataset.annotations if a.keypoints and a.category_id in index
    }
    if not counts:
        problems.error("", "no annotation has keypoints; a pose dataset needs them")
        return None
    if len(counts) > 1:
        problems.error(
            "",
            f"annotations have different numbers of keypoints {sorted(counts)}; YOLO pose needs one",
        )
        return None
    return [counts.pop(), 3]


def clip(v: float) -> float:
    return 0.0 if v < 0 else 1.0 if v > 1 else v


def _pose_chunk(
    chunk: list[Image],
    by_image: dict[int, list[Annotation]],
    index: dict[int, int],
    n_kpts: int,
    skipped: dict[str, int],
) -> list[bytes]:
    out = []
    for im in chunk:
        w, h = im.width, im.height
        rows = []
        for a in by_image.get(im.id, ()):
            if not _usable(a, index, skipped):
                continue
            box = bbox_of_annotation(a)
            if not a.keypoints or box is None or len(a.keypoints) != n_kpts * 3:
                skipped["no geometry"] += 1
                continue
            if not any(a.keypoints[2::3]):
                skipped["unlabelled"] += 1  # ultralytics and COCO's evaluation skip these
                continue
            x, y, bw, bh = box
            values = [clip((x + bw / 2) / w), clip((y + bh / 2) / h), clip(bw / w), clip(bh / h)]
            kp = a.keypoints
            cells = [f"{v:.6f}" for v in values]
            for j in range(0, len(kp), 3):
                cells += [
                    f"{clip(kp[j] / w):.6f}",
                    f"{clip(kp[j + 1] / h):.6f}",
                    f"{int(kp[j + 2])}",
                ]
            rows.append(f"{index[a.category_id]} {' '.join(cells)}\n".encode())
        out.append(b"".join(rows))
    return out


def _write_data_yaml(
    out: Path,
    splits: list[str],
    names: list[str],
    kpt_shape: list[int] | None,
    flip_idx: object,
    problems: ProblemList,
) -> None:
    # No "path" key: ultralytics then resolves the folders next to this file.
    cfg: dict[str, object] = {"train": "images/train"}
    if "train" not in splits and splits:
        other = "val" if "val" in splits else splits[0]
        cfg["train"] = f"images/{other}"
        problems.warning("data.yaml", f"no train images: train points at images/{other}")
    if "val" in splits:
        cfg["val"] = "images/val"
    else:
        cfg["val"] = "images/train"
        problems.warning("data.yaml", "no val images: val points at images/train")
    if "test" in splits:
        cfg["test"] = "images/test"
    cfg["nc"] = len(names)
    cfg["names"] = dict(enumerate(names))
    if kpt_shape:
        cfg["kpt_shape"] = kpt_shape
        if isinstance(flip_idx, list) and len(flip_idx) == kpt_shape[0]:
            cfg["flip_idx"] = flip_idx
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "data.yaml", "w", encoding="utf-8") as fh:
        yaml.safe_dump(cfg, fh, sort_keys=False, allow_unicode=True)
