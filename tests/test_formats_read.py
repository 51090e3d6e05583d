"""Readers: every layout is detected, its variant reported, and read into the one model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image as PILImage

from visionmesh import formats
from visionmesh.formats import MemorySource

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"sample datasets not found at {SHARED} (../shared/data)"
)


def make_image(path: Path, size: tuple[int, int] = (64, 48), colour: int = 90) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PILImage.new("RGB", size, (colour, colour, colour)).save(path)


def write_json(path: Path, doc: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))


def only_errors(result: formats.ReadResult) -> list[str]:
    return [str(p) for p in result.errors]


# --- shared samples -------------------------------------------------------------------


@needs_data
def test_yolo_detect_sample() -> None:
    result = formats.read(SHARED / "det-coco8")
    assert result.variant == "yolo-detect"
    assert result.ok, only_errors(result)
    ds = result.dataset
    assert len(ds.images) == 8
    assert ds.split_counts() == {"train": 4, "val": 4}
    lines = sum(
        len([ln for ln in p.read_text().splitlines() if ln.strip()])
        for p in (SHARED / "det-coco8" / "labels").rglob("*.txt")
    )
    assert len(ds.annotations) == lines
    image = next(im for im in ds.images if im.path == "images/train/000000000009.jpg")
    with PILImage.open(SHARED / "det-coco8" / image.path) as im:
        assert (image.width, image.height) == im.size
    first = next(a for a in ds.annotations if a.image_id == image.id)
    # "45 0.479492 0.688771 0.955609 0.5955": normalized centre box -> pixel top-left box
    w, h = image.width, image.height
    assert first.category_id == 45
    assert first.bbox == pytest.approx(
        [(0.479492 - 0.955609 / 2) * w, (0.688771 - 0.5955 / 2) * h, 0.955609 * w, 0.5955 * h]
    )
    # No names given: classes are named by index, ids 0..max kept contiguous.
    assert [c.id for c in ds.categories] == list(range(len(ds.categories)))
    assert ds.categories[45].name == "45"


@needs_data
def test_yolo_names_from_caller() -> None:
    names = [f"class{i}" for i in range(80)]
    ds = formats.read(SHARED / "det-coco8", class_names=names).dataset
    assert len(ds.categories) == 80
    assert ds.categories[45].name == "class45"


@needs_data
def test_yolo_segment_sample() -> None:
    result = formats.read(SHARED / "seg-coco8")
    assert result.variant == "yolo-segment"
    assert result.ok, only_errors(result)
    ds = result.dataset
    assert all(a.segmentation and a.bbox is None for a in ds.annotations)
    image = ds.image_map()[ds.annotations[0].image_id]
    poly = ds.annotations[0].segmentation[0]
    assert all(0 <= x <= image.width for x in poly[0::2])
    assert all(0 <= y <= image.height for y in poly[1::2])


@needs_data
def test_imagefolder_sample_with_duplicates_and_spaces() -> None:
    result = formats.read(SHARED / "cls-imagenet-10")
    assert result.variant == "imagefolder"
    assert result.ok, only_errors(result)
    ds = result.dataset
    assert len(ds.images) == 24
    assert len(ds.categories) == 10
    assert [c.name for c in ds.categories] == sorted(c.name for c in ds.categories)
    paths = {im.path for im in ds.images}
    assert "train/n01440764/n01440764_2923 copy 2.JPEG" in paths
    labels = {a.image_id: a.category_id for a in ds.annotations}
    names = {c.id: c.name for c in ds.categories}
    for im in ds.images:
        assert names[labels[im.id]] == im.path.split("/")[1]
        assert im.split == im.path.split("/")[0]
    duplicates = [p for p in result.warnings if "byte-identical" in p.message]
    assert len(duplicates) == 4
    assert {p.path for p in duplicates} == {
        "train/n01440764/n01440764_2923 copy.JPEG",
        "train/n01440764/n01440764_2923 copy 2.JPEG",
        "val/n01443537/ILSVRC2012_val_00002241 copy.JPEG",
        "val/n01443537/ILSVRC2012_val_00002241 copy 2.JPEG",
    }
    assert all(im.sha256 for im in ds.images if "2923" in im.path)


@needs_data
def test_yolo_classify_hint_on_class_folders() -> None:
    assert formats.read(SHARED / "cls-imagenet-10", format="yolo").variant == "yolo-classify"


# --- YOLO (generated) -------------------------------------------------------------------


def _yolo_pose(root: Path, with_yaml: bool) -> None:
    make_image(root / "images/train/a.jpg", (100, 50))
    make_image(root / "images/val/b.jpg", (100, 50))
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/val").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text("0 0.5 0.5 0.4 0.4 0.4 0.4 2 0.6 0.4 1 0.5 0.6 0\n")
    (root / "labels/val/b.txt").write_text("0 0.3 0.3 0.2 0.2 0.25 0.25 2 0.35 0.25 2 0.3 0.35 2\n")
    if with_yaml:
        (root / "data.yaml").write_text(
            "train: images/train\nval: images/val\nkpt_shape: [3, 3]\nflip_idx: [1, 0, 2]\n"
            "names:\n  0: tri\n"
        )


@pytest.mark.parametrize("with_yaml", [True, False])
def test_yolo_pose(tmp_path: Path, with_yaml: bool) -> None:
    _yolo_pose(tmp_path, with_yaml)
    result = formats.read(tmp_path)
    assert result.variant == "yolo-pose"
    assert result.ok, only_errors(result)
    ds = result.dataset
    a = next(a for a in ds.annotations if ds.image_map()[a.image_id].path.endswith("a.jpg"))
    assert a.bbox == pytest.approx([30.0, 15.0, 40.0, 20.0])
    assert a.keypoints == pytest.approx([40.0, 20.0, 2, 60.0, 20.0, 1, 50.0, 30.0, 0])
    assert len(ds.categories[0].keypoints) == 3
    assert ds.categories[0].name == ("tri" if with_yaml else "0")
    if with_yaml:
        assert ds.info["flip_idx"] == [1, 0, 2]


def test_yolo_names_in_yaml_list_and_negatives(tmp_path: Path) -> None:
    make_image(tmp_path / "images/train/a.jpg")
    make_image(tmp_path / "images/train/empty.jpg")
    (tmp_path / "labels/train").mkdir(parents=True)
    (tmp_path / "labels/train/a.txt").write_text("1 0.5 0.5 0.2 0.2\n")
    (tmp_path / "data.yaml").write_text("names: [cat, dog]\n")
    result = formats.read(tmp_path)
    assert result.variant == "yolo-detect" and result.ok
    assert [c.name for c in result.dataset.categories] == ["cat", "dog"]
    assert len(result.dataset.images) == 2  # the image without a label file is a negative


def test_yolo_roboflow_layout(tmp_path: Path) -> None:
    make_image(tmp_path / "train/images/a.jpg")
    (tmp_path / "train/labels").mkdir(parents=True)
    (tmp_path / "train/labels/a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    result = formats.read(tmp_path)
    assert result.variant == "yolo-detect"
    assert result.dataset.images[0].split == "train"
    assert len(result.dataset.annotations) == 1


# --- DICE -----------------------------------------------------------------------------


def _dice_doc(kind: str = "bbox") -> dict:
    ann = {
        "id": 1,
        "image_id": 1,
        "category_id": 1,
        "bbox": [4, 4, 10, 10],
        "area": 100,
        "iscrowd": 0,
    }
    if kind == "segmentation":
        ann["segmentation"] = [[4, 4, 14, 4, 14, 14]]
    return {
        "categories": [{"id": 0, "name": "__background__"}, {"id": 1, "name": "defect"}],
        "images": [
            {"id": 1, "file_name": "images/a.png", "width": 64, "height": 48, "split": "train"},
            {"id": 2, "file_name": "images/b.png", "width": 64, "height": 48, "split": "val"},
        ],
        "annotations": [ann, {"id": 2, "image_id": 2, "category_id": 0}],
        "storage_info": {"image_root": "datasets/x/images/", "storage_type": "s3"},
    }


def _dice_folder(root: Path) -> None:
    make_image(root / "images/a.png")
    make_image(root / "images/b.png")


def test_dice_task_specific_files(tmp_path: Path) -> None:
    _dice_folder(tmp_path)
    write_json(tmp_path / "annotations_detection.json", _dice_doc("bbox"))
    write_json(tmp_path / "annotations_segmentation.json", _dice_doc("segmentation"))
    seg = formats.read(tmp_path, task="segment")
    assert seg.documents == ["annotations_segmentation.json"]
    assert seg.variant == "dice-standard" and seg.ok
    assert seg.dataset.annotations[0].segmentation
    det = formats.read(tmp_path, task="object_detection")
    assert det.documents == ["annotations_detection.json"]
    assert det.dataset.annotations[0].segmentation is None
    # No task: one is read, and the choice is reported.
    plain = formats.read(tmp_path)
    assert plain.documents == ["annotations_detection.json"]
    assert any("several task files" in p.message for p in plain.warnings)


def test_dice_fallback_and_background(tmp_path: Path) -> None:
    _dice_folder(tmp_path)
    write_json(tmp_path / "annotations.json", _dice_doc())
    result = formats.read(tmp_path, task="pose")  # no annotations_pose.json: the fallback
    assert result.documents == ["annotations.json"]
    assert result.variant == "dice-standard" and result.ok
    ds = result.dataset
    assert ds.background_ids() == {0}
    assert ds.kinds() == {"box"}
    assert ds.info["storage_info"]["storage_type"] == "s3"
    assert [im.split for im in ds.images] == ["train", "val"]


def test_dice_nested(tmp_path: Path) -> None:
    _dice_folder(tmp_path)
    doc = {
        "classes": [{"id": 1, "name": "cat"}, {"id": 2, "name": "dog"}],
        "images": [
            {
                "id": 1,
                "file_name": "images/a.png",
                "width": 64,
                "height": 48,
                "annotations": [
                    {"id": 1, "class_id": 1, "bbox": [1, 2, 3, 4]},
                    {"class_id": 2, "bbox": [5, 5, 5, 5]},
                ],
            },
            {"id": 2, "file_name": "images/b.png", "width": 64, "height": 48, "annotations": []},
        ],
    }
    write_json(tmp_path / "annotations.json", doc)
    result = formats.read(tmp_path)
    assert result.variant == "dice-nested" and result.ok, only_errors(result)
    anns = result.dataset.annotations
    assert [(a.id, a.image_id, a.category_id) for a in anns] == [(1, 1, 1), (2, 1, 2)]
    assert anns[0].origin == "images[0].annotations[0]"


def test_dice_v1_platform_document(tmp_path: Path) -> None:
    _dice_folder(tmp_path)
    doc = {
        "format_version": "1.0",
        "task_type": "object_detection",
        "classes": [{"id": 0, "name": "car", "color": "#ff0000"}, {"id": 1, "name": "person"}],
        "images": [
            {
                "id": 1,
                "file_name": "images/a.png",
                "width": 64,
                "height": 48,
                "split": "train",
                "annotations": [
                    {"id": 1001, "class_id": 0, "bbox": [10, 10, 30, 20], "bbox_format": "xywh"},
                    {"id": 1002, "class_id": 1, "bbox": [5, 6, 15, 26], "bbox_format": "xyxy"},
                    {
                        "id": 1003,
                        "class_id": 1,
                        "keypoints": [[1, 2, 2], [3, 4, 1]],
                        "bbox": [0, 0, 5, 5],
                    },
                ],
            },
            {
                "id": 2,
                "file_name": "images/b.png",
                "width": 64,
                "height": 48,
                "split": "valid",
                "annotations": [
                    {"id": 9, "class_id": -1, "class_name": "__background__", "is_background": True}
                ],
            },
        ],
    }
    write_json(tmp_path / "annotations.json", doc)
    result = formats.read(tmp_path)
    assert result.variant == "dice-v1" and result.ok, only_errors(result)
    ds = result.dataset
    assert ds.info["task_type"] == "object_detection"
    assert [im.split for im in ds.images] == ["train", "val"]
    assert ds.annotations[1].bbox == [5, 6, 10, 20]  # xyxy -> xywh
    assert ds.annotations[2].keypoints == [1, 2, 2, 3, 4, 1]
    assert len(ds.annotations) == 3  # the background marker only says "no objects"
    assert ds.categories[0].color == "#ff0000"


def test_dice_v1_classification(tmp_path: Path) -> None:
    _dice_folder(tmp_path)
    doc = {
        "format_version": "1.0",
        "task_type": "image_classification",
        "classes": [{"id": 0, "name": "cat"}, {"id": 1, "name": "dog"}],
        "images": [
            {"id": 1, "file_name": "images/a.png", "width": 64, "height": 48, "split": "train",
             "annotation": {"class_id": 1, "class_name": "dog", "confidence": 1.0}},
            {"id": 2, "file_name": "images/b.png", "width": 64, "height": 48, "split": "val",
             "annotation": {"class_id": 0, "class_name": "cat"}},
        ],
    }  # fmt: skip
    write_json(tmp_path / "annotations.json", doc)
    result = formats.read(tmp_path)
    assert result.variant == "dice-v1" and result.ok, only_errors(result)
    ds = result.dataset
    assert [(a.image_id, a.category_id, a.kind) for a in ds.annotations] == [
        (1, 1, "image_label"),
        (2, 0, "image_label"),
    ]
    assert ds.annotations[0].id != ds.annotations[1].id


# --- plain COCO -------------------------------------------------------------------------


def _coco(categories: list[dict], keypoints: bool = False) -> dict:
    ann = {
        "id": 7,
        "image_id": 3,
        "category_id": categories[-1]["id"],
        "bbox": [2.5, 3.5, 20, 10],
        "segmentation": [[2.5, 3.5, 22.5, 3.5, 22.5, 13.5, 2.5, 13.5]],
        "area": 200.0,
        "iscrowd": 0,
    }
    if keypoints:
        ann["keypoints"] = [5, 5, 2, 10, 6, 1]
        ann["num_keypoints"] = 2
    return {
        "info": {"year": 2017},
        "licenses": [],
        "images": [{"id": 3, "file_name": "000000000003.jpg", "width": 64, "height": 48}],
        "annotations": [ann],
        "categories": categories,
    }


def test_coco_instances_file_with_images_in_sibling_folder(tmp_path: Path) -> None:
    make_image(tmp_path / "val2017/000000000003.jpg")
    cats = [{"id": 1, "name": "person"}, {"id": 90, "name": "toothbrush"}]
    write_json(tmp_path / "annotations/instances_val2017.json", _coco(cats))
    result = formats.read(tmp_path / "annotations/instances_val2017.json")
    assert result.variant == "coco-instances"
    assert result.ok, only_errors(result)
    ds = result.dataset
    assert ds.images[0].path == "val2017/000000000003.jpg"
    assert [c.id for c in ds.categories] == [1, 90]  # ids kept as given
    assert ds.annotations[0].category_id == 90


def test_coco_keypoints(tmp_path: Path) -> None:
    make_image(tmp_path / "000000000003.jpg")
    cats = [{"id": 1, "name": "person", "keypoints": ["nose", "eye"], "skeleton": [[1, 2]]}]
    write_json(tmp_path / "person_keypoints.json", _coco(cats, keypoints=True))
    result = formats.read(tmp_path / "person_keypoints.json")
    assert result.variant == "coco-keypoints" and result.ok, only_errors(result)
    assert result.dataset.annotations[0].keypoints == [5, 5, 2, 10, 6, 1]
    assert result.dataset.categories[0].skeleton == [[1, 2]]


def test_coco_split_files_are_merged(tmp_path: Path) -> None:
    cats = [{"id": 1, "name": "a"}]
    train = _coco(cats)
    val = _coco(cats)
    val["images"][0].update(id=4, file_name="000000000004.jpg")
    val["annotations"][0].update(id=8, image_id=4)
    make_image(tmp_path / "train/000000000003.jpg")
    make_image(tmp_path / "val/000000000004.jpg")
    write_json(tmp_path / "annotations/instances_train.json", train)
    write_json(tmp_path / "annotations/instances_val.json", val)
    result = formats.read(tmp_path)
    assert result.ok, only_errors(result)
    assert sorted(result.documents) == [
        "annotations/instances_train.json",
        "annotations/instances_val.json",
    ]
    ds = result.dataset
    assert len(ds.categories) == 1
    assert {im.path: im.split for im in ds.images} == {
        "train/000000000003.jpg": "train",
        "val/000000000004.jpg": "val",
    }


# --- legacy v0.9 ----------------------------------------------------------------------


def test_legacy_v09(tmp_path: Path) -> None:
    make_image(tmp_path / "images/street_001.jpg", (800, 600))
    make_image(tmp_path / "images/cat_seg.jpg", (800, 600))
    label_map = {
        "task_type": "det",
        "class_summary": {"num_classes": 2, "classes": [
            {"name": "car", "idx": 0, "color": "#FF6B6B"}, {"name": "cat", "idx": 1}]},
        "data_summary": [
            {"img_path": "E:/my-dataset/images/street_001.jpg", "label_path": "E:/my-dataset/labels/street_001.json"},
            {"img_path": "E:\\my-dataset\\images\\cat_seg.jpg", "label_path": "E:\\my-dataset\\labels\\cat_seg.json"},
        ],
    }  # fmt: skip
    write_json(tmp_path / "label_map.json", label_map)
    write_json(
        tmp_path / "labels/street_001.json",
        {"version": "0.9", "task_type": "det", "split": "train", "imageHeight": 600, "imageWidth": 800,
         "shapes": [{"label": "car", "points": [[400, 350], [100, 150]], "shape_type": "rectangle"}]},
    )  # fmt: skip
    write_json(
        tmp_path / "labels/cat_seg.json",
        {"version": "0.9", "task_type": "det", "split": "val", "imageHeight": 600, "imageWidth": 800,
         "shapes": [{"label": "cat", "points": [[10, 10], [50, 10], [30, 40]], "shape_type": "polygon"}]},
    )  # fmt: skip
    result = formats.read(tmp_path)
    assert result.variant == "legacy-v0.9"
    assert result.ok, only_errors(result)
    ds = result.dataset
    assert [im.path for im in ds.images] == ["images/street_001.jpg", "images/cat_seg.jpg"]
    assert ds.annotations[0].bbox == [100, 150, 300, 200]
    assert ds.annotations[1].segmentation == [[10.0, 10.0, 50.0, 10.0, 30.0, 40.0]]
    assert [c.name for c in ds.categories] == ["car", "cat"]
    assert [im.split for im in ds.images] == ["train", "val"]


# --- sources ----------------------------------------------------------------------------


def test_memory_source_yolo_matches_directory(tmp_path: Path) -> None:
    _yolo_pose(tmp_path, with_yaml=True)
    files = {
        "data.yaml": (tmp_path / "data.yaml").read_bytes(),
        "labels/train/a.txt": (tmp_path / "labels/train/a.txt").read_bytes(),
        "labels/val/b.txt": (tmp_path / "labels/val/b.txt").read_text(),
    }
    images = {"images/train/a.jpg": (100, 50), "images/val/b.jpg": (100, 50, "ab" * 32)}
    mem = formats.read(MemorySource(files, images))
    disk = formats.read(tmp_path)
    assert mem.variant == disk.variant == "yolo-pose"
    assert mem.ok, only_errors(mem)
    assert (
        formats.to_dice_dict(mem.dataset)["annotations"]
        == formats.to_dice_dict(disk.dataset)["annotations"]
    )


def test_memory_source_dice_checks_catalog_images() -> None:
    doc = _dice_doc()
    files = {"annotations.json": json.dumps(doc).encode()}
    ok = formats.read(MemorySource(files, {"images/a.png": (64, 48), "images/b.png": (64, 48)}))
    assert ok.ok and ok.variant == "dice-standard"
    missing = formats.read(MemorySource(files, {"images/a.png": (64, 48)}))
    assert [(p.path, p.severity) for p in missing.errors] == [("images[1].file_name", "error")]
    resized = formats.read(
        MemorySource(files, {"images/a.png": (64, 48), "images/b.png": (32, 48)})
    )
    assert [p.path for p in resized.errors] == ["images[1].width"]


def test_memory_source_imagefolder_from_paths_alone() -> None:
    images = {"train/cat/1.jpg": (10, 10), "train/dog/2.jpg": (10, 10), "val/cat/3.jpg": (10, 10)}
    result = formats.read(MemorySource({}, images))
    assert result.variant == "imagefolder" and result.ok
    assert [c.name for c in result.dataset.categories] == ["cat", "dog"]


def test_images_only(tmp_path: Path) -> None:
    make_image(tmp_path / "a.jpg")
    make_image(tmp_path / "b.jpg")
    result = formats.read(tmp_path)
    assert result.variant == "images-only"
    assert len(result.dataset.images) == 2 and not result.dataset.annotations
    assert result.ok and result.warnings


def test_missing_source_raises(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        formats.read(tmp_path / "nope")


def test_empty_folder_is_an_error(tmp_path: Path) -> None:
    result = formats.read(tmp_path)
    assert not result.ok
    assert "no annotations or images" in result.errors[0].message


def test_images_in_another_folder(tmp_path: Path) -> None:
    make_image(tmp_path / "pictures/sub/a.jpg", (20, 10))
    doc = {
        "categories": [{"id": 1, "name": "a"}],
        "images": [{"id": 1, "file_name": "sub/a.jpg", "width": 20, "height": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 5, 5]}],
    }
    write_json(tmp_path / "labels/instances.json", doc)
    assert not formats.read(tmp_path / "labels/instances.json").ok  # images not found
    result = formats.read(tmp_path / "labels/instances.json", image_root=tmp_path / "pictures")
    assert result.ok, only_errors(result)
    assert result.dataset.images[0].path == "sub/a.jpg"
