"""The one in-memory model every reader produces and every writer consumes.

Ids are kept as given (COCO's category ids are not contiguous). Coordinates are pixels,
COCO convention: ``bbox`` is ``[x, y, width, height]`` from the top-left corner,
``segmentation`` a list of polygons (flat ``[x1, y1, x2, y2, ...]``), ``keypoints`` flat
``[x, y, v, ...]`` with COCO visibility (0 absent, 1 occluded, 2 visible).

An annotation with no bbox, polygon or keypoints is an image-level label (classification).
An annotation of the ``__background__`` category marks its image as a negative sample.

Readers keep malformed values as they found them so that :func:`validate` can report
each with its path; ``origin`` records where an element came from in the source
(e.g. ``images[3].annotations[1]``) when that differs from its position in the
DICE standard document.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BACKGROUND = "__background__"
# labelme2coco names its implicit mask background "_background_": no objects, like DICE's.
BACKGROUND_NAMES = frozenset({BACKGROUND, "_background_"})

# Annotation kinds (proto AnnotationKind suffixes, lower case).
IMAGE_LABEL = "image_label"
BOX = "box"
POLYGON = "polygon"
KEYPOINTS = "keypoints"
KINDS = (IMAGE_LABEL, BOX, POLYGON, KEYPOINTS)

SPLITS = ("train", "val", "test")


@dataclass(slots=True)
class Category:
    id: int
    name: str
    supercategory: str = ""
    keypoints: list[str] = field(default_factory=list)
    skeleton: list[list[int]] = field(default_factory=list)  # pairs of 1-based keypoint indices
    color: str = ""
    origin: str | None = None
    extra: dict[str, Any] | None = None  # keys of the source object the model has no field for

    @property
    def is_background(self) -> bool:
        return self.name in BACKGROUND_NAMES


@dataclass(slots=True)
class Image:
    id: int
    path: str  # relative to the dataset root, POSIX separators
    width: int
    height: int
    split: str = ""  # "train", "val", "test" or ""
    sha256: str = ""
    origin: str | None = None
    # Keys of the source object the model has no field for (COCO's license, coco_url,
    # flickr_url, date_captured...), written back by the JSON writers.
    extra: dict[str, Any] | None = None


@dataclass(slots=True)
class Annotation:
    id: int
    image_id: int
    category_id: int
    bbox: list[float] | None = None
    segmentation: list[list[float]] | None = None
    keypoints: list[float] | None = None
    area: float | None = None
    iscrowd: int = 0
    rle: dict | None = None  # COCO run-length mask, kept as given
    origin: str | None = None
    extra: dict[str, Any] | None = None  # e.g. COCO "attributes", written back as given

    @property
    def kind(self) -> str:
        """The richest geometry this annotation has (keypoints > polygon > box > image label)."""
        if self.keypoints:
            return KEYPOINTS
        if self.segmentation or self.rle:
            return POLYGON
        if self.bbox is not None:
            return BOX
        return IMAGE_LABEL


@dataclass
class Dataset:
    categories: list[Category] = field(default_factory=list)
    images: list[Image] = field(default_factory=list)
    annotations: list[Annotation] = field(default_factory=list)
    # Document-level extras kept for round trips: "storage_info", "task_type", "description",
    # COCO's "info" and "licenses".
    info: dict[str, Any] = field(default_factory=dict)

    def category_map(self) -> dict[int, Category]:
        return {c.id: c for c in self.categories}

    def image_map(self) -> dict[int, Image]:
        return {i.id: i for i in self.images}

    def annotations_by_image(self) -> dict[int, list[Annotation]]:
        out: dict[int, list[Annotation]] = {i.id: [] for i in self.images}
        for a in self.annotations:
            bucket = out.get(a.image_id)
            if bucket is not None:
                bucket.append(a)
        return out

    def background_ids(self) -> set[int]:
        return {c.id for c in self.categories if c.name in BACKGROUND_NAMES}

    def kinds(self) -> set[str]:
        """Annotation kinds present (background markers excluded)."""
        bg = self.background_ids()
        return {a.kind for a in self.annotations if a.category_id not in bg}

    def split_counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for im in self.images:
            out[im.split] = out.get(im.split, 0) + 1
        return out

    def summary(self) -> dict[str, Any]:
        return {
            "images": len(self.images),
            "annotations": len(self.annotations),
            "categories": len(self.categories),
            "kinds": sorted(self.kinds()),
            "splits": self.split_counts(),
        }
