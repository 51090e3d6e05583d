"""DICE documents other than the standard one: the nested variant and the v1.0 platform document.

Nested: ``classes``, ``images[].annotations`` with ``class_id``.
v1.0: ``format_version``, ``task_type``, ``classes``, ``images[].split``,
``images[].annotation`` (classification), ``images[].annotations`` with ``bbox_format``.
"""

from __future__ import annotations

from typing import Any

from .coco import ANNOTATION_KEYS, extra_keys, parse_categories, parse_image
from .fastjson import PolygonTable
from .model import BACKGROUND, Annotation, Dataset
from .problems import ProblemList, show

_BBOX_FORMATS = ("xywh", "xyxy")


def _flatten_keypoints(kp: Any) -> Any:
    """v1.0 writes keypoints as ``[[x, y, v], ...]``; the model keeps them flat."""
    if type(kp) is list and kp and all(type(k) is list for k in kp):
        return [v for k in kp for v in k]
    return kp


def _is_background(raw: dict) -> bool:
    return bool(raw.get("is_background")) or raw.get("class_name") == BACKGROUND


def _annotation(
    raw: Any,
    path: str,
    image_id: Any,
    problems: ProblemList,
    with_bbox_format: bool,
    table: PolygonTable | None = None,
) -> Annotation | None:
    if type(raw) is not dict:
        problems.error(path, "an annotation must be an object")
        return None
    if "image_id" in raw and raw["image_id"] != image_id:
        problems.error(
            path + ".image_id",
            f"image_id {show(raw['image_id'])} differs from the enclosing image's id {show(image_id)}",
        )
    category = raw.get("class_id", raw.get("category_id"))
    bbox = raw.get("bbox")
    if with_bbox_format and bbox is not None:
        fmt = raw.get("bbox_format", "xywh")
        if fmt not in _BBOX_FORMATS:
            problems.error(
                path + ".bbox_format",
                f"unknown bbox_format {show(fmt)}; expected one of {', '.join(_BBOX_FORMATS)}",
            )
        elif fmt == "xyxy" and type(bbox) is list and len(bbox) == 4:
            try:
                bbox = [bbox[0], bbox[1], bbox[2] - bbox[0], bbox[3] - bbox[1]]
            except TypeError:
                pass  # non-numbers: validation reports them
    seg = raw.get("segmentation")
    rle = None
    if type(seg) is int and table is not None and table.is_marker(seg):
        seg = table.take(seg)
    elif type(seg) is dict:
        rle, seg = seg, None
    elif seg is not None and type(seg) is not list:
        problems.error(path + ".segmentation", "segmentation must be a list of polygons")
        seg = None
    kp = _flatten_keypoints(raw.get("keypoints"))
    if kp is not None and type(kp) is not list:
        problems.error(path + ".keypoints", "keypoints must be a list")
        kp = None
    return Annotation(
        raw.get("id"),
        image_id,
        category,
        bbox,
        seg or None,
        kp or None,
        raw.get("area"),
        raw.get("iscrowd", 0),
        rle,
        path,
        extra_keys(raw, ANNOTATION_KEYS),
    )


def _assign_missing_ids(annotations: list[Annotation]) -> None:
    """Nested documents may leave annotation ids out; number those after the largest id."""
    given = [a.id for a in annotations if type(a.id) is int]
    next_id = max(given, default=0) + 1
    for a in annotations:
        if a.id is None:
            a.id = next_id
            next_id += 1


def parse_dice_nested(
    doc: dict,
    problems: ProblemList,
    image_prefix: str = "",
    v1: bool = False,
    table: PolygonTable | None = None,
) -> Dataset:
    ds = Dataset()
    if v1:
        version = doc.get("format_version")
        if not str(version).startswith("1"):
            problems.warning("format_version", f"format_version {show(version)} read as 1.0")
        if doc.get("task_type"):
            ds.info["task_type"] = doc["task_type"]
        if isinstance(doc.get("task_type"), str) and "caption" in doc["task_type"].lower():
            problems.error(
                "task_type",
                f"task_type {show(doc['task_type'])}: captions are not annotations any trainer "
                "here uses (classification, detection, segmentation, pose)",
            )
            return ds
    ds.categories = parse_categories(doc.get("classes"), problems, "", key="classes")
    raw_images = doc.get("images")
    if type(raw_images) is not list:
        problems.error("images", "'images' is missing or not a list")
        raw_images = []
    for i, raw in enumerate(raw_images):
        path = f"images[{i}]"
        im = parse_image(raw, path, problems, image_prefix, True)
        if im is None:
            continue
        ds.images.append(im)
        nested = raw.get("annotations")
        if nested is not None and type(nested) is not list:
            problems.error(path + ".annotations", "'annotations' must be a list")
            nested = None
        for j, ann in enumerate(nested or []):
            apath = f"{path}.annotations[{j}]"
            if v1 and type(ann) is dict and _is_background(ann):
                continue  # a negative-sample marker: the image simply has no objects
            a = _annotation(ann, apath, im.id, problems, v1, table)
            if a is not None:
                ds.annotations.append(a)
        single = raw.get("annotation")
        if v1 and single is not None:
            _image_level(single, path + ".annotation", im.id, problems, ds)
    _assign_missing_ids(ds.annotations)
    if doc.get("storage_info"):
        ds.info["storage_info"] = doc["storage_info"]
    return ds


def _image_level(raw: Any, path: str, image_id: Any, problems: ProblemList, ds: Dataset) -> None:
    """v1.0 ``images[].annotation``: a classification label (or an unsupported mask file)."""
    if type(raw) is not dict:
        problems.error(path, "'annotation' must be an object")
        return
    if _is_background(raw):
        return
    if "mask_file" in raw:
        problems.error(
            path + ".mask_file",
            "semantic masks given as mask files are not supported; give polygons instead",
        )
        return
    if "class_id" not in raw:
        problems.error(path + ".class_id", "a classification label needs 'class_id'")
        return
    ds.annotations.append(Annotation(raw.get("id"), image_id, raw["class_id"], origin=path))
