"""Dataset formats: read any supported layout into one model, validate it, write it out.

Reading (auto-detected, the variant reported)::

    result = formats.read("path/to/dataset")            # a folder or one annotation file
    result = formats.read(MemorySource(files, images))  # documents in memory (the service)
    result.dataset, result.variant, result.layout, result.problems, result.ok

Variants: ``dice-standard`` (COCO + ``storage_info``/``split``; ``annotations_{detection,
segmentation,classification,pose}.json`` or ``annotations.json``; ``__background__``
negatives), ``dice-nested`` (``classes``, ``images[].annotations``, ``class_id``),
``dice-v1`` (platform document with ``format_version``/``task_type``), ``coco-instances``,
``coco-keypoints``, ``coco-panoptic`` (segments read as boxes), ``yolo-detect``,
``yolo-segment``, ``yolo-pose``, ``yolo-classify``, ``imagefolder``, ``legacy-v0.9``
(``label_map.json`` or labelme's ``labels.txt`` + per-image label files), ``images-only``.

Layouts (``result.layout`` says which, in words): COCO's ``annotations/`` folder (one
split per file: ``instances_val2017`` is val; keypoints files merged onto the instances by
id; captions skipped with a note; ids restarting per file renumbered, with a note),
Roboflow's ``<split>/_annotations.coco.json``, YOLO ``images/`` + ``labels/`` (splits from
data.yaml's train/val/test folders or image lists, else folder names such as ``valid`` or
``val2017``), Darknet (``obj.data``, ``obj.names``, labels beside the images), class
folders. Problems have a severity: ``error`` (refused), ``warning``, ``note`` (what the
reader did on purpose; ``result.notes``).

Public API:

- ``read(src, *, format=None, task=None, class_names=None, check_images=True,
  image_root=None) -> ReadResult`` (``dataset``, ``variant``, ``problems``, ``documents``,
  ``errors``, ``warnings``, ``ok``). Never raises on bad content; raises
  FileNotFoundError for a missing path.
- ``validate(dataset, source=None, *, check_images=True, check_duplicates=None)
  -> list[Problem]``; ``Problem(severity="error"|"warning", path, message)`` with paths
  such as ``annotations[17].bbox`` or ``labels/train/a.txt:3``.
- ``write(dataset, fmt, out_dir, *, task=None, source=None, images="link",
  split_seed=0, val_fraction=0.2) -> WriteResult`` for fmt ``dice`` (DICE standard +
  meta.json, masks for semantic segmentation), ``coco``, ``yolo`` (detect / segment /
  pose labels + data.yaml, classify folders) and ``imagefolder``.
- ``to_dice_dict(dataset) -> dict`` and ``from_dice_dict(doc, source=None) -> ReadResult``:
  the DICE standard JSON document (snapshot manifests).
- Sources: ``DirectorySource(root, document=None, image_root=None)``,
  ``MemorySource(files={path: bytes}, images={path: (width, height[, sha256])})``,
  ``open_source(path)``.
- Model: ``Dataset(categories, images, annotations, info)``, ``Category``, ``Image``
  (``path``, ``width``, ``height``, ``split``, ``sha256``), ``Annotation`` (``bbox``
  ``[x, y, w, h]`` pixels, ``segmentation`` polygons, ``keypoints`` ``[x, y, v, ...]``,
  ``area``, ``iscrowd``; none of them = an image-level label).
- Tasks: ``TASKS``, ``normalize_task(name)`` (accepts classify/detect/segment/semantic/pose).

Compatibility rules and conversions live in ``visionmesh.compat``, splits in
``visionmesh.splits``.
"""

from __future__ import annotations

from .coco import to_coco_dict, to_dice_dict
from .model import (
    BACKGROUND,
    BOX,
    IMAGE_LABEL,
    KEYPOINTS,
    KINDS,
    POLYGON,
    Annotation,
    Category,
    Dataset,
    Image,
)
from .problems import ERROR, WARNING, Problem
from .reader import ReadResult, from_dice_dict, read
from .source import DirectorySource, MemorySource, Source, open_source
from .tasks import (
    IMAGE_CLASSIFICATION,
    INSTANCE_SEGMENTATION,
    OBJECT_DETECTION,
    POSE_ESTIMATION,
    SEMANTIC_SEGMENTATION,
    TASKS,
    normalize_task,
)
from .validation import validate
from .writer import FORMATS, WriteResult, infer_task, write

__all__ = [
    "BACKGROUND",
    "BOX",
    "ERROR",
    "FORMATS",
    "IMAGE_CLASSIFICATION",
    "IMAGE_LABEL",
    "INSTANCE_SEGMENTATION",
    "KEYPOINTS",
    "KINDS",
    "OBJECT_DETECTION",
    "POLYGON",
    "POSE_ESTIMATION",
    "SEMANTIC_SEGMENTATION",
    "TASKS",
    "WARNING",
    "Annotation",
    "Category",
    "Dataset",
    "DirectorySource",
    "Image",
    "MemorySource",
    "Problem",
    "ReadResult",
    "Source",
    "WriteResult",
    "from_dice_dict",
    "infer_task",
    "normalize_task",
    "open_source",
    "read",
    "to_coco_dict",
    "to_dice_dict",
    "validate",
    "write",
]
