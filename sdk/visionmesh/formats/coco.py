"""COCO-family documents: DICE standard and plain COCO instances / keypoints.

Parsing keeps values as found (``validate`` judges them) and never copies coordinate
lists: the model refers to the lists the JSON parser made.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .fastjson import MARKER_BASE, PolygonTable
from .geometry import annotation_area, bbox_of_annotation
from .model import BACKGROUND, Annotation, Category, Dataset, Image
from .paths import NO_SPLIT, split_name
from .problems import ProblemList, show

_DATASET_INFO_KEYS = ("storage_info", "task_type", "description", "info", "licenses", "type")
# Keys the model has fields for (or derives): everything else is kept in ``extra``.
_IMAGE_KEYS = frozenset(
    {"id", "file_name", "width", "height", "split", "sha256", "annotations", "annotation"}
)
ANNOTATION_KEYS = frozenset(
    {
        "id",
        "image_id",
        "category_id",
        "bbox",
        "segmentation",
        "keypoints",
        "num_keypoints",
        "area",
        "iscrowd",
        # DICE nested / v1.0 spellings, read into the fields above
        "class_id",
        "class_name",
        "bbox_format",
        "is_background",
    }
)
_CATEGORY_KEYS = frozenset({"id", "name", "supercategory", "keypoints", "skeleton", "color"})


def extra_keys(raw: dict, known: frozenset) -> dict[str, Any] | None:
    """The keys of ``raw`` the model has no field for, None when there are none."""
    if raw.keys() <= known:
        return None
    return {k: v for k, v in raw.items() if k not in known}


def _is_list(value: Any) -> bool:
    return type(value) is list


def parse_categories(
    raw: Any, problems: ProblemList, prefix: str, key: str = "categories"
) -> list[Category]:
    out: list[Category] = []
    if raw is None:
        problems.error(prefix + key, f"'{key}' is missing")
        return out
    if not _is_list(raw):
        problems.error(prefix + key, f"'{key}' must be a list")
        return out
    for i, c in enumerate(raw):
        path = f"{prefix}{key}[{i}]"
        if type(c) is not dict:
            problems.error(path, "a category must be an object")
            continue
        keypoints = c.get("keypoints") or []
        skeleton = c.get("skeleton") or []
        if not _is_list(keypoints):
            problems.error(path + ".keypoints", "keypoint names must be a list of strings")
            keypoints = []
        if not _is_list(skeleton):
            problems.error(path + ".skeleton", "skeleton must be a list of index pairs")
            skeleton = []
        out.append(
            Category(
                c.get("id"),
                c.get("name"),
                c.get("supercategory") or "",
                keypoints,
                skeleton,
                c.get("color") or "",
                path,
                extra_keys(c, _CATEGORY_KEYS),
            )
        )
    return out


def normalize_split(value: Any, path: str, problems: ProblemList) -> str:
    if value is None or (isinstance(value, str) and value.strip().lower() in NO_SPLIT):
        return ""
    split = split_name(value) if isinstance(value, str) else ""
    if not split:
        problems.warning(
            path, f"unknown split {show(value)} (expected train, val or test); ignored"
        )
        return ""
    return split


def parse_image(
    raw: Any,
    path: str,
    problems: ProblemList,
    image_prefix: str,
    keep_origin: bool,
    default_split: str = "",
) -> Image | None:
    if type(raw) is not dict:
        problems.error(path, "an image must be an object")
        return None
    name = raw.get("file_name")
    if isinstance(name, str):
        if "\\" in name:
            problems.warning(path + ".file_name", "backslashes in the file name were read as '/'")
            name = name.replace("\\", "/")
        if image_prefix:
            name = image_prefix + name
    split = normalize_split(raw.get("split"), path + ".split", problems) or default_split
    return Image(
        raw.get("id"),
        name,
        raw.get("width"),
        raw.get("height"),
        split,
        raw.get("sha256") or "",
        path if keep_origin else None,
        extra_keys(raw, _IMAGE_KEYS),
    )


def parse_coco(
    doc: Any,
    problems: ProblemList,
    *,
    prefix: str = "",
    image_prefix: str = "",
    default_split: str = "",
    consume: bool = False,
    table: PolygonTable | None = None,
) -> Dataset:
    """A COCO-like document (``categories``, ``images``, ``annotations``) as a :class:`Dataset`.

    ``prefix`` goes before every JSON path (``annotations/instances_val.json:``) when the
    dataset is merged from several documents. With ``consume`` the document's annotation
    objects are released as they are read (the caller owns the document).
    """
    ds = Dataset()
    if type(doc) is not dict:
        problems.error(prefix.rstrip(":"), "the document must be a JSON object")
        return ds
    keep = bool(prefix)
    ds.categories = parse_categories(doc.get("categories"), problems, prefix)
    raw_images = doc.get("images")
    if not _is_list(raw_images):
        problems.error(prefix + "images", "'images' is missing or not a list")
        raw_images = []
    images = ds.images
    for i, raw in enumerate(raw_images):
        im = parse_image(raw, f"{prefix}images[{i}]", problems, image_prefix, keep, default_split)
        if im is not None:
            images.append(im)
        elif not keep:
            keep = True  # positions no longer match: record origins from here on
            for j, done in enumerate(images):
                done.origin = f"{prefix}images[{j}]"
    raw_anns = doc.get("annotations", [])
    if raw_anns is None:
        raw_anns = []
    if not _is_list(raw_anns):
        problems.error(prefix + "annotations", "'annotations' must be a list")
        raw_anns = []
    if raw_anns and type(raw_anns[0]) is dict and "segments_info" in raw_anns[0]:
        raw_anns = panoptic_segments(raw_anns, problems, prefix)
    ds.annotations = _parse_annotations(raw_anns, problems, prefix, consume, table)
    for key in _DATASET_INFO_KEYS:
        if key in doc:
            ds.info[key] = doc[key]
    if consume:
        doc["annotations"] = []
    return ds


def panoptic_segments(raw_anns: list, problems: ProblemList, prefix: str) -> list:
    """COCO panoptic: one entry per image with ``segments_info``; each segment becomes an
    annotation with its box (the PNG masks are not read). Segment ids are colours, unique
    per image only, so annotations are numbered 1..N and the segment id kept."""
    out: list = []
    for i, entry in enumerate(raw_anns):
        if type(entry) is not dict or type(entry.get("segments_info")) is not list:
            problems.error(f"{prefix}annotations[{i}]", "a panoptic entry needs segments_info")
            continue
        for seg in entry["segments_info"]:
            if type(seg) is not dict:
                continue
            ann = {k: v for k, v in seg.items() if k != "id"}
            ann["id"] = len(out) + 1
            ann["image_id"] = entry.get("image_id")
            ann["segment_id"] = seg.get("id")
            out.append(ann)
    problems.note(
        prefix.rstrip(":") or "annotations",
        f"panoptic segmentation: {len(out)} segment(s) read as boxes; the PNG masks are not read",
    )
    return out


def _parse_annotations(
    raw_anns: list,
    problems: ProblemList,
    prefix: str,
    consume: bool,
    table: PolygonTable | None,
) -> list[Annotation]:
    out: list[Annotation] = []
    append = out.append
    keep = bool(prefix)
    # Markers of cut-out polygons (fastjson), resolved inline: this loop runs per annotation.
    blocks = table.blocks if table is not None else []
    base, claimed = MARKER_BASE, 0
    for i, a in enumerate(raw_anns):
        if type(a) is not dict:
            problems.error(f"{prefix}annotations[{i}]", "an annotation must be an object")
            if not keep:
                keep = True
                for j, done in enumerate(out):
                    done.origin = f"{prefix}annotations[{j}]"
            continue
        seg = a.get("segmentation")
        rle = None
        if type(seg) is int and 0 <= seg - base < len(blocks):
            seg = blocks[seg - base]
            claimed += 1
        elif seg is not None and type(seg) is not list:
            if type(seg) is dict:
                rle, seg = seg, None
            else:
                problems.error(
                    f"{prefix}annotations[{i}].segmentation",
                    "segmentation must be a list of polygons or an RLE object",
                )
                seg = None
        elif seg is not None and not seg:
            seg = None
        kp = a.get("keypoints")
        if kp is not None and type(kp) is not list:
            problems.error(f"{prefix}annotations[{i}].keypoints", "keypoints must be a list")
            kp = None
        extra = None if a.keys() <= ANNOTATION_KEYS else extra_keys(a, ANNOTATION_KEYS)
        append(
            Annotation(
                a.get("id"),
                a.get("image_id"),
                a.get("category_id"),
                a.get("bbox"),
                seg,
                kp or None,
                a.get("area"),
                a.get("iscrowd", 0),
                rle,
                f"{prefix}annotations[{i}]" if keep else None,
                extra,
            )
        )
        if consume:
            raw_anns[i] = None
    if table is not None:
        table.claimed += claimed
    return out


def merge_datasets(parts: list[tuple[str, Dataset]], problems: ProblemList) -> Dataset:
    """Merge documents of one dataset (e.g. instances_train.json + instances_val.json).

    Categories repeated identically across documents are kept once; conflicting ones
    are errors. Image and annotation ids are kept; collisions are reported by validation.
    """
    merged = Dataset()
    by_id: dict[Any, Category] = {}
    for name, ds in parts:
        for c in ds.categories:
            seen = by_id.get(c.id)
            if seen is None:
                by_id[c.id] = c
                merged.categories.append(c)
            elif seen.name != c.name:
                problems.error(
                    c.origin or name,
                    f"category id {c.id} is {show(c.name)} here but {show(seen.name)} in {seen.origin}",
                )
        merged.images.extend(ds.images)
        merged.annotations.extend(ds.annotations)
        for key, value in ds.info.items():
            merged.info.setdefault(key, value)
    return merged


def _with_extra(out: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    """``out`` plus the source's other keys (never overriding what the model wrote)."""
    if extra:
        for k, v in extra.items():
            if k not in out:
                out[k] = v
    return out


def _category_dict(c: Category) -> dict[str, Any]:
    out: dict[str, Any] = {"id": c.id, "name": c.name, "supercategory": c.supercategory}
    if c.keypoints or c.skeleton:
        out["keypoints"] = c.keypoints
        out["skeleton"] = c.skeleton
    if c.color:
        out["color"] = c.color
    return _with_extra(out, c.extra)


def _image_dict(im: Image, extras: bool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": im.id,
        "file_name": im.path,
        "width": im.width,
        "height": im.height,
    }
    if extras:
        if im.split:
            out["split"] = im.split
        if im.sha256:
            out["sha256"] = im.sha256
    return _with_extra(out, im.extra)


def _annotation_dict(a: Annotation, coco_strict: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"id": a.id, "image_id": a.image_id, "category_id": a.category_id}
    bbox = a.bbox
    if bbox is None and coco_strict:
        bbox = bbox_of_annotation(a)
    if bbox is not None:
        out["bbox"] = bbox
    if a.segmentation:
        out["segmentation"] = [p.tolist() if type(p) is np.ndarray else p for p in a.segmentation]
    elif a.rle is not None:
        out["segmentation"] = a.rle
    elif coco_strict and bbox is not None:
        out["segmentation"] = []
    if a.keypoints:
        out["keypoints"] = a.keypoints
        out["num_keypoints"] = sum(1 for v in a.keypoints[2::3] if v)
    area = a.area
    if area is None and (bbox is not None or a.segmentation):
        area = annotation_area(a)
    if area is not None:
        out["area"] = area
    out["iscrowd"] = a.iscrowd or 0
    if a.extra:
        _with_extra(out, a.extra)
    return out


def _document_head(dataset: Dataset, doc: dict[str, Any], default_description: str) -> None:
    """COCO's ``info``, ``licenses`` and ``type`` as read (or a description)."""
    info = dataset.info.get("info")
    if isinstance(info, dict):
        doc["info"] = dict(info)
    elif dataset.info.get("description") or default_description:
        doc["info"] = {"description": dataset.info.get("description") or default_description}
    licenses = dataset.info.get("licenses")
    if isinstance(licenses, list):
        doc["licenses"] = licenses
    if isinstance(dataset.info.get("type"), str):
        doc["type"] = dataset.info["type"]


def to_dice_dict(dataset: Dataset) -> dict[str, Any]:
    """The DICE standard document (COCO-compatible, with ``split``/``sha256`` on images)."""
    doc: dict[str, Any] = {}
    _document_head(dataset, doc, "")
    doc["categories"] = [_category_dict(c) for c in dataset.categories]
    doc["images"] = [_image_dict(im, True) for im in dataset.images]
    doc["annotations"] = [_annotation_dict(a, False) for a in dataset.annotations]
    if dataset.info.get("storage_info"):
        doc["storage_info"] = dataset.info["storage_info"]
    return doc


def to_coco_dict(dataset: Dataset, images: list[Image] | None = None) -> dict[str, Any]:
    """A plain COCO document: no background category, a bbox on every located annotation."""
    chosen = dataset.images if images is None else images
    ids = {im.id for im in chosen}
    bg = {c.id for c in dataset.categories if c.name == BACKGROUND}
    doc: dict[str, Any] = {}
    _document_head(dataset, doc, "exported by visionmesh")
    doc.setdefault("licenses", [])
    return {
        **doc,
        "categories": [_category_dict(c) for c in dataset.categories if c.id not in bg],
        "images": [_image_dict(im, False) for im in chosen],
        "annotations": [
            _annotation_dict(a, True)
            for a in dataset.annotations
            if a.image_id in ids and a.category_id not in bg
        ],
    }
