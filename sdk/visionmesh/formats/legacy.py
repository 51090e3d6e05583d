"""The legacy v0.9 layout: ``label_map.json`` + one ``labels/<stem>.json`` per image.

``label_map.json`` has ``task_type`` (cls / det / seg), ``class_summary.classes``
(``name``, ``idx``, ``color``) and ``data_summary`` (``img_path``, ``label_path`` as the
labelling tool's absolute paths, e.g. ``E:/data/images/a.jpg``). A label file has
``shapes`` (``label``, ``points``, ``shape_type`` point / rectangle / polygon), ``split``,
``imageWidth`` and ``imageHeight``. Absolute tool paths are made relative by finding the
label files in the source; the classes keep their ``idx`` as category id.
"""

from __future__ import annotations

import json
import posixpath
from typing import Any

from .model import Annotation, Category, Dataset, Image
from .paths import SPLIT_NAMES
from .problems import ProblemList
from .source import Source

LABEL_MAP = "label_map.json"
_TOOL_BACKGROUND = "_background_"


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
            problems.error(origin + ".label_path", f"label file {label_path!r} not found")
            continue
        norm_img = img_path.replace("\\", "/")
        if cut and norm_img.startswith(cut + "/"):
            image = norm_img[len(cut) + 1 :]
        else:
            image, _ = _relative_to_source(norm_img, images)
        if image is None or image not in images:
            problems.error(origin + ".img_path", f"image {img_path!r} not found")
            continue
        out.append((label, image, origin))
    return out


def _pairs_from_folders(source: Source) -> list[tuple[str, str, str]]:
    """Without data_summary: labels/<stem>.json next to images/<stem>.<ext>."""
    by_stem = {}
    for img in source.images():
        by_stem.setdefault(posixpath.splitext(posixpath.basename(img))[0], img)
    out = []
    for f in source.files():
        if f.endswith(".json") and "/labels/" in "/" + f and f != LABEL_MAP:
            stem = posixpath.splitext(posixpath.basename(f))[0]
            if stem in by_stem:
                out.append((f, by_stem[stem], f))
    return out


def read_legacy(source: Source, label_map_path: str, problems: ProblemList) -> Dataset:
    ds = Dataset()
    try:
        label_map = json.loads(source.read_bytes(label_map_path))
    except (ValueError, UnicodeDecodeError) as exc:
        problems.error(label_map_path, f"not valid JSON: {exc}")
        return ds
    if not isinstance(label_map, dict):
        problems.error(label_map_path, "must be a JSON object")
        return ds
    task = label_map.get("task_type")
    ds.info["task_type"] = {"cls": "image_classification", "det": "object_detection"}.get(
        task, task
    )
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
        pairs = _pairs_from_folders(source)
    for label, image_path, origin in pairs:
        _read_label(source, label, image_path, origin, by_name, ds, problems)
    if any(isinstance(e, dict) and e.get("mask_path") for e in summary or []):
        problems.warning(
            f"{LABEL_MAP}:data_summary", "mask files are not read; polygons in the labels are"
        )
    return ds


def _read_label(
    source: Source,
    label: str,
    image_path: str,
    origin: str,
    by_name: dict[str, int],
    ds: Dataset,
    problems: ProblemList,
) -> None:
    try:
        doc = json.loads(source.read_bytes(label))
    except (ValueError, UnicodeDecodeError) as exc:
        problems.error(label, f"not valid JSON: {exc}")
        return
    if not isinstance(doc, dict):
        problems.error(label, "a label file must be a JSON object")
        return
    split_raw = doc.get("split") or ""
    split = SPLIT_NAMES.get(str(split_raw).lower(), "")
    if split_raw and not split:
        problems.warning(f"{label}:split", f"unknown split {split_raw!r}; ignored")
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
    if not isinstance(shapes, list):
        problems.error(f"{label}:shapes", "shapes must be a list")
        return
    for j, shape in enumerate(shapes):
        where = f"{label}:shapes[{j}]"
        if not isinstance(shape, dict):
            problems.error(where, "a shape must be an object")
            continue
        name = shape.get("label")
        if name not in by_name:
            problems.error(where + ".label", f"label {name!r} is not a class of {LABEL_MAP}")
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
                where + ".shape_type", f"shape type {kind!r} is not supported; dropped"
            )
            continue
        ds.annotations.append(ann)
