"""Which layout a source holds, without reading any file twice.

Order of preference: the v0.9 ``label_map.json``; a JSON annotation document (DICE
task-specific names, ``annotations.json``, COCO files in ``annotations/``); YOLO label
folders; ImageFolder class folders; images only. A JSON document is parsed once here and
handed to its reader.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass, field
from typing import Any

from . import fastjson
from .fastjson import PolygonTable
from .imagefolder import looks_like_imagefolder
from .legacy import LABEL_MAP, LABELS_TXT, label_files
from .model import BACKGROUND
from .paths import split_from_path
from .problems import ProblemList
from .source import Source
from .tasks import DICE_FILE_STEMS
from .yolo_read import find_yaml, yolo_layout

# Format hints (proto AnnotationFormat, lower case).
FORMAT_HINTS = ("dice", "coco", "yolo", "imagefolder")
_NOT_ANNOTATIONS = {"meta.json", LABEL_MAP, "package.json"}


@dataclass
class Detection:
    kind: str  # "json", "legacy", "yolo", "imagefolder", "images"
    documents: list[str] = field(default_factory=list)
    parsed: list[Any] = field(default_factory=list)  # one parsed JSON per document
    tables: list[PolygonTable | None] = field(default_factory=list)  # their cut-out polygons
    layout: str = ""  # what was recognised, in words (``vmesh validate`` prints it)


def json_variant(doc: Any, name: str) -> str | None:
    """The variant of a parsed JSON document, None when it is no annotation document."""
    if not isinstance(doc, dict):
        return None
    if "format_version" in doc and ("classes" in doc or "images" in doc):
        return "dice-v1"
    if "classes" in doc and "images" in doc:
        return "dice-nested"
    keys = ("images" in doc) + ("categories" in doc) + ("annotations" in doc)
    if keys >= 2:  # COCO-like; what is missing is reported by the reader
        cats = doc.get("categories") if isinstance(doc.get("categories"), list) else []
        base = posixpath.basename(name)
        images = doc.get("images") if isinstance(doc.get("images"), list) else []
        dice_marks = (
            base.startswith("annotations")
            or "storage_info" in doc
            or any(isinstance(c, dict) and c.get("name") == BACKGROUND for c in cats)
            or any(isinstance(im, dict) and "split" in im for im in images[:100])
        )
        if dice_marks:
            return "dice-standard"
        if any(isinstance(c, dict) and c.get("keypoints") for c in cats):
            return "coco-keypoints"
        anns = doc.get("annotations")
        if isinstance(anns, list) and anns and isinstance(anns[0], dict):
            if "segments_info" in anns[0]:
                return "coco-panoptic"
            if "keypoints" in anns[0]:
                return "coco-keypoints"
        return "coco-instances"
    return None


def load_json(source: Source, path: str, problems: ProblemList) -> tuple[Any, PolygonTable | None]:
    """The parsed document (None when it is not JSON) and its cut-out polygons."""
    try:
        return fastjson.loads(source.read_bytes(path))
    except (ValueError, UnicodeDecodeError) as exc:
        problems.error(path, f"not valid JSON: {exc}")
        return None, None


def _dice_candidates(files: list[str], task: str | None, problems: ProblemList) -> list[str]:
    present = set(files)
    for folder in ("", "annotations/"):
        if task and task in DICE_FILE_STEMS:
            specific = f"{folder}annotations_{DICE_FILE_STEMS[task]}.json"
            if specific in present:
                return [specific]
        if f"{folder}annotations.json" in present:
            return [f"{folder}annotations.json"]
        found = [
            f"{folder}annotations_{stem}.json"
            for stem in DICE_FILE_STEMS.values()
            if f"{folder}annotations_{stem}.json" in present
        ]
        if found:
            if len(found) > 1:
                problems.warning(
                    found[0],
                    f"several task files ({', '.join(found)}); read {found[0]} "
                    "(pass a task to choose)",
                )
            return found[:1]
    return []


ROBOFLOW_COCO = "_annotations.coco.json"


def _other_json(files: list[str]) -> list[str]:
    """COCO documents: in the root, in ``annotations/``, or one per split folder
    (Roboflow's ``train/_annotations.coco.json``, ``valid/...``)."""
    out = []
    for f in files:
        if not f.endswith(".json") or posixpath.basename(f) in _NOT_ANNOTATIONS:
            continue
        folder = posixpath.dirname(f)
        if folder in ("", "annotations", "annotation"):
            out.append(f)
        elif "/" not in folder and (posixpath.basename(f) == ROBOFLOW_COCO or split_from_path(f)):
            out.append(f)
    return out


def detect(
    source: Source,
    problems: ProblemList,
    *,
    fmt: str | None = None,
    task: str | None = None,
) -> Detection | None:
    """Find the layout; None (with an error in ``problems``) when there is nothing to read."""
    if fmt is not None and fmt not in FORMAT_HINTS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {', '.join(FORMAT_HINTS)}")
    if source.document is not None:
        if fmt in ("yolo", "imagefolder"):
            problems.error(source.document, f"a single JSON document cannot be {fmt}")
            return None
        doc, table = load_json(source, source.document, problems)
        if doc is None:
            return None
        return Detection(
            "json", [source.document], [doc], [table], layout=f"annotation file {source.document}"
        )
    files = source.files()
    if fmt in (None, "dice") and LABEL_MAP in files:
        return Detection("legacy", [LABEL_MAP], layout="v0.9 label_map.json + label files")
    if fmt in (None, "dice") and LABELS_TXT in files and label_files(source):
        return Detection(
            "legacy", [LABELS_TXT], layout="v0.9.7 per-image label files + labelme labels.txt"
        )
    if fmt in (None, "dice", "coco"):
        found = _json_documents(source, files, task, problems)
        if found is not None:
            return found
    if fmt in (None, "yolo"):
        layout = yolo_layout(source)
        if layout or (find_yaml(source) and fmt == "yolo"):
            return Detection("yolo", layout=layout or "YOLO data.yaml")
    images = source.images()
    if fmt in (None, "imagefolder", "yolo") and looks_like_imagefolder(images):
        return Detection("imagefolder", layout="class folders")
    if images and fmt is None:
        return Detection("images", layout="images only")
    what = f"no {fmt} annotations" if fmt else "no annotations or images"
    problems.error("", f"{what} found in {source.name}")
    return None


def _json_documents(
    source: Source, files: list[str], task: str | None, problems: ProblemList
) -> Detection | None:
    dice = _dice_candidates(files, task, problems)
    if dice:
        doc, table = load_json(source, dice[0], problems)
        if doc is None:
            return None
        return Detection("json", dice, [doc], [table], layout=f"annotation document {dice[0]}")
    found = Detection("json")
    for name in _other_json(files):
        doc, table = load_json(source, name, problems)
        if json_variant(doc, name) is not None:
            found.documents.append(name)
            found.parsed.append(doc)
            found.tables.append(table)
    if not found.documents:
        return None
    folders = {posixpath.dirname(d) for d in found.documents}
    if any(posixpath.basename(d) == ROBOFLOW_COCO for d in found.documents):
        found.layout = "Roboflow COCO export (one _annotations.coco.json per split folder)"
    elif folders <= {"annotations", "annotation"}:
        found.layout = "COCO annotations/ folder"
    else:
        found.layout = "annotation document(s) " + ", ".join(found.documents[:4])
    return found
