"""Compatibility rules (DESIGN.md section 7): the matrix as data, reports, conversions."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from visionmesh import compat
from visionmesh.formats import TASKS, Annotation, Category, Dataset, Image

SQUARE = [[0, 0, 10, 0, 10, 10, 0, 10]]


def dataset_of(kind: str, images: int = 10) -> Dataset:
    """Images each with one annotation of ``kind`` (class alternating 1/2), no splits."""
    cats = [Category(1, "a", keypoints=["p", "q"]), Category(2, "b", keypoints=["p", "q"])]
    ds = Dataset(categories=cats)
    for i in range(1, images + 1):
        ds.images.append(Image(i, f"{i}.jpg", 100, 100))
        a = Annotation(i, i, 1 + i % 2)
        if kind in ("box", "keypoints"):
            a.bbox = [1, 1, 10, 10]
        if kind == "polygon":
            a.segmentation = copy.deepcopy(SQUARE)
        if kind == "keypoints":
            a.keypoints = [2, 2, 2, 5, 5, 1]
        ds.annotations.append(a)
    return ds


def test_matrix_is_complete_data() -> None:
    rules = compat.conversion_rules()
    assert len(rules) == 20
    assert {(r.annotation_kind, r.task) for r in rules} == {
        (k, t) for k in compat.KINDS for t in TASKS
    }
    m = compat.CONVERSION_MATRIX
    assert m[("polygon", "object_detection")].conversion == "polygon_to_bbox"
    assert m[("polygon", "semantic_segmentation")].conversion == "rasterize"
    assert m[("box", "image_classification")].conversion == "dominant_class"
    assert m[("box", "image_classification")].lossy
    assert m[("image_label", "object_detection")].conversion == "none"
    assert m[("keypoints", "pose_estimation")].conversion == "native"
    assert all(r.note for r in rules)


@pytest.mark.parametrize(
    "rule", compat.conversion_rules(), ids=lambda r: f"{r.annotation_kind}-{r.task}"
)
def test_check_follows_the_matrix(rule: compat.ConversionRule) -> None:
    kind = {"image_label": "label"}.get(rule.annotation_kind, rule.annotation_kind)
    report = compat.check(dataset_of(kind), rule.task)
    if rule.conversion == "none":
        assert not report.compatible and report.errors
        assert report.usable_images == 0
    else:
        assert report.compatible, report.errors
        assert report.usable_images == report.total_images == 10
        if rule.annotation_kind == "polygon" and rule.task == "object_detection":
            assert report.conversion == "polygon_to_bbox"
        elif rule.annotation_kind != "keypoints" or rule.task == "image_classification":
            assert report.conversion == rule.conversion
        assert report.lossy == rule.lossy


def test_incompatible_reason_names_both_sides() -> None:
    report = compat.check(dataset_of("label"), "detect")
    assert report.errors == [
        "classification labels cannot train object detection: it needs boxes, polygons or "
        "keypoints with boxes"
    ]
    assert report.conversion == "none"
    assert report.dropped_annotations == 10
    assert (
        compat.check(dataset_of("box"), "segment")
        .errors[0]
        .startswith("boxes cannot train instance")
    )


def test_dominant_class_by_area_then_instances_then_id() -> None:
    big = Annotation(1, 1, 5, [0, 0, 10, 10])
    small = [Annotation(2, 1, 3, [0, 0, 5, 5]), Annotation(3, 1, 3, [0, 0, 5, 5])]
    assert compat.dominant_class([big, *small]) == 5  # 100 px beats 2 x 25 px
    tie = [
        Annotation(1, 1, 5, [0, 0, 10, 10]),
        Annotation(2, 1, 3, [0, 0, 5, 10]),
        Annotation(3, 1, 3, [0, 0, 5, 10]),
    ]
    assert compat.dominant_class(tie) == 3  # same area: more instances
    even = [Annotation(1, 1, 5, [0, 0, 10, 10]), Annotation(2, 1, 3, [0, 0, 10, 10])]
    assert compat.dominant_class(even) == 3  # same area and count: lowest id


def test_dominant_class_uses_polygon_area() -> None:
    tri = Annotation(1, 1, 4, segmentation=[[0, 0, 20, 0, 0, 20]])  # area 200
    box = Annotation(2, 1, 9, [0, 0, 12, 12])  # area 144
    assert compat.dominant_class([tri, box]) == 4


def test_classification_by_dominant_class_report_and_convert() -> None:
    ds = dataset_of("box", images=6)
    ds.annotations.append(Annotation(100, 1, 1, [0, 0, 50, 50]))  # image 1: class 1 dominates
    report = compat.check(ds, "classify")
    assert report.compatible and report.conversion == "dominant_class" and report.lossy
    assert report.dropped_annotations == 1  # the smaller class-2 box on image 1
    out = compat.convert(ds, "classify")
    labels = {a.image_id: a.category_id for a in out.annotations}
    assert labels[1] == 1
    assert all(a.kind == "image_label" for a in out.annotations)
    assert len(ds.annotations) == 7 and ds.annotations[0].bbox is not None  # input unchanged


def test_detection_from_polygons_fills_boxes() -> None:
    ds = dataset_of("polygon")
    out = compat.convert(ds, "detect")
    assert all(a.bbox == [0.0, 0.0, 10.0, 10.0] for a in out.annotations)
    assert all(a.bbox is None for a in ds.annotations)


def test_background_crowd_and_unusable_images() -> None:
    ds = dataset_of("box", images=8)
    ds.categories.append(Category(0, "__background__"))
    ds.images.append(Image(50, "neg.jpg", 100, 100))
    ds.annotations.append(Annotation(500, 50, 0))  # a negative sample
    ds.images.append(Image(51, "label-only.jpg", 100, 100))
    ds.annotations.append(Annotation(501, 51, 1))  # an image label: useless for detection
    ds.annotations[0].iscrowd = 1
    report = compat.check(ds, "detect")
    assert report.compatible
    assert report.total_images == 10
    assert report.usable_images == 8  # 7 boxed images + the negative; not the crowd-only one
    assert report.dropped_annotations == 2
    assert any("crowd" in w for w in report.warnings)
    assert any("left out" in w for w in report.warnings)
    out = compat.convert(ds, "detect")
    assert 0 not in {c.id for c in out.categories}
    assert 50 in {im.id for im in out.images}


def test_per_split_per_class_counts_and_only_in_val_warning() -> None:
    ds = dataset_of("box", images=6)
    for im in ds.images:
        im.split = "train" if im.id <= 4 else "val"
    ds.categories.append(Category(3, "rare"))
    ds.annotations.append(Annotation(99, 6, 3, [5, 5, 5, 5]))
    report = compat.check(ds, "detect")
    assert not report.split_generated
    counts = {
        (c.split, c.category_name): (c.image_count, c.annotation_count) for c in report.class_counts
    }
    assert counts == {
        ("train", "a"): (2, 2),
        ("train", "b"): (2, 2),
        ("val", "a"): (1, 1),
        ("val", "b"): (1, 1),
        ("val", "rare"): (1, 1),
    }
    assert "class 'rare' appears only in val" in report.warnings
    assert report.to_dict()["class_counts"][0]["split"] == "train"


def test_generated_split_is_reported_and_applied_by_prepare() -> None:
    ds = dataset_of("polygon", images=20)
    out, report = compat.prepare(ds, "segment", split_seed=4, val_fraction=0.25)
    assert report.split_generated and report.split_seed == 4
    assert {im.split for im in out.images} == {"train", "val"}
    assert sum(im.split == "val" for im in out.images) == 5
    assert {im.id: im.split for im in out.images} == report.splits
    assert all(im.split == "" for im in ds.images)
    again, _ = compat.prepare(ds, "segment", split_seed=4, val_fraction=0.25)
    assert [im.split for im in again.images] == [im.split for im in out.images]


def test_prepare_refuses_incompatible() -> None:
    out, report = compat.prepare(dataset_of("box"), "pose")
    assert out is None and not report.compatible


def test_too_few_images_to_split_train_on_what_there_is() -> None:
    # issue #14: small datasets are not refused; the best split possible, said in a warning
    report = compat.check(dataset_of("box", images=1), "detect")
    assert report.compatible and set(report.splits.values()) == {"train"}
    assert any("at least 2" in w for w in report.warnings)


def test_pose_needs_one_keypoint_count() -> None:
    ds = dataset_of("keypoints", images=4)
    ds.annotations[0].keypoints = [1, 1, 2]
    report = compat.check(ds, "pose")
    assert not report.compatible
    assert "different numbers of keypoints" in report.errors[0]


def test_semantic_mask() -> None:
    ds = dataset_of("polygon", images=2)
    mask = compat.semantic_mask(ds, ds.images[0])
    assert mask.shape == (100, 100) and mask.dtype == np.uint8
    assert mask[5, 5] == 2 and mask[50, 50] == 0  # image 1 holds class 2 -> value 2


def test_empty_dataset() -> None:
    report = compat.check(Dataset(), "detect")
    assert not report.compatible and report.errors == ["the dataset has no images"]
