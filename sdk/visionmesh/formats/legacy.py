"""The legacy v0.9 layout: ``label_map.json`` + one ``labels/<stem>.json`` per image.

``label_map.json`` has ``task_type`` (cls / det / seg), ``class_summary.classes``
(``name``, ``idx``, ``color``) and ``data_summary`` (``img_path``, ``label_path`` as the
labelling tool's absolute paths, e.g. ``E:/data/images/a.jpg``). A label file has
``shapes`` (``label``, ``points``, ``shape_type`` point / rectangle / polygon), ``split``,
``imageWidth`` and ``imageHeight``. Absolute tool paths are made relative by finding the
label files in the source; the classes keep their ``idx`` as category id.
"""

from __future__ import annotations

import posixpath
from typing import Any

from .fastjson import json_loads
from .model import Annotation, Category, Dataset, Image
from .paths import NO_SPLIT, split_name
from .problems import ProblemList, show
from .source import Source

LABEL_MAP = "label_map.json"
# labelme's class list (what labelme2coco reads): ``__ignore__`` first, then the classes.
LABELS_TXT = "labels.txt"
_TOOL_BACKGROUND = "_background_"
_TOOL_IGNORE = "__ignore__"
_NOT_LABELS = {"annotations", "annotation"}


def is_label_json(source: Source, path: str) -> bool:
    """A per-image label file (``shapes``), not some other JSON document."""
    if not path.endswith(".json") or posixpath.basename(path) in (LABEL_MAP, "meta.json"):
        return False
    parts = path.split("/")[:-1]
    if any(p in _NOT_LABELS for p in parts):
        return False
    try:
        with source.open(path) as fh:
            head = fh.read(4096)
    except OSError:
        return False
    return b'"shapes"' in head and head.lstrip()[:1] == b"{"


def label_files(source: Source) -> list[str]:
    return [f for f in source.files() if is_label_json(source, f)]


def _relative_to_source(abs_path: str, known: set[str]) -> tuple[str | None, str]:
    """Find the shortest suffix of a tool path that exists in the source: (path, prefix cut)."""
    parts = abs_path.replace("\\", "/").split("/")
    for i in range(len(parts)):
        candidate = "/".join(parts[i:])
        if candidate in known:
            return candidate, "/".join(parts[:i])
    return None, ""


def _pairs_from_summary(
    summary: Any, source: Source, problems: ProblemList
) -> list[tuple[str, str, str]]:
    """(label file, image path, origin) for each data_summary entry."""
    files = set(source.files())
    images = set(source.images())
    out = []
    for i, entry in enumerate(summary):
        origin = f"{LABEL_MAP}:data_summary[{i}]"
        if not isinstance(entry, dict):
            problems.error(origin, "an entry must be an object with img_path and label_path")
            continue
        label_path, img_path = entry.get("label_path"), entry.get("img_path")
        if not isinstance(label_path, str) or not isinstance(img_path, str):
            problems.error(origin, "img_path and label_path must be strings")
            continue
        label, cut = _relative_to_source(label_path, files)
        if label is None:
            problems.error(origin + ".label_path", f"label file {show(label_path)} not found")
            continue
        norm_img = img_path.replace("\\", "/")
        if cut and norm_img.startswith(cut + "/"):
            image = norm_img[len(cut) + 1 :]
        else:
            image, _ = _relative_to_source(norm_img, images)
        if image is None or image not in images:
            problems.error(origin + ".img_path", f"image {show(img_path)} not found")
            continue
        out.append((label, image, origin))
    return out


def _pairs_from_folders(
    source: Source, problems: ProblemList, files: list[str] | None = None
) -> list[tuple[str, str, str]]:
    """Without data_summary: each label file with its image of the same stem, looked for
    beside it, then in a sibling ``images/`` folder, then anywhere."""
    by_stem: dict[str, list[str]] = {}
    for img in source.images():
        by_stem.setdefault(posixpath.splitext(posixpath.basename(img))[0], []).append(img)
    out = []
    for f in label_files(source) if files is None else files:
        folder, base = posixpath.split(f)
        stem = posixpath.splitext(base)[0]
        found = by_stem.get(stem, [])
        parent = posixpath.dirname(folder)
        ranked = sorted(
            found,
            key=lambda im: (
                posixpath.dirname(im) != folder,
                posixpath.dirname(im) != posixpath.join(parent, "images"),
                im,
            ),
        )
        if not ranked:
            problems.error(f, f"no image named {stem}.* for this label file")
            continue
        out.append((f, ranked[0], f))
    return out


def read_labels_txt(source: Source, path: str, problems: ProblemList) -> list[Category]:
    """labelme's ``labels.txt``: ids as labelme2coco gives them (line number - 1 after
    ``__ignore__``); ``__ignore__`` and ``_background_`` are not classes."""
    text = source.read_bytes(path).decode("utf-8", "replace")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    offset = 1 if lines and lines[0] == _TOOL_IGNORE else 0
    out = []
    for i, name in enumerate(lines):
        if name in (_TOOL_IGNORE, _TOOL_BACKGROUND):
            continue
        out.append(Category(i - offset, name, origin=f"{path}:{i + 1}"))
    return out


def read_legacy(source: Source, label_map_path: str, problems: ProblemList) -> Dataset:
    if posixpath.basename(label_map_path) == LABELS_TXT:
        return _read_with_labels_txt(source, label_map_path, problems)
    ds = Dataset()
    try:
        label_map = json_loads(source.read_bytes(label_map_path))
    except (ValueError, UnicodeDecodeError) as exc:
        problems.error(label_map_path, f"not valid JSON: {exc}")
        return ds
    if not isinstance(label_map, dict):
        problems.error(label_map_path, "must be a JSON object")
        return ds
    task = label_map.get("task_type")
    ds.info["task_type"] = _TASKS.get(task, task)
    classes = (label_map.get("class_summary") or {}).get("classes")
    if not isinstance(classes, list):
        problems.error(f"{LABEL_MAP}:class_summary.classes", "the class list is missing")
        classes = []
    by_name: dict[str, int] = {}
    for i, c in enumerate(classes):
        origin = f"{LABEL_MAP}:class_summary.classes[{i}]"
        if not isinstance(c, dict):
            problems.error(origin, "a class must be an object with name and idx")
            continue
        name, idx = c.get("name"), c.get("idx")
        if name == _TOOL_BACKGROUND:
            continue  # the tool's implicit mask background, not a class
        ds.categories.append(Category(idx, name, color=c.get("color") or "", origin=origin))
        if isinstance(name, str):
            by_name[name] = idx
    summary = label_map.get("data_summary")
    if isinstance(summary, list) and summary:
        pairs = _pairs_from_summary(summary, source, problems)
    else:
        pairs = _pairs_from_folders(source, problems)
    for label, image_path, origin in pairs:
        _read_label(source, label, image_path, origin, by_name, ds, problems)
    if any(isinstance(e, dict) and e.get("mask_path") for e in summary or []):
        problems.warning(
            f"{LABEL_MAP}:data_summary", "mask files are not read; polygons in the labels are"
        )
    return ds


def _read_with_labels_txt(source: Source, path: str, problems: ProblemList) -> Dataset:
    """The v0.9.7 tool's per-image label files with labelme's ``labels.txt``."""
    ds = Dataset()
    ds.categories = read_labels_txt(source, path, problems)
    by_name = {c.name: c.id for c in ds.categories}
    tasks = set()
    for label, image_path, origin in _pairs_from_folders(source, problems):
        task = _read_label(source, label, image_path, origin, by_name, ds, problems, path)
        if task:
            tasks.add(task)
    if len(tasks) == 1:
        task = tasks.pop()
        ds.info["task_type"] = _TASKS.get(task, task)
    return ds


_TASKS = {"cls": "image_classification", "det": "object_detection", "seg": "instance_segmentation"}


def _read_label(
    source: Source,
    label: str,
    image_path: str,
    origin: str,
    by_name: dict[str, int],
    ds: Dataset,
    problems: ProblemList,
    classes_file: str = LABEL_MAP,
) -> str | None:
    """Read one label file into ``ds``; returns its task_type."""
    try:
        doc = json_loads(source.read_bytes(label))
    except (ValueError, UnicodeDecodeError) as exc:
        problems.error(label, f"not valid JSON: {exc}")
        return None
    if not isinstance(doc, dict):
        problems.error(label, "a label file must be a JSON object")
        return None
    split_raw = doc.get("split") or ""
    split = split_name(split_raw) if isinstance(split_raw, str) else ""
    if not (isinstance(split_raw, str) and split_raw.strip().lower() in NO_SPLIT) and not split:
        problems.warning(f"{label}:split", f"unknown split {show(split_raw)}; ignored")
    image = Image(
        len(ds.images) + 1,
        image_path,
        doc.get("imageWidth"),
        doc.get("imageHeight"),
        split,
        origin=label,
    )
    ds.images.append(image)
    shapes = doc.get("shapes") or []
    task = doc.get("task_type") if isinstance(doc.get("task_type"), str) else None
    if not isinstance(shapes, list):
        problems.error(f"{label}:shapes", "shapes must be a list")
        return task
    for j, shape in enumerate(shapes):
        where = f"{label}:shapes[{j}]"
        if not isinstance(shape, dict):
            problems.error(where, "a shape must be an object")
            continue
        name = shape.get("label")
        if not isinstance(name, str) or name not in by_name:
            problems.error(where + ".label", f"label {show(name)} is not a class of {classes_file}")
            continue
        kind, points = shape.get("shape_type"), shape.get("points") or []
        ann = Annotation(len(ds.annotations) + 1, image.id, by_name[name], origin=where)
        if kind == "point" and doc.get("task_type") == "cls":
            pass  # classification: the point is a placeholder, the label is what counts
        elif kind == "rectangle":
            try:
                (x1, y1), (x2, y2) = points
                ann.bbox = [min(x1, x2), min(y1, y2), abs(x2 - x1), abs(y2 - y1)]
            except (TypeError, ValueError):
                problems.error(where + ".points", "a rectangle needs two [x, y] corners")
                continue
        elif kind == "polygon":
            try:
                ann.segmentation = [[float(v) for pt in points for v in pt[:2]]]
            except (TypeError, ValueError):
                problems.error(where + ".points", "a polygon needs [x, y] points")
                continue
        else:
            problems.warning(
                where + ".shape_type", f"shape type {show(kind)} is not supported; dropped"
            )
            continue
        ds.annotations.append(ann)
    return task
