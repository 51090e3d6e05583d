"""Writers and round trips: YOLO, DICE (+ meta.json), COCO, ImageFolder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image as PILImage

from visionmesh import compat, formats, shapes
from visionmesh.formats import Annotation, Category, Dataset, Image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"sample datasets not found at {SHARED} (../shared/data)"
)


def label_rows(path: Path) -> list[list[float]]:
    return [list(map(float, ln.split())) for ln in path.read_text().splitlines() if ln.strip()]


def assert_same_labels(src: Path, out: Path) -> None:
    """Every label file of ``src`` is in ``out`` with the same lines, values within 1e-6."""
    src_files = sorted(p.relative_to(src) for p in (src / "labels").rglob("*.txt"))
    out_files = sorted(p.relative_to(out) for p in (out / "labels").rglob("*.txt"))
    assert out_files == [Path("labels") / f.relative_to("labels") for f in src_files]
    for rel in src_files:
        a, b = label_rows(src / rel), label_rows(out / rel)
        assert len(a) == len(b), rel
        for x, y in zip(a, b, strict=True):
            assert x[0] == y[0] and len(x) == len(y), rel
            assert np.max(np.abs(np.subtract(x, y))) <= 1e-6, rel


@needs_data
@pytest.mark.parametrize("sample", ["det-coco8", "seg-coco8"])
def test_yolo_round_trip_reproduces_labels(tmp_path: Path, sample: str) -> None:
    src = SHARED / sample
    result = formats.read(src)
    assert result.ok
    written = formats.write(result.dataset, "yolo", tmp_path, source=formats.open_source(src))
    assert not [p for p in written.problems if p.is_error]
    assert_same_labels(src, tmp_path)
    cfg = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert cfg["train"] == "images/train" and cfg["val"] == "images/val"
    assert "path" not in cfg  # ultralytics then resolves the folders beside data.yaml
    assert len(cfg["names"]) == len(result.dataset.categories)
    assert (tmp_path / "images/train/000000000009.jpg").is_file()


@needs_data
@pytest.mark.parametrize("fmt", ["dice", "coco"])
@pytest.mark.parametrize("sample", ["det-coco8", "seg-coco8"])
def test_yolo_to_json_formats_and_back(tmp_path: Path, fmt: str, sample: str) -> None:
    src = SHARED / sample
    first = formats.read(src).dataset
    formats.write(first, fmt, tmp_path / "json", source=formats.open_source(src))
    again = formats.read(tmp_path / "json")
    assert again.ok, [str(p) for p in again.errors]
    assert again.variant == ("dice-standard" if fmt == "dice" else "coco-instances")
    back = again.dataset
    assert {im.path: (im.width, im.height, im.split) for im in back.images} == {
        im.path: (im.width, im.height, im.split) for im in first.images
    }
    # and back to YOLO: the labels are those of the sample
    formats.write(back, "yolo", tmp_path / "yolo", task=formats.infer_task(first))
    assert_same_labels(src, tmp_path / "yolo")


@needs_data
def test_imagefolder_round_trip_keeps_duplicates_and_spaces(tmp_path: Path) -> None:
    src = SHARED / "cls-imagenet-10"
    first = formats.read(src)
    written = formats.write(first.dataset, "imagefolder", tmp_path, source=formats.open_source(src))
    assert written.images_placed == 24
    out_files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.JPEG"))
    src_files = sorted(str(p.relative_to(src)) for p in src.rglob("*.JPEG"))
    assert out_files == src_files
    copy = tmp_path / "train/n01440764/n01440764_2923 copy 2.JPEG"
    assert copy.read_bytes() == (src / "train/n01440764/n01440764_2923.JPEG").read_bytes()
    again = formats.read(tmp_path)
    assert again.variant == "imagefolder"
    assert len([p for p in again.warnings if "byte-identical" in p.message]) == 4


@needs_data
def test_images_are_linked_not_copied(tmp_path: Path) -> None:
    src = SHARED / "det-coco8"
    formats.write(formats.read(src).dataset, "dice", tmp_path, source=formats.open_source(src))
    placed = tmp_path / "images/train/000000000009.jpg"
    original = src / "images/train/000000000009.jpg"
    if os.stat(placed).st_dev == os.stat(original).st_dev and os.stat(placed).st_nlink > 1:
        assert os.stat(placed).st_ino == os.stat(original).st_ino
    assert placed.read_bytes() == original.read_bytes()


def _dataset() -> Dataset:
    return Dataset(
        categories=[Category(3, "square"), Category(7, "circle"), Category(0, "__background__")],
        images=[Image(1, "a/x.jpg", 200, 100, "train"), Image(2, "b/x.jpg", 200, 100, "val"),
                Image(3, "c.jpg", 200, 100, "val")],
        annotations=[
            Annotation(10, 1, 7, [10, 10, 50, 20], [[10, 10, 60, 10, 60, 30, 10, 30]], area=1000.0),
            Annotation(11, 2, 3, [0, 0, 20, 20], [[0, 0, 20, 0, 20, 20], [100, 50, 120, 50, 110, 70]]),
            Annotation(12, 3, 0),
        ],
    )  # fmt: skip


def test_yolo_segment_writer_class_ranks_and_multipart_polygons(tmp_path: Path) -> None:
    written = formats.write(_dataset(), "yolo", tmp_path, task="segment")
    assert written.images == [
        ("a/x.jpg", "images/train/a/x.jpg"),
        ("b/x.jpg", "images/val/b/x.jpg"),
        ("c.jpg", "images/val/c.jpg"),
    ]
    rows = label_rows(tmp_path / "labels/train/a/x.txt")
    assert rows == [pytest.approx([1, 0.05, 0.1, 0.3, 0.1, 0.3, 0.3, 0.05, 0.3])]  # id 7 -> 1
    (merged,) = label_rows(tmp_path / "labels/val/b/x.txt")
    assert merged[0] == 0 and (len(merged) - 1) // 2 == 3 + 1 + 3 + 1  # two parts + bridge
    assert (tmp_path / "labels/val/c.txt").read_text() == ""  # negative: an empty label file
    cfg = yaml.safe_load((tmp_path / "data.yaml").read_text())
    assert cfg["names"] == {0: "square", 1: "circle"}


def test_yolo_detect_derives_boxes_and_clips(tmp_path: Path) -> None:
    ds = _dataset()
    ds.annotations[0].bbox = None  # only the polygon
    ds.annotations[1].bbox = [195, 95, 20, 20]  # its centre lies outside the 200x100 image
    written = formats.write(ds, "yolo", tmp_path, task="detect")
    assert label_rows(tmp_path / "labels/train/a/x.txt") == [
        pytest.approx([1, 0.175, 0.2, 0.25, 0.2])
    ]
    assert label_rows(tmp_path / "labels/val/b/x.txt") == [pytest.approx([0, 1.0, 1.0, 0.1, 0.2])]
    assert any("clipped" in p.message for p in written.problems)


def test_yolo_assigns_missing_splits_without_changing_dataset(tmp_path: Path) -> None:
    ds = _dataset()
    for im in ds.images:
        im.split = ""
    written = formats.write(ds, "yolo", tmp_path, task="detect", split_seed=3)
    assert {dest.split("/")[1] for _, dest in written.images} == {"train", "val"}
    assert all(im.split == "" for im in ds.images)
    assert any("seed 3" in p.message for p in written.problems)


def test_pose_round_trip_on_shapes(tmp_path: Path) -> None:
    shapes.generate(tmp_path / "shapes", images=12, size=64, seed=5)
    source = formats.read(tmp_path / "shapes").dataset
    pose, report = compat.prepare(source, "pose")
    assert report.compatible
    formats.write(
        pose,
        "yolo",
        tmp_path / "yolo",
        task="pose",
        source=formats.open_source(tmp_path / "shapes"),
    )
    cfg = yaml.safe_load((tmp_path / "yolo/data.yaml").read_text())
    assert cfg["kpt_shape"] == [3, 3] and cfg["names"] == {0: "triangle"}
    back = formats.read(tmp_path / "yolo")
    assert back.variant == "yolo-pose" and back.ok, [str(p) for p in back.errors]
    before = {(a.keypoints[0], a.keypoints[1]) for a in pose.annotations}
    after = {(round(a.keypoints[0], 3), round(a.keypoints[1], 3)) for a in back.dataset.annotations}
    assert after == {(round(x, 3), round(y, 3)) for x, y in before}


def test_yolo_classify_and_imagefolder_layouts(tmp_path: Path) -> None:
    ds = _dataset()
    cls = compat.convert(ds, "classify")
    written = formats.write(cls, "yolo", tmp_path / "y", task="classify")
    assert sorted(dest for _, dest in written.images) == [
        "train/circle/a/x.jpg",
        "val/square/b/x.jpg",
    ]
    for im in cls.images:
        im.split = ""
    folder = formats.write(cls, "imagefolder", tmp_path / "f")
    assert sorted(dest for _, dest in folder.images) == ["circle/a/x.jpg", "square/b/x.jpg"]


def test_dice_writer_meta_and_task_file_name(tmp_path: Path) -> None:
    written = formats.write(_dataset(), "dice", tmp_path, task="detect", images="none")
    assert written.files == ["annotations_detection.json", "meta.json"]
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["format"] == "dice" and meta["task_type"] == "object_detection"
    assert meta["image_count"] == 3 and meta["annotation_count"] == 3
    assert meta["splits"] == {"train": 1, "val": 2}
    doc = (tmp_path / "annotations_detection.json").read_bytes()
    import hashlib

    assert meta["annotations_sha256"] == hashlib.sha256(doc).hexdigest()
    back = formats.from_dice_dict(json.loads(doc))
    assert back.ok and formats.to_dice_dict(back.dataset) == formats.to_dice_dict(_dataset())


def test_coco_writer_drops_background_and_adds_boxes(tmp_path: Path) -> None:
    ds = _dataset()
    ds.annotations[0].bbox = None
    written = formats.write(ds, "coco", tmp_path, images="none")
    assert written.files == ["annotations/instances_train.json", "annotations/instances_val.json"]
    train = json.loads((tmp_path / "annotations/instances_train.json").read_text())
    assert [c["name"] for c in train["categories"]] == ["square", "circle"]
    assert train["annotations"][0]["bbox"] == [10.0, 10.0, 50.0, 20.0]
    val = json.loads((tmp_path / "annotations/instances_val.json").read_text())
    assert [a["id"] for a in val["annotations"]] == [11]  # the background marker is not COCO


def test_semantic_masks(tmp_path: Path) -> None:
    ds, report = compat.prepare(_dataset(), "semantic")
    assert report.conversion == "rasterize"
    written = formats.write(ds, "dice", tmp_path, task="semantic", images="none")
    assert "masks/a/x.png" in written.files
    mask = np.asarray(PILImage.open(tmp_path / "masks/a/x.png"))
    assert mask.shape == (100, 200)
    assert mask[20, 30] == 2 and mask[5, 5] == 0  # circle (id 7) is the second class
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["mask_classes"][2] == {"value": 2, "name": "circle", "category_id": 7}


def test_write_plan_without_source_for_the_service(tmp_path: Path) -> None:
    written = formats.write(_dataset(), "dice", tmp_path)
    assert written.images_placed == 0
    assert written.images == [("a/x.jpg", "a/x.jpg"), ("b/x.jpg", "b/x.jpg"), ("c.jpg", "c.jpg")]


def test_to_dice_dict_is_plain_json_with_array_polygons() -> None:
    ds = _dataset()
    ds.annotations[0].segmentation = [np.array([1.5, 2.0, 3.0, 4.0, 5.0, 6.0])]
    doc = formats.to_dice_dict(ds)
    assert json.loads(json.dumps(doc))["annotations"][0]["segmentation"] == [
        [1.5, 2.0, 3.0, 4.0, 5.0, 6.0]
    ]


def test_unknown_format_and_incompatible_requests(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown format"):
        formats.write(_dataset(), "voc", tmp_path)
    with pytest.raises(ValueError, match="ImageFolder"):
        formats.write(_dataset(), "imagefolder", tmp_path, task="detect")
    with pytest.raises(ValueError, match="semantic"):
        formats.write(_dataset(), "yolo", tmp_path, task="semantic")
