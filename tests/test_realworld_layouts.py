"""Every real layout in ../shared/realworld: `vmesh validate` names its layout and variant,
reads what a reference tool reads (nothing refused or silently emptied), and refuses what
is no dataset with a reason. Counts are checked against pycocotools where it reads the file.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from tests._realworld import materialize, needs_realworld
from visionmesh import formats
from visionmesh.cli import main

pytestmark = needs_realworld

MVP = "mvp-vision-ai-platform"
# (source, path inside it to validate, variant, layout words, images, annotations, splits)
READABLE = [
    (
        "coco-mini",
        "",
        "coco-instances+coco-keypoints",
        "COCO annotations/ folder",
        159,
        739 + 624,
        {"train": 80, "val": 79},
    ),
    (
        "coco-mini",
        "annotations/instances_val2017.json",
        "coco-instances",
        "annotation file annotations/instances_val2017.json",
        79,
        624,
        {"val": 79},
    ),
    (
        "roboflow-dog-seg",
        "",
        "coco-instances",
        "Roboflow COCO export",
        213,
        258,
        {"train": 213},
    ),
    ("labelme", "instance_segmentation/data_dataset_coco", "", "annotations.json", 3, 12, {"": 3}),
    (
        f"{MVP}/mvtec_v2",
        "",
        "legacy-v0.9",
        "v0.9.7 per-image label files + labelme labels.txt",
        31,
        35,
        {"": 31},
    ),
    (f"{MVP}/mvtec_v2", "train_annotations", "", "annotations.json", 31, 35, {"": 31}),
    (
        f"{MVP}/example-v1.0-detection.json",
        "",
        "dice-v1",
        "example-v1.0-detection.json",
        2,
        4,
        None,
    ),
    (
        f"{MVP}/example-v1.0-classification.json",
        "",
        "dice-v1",
        "example-v1.0-classification.json",
        3,
        3,
        None,
    ),
    (f"{MVP}/spec-variant1-standard.json", "", "dice-standard", "spec-variant1", 2, 2, None),
    (f"{MVP}/spec-variant2-nested.json", "", "dice-nested", "spec-variant2", 2, 2, None),
    (f"{MVP}/spec-negative-background.json", "", "dice-standard", "spec-negative", 1, 1, None),
    (f"{MVP}/spec-valid-minimal.json", "", "coco-instances", "spec-valid-minimal", 1, 1, None),
    (
        "datumaro/coco_dataset/coco_instances",
        "",
        "coco-instances",
        "COCO annotations/ folder: instances_train.json (train), instances_val.json (val)",
        2,
        3,
        {"train": 1, "val": 1},
    ),
    (
        "datumaro/coco_dataset/mmdet_coco",
        "",
        "coco-instances",
        "COCO annotations/ folder",
        2,
        3,
        {"train": 1, "val": 1},
    ),
    (
        "datumaro/coco_dataset/coco_stuff",
        "",
        "coco-instances",
        "stuff_train.json (train), stuff_val.json (val)",
        2,
        2,
        {"train": 1, "val": 1},
    ),
    (
        "datumaro/coco_dataset/coco_person_keypoints",
        "",
        "coco-keypoints",
        "person_keypoints_train.json (train)",
        2,
        3,
        {"train": 1, "val": 1},
    ),
    (
        "datumaro/coco_dataset/coco_panoptic",
        "",
        "coco-panoptic",
        "panoptic_train.json (train), panoptic_val.json (val)",
        2,
        3,
        {"train": 1, "val": 1},
    ),
    (
        "datumaro/yolo_dataset/labels",
        "",
        "yolo-detect",
        "YOLO images/ + labels/ folders",
        2,
        4,
        {"train": 1, "val": 1},
    ),
    ("datumaro/yolo_dataset/strict", "", "yolo-detect", "Darknet", 1, 2, {"train": 1}),
    (
        "datumaro/roboflow_dataset/yolo",
        "",
        "yolo-detect",
        "with data.yaml",
        3,
        4,
        {"train": 2, "val": 1},
    ),
    (
        "datumaro/kaggle_dataset/relaxed_yolo",
        "",
        "yolo-detect",
        "labels beside the images",
        2,
        4,
        {"": 2},
    ),
    ("datumaro/imagenet_dataset", "", "imagefolder", "class folders", 4, 3, {"": 4}),
    (
        "datumaro/imagenet_subsets_dataset",
        "",
        "imagefolder",
        "class folders",
        12,
        9,
        {"train": 4, "val": 4, "test": 4},
    ),
]


@pytest.mark.parametrize(
    ("source", "inner", "variant", "layout", "images", "annotations", "splits"),
    READABLE,
    ids=[f"{c[0]}/{c[1]}".rstrip("/") for c in READABLE],
)
def test_validate_names_layout_and_reads_everything(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    source: str,
    inner: str,
    variant: str,
    layout: str,
    images: int,
    annotations: int,
    splits: dict[str, int] | None,
) -> None:
    root = materialize(source, tmp_path)
    target = root / inner if inner else root
    code = main(["validate", str(target), "--json"])
    report = json.loads(capsys.readouterr().out)
    errors = [p for p in report["problems"] if p["severity"] == "error"]
    assert code == 0 and report["ok"], errors
    if variant:
        assert report["variant"] == variant
    else:  # DICE-compatible COCO files named annotations.json read as either name
        assert report["variant"] in ("dice-standard", "coco-instances")
    assert layout in report["layout"]
    assert report["summary"]["images"] == images
    assert report["summary"]["annotations"] == annotations
    if splits is not None:
        assert report["summary"]["splits"] == splits
    # the text report says it too
    assert main(["validate", str(target)]) == 0
    text = capsys.readouterr().out
    assert f"read {report['variant']}: {images} images" in text
    assert f"layout: {report['layout']}" in text


def test_mvtec_label_map_composed_from_labels_txt(tmp_path: Path) -> None:
    """The v0.9 reader with a label_map.json made from labels.txt reads the same 35 boxes."""
    root = materialize(f"{MVP}/mvtec_v2", tmp_path)
    names = [n for n in (root / "labels.txt").read_text().split() if n != "__ignore__"]
    label_map = {
        "task_type": "det",
        "class_summary": {"classes": [{"name": n, "idx": i} for i, n in enumerate(names)]},
    }
    (root / "label_map.json").write_text(json.dumps(label_map))
    by_map = formats.read(root)
    (root / "label_map.json").unlink()
    by_txt = formats.read(root)
    coco = formats.read(root / "train_annotations")
    assert by_map.ok and by_txt.ok and coco.ok
    assert by_map.variant == by_txt.variant == "legacy-v0.9"
    assert not [p for p in by_txt.problems if "split" in p.path]  # "split": "none" is no split

    def boxes(result: formats.ReadResult) -> dict[tuple[str, int], list[list[float]]]:
        stems = {im.id: Path(im.path).stem for im in result.dataset.images}
        out: dict[tuple[str, int], list[list[float]]] = {}
        for a in result.dataset.annotations:
            out.setdefault((stems[a.image_id], a.category_id), []).append(a.bbox)
        return {k: sorted(v) for k, v in out.items()}

    assert boxes(by_txt) == boxes(by_map)
    assert sum(map(len, boxes(by_txt).values())) == 35
    # labelme2coco's file has the same boxes under the same category ids, as whole pixels
    # of the rasterized shape (corners floored and ceiled, plus one): within 2 px
    theirs = boxes(coco)
    assert theirs.keys() == boxes(by_txt).keys()
    for key, mine in boxes(by_txt).items():
        assert len(mine) == len(theirs[key])
        for a, b in zip(mine, theirs[key], strict=True):
            corners = (a[0], a[1], a[0] + a[2], a[1] + a[3])
            pixels = (b[0], b[1], b[0] + b[2], b[1] + b[3])
            assert max(abs(x - y) for x, y in zip(corners, pixels, strict=True)) <= 2, (a, b)


@pytest.mark.parametrize(
    ("source", "inner", "message"),
    [
        (
            "cocoapi/results/instances_val2014_fakebbox100_results.json",
            "",
            "a results list",
        ),
        (f"{MVP}/example-v1.1-captioning.json", "", "captions are not annotations"),
        ("datumaro/coco_dataset/coco_captions", "", "captions only"),
        (f"{MVP}/label-example-detection.json", "", "one image's label file"),
    ],
)
def test_what_is_no_dataset_is_refused_with_the_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, inner: str, message: str
) -> None:
    root = materialize(source, tmp_path)
    assert main(["validate", str(root / inner if inner else root)]) == 1
    assert message in capsys.readouterr().err


# --- counts against pycocotools ---------------------------------------------------------

COCO_FILES = [
    ("coco-mini", "annotations/instances_val2017.json"),
    ("coco-mini", "annotations/instances_train2017.json"),
    ("coco-mini", "annotations/person_keypoints_val2017.json"),
    ("roboflow-dog-seg", "train/_annotations.coco.json"),
    ("labelme", "instance_segmentation/data_dataset_coco/annotations.json"),
    (f"{MVP}/mvtec_v2", "train_annotations/annotations.json"),
    ("datumaro/coco_dataset/coco_instances", "annotations/instances_val.json"),
    ("datumaro/coco_dataset/coco_stuff", "annotations/stuff_val.json"),
    ("datumaro/coco_dataset/coco_person_keypoints", "annotations/person_keypoints_val.json"),
]


def _reference_counts(path: Path) -> tuple[Counter, Counter, int]:
    coco_module = pytest.importorskip("pycocotools.coco")
    coco = coco_module.COCO(str(path))
    names = {i: im["file_name"] for i, im in coco.imgs.items()}
    per_image = Counter(names[a["image_id"]] for a in coco.anns.values())
    per_pair = Counter((names[a["image_id"]], a["category_id"]) for a in coco.anns.values())
    crowd = sum(1 for a in coco.anns.values() if a.get("iscrowd"))
    return per_image, per_pair, crowd


@pytest.mark.parametrize(("source", "doc"), COCO_FILES, ids=[f"{s}/{d}" for s, d in COCO_FILES])
def test_counts_match_pycocotools(tmp_path: Path, source: str, doc: str) -> None:
    root = materialize(source, tmp_path)
    per_image, per_pair, crowd = _reference_counts(root / doc)
    result = formats.read(root / doc)
    assert result.ok, [str(p) for p in result.errors]
    ds = result.dataset
    # file names as the document gives them (the reader adds the folder it found them in)
    raw = {im["id"]: im["file_name"] for im in json.loads((root / doc).read_text())["images"]}
    name = {im.id: raw[im.id] for im in ds.images}
    assert Counter(name[a.image_id] for a in ds.annotations) == per_image
    assert Counter((name[a.image_id], a.category_id) for a in ds.annotations) == per_pair
    assert sum(1 for a in ds.annotations if a.iscrowd) == crowd


def test_annotations_folder_counts_match_pycocotools_per_file(tmp_path: Path) -> None:
    """The folder read: each instances file's counts, its split, and keypoints merged by id."""
    root = materialize("coco-mini", tmp_path)
    result = formats.read(root)
    assert result.ok
    ds = result.dataset
    by_split = {
        "train2017": ("train", "instances_train2017.json"),
        "val2017": ("val", "instances_val2017.json"),
    }
    for folder, (split, doc) in by_split.items():
        _, per_pair, _ = _reference_counts(root / "annotations" / doc)
        images = {im.id: im for im in ds.images if im.split == split}
        assert {Path(im.path).parent.name for im in images.values()} == {folder}
        got = Counter(
            (Path(images[a.image_id].path).name, a.category_id)
            for a in ds.annotations
            if a.image_id in images
        )
        assert got == per_pair
    # person_keypoints_val2017: its 118 annotations are instances of val with keypoints
    kp_doc = json.loads((root / "annotations/person_keypoints_val2017.json").read_text())
    by_id = {a.id: a for a in ds.annotations if a.keypoints}
    assert len(by_id) == len(kp_doc["annotations"]) == 118
    for ref in kp_doc["annotations"]:
        assert by_id[ref["id"]].keypoints == ref["keypoints"]
    person = next(c for c in ds.categories if c.id == 1)
    assert len(person.keypoints) == 17 and person.skeleton
    assert any("captions_val2017.json" in p.path for p in result.notes)
