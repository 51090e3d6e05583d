"""Which task a dataset can train, derived from its annotations (DESIGN.md section 7).

``CONVERSION_MATRIX`` holds the rules as data: for each annotation kind and task, the
conversion (native, polygon_to_bbox, rasterize, dominant_class or none) and whether it
loses information. ``check`` applies them to a dataset and reports what training would
see; ``convert`` produces the converted dataset; ``prepare`` does both and applies the
split (the images' own, else a seeded stratified one).

"Dominant class": the class with the largest total area on the image; ties go to the
class with most instances, then to the lowest id.
"""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .formats.geometry import annotation_area, bbox_of_annotation, rasterize
from .formats.model import (
    BOX,
    IMAGE_LABEL,
    KEYPOINTS,
    KINDS,
    POLYGON,
    Annotation,
    Dataset,
    Image,
)
from .formats.tasks import (
    IMAGE_CLASSIFICATION,
    INSTANCE_SEGMENTATION,
    OBJECT_DETECTION,
    POSE_ESTIMATION,
    SEMANTIC_SEGMENTATION,
    TASKS,
    normalize_task,
)
from .splits import DEFAULT_VAL_FRACTION, SplitError, apply_splits, resolve_splits

NATIVE = "native"
POLYGON_TO_BBOX = "polygon_to_bbox"
RASTERIZE = "rasterize"
DOMINANT_CLASS = "dominant_class"
NONE = "none"
CONVERSIONS = (NATIVE, POLYGON_TO_BBOX, RASTERIZE, DOMINANT_CLASS, NONE)

_TASK_WORDS = {
    IMAGE_CLASSIFICATION: "image classification",
    OBJECT_DETECTION: "object detection",
    INSTANCE_SEGMENTATION: "instance segmentation",
    SEMANTIC_SEGMENTATION: "semantic segmentation",
    POSE_ESTIMATION: "pose estimation",
}
_KIND_WORDS = {
    IMAGE_LABEL: "classification labels",
    BOX: "boxes",
    POLYGON: "polygons",
    KEYPOINTS: "keypoints",
}


@dataclass(frozen=True)
class ConversionRule:
    annotation_kind: str  # image_label, box, polygon, keypoints (with boxes)
    task: str
    conversion: str
    lossy: bool
    note: str


def _rule(kind: str, task: str, conversion: str, note: str, lossy: bool = False) -> ConversionRule:
    return ConversionRule(kind, task, conversion, lossy, note)


_DOMINANT_NOTE = "each image labelled with its class of largest total area"
CONVERSION_MATRIX: dict[tuple[str, str], ConversionRule] = {
    (r.annotation_kind, r.task): r
    for r in [
        _rule(IMAGE_LABEL, IMAGE_CLASSIFICATION, NATIVE, "image labels are used as they are"),
        _rule(IMAGE_LABEL, OBJECT_DETECTION, NONE, "image labels have no boxes"),
        _rule(IMAGE_LABEL, INSTANCE_SEGMENTATION, NONE, "image labels have no outlines"),
        _rule(IMAGE_LABEL, SEMANTIC_SEGMENTATION, NONE, "image labels have no outlines"),
        _rule(IMAGE_LABEL, POSE_ESTIMATION, NONE, "image labels have no keypoints"),
        _rule(BOX, IMAGE_CLASSIFICATION, DOMINANT_CLASS, _DOMINANT_NOTE, lossy=True),
        _rule(BOX, OBJECT_DETECTION, NATIVE, "boxes are used as they are"),
        _rule(BOX, INSTANCE_SEGMENTATION, NONE, "boxes have no outlines"),
        _rule(BOX, SEMANTIC_SEGMENTATION, NONE, "boxes have no outlines"),
        _rule(BOX, POSE_ESTIMATION, NONE, "boxes have no keypoints"),
        _rule(POLYGON, IMAGE_CLASSIFICATION, DOMINANT_CLASS, _DOMINANT_NOTE, lossy=True),
        _rule(POLYGON, OBJECT_DETECTION, POLYGON_TO_BBOX, "boxes from the polygons' extents"),
        _rule(POLYGON, INSTANCE_SEGMENTATION, NATIVE, "polygons are used as they are"),
        _rule(
            POLYGON, SEMANTIC_SEGMENTATION, RASTERIZE, "per-pixel class masks drawn from polygons"
        ),
        _rule(POLYGON, POSE_ESTIMATION, NONE, "polygons have no keypoints"),
        _rule(KEYPOINTS, IMAGE_CLASSIFICATION, DOMINANT_CLASS, _DOMINANT_NOTE, lossy=True),
        _rule(KEYPOINTS, OBJECT_DETECTION, NATIVE, "the keypoints' boxes are used"),
        _rule(KEYPOINTS, INSTANCE_SEGMENTATION, NONE, "keypoints have no outlines"),
        _rule(KEYPOINTS, SEMANTIC_SEGMENTATION, NONE, "keypoints have no outlines"),
        _rule(KEYPOINTS, POSE_ESTIMATION, NATIVE, "keypoints with boxes are used as they are"),
    ]
}


def conversion_rules() -> list[ConversionRule]:
    """Every cell of the matrix, kinds then tasks in their canonical order."""
    return [CONVERSION_MATRIX[(k, t)] for k in KINDS for t in TASKS]


@dataclass
class ClassCount:
    category_id: int
    category_name: str
    split: str
    image_count: int  # images with at least one annotation of the class
    annotation_count: int


@dataclass
class CompatibilityReport:
    task: str
    compatible: bool
    conversion: str
    lossy: bool
    total_images: int
    usable_images: int
    dropped_annotations: int
    class_counts: list[ClassCount] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    annotation_kinds: list[str] = field(default_factory=list)
    split_generated: bool = False
    split_seed: int = 0
    splits: dict[int, str] = field(default_factory=dict)  # usable image id -> split

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["splits"] = {str(k): v for k, v in self.splits.items()}
        return out


@dataclass
class _Plan:
    kept: list[Annotation] = field(default_factory=list)
    usable: list[int] = field(default_factory=list)  # image ids, dataset order
    negatives: set[int] = field(default_factory=set)
    dropped: Counter = field(default_factory=Counter)  # reason -> count
    used: set[str] = field(default_factory=set)  # conversions applied
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def dominant_class(annotations: list[Annotation]) -> int | None:
    """Category of largest total area; ties: most instances, then lowest id."""
    area: dict[int, float] = defaultdict(float)
    count: Counter = Counter()
    for a in annotations:
        area[a.category_id] += annotation_area(a)
        count[a.category_id] += 1
    if not count:
        return None
    return max(count, key=lambda c: (area[c], count[c], -c))


def _plan(dataset: Dataset, task: str) -> _Plan:
    plan = _Plan()
    if task == IMAGE_CLASSIFICATION:
        _plan_classification(dataset, plan)
    else:
        _plan_instances(dataset, task, plan)
    return plan


def _plan_classification(dataset: Dataset, plan: _Plan) -> None:
    cats = dataset.category_map()
    bg = dataset.background_ids()
    several_labels = 0
    by_image = dataset.annotations_by_image()
    for im in dataset.images:
        real = [
            a for a in by_image.get(im.id, ()) if a.category_id in cats and a.category_id not in bg
        ]
        if not real:
            plan.negatives.add(im.id)
            continue
        kept, extra = _classify(im, real, plan)
        several_labels += extra
        if kept:
            plan.usable.append(im.id)
            plan.kept.extend(kept)
    if several_labels:
        plan.warnings.append(f"{several_labels} image(s) have several labels; the first is used")


# What an annotation needs to be used as it is, per task (anything else goes through
# _convert_one, which converts or drops it and says why).
def _as_is(task: str) -> Callable[[Annotation], bool]:
    if task == OBJECT_DETECTION:
        return lambda a: a.bbox is not None
    if task == POSE_ESTIMATION:
        return lambda a: a.keypoints is not None and a.bbox is not None
    return lambda a: a.segmentation is not None and a.bbox is not None


def _plan_instances(dataset: Dataset, task: str, plan: _Plan) -> None:
    """One pass over the annotations: keep, convert or drop each; then which images count."""
    cats = set(dataset.category_map())
    real_cats = cats - dataset.background_ids()
    image_ids = {im.id for im in dataset.images}
    with_real: set = set()
    with_kept: set = set()
    kept = plan.kept
    as_is = _as_is(task)
    native = 0
    for a in dataset.annotations:
        if a.category_id not in real_cats or a.image_id not in image_ids:
            continue
        with_real.add(a.image_id)
        if not a.iscrowd and as_is(a):
            kept.append(a)
            with_kept.add(a.image_id)
            native += 1
            continue
        k = _convert_one(a, task, plan)
        if k is not None:
            kept.append(k)
            with_kept.add(a.image_id)
    if native:
        plan.used.add(RASTERIZE if task == SEMANTIC_SEGMENTATION else NATIVE)
    for im in dataset.images:
        if im.id in with_kept:
            plan.usable.append(im.id)
        elif im.id not in with_real:
            plan.negatives.add(im.id)
            plan.usable.append(im.id)
    if task == POSE_ESTIMATION:
        counts = {len(a.keypoints) // 3 for a in kept}
        if len(counts) > 1:
            plan.errors.append(
                f"annotations have different numbers of keypoints ({sorted(counts)}); "
                "pose estimation needs one"
            )


def _classify(im: Image, real: list[Annotation], plan: _Plan) -> tuple[list[Annotation], int]:
    labels = [a for a in real if a.kind == IMAGE_LABEL]
    if labels:
        plan.used.add(NATIVE)
        others = len(real) - len(labels)
        if others:
            plan.dropped["geometry on images that have a label"] += others
        extra = 1 if len({a.category_id for a in labels}) > 1 else 0
        plan.dropped["extra labels on one image"] += len(labels) - 1
        return [labels[0]], extra
    shapes = [a for a in real if not a.iscrowd]
    plan.dropped["crowd regions"] += len(real) - len(shapes)
    winner = dominant_class(shapes)
    if winner is None:
        return [], 0
    plan.used.add(DOMINANT_CLASS)
    plan.dropped["objects of other classes than the dominant one"] += sum(
        1 for a in shapes if a.category_id != winner
    )
    first = min((a for a in shapes if a.category_id == winner), key=lambda a: str(a.id))
    return [Annotation(first.id, im.id, winner)], 0


def _convert_one(a: Annotation, task: str, plan: _Plan) -> Annotation | None:
    kind = a.kind
    if a.iscrowd:
        plan.dropped["crowd regions"] += 1
        return None
    if task == OBJECT_DETECTION:
        if a.bbox is not None:
            plan.used.add(NATIVE)
            return a
        if a.segmentation:
            plan.used.add(POLYGON_TO_BBOX)
            return dataclasses.replace(a, bbox=bbox_of_annotation(a))
        plan.dropped[_why_not(kind, "a box")] += 1
        return None
    if task in (INSTANCE_SEGMENTATION, SEMANTIC_SEGMENTATION):
        if a.segmentation:
            plan.used.add(RASTERIZE if task == SEMANTIC_SEGMENTATION else NATIVE)
            return a if a.bbox is not None else dataclasses.replace(a, bbox=bbox_of_annotation(a))
        reason = "RLE masks (not converted to polygons)" if a.rle else _why_not(kind, "a polygon")
        plan.dropped[reason] += 1
        return None
    # pose estimation
    if a.keypoints:
        box = bbox_of_annotation(a) if a.bbox is None and a.segmentation else a.bbox
        if box is None:
            plan.dropped["keypoints without a box"] += 1
            return None
        plan.used.add(NATIVE)
        return a if box is a.bbox else dataclasses.replace(a, bbox=box)
    plan.dropped[_why_not(kind, "keypoints")] += 1
    return None


def _why_not(kind: str, needed: str) -> str:
    return f"{_KIND_WORDS[kind]} without {needed}"


def _conversion(task: str, used: set[str]) -> str:
    for name in (DOMINANT_CLASS, RASTERIZE, POLYGON_TO_BBOX):
        if name in used:
            return name
    return NATIVE if used else NONE


def _incompatible_reason(dataset: Dataset, task: str) -> str:
    kinds = dataset.kinds()
    words = _TASK_WORDS[task]
    if not kinds:
        return f"the dataset has no annotations to train {words}"
    have = " and ".join(_KIND_WORDS[k] for k in KINDS if k in kinds)
    needs = {
        OBJECT_DETECTION: "boxes, polygons or keypoints with boxes",
        INSTANCE_SEGMENTATION: "polygons",
        SEMANTIC_SEGMENTATION: "polygons to rasterize",
        POSE_ESTIMATION: "keypoints with boxes",
        IMAGE_CLASSIFICATION: "labels, boxes, polygons or keypoints",
    }[task]
    return f"{have} cannot train {words}: it needs {needs}"


def _analyse(
    dataset: Dataset, task: str, split_seed: int, val_fraction: float
) -> tuple[_Plan, CompatibilityReport]:
    task = normalize_task(task)
    plan = _plan(dataset, task)
    kinds = sorted(dataset.kinds(), key=KINDS.index)
    conversion = _conversion(task, plan.used)
    report = CompatibilityReport(
        task=task,
        compatible=False,
        conversion=conversion,
        lossy=conversion == DOMINANT_CLASS,
        total_images=len(dataset.images),
        usable_images=len(plan.usable),
        dropped_annotations=sum(plan.dropped.values()),
        annotation_kinds=kinds,
        split_seed=split_seed,
    )
    errors, warnings = report.errors, report.warnings
    if not dataset.images:
        errors.append("the dataset has no images")
    elif not plan.kept:
        errors.append(_incompatible_reason(dataset, task))
    errors.extend(plan.errors)
    for reason, n in sorted(plan.dropped.items()):
        if n:
            warnings.append(f"{n} annotation(s) dropped: {reason}")
    unusable = len(dataset.images) - len(plan.usable)
    if unusable and plan.kept:
        warnings.append(
            f"{unusable} image(s) have nothing usable for {_TASK_WORDS[task]}; left out"
        )
    if conversion == DOMINANT_CLASS:
        warnings.append("dominant class keeps one label per image (lossy)")
    warnings.extend(plan.warnings)
    if not errors:
        _split_and_count(dataset, plan, report, split_seed, val_fraction)
    report.compatible = not errors
    if errors:
        report.conversion = NONE if not plan.kept else conversion
    return plan, report


def _distinct(values: np.ndarray) -> np.ndarray:
    """``np.unique(values)`` by sorting: numpy 2's hash-based unique of integers took about
    100 ms for 200,000 (image, class) keys, the sort about 1 ms."""
    ordered = np.sort(values)
    keep = np.empty(ordered.size, dtype=bool)
    keep[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=keep[1:])
    return ordered[keep]


def _split_and_count(
    dataset: Dataset,
    plan: _Plan,
    report: CompatibilityReport,
    seed: int,
    val_fraction: float,
) -> None:
    usable = set(plan.usable)
    kept = plan.kept
    # Dense indices: (image, class) pairs and counts in numpy, not per-annotation tuples.
    img = np.fromiter((a.image_id for a in kept), dtype=np.int64, count=len(kept))
    cat = np.fromiter((a.category_id for a in kept), dtype=np.int64, count=len(kept))
    img_ids, img_idx = np.unique(img, return_inverse=True)
    cat_ids, cat_idx = np.unique(cat, return_inverse=True)
    ncat = len(cat_ids)
    pair_keys = _distinct(img_idx * ncat + cat_idx)
    labels: dict[int, set[int]] = {i: set() for i in plan.usable}
    img_list, cat_list = img_ids.tolist(), cat_ids.tolist()
    for image_k, cat_k in zip(*divmod(pair_keys, ncat), strict=True):
        labels[img_list[image_k]].add(cat_list[cat_k])
    view = Dataset(dataset.categories, [im for im in dataset.images if im.id in usable])
    try:
        res = resolve_splits(view, seed=seed, val_fraction=val_fraction, labels=labels)
    except SplitError as exc:
        report.errors.append(str(exc))
        return
    report.splits = res.splits
    report.split_generated = res.generated
    report.warnings.extend(res.warnings)
    names = {c.id: c.name for c in dataset.categories}
    split_names = sorted(
        set(res.splits.values()), key=lambda s: ({"train": 0, "val": 1, "test": 2}.get(s, 3), s)
    )
    code = {name: k for k, name in enumerate(split_names)}
    img_split = np.asarray([code[res.splits[i]] for i in img_list], dtype=np.int64)
    ann_counts = np.bincount(img_split[img_idx] * ncat + cat_idx, minlength=len(code) * ncat)
    pair_img, pair_cat = divmod(pair_keys, ncat)
    image_counts = np.bincount(img_split[pair_img] * ncat + pair_cat, minlength=len(code) * ncat)
    anns: Counter = Counter()
    for key in np.flatnonzero(ann_counts).tolist():
        split_k, cat_k = divmod(key, ncat)
        split, cid = split_names[split_k], cat_list[cat_k]
        anns[(split, cid)] = int(ann_counts[key])
        report.class_counts.append(
            ClassCount(
                cid, names.get(cid, str(cid)), split, int(image_counts[key]), anns[(split, cid)]
            )
        )
    in_split: dict[int, set[str]] = defaultdict(set)
    for split, cid in anns:
        in_split[cid].add(split)
    if "val" not in code or "train" not in code:
        return  # resolve_splits said so once; per-class lines would only repeat it
    for cid in sorted(in_split, key=str):
        present = in_split[cid]
        name = names.get(cid, str(cid))
        if "train" not in present:
            where = " and ".join(s for s in ("val", "test") if s in present)
            report.warnings.append(f"class {name!r} appears only in {where}")
        elif "val" not in present:
            report.warnings.append(f"class {name!r} has no val images")


def _fraction(val_fraction: float | None) -> float:
    """None means the default; 0 means no val split (not the default)."""
    return DEFAULT_VAL_FRACTION if val_fraction is None else val_fraction


def check(
    dataset: Dataset,
    task: str,
    *,
    split_seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> CompatibilityReport:
    """What training ``task`` on ``dataset`` would use, convert, drop and split."""
    return _analyse(dataset, task, split_seed, _fraction(val_fraction))[1]


def convert(dataset: Dataset, task: str) -> Dataset:
    """A new dataset holding what ``task`` trains on (input unchanged; splits as given).

    Background markers and unusable images are left out; detection gets boxes from
    polygons; classification gets one image label per image (dominant class); pose
    keeps the categories that have keypoints.
    """
    task = normalize_task(task)
    plan = _plan(dataset, task)
    return _converted(dataset, task, plan)


def _converted(dataset: Dataset, task: str, plan: _Plan) -> Dataset:
    usable = set(plan.usable)
    bg = dataset.background_ids()
    categories = [c for c in dataset.categories if c.id not in bg]
    if task == POSE_ESTIMATION:
        with_kp = {a.category_id for a in plan.kept}
        categories = [c for c in categories if c.keypoints or c.id in with_kp]
    return Dataset(
        categories=[dataclasses.replace(c) for c in categories],
        images=[
            Image(im.id, im.path, im.width, im.height, im.split, im.sha256, im.origin, im.extra)
            for im in dataset.images
            if im.id in usable
        ],
        annotations=list(plan.kept),
        info={**dataset.info, "task_type": task},
    )


def prepare(
    dataset: Dataset,
    task: str,
    *,
    split_seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> tuple[Dataset | None, CompatibilityReport]:
    """Check, convert and split in one pass: (dataset ready to write, report).

    The dataset is None when the report is not compatible. Every image of the returned
    dataset has its split (given, or made with ``split_seed``).
    """
    plan, report = _analyse(dataset, task, split_seed, _fraction(val_fraction))
    if not report.compatible:
        return None, report
    out = _converted(dataset, report.task, plan)
    apply_splits(out, report.splits)
    return out, report


def semantic_mask(dataset: Dataset, image: Image) -> np.ndarray:
    """The class mask of one image: 0 background, category k (in id order) -> k + 1."""
    cats = sorted((c for c in dataset.categories if not c.is_background), key=lambda c: c.id)
    values = {c.id: k + 1 for k, c in enumerate(cats)}
    shapes = [
        (values[a.category_id], a.segmentation)
        for a in dataset.annotations
        if a.image_id == image.id and a.segmentation and a.category_id in values and not a.iscrowd
    ]
    return rasterize(image.width, image.height, shapes)
