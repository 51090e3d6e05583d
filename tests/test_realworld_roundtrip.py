"""Round trips and splits on the real files of ../shared/realworld, through ``vmesh convert``.

- COCO -> DICE -> COCO keeps every field COCO has (crowd RLE, info, licenses, image
  license / coco_url / flickr_url / date_captured, annotation attributes);
- DICE written from 0-based COCO ids (Roboflow) follows the DICE schema (ids from 1), the
  shift recorded in meta.json;
- a given split is never changed, whatever the entry point;
- small datasets without splits convert to every format (the best split possible), and
  ``--val-fraction 0`` makes no val split.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests._realworld import REALWORLD, materialize, needs_realworld
from visionmesh import formats
from visionmesh.cli import main

pytestmark = needs_realworld


def convert(src: Path, out: Path, *args: str) -> int:
    return main(["convert", str(src), *args, str(out), "--images", "none"])


def coco_docs(out: Path) -> dict[str, dict]:
    return {p.stem: json.loads(p.read_text()) for p in (out / "annotations").glob("*.json")}


@pytest.mark.parametrize(
    ("source", "doc", "split"),
    [
        ("coco-mini", "annotations/instances_val2017.json", "val"),
        ("coco-mini", "annotations/person_keypoints_val2017.json", "val"),
        ("datumaro/coco_dataset/coco_instances", "annotations/instances_val.json", "val"),
        ("labelme", "instance_segmentation/data_dataset_coco/annotations.json", "train"),
    ],
)
def test_coco_dice_coco_keeps_every_field(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], source: str, doc: str, split: str
) -> None:
    root = materialize(source, tmp_path / "src")
    original = json.loads((root / doc).read_text())
    dice, back = tmp_path / "dice", tmp_path / "coco"
    assert convert(root / doc, dice, "--to", "dice") == 0
    assert "crowd" not in capsys.readouterr().err  # nothing dropped, not even with a warning
    assert convert(dice, back, "--to", "coco") == 0
    # DICE ids start at 1: a 0-based source is shifted, the shift said in meta.json
    shift = json.loads((dice / "meta.json").read_text()).get("id_offsets", {})
    assert shift == ({"images": 1, "annotations": 1} if source == "labelme" else {})
    docs = coco_docs(back)
    assert list(docs) == [f"instances_{split}"]
    result = docs[f"instances_{split}"]
    for im in result["images"]:
        im["id"] -= shift.get("images", 0)
    for a in result["annotations"]:
        a["id"] -= shift.get("annotations", 0)
        a["image_id"] -= shift.get("images", 0)
    assert result["info"] == original["info"]
    assert result["licenses"] == original["licenses"]
    by_id = {im["id"]: im for im in result["images"]}
    assert len(by_id) == len(original["images"])
    for im in original["images"]:
        got = by_id[im["id"]]
        # file names become relative to the dataset root: val2017/x.jpg for x.jpg
        name = got["file_name"]
        assert name == im["file_name"] or name.endswith("/" + im["file_name"])
        assert {k: got[k] for k in im if k != "file_name"} == {
            k: v for k, v in im.items() if k != "file_name"
        }
    anns = {a["id"]: a for a in result["annotations"]}
    assert len(anns) == len(original["annotations"])
    for a in original["annotations"]:
        got = anns[a["id"]]
        if a.get("segmentation") == []:  # no polygon: nothing to keep
            a = {k: v for k, v in a.items() if k != "segmentation"}
        assert {k: got[k] for k in a} == a
    assert {c["id"]: c for c in result["categories"]} == {
        c["id"]: {**c, "supercategory": c.get("supercategory") or ""}
        for c in original["categories"]
    }


def test_annotation_attributes_and_crowd_survive_the_folder(tmp_path: Path) -> None:
    """datumaro's instances folder: ids restart per file (renumbered, said in a note);
    attributes and the crowd RLE reach the DICE file."""
    root = materialize("datumaro/coco_dataset/coco_instances", tmp_path / "src")
    dice = tmp_path / "dice"
    assert main(["convert", str(root), "--to", "dice", str(dice)]) == 0
    doc = json.loads(next(dice.glob("annotations*.json")).read_text())
    assert len({a["id"] for a in doc["annotations"]}) == 3
    crowd = [a for a in doc["annotations"] if a["iscrowd"]]
    assert crowd and crowd[0]["segmentation"] == {"counts": [0, 20, 30], "size": [10, 5]}
    assert any(a.get("attributes") == {"x": 1, "y": "hello"} for a in doc["annotations"])
    assert {im["file_name"]: im["split"] for im in doc["images"]} == {
        "images/train/a.jpg": "train",
        "images/val/b.jpg": "val",
    }


def test_dice_from_zero_based_ids_follows_the_schema(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    root = materialize("roboflow-dog-seg", tmp_path / "src")
    dice = tmp_path / "dice"
    assert convert(root, dice, "--to", "dice") == 0
    doc = json.loads((dice / "annotations.json").read_text())
    schema = json.loads((REALWORLD / "mvp-vision-ai-platform/dice_format.schema.json").read_text())
    jsonschema.validate(doc, schema)
    assert min(im["id"] for im in doc["images"]) == 1
    assert min(a["id"] for a in doc["annotations"]) == 1
    meta = json.loads((dice / "meta.json").read_text())
    assert meta["id_offsets"] == {"images": 1, "annotations": 1}
    original = json.loads((root / "train/_annotations.coco.json").read_text())
    first = original["annotations"][0]
    shifted = next(a for a in doc["annotations"] if a["id"] == first["id"] + 1)
    assert shifted["image_id"] == first["image_id"] + 1 and shifted["bbox"] == first["bbox"]


# --- given splits ---------------------------------------------------------------------


def yolo_splits(out: Path) -> dict[str, str]:
    """Label file stem -> split folder of a YOLO output."""
    return {p.stem: p.parent.name for p in (out / "labels").rglob("*.txt")}


def test_instances_val_alone_stays_val(tmp_path: Path) -> None:
    root = materialize("coco-mini", tmp_path / "src")
    out = tmp_path / "yolo"
    assert convert(root / "annotations/instances_val2017.json", out, "--to", "yolo") == 0
    assert set(yolo_splits(out).values()) == {"val"} and len(yolo_splits(out)) == 79
    cfg = yaml.safe_load((out / "data.yaml").read_text())
    assert cfg["train"] == cfg["val"] == "images/val"  # said in a warning; nothing moved


def test_dice_v1_images_all_marked_train_stay_train(tmp_path: Path) -> None:
    root = materialize("mvp-vision-ai-platform/example-v1.0-detection.json", tmp_path / "src")
    out = tmp_path / "yolo"
    assert convert(root, out, "--to", "yolo") == 0
    assert yolo_splits(out) == {"street_001": "train", "street_002": "train"}


def test_roboflow_split_folder_is_kept(tmp_path: Path) -> None:
    root = materialize("roboflow-dog-seg", tmp_path / "src")
    out = tmp_path / "yolo"
    assert convert(root, out, "--to", "yolo", "--task", "detect") == 0
    assert set(yolo_splits(out).values()) == {"train"} and len(yolo_splits(out)) == 213


def test_subset_folders_are_kept(tmp_path: Path) -> None:
    root = materialize("datumaro/imagenet_subsets_dataset", tmp_path / "src")
    out = tmp_path / "folders"
    assert main(["convert", str(root), "--to", "imagefolder", str(out)]) == 0
    placed = sorted(str(p.relative_to(out)) for p in out.rglob("*.jpg"))
    assert {p.split("/")[0] for p in placed} == {"train", "val", "test"}
    assert len(placed) == 9  # three labelled images per subset; loose ones have no class


# --- small datasets -------------------------------------------------------------------


@pytest.mark.parametrize("to", ["yolo", "coco", "dice"])
def test_small_unsplit_dataset_converts(tmp_path: Path, to: str) -> None:
    """labelme's 3 images: no stratified val split is possible for most classes."""
    root = materialize("labelme/instance_segmentation/data_dataset_coco", tmp_path / "src")
    out = tmp_path / "out"
    assert convert(root, out, "--to", to, "--task", "detect") == 0
    if to == "yolo":
        rows = [ln for p in (out / "labels").rglob("*.txt") for ln in p.read_text().splitlines()]
        assert len(yolo_splits(out)) == 3 and len(rows) == 12
        return
    written = formats.read(out, check_images=False)
    assert written.ok and len(written.dataset.images) == 3
    assert len(written.dataset.annotations) == 12


def test_val_fraction_zero_means_no_val(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = materialize("datumaro/kaggle_dataset/relaxed_yolo", tmp_path / "src")
    names = tmp_path / "names.txt"
    names.write_text("\n".join(f"class{i}" for i in range(5)))
    out = tmp_path / "out"
    args = ["--to", "yolo", "--names", str(names), "--val-fraction", "0"]
    assert convert(root, out, *args) == 0
    assert set(yolo_splits(out).values()) == {"train"}
    out2 = tmp_path / "out2"
    assert convert(root, out2, "--to", "yolo", "--names", str(names)) == 0
    # two images, each class on one image: no val split keeps every val class in train
    assert set(yolo_splits(out2).values()) == {"train"}
    assert "no val split could be made" in capsys.readouterr().err
