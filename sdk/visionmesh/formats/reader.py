"""``read(source)``: detect the layout, read it into the model, validate, report."""

from __future__ import annotations

import gc
import posixpath
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .coco import parse_coco
from .cocofolder import combine, document_kind
from .detect import Detection, detect, json_variant
from .dice import parse_dice_nested
from .fastjson import PolygonTable, json_loads
from .imagefolder import read_imagefolder
from .legacy import read_legacy
from .model import Dataset, Image
from .paths import split_from_name, split_from_path
from .problems import ERROR, NOTE, WARNING, Problem, ProblemList
from .resolve import choose_image_prefix
from .source import Source, open_source
from .tasks import normalize_task
from .validation import validate
from .yolo_read import read_yolo


@dataclass
class ReadResult:
    dataset: Dataset
    variant: str  # e.g. "dice-standard", "coco-instances", "yolo-segment", "imagefolder"
    problems: list[Problem] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)  # annotation documents read
    layout: str = ""  # the layout recognised, in words (e.g. "COCO annotations/ folder")

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def notes(self) -> list[Problem]:
        """What the reader did on purpose and says so (files skipped, ids renumbered)."""
        return [p for p in self.problems if p.severity == NOTE]

    @property
    def ok(self) -> bool:
        return not self.errors


def read(
    src: str | Path | Source,
    *,
    format: str | None = None,
    task: str | None = None,
    class_names: list[str] | None = None,
    check_images: bool = True,
    image_root: str | Path | None = None,
) -> ReadResult:
    """Read any supported layout into a :class:`Dataset`, reporting every problem.

    ``src``: a folder, an annotation file, or a :class:`Source` (e.g. ``MemorySource``).
    ``format``: a hint (dice, coco, yolo, imagefolder); None auto-detects.
    ``task``: chooses among DICE task-specific files (``annotations_detection.json``...).
    ``class_names``: names for formats that carry only indices (YOLO without data.yaml).
    ``check_images``: check that image files exist and their size matches (and report
    byte-identical duplicates). Raises FileNotFoundError when ``src`` does not exist.
    """
    source = open_source(src, image_root)
    task = normalize_task(task) if task else None
    problems = ProblemList()
    with gc_paused():
        found = detect(source, problems, fmt=format, task=task)
        if found is None:
            return ReadResult(Dataset(), "", list(problems))
        documents = list(found.documents)
        dataset, variant = _read_detected(source, found, problems, class_names, format)
        problems.extend(validate(dataset, source, check_images=check_images))
    return ReadResult(dataset, variant, list(problems), documents, found.layout)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cycle collector while building millions of objects that form no cycles.

    Left on, it rescans the growing heap again and again; it is restored afterwards.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _read_detected(
    source: Source,
    found: Detection,
    problems: ProblemList,
    class_names: list[str] | None,
    fmt: str | None,
) -> tuple[Dataset, str]:
    if found.kind == "legacy":
        return read_legacy(source, found.documents[0], problems), "legacy-v0.9"
    if found.kind == "yolo":
        return read_yolo(source, problems, class_names)
    if found.kind == "imagefolder":
        variant = "yolo-classify" if fmt == "yolo" else "imagefolder"
        return read_imagefolder(source, problems), variant
    if found.kind == "images":
        problems.warning("", "no annotations found: the images are read without labels")
        return _images_only(source, problems), "images-only"
    return _read_json(source, found, problems)


def _not_a_dataset(doc: Any) -> str:
    if (
        isinstance(doc, list)
        and doc
        and isinstance(doc[0], dict)
        and "image_id" in doc[0]
        and "score" in doc[0]
    ):
        return (
            "a results list (image_id, category_id, bbox, score per detection), not a "
            "dataset: give the annotation file the results were made for"
        )
    if isinstance(doc, dict) and "shapes" in doc:
        return (
            "one image's label file (shapes) of the v0.9 layout: give the folder holding the "
            "label files with label_map.json or labels.txt"
        )
    return "not an annotation document (no images with categories or classes)"


def _document_split(name: str) -> str:
    """The split a document's name or folder gives (``instances_val2017``, ``valid/``)."""
    return split_from_name(name) or split_from_path(name)


def _read_json(source: Source, found: Detection, problems: ProblemList) -> tuple[Dataset, str]:
    parts: list[tuple[str, str, Dataset]] = []
    variants = []
    described = []
    many = len(found.documents) > 1
    for k, name in enumerate(found.documents):
        doc, table = found.parsed[k], found.tables[k]
        found.parsed[k] = found.tables[k] = None  # the dataset keeps what it needs
        variant = json_variant(doc, name)
        if variant is None:
            problems.error(name, _not_a_dataset(doc))
            continue
        kind = document_kind(name, doc) if variant.startswith("coco") else "dice"
        split = _document_split(name) if variant.startswith("coco") or many else ""
        if kind == "captions":
            message = "captions are not read: nothing here trains on them"
            if many:
                problems.note(name, message)
                described.append(f"{posixpath.basename(name)} (not read)")
            else:
                problems.error(name, message + "; give the instances or keypoints file")
            continue
        variants.append(variant)
        mine = ProblemList()
        ds = _parse_document(source, name, doc, table, variant, many, split, mine)
        if table is not None and not table.complete:
            # "segmentation" keys outside annotations hold markers: read the plain way.
            mine = ProblemList()
            doc = json_loads(source.read_bytes(name))
            ds = _parse_document(source, name, doc, None, variant, many, split, mine)
        del doc, table
        problems.extend(mine)
        parts.append((name, kind, ds))
        described.append(f"{posixpath.basename(name)} ({split or 'no split'})")
    if not parts:
        if not problems.has_errors:
            problems.error(
                found.documents[0] if found.documents else "",
                "no annotation document to read (captions only)",
            )
        return Dataset(), ""
    if len(parts) == 1:
        dataset = parts[0][2]
    else:
        dataset = combine(parts, problems)
    if many and found.layout:
        found.layout += ": " + ", ".join(described)
    variant = variants[0] if len(set(variants)) == 1 else "+".join(sorted(set(variants)))
    return dataset, variant


def _parse_document(
    source: Source,
    name: str,
    doc: dict,
    table: PolygonTable | None,
    variant: str,
    many: bool,
    split: str,
    problems: ProblemList,
) -> Dataset:
    raw_images = doc.get("images") if isinstance(doc.get("images"), list) else []
    names = [im.get("file_name") for im in raw_images[:4096] if isinstance(im, dict)]
    prefix = choose_image_prefix(source, names, name)
    if variant in ("dice-nested", "dice-v1"):
        return parse_dice_nested(doc, problems, prefix, v1=variant == "dice-v1", table=table)
    return parse_coco(
        doc,
        problems,
        prefix=f"{name}:" if many else "",
        image_prefix=prefix,
        default_split=split,
        consume=True,
        table=table,
    )


def _images_only(source: Source, problems: ProblemList) -> Dataset:
    ds = Dataset()
    for path in source.images():
        try:
            size = source.image_size(path)
        except Exception as exc:  # PIL raises many types for broken files
            problems.error(path, f"cannot read the image: {exc}")
            continue
        if size is not None:
            ds.images.append(
                Image(
                    len(ds.images) + 1, path, size[0], size[1], split_from_path(path), origin=path
                )
            )
    return ds


def from_dice_dict(doc: dict[str, Any], source: Source | None = None) -> ReadResult:
    """Read a DICE standard document already in memory (e.g. a snapshot manifest).

    The document is not modified. With a ``source``, image files are checked too.
    """
    problems = ProblemList()
    variant = json_variant(doc, "annotations.json") or "dice-standard"
    if variant in ("dice-nested", "dice-v1"):
        dataset = parse_dice_nested(doc, problems, "", v1=variant == "dice-v1")
    else:
        dataset = parse_coco(doc, problems)
    problems.extend(validate(dataset, source, check_images=source is not None))
    return ReadResult(dataset, variant, list(problems), [])
