"""A catalog of bad inputs: each is refused (an error) with the path of what is wrong."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image as PILImage

from visionmesh import formats
from visionmesh.formats import MemorySource

IMAGES = {"images/a.jpg": (64, 48), "images/b.jpg": (64, 48)}


def base_doc() -> dict:
    """A valid DICE standard document: 2 images, 2 categories, 3 annotations."""
    return {
        "categories": [
            {"id": 1, "name": "cat", "keypoints": ["nose", "tail"], "skeleton": [[1, 2]]},
            {"id": 2, "name": "dog"},
        ],
        "images": [
            {"id": 1, "file_name": "images/a.jpg", "width": 64, "height": 48},
            {"id": 2, "file_name": "images/b.jpg", "width": 64, "height": 48},
        ],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 2, 10, 10],
             "segmentation": [[1, 2, 11, 2, 11, 12]], "keypoints": [2, 3, 2, 5, 6, 1], "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [0, 0, 64, 48]},
            {"id": 3, "image_id": 2, "category_id": 2},
        ],
    }  # fmt: skip


def read_doc(doc: dict | str, images: dict | None = None) -> formats.ReadResult:
    text = doc if isinstance(doc, str) else json.dumps(doc)
    return formats.read(MemorySource({"annotations.json": text.encode()}, images or IMAGES))


def test_base_document_is_clean() -> None:
    result = read_doc(base_doc())
    assert result.ok and not result.problems, [str(p) for p in result.problems]


def _set(path: str, value: object) -> Callable[[dict], None]:
    """A mutation setting ``doc[a][i][b] = value`` for a path like ``annotations.0.bbox``."""

    def mutate(doc: dict) -> None:
        *keys, last = [int(k) if k.isdigit() else k for k in path.split(".")]
        target = doc
        for k in keys:
            target = target[k]
        target[last] = value

    return mutate


def _append(key: str, item: dict) -> Callable[[dict], None]:
    return lambda doc: doc[key].append(item)


# (case, mutation of the base document, path of the error, words of its message)
CATALOG = [
    ("duplicate image id", _set("images.1.id", 1), "images[1].id", "duplicate image id 1"),
    (
        "duplicate annotation id",
        _set("annotations.1.id", 1),
        "annotations[1].id",
        "duplicate annotation id",
    ),
    (
        "duplicate category id",
        _set("categories.1.id", 1),
        "categories[1].id",
        "duplicate category id",
    ),
    (
        "dangling image",
        _set("annotations.0.image_id", 9),
        "annotations[0].image_id",
        "image id 9 does not exist",
    ),
    (
        "dangling category",
        _set("annotations.0.category_id", 9),
        "annotations[0].category_id",
        "category id 9",
    ),
    (
        "bbox outside",
        _set("annotations.0.bbox", [60, 2, 10, 10]),
        "annotations[0].bbox",
        "outside the 64x48",
    ),
    (
        "bbox negative x",
        _set("annotations.0.bbox", [-5, 2, 10, 10]),
        "annotations[0].bbox",
        "outside",
    ),
    (
        "bbox zero width",
        _set("annotations.0.bbox", [1, 2, 0, 10]),
        "annotations[0].bbox",
        "width or height <= 0",
    ),
    ("bbox negative h", _set("annotations.0.bbox", [1, 2, 3, -1]), "annotations[0].bbox", "<= 0"),
    ("bbox 3 numbers", _set("annotations.0.bbox", [1, 2, 3]), "annotations[0].bbox", "4 numbers"),
    ("bbox text", _set("annotations.0.bbox", [1, "2", 3, 4]), "annotations[0].bbox", "4 numbers"),
    ("bbox not a list", _set("annotations.0.bbox", "1,2,3,4"), "annotations[0].bbox", "4 numbers"),
    (
        "polygon 2 points",
        _set("annotations.0.segmentation", [[1, 2, 3, 4]]),
        "annotations[0].segmentation[0]",
        "at least 3",
    ),
    (
        "polygon odd",
        _set("annotations.0.segmentation", [[1, 2, 3, 4, 5, 6, 7]]),
        "annotations[0].segmentation[0]",
        "odd number",
    ),
    (
        "polygon text",
        _set("annotations.0.segmentation", [[1, 2, 3, 4, "x", 6]]),
        "annotations[0].segmentation[0]",
        "numbers",
    ),
    (
        "second polygon bad",
        _set("annotations.0.segmentation", [[1, 2, 3, 4, 5, 6], [1]]),
        "annotations[0].segmentation[1]",
        "odd",
    ),
    (
        "segmentation string",
        _set("annotations.0.segmentation", "poly"),
        "annotations[0].segmentation",
        "list of polygons",
    ),
    (
        "keypoints not x3",
        _set("annotations.0.keypoints", [1, 2, 2, 3]),
        "annotations[0].keypoints",
        "multiple of 3",
    ),
    (
        "keypoint visibility",
        _set("annotations.0.keypoints", [1, 2, 5, 3, 4, 2]),
        "annotations[0].keypoints",
        "visibility",
    ),
    (
        "keypoint count",
        _set("annotations.0.keypoints", [1, 2, 2]),
        "annotations[0].keypoints",
        "category names 2",
    ),
    (
        "keypoints text",
        _set("annotations.0.keypoints", [1, 2, 2, "a", 4, 2]),
        "annotations[0].keypoints",
        "numbers",
    ),
    (
        "absolute path",
        _set("images.0.file_name", "/data/a.jpg"),
        "images[0].file_name",
        "absolute path",
    ),
    (
        "windows drive",
        _set("images.0.file_name", "C:/data/a.jpg"),
        "images[0].file_name",
        "absolute path",
    ),
    ("climbs out", _set("images.0.file_name", "images/../../a.jpg"), "images[0].file_name", "'..'"),
    ("empty file name", _set("images.0.file_name", ""), "images[0].file_name", "non-empty"),
    (
        "same file twice",
        _set("images.1.file_name", "images/a.jpg"),
        "images[1].file_name",
        "listed twice",
    ),
    ("zero width", _set("images.0.width", 0), "images[0].width", "positive integer"),
    ("text height", _set("images.0.height", "48"), "images[0].height", "positive integer"),
    ("image id text", _set("images.0.id", "one"), "images[0].id", "non-negative integer"),
    ("negative category id", _set("categories.0.id", -1), "categories[0].id", "non-negative"),
    ("empty category name", _set("categories.1.name", " "), "categories[1].name", "non-empty"),
    ("bad skeleton", _set("categories.0.skeleton", [[1, 5]]), "categories[0].skeleton[0]", "1..2"),
    ("iscrowd 2", _set("annotations.1.iscrowd", 2), "annotations[1].iscrowd", "0 or 1"),
    ("negative area", _set("annotations.1.area", -3), "annotations[1].area", "non-negative"),
    (
        "annotation id text",
        _set("annotations.2.id", "x"),
        "annotations[2].id",
        "non-negative integer",
    ),
    ("annotation not object", _append("annotations", "oops"), "annotations[3]", "object"),
    ("image not object", _append("images", 7), "images[2]", "object"),
    ("category not object", _append("categories", []), "categories[2]", "object"),
    ("no images", lambda d: d.pop("images"), "images", "missing"),
    ("annotations not list", _set("annotations", {}), "annotations", "must be a list"),
    (
        "polygon outside the image",  # its box was clipped by the tool: only the polygon tells
        _set("annotations.0.segmentation", [[2818, 10, 2900, 10, 2900, 30]]),
        "annotations[0].segmentation[0]",
        "x 2818..2900, y 10..30 extend outside the 64x48 image",
    ),
    (
        "polygon point below zero",
        _set("annotations.0.segmentation", [[1, 2, 11, 2, 11, -4]]),
        "annotations[0].segmentation[0]",
        "outside the 64x48 image",
    ),
    (
        "NUL in a category name",
        _set("categories.1.name", "do\x00g"),
        "categories[1].name",
        "control",
    ),
    (
        "flat segmentation",
        _set("annotations.0.segmentation", [1, 2, 11, 2, 11, 12]),
        "annotations[0].segmentation",
        "one flat list",
    ),
    ("huge category name", _set("categories.1.name", "d" * 2_400_000), "categories[1].name", "256"),
    ("category name a list", _set("categories.1.name", ["dog"]), "categories[1].name", "string"),
]


@pytest.mark.parametrize(("case", "mutate", "path", "words"), CATALOG, ids=[c[0] for c in CATALOG])
def test_catalog_of_bad_documents(case: str, mutate: Callable, path: str, words: str) -> None:
    doc = copy.deepcopy(base_doc())
    mutate(doc)
    result = read_doc(doc)
    assert not result.ok, f"{case}: accepted"
    matches = [p for p in result.errors if p.path == path]
    assert matches, f"{case}: no error at {path}; got {[str(p) for p in result.errors]}"
    assert any(words in p.message for p in matches), [str(p) for p in matches]


def test_polygon_overhang_within_a_pixel_is_fine() -> None:
    doc = base_doc()
    doc["annotations"][0]["segmentation"] = [[0, 0, 64.6, 0, 64.6, 48.9, -0.5, 48]]
    assert read_doc(doc).ok


def test_keypoint_category_without_names_but_a_skeleton_reads() -> None:
    """As pycocotools reads it (datumaro's person_keypoints files have them)."""
    doc = base_doc()
    doc["categories"][0]["keypoints"] = []
    doc["categories"][0]["skeleton"] = [[0, 1], [1, 2]]
    result = read_doc(doc)
    assert result.ok, [str(p) for p in result.errors]
    doc["categories"][0]["skeleton"] = [[0, "x"]]
    assert [p.path for p in read_doc(doc).errors] == ["categories[0].skeleton[0]"]


@pytest.mark.parametrize(
    ("where", "field"),
    [(w, f) for w in ("images", "categories", "annotations") for f in ("id", "width", "name",
     "split", "sha256", "image_id", "category_id", "bbox", "segmentation", "area", "iscrowd",
     "keypoints", "skeleton")],
)  # fmt: skip
def test_values_nested_a_thousand_deep_are_problems_not_exceptions(where: str, field: str) -> None:
    """Messages show values through a bounded repr; unhashable ids are reported, not raised."""
    doc = base_doc()
    doc[where][0][field] = "DEEP"
    text = json.dumps(doc).replace('"DEEP"', "[" * 1020 + "]" * 1020)
    result = read_doc(text)  # must not raise
    assert all(len(str(p)) < 400 for p in result.problems)


def test_json_nested_deeper_than_the_bound_is_a_problem_not_an_exception() -> None:
    deep = '{"images": [], "categories": ' + "[" * 50_000 + "]" * 50_000 + "}"
    result = read_doc(deep)
    assert [(p.path, "nested deeper than 1024" in p.message) for p in result.errors] == [
        ("annotations.json", True)
    ]


def test_nan_bbox_is_refused() -> None:
    text = json.dumps(base_doc()).replace("[0, 0, 64, 48]", "[0, NaN, 64, 48]")
    result = read_doc(text)
    assert [p.path for p in result.errors] == ["annotations[1].bbox"]


def test_every_problem_is_reported_not_only_the_first() -> None:
    doc = base_doc()
    doc["annotations"][0]["bbox"] = [1, 2, 0, 0]
    doc["annotations"][1]["image_id"] = 42
    doc["images"][1]["file_name"] = "/abs.jpg"
    paths = {p.path for p in read_doc(doc).errors}
    assert {"annotations[0].bbox", "annotations[1].image_id", "images[1].file_name"} <= paths


def test_missing_image_file_and_wrong_size_on_disk(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    PILImage.new("RGB", (64, 48)).save(tmp_path / "images/a.jpg")
    PILImage.new("RGB", (30, 20)).save(tmp_path / "images/b.jpg")
    doc = base_doc()
    doc["images"].append({"id": 3, "file_name": "images/c.jpg", "width": 5, "height": 5})
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    result = formats.read(tmp_path)
    errors = {p.path: p.message for p in result.errors}
    assert errors["images[2].file_name"] == "image file not found: images/c.jpg"
    assert "64x48 disagree with the image file's 30x20" in errors["images[1].width"]
    assert formats.read(tmp_path, check_images=False).ok


def test_corrupt_image_is_refused(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    PILImage.new("RGB", (64, 48)).save(tmp_path / "images/a.jpg")
    (tmp_path / "images/b.jpg").write_bytes(b"not an image")
    (tmp_path / "annotations.json").write_text(json.dumps(base_doc()))
    errors = formats.read(tmp_path).errors
    assert [p.path for p in errors] == ["images[1].file_name"]
    assert "cannot read the image" in errors[0].message


def test_not_json_is_refused_with_the_file_name() -> None:
    result = formats.read(MemorySource({"annotations.json": b'{"images": [1,'}, IMAGES))
    assert not result.ok
    assert result.errors[0].path == "annotations.json"
    assert "not valid JSON" in result.errors[0].message


def test_warnings_are_not_errors() -> None:
    doc = base_doc()
    doc["images"][0]["file_name"] = "images\\a.jpg"  # normalized, with a warning
    doc["images"][1]["split"] = "holdout"  # unknown split, ignored with a warning
    doc["categories"][1]["name"] = "cat"  # a second category named "cat"
    result = read_doc(doc)
    assert result.ok, [str(p) for p in result.errors]
    assert {p.path for p in result.warnings} == {
        "images[0].file_name",
        "images[1].split",
        "categories[1].name",
    }
    assert all(p.severity == "warning" for p in result.warnings)
    assert result.dataset.images[0].path == "images/a.jpg"


def test_nested_and_v1_paths_point_into_the_source_document() -> None:
    nested = {
        "classes": [{"id": 1, "name": "cat"}],
        "images": [{"id": 1, "file_name": "images/a.jpg", "width": 64, "height": 48,
                    "annotations": [{"id": 1, "class_id": 5, "bbox": [1, 1, 100, 5]}]}],
    }  # fmt: skip
    errors = {p.path for p in read_doc(nested).errors}
    assert errors == {"images[0].annotations[0].category_id", "images[0].annotations[0].bbox"}
    v1 = {
        "format_version": "1.0",
        "classes": [{"id": 0, "name": "car"}],
        "images": [{"id": 1, "file_name": "images/a.jpg", "width": 64, "height": 48,
                    "annotations": [{"id": 1, "class_id": 0, "bbox": [1, 1, 2, 2], "bbox_format": "cxcywh"}],
                    "annotation": {"mask_file": "masks/a.png"}}],
    }  # fmt: skip
    errors = {p.path for p in read_doc(v1).errors}
    assert errors == {"images[0].annotations[0].bbox_format", "images[0].annotation.mask_file"}


def _yolo(tmp_path: Path, label: str, yaml_text: str | None = None) -> formats.ReadResult:
    (tmp_path / "images/train").mkdir(parents=True)
    (tmp_path / "labels/train").mkdir(parents=True)
    PILImage.new("RGB", (40, 20)).save(tmp_path / "images/train/a.jpg")
    (tmp_path / "labels/train/a.txt").write_text(label)
    if yaml_text:
        (tmp_path / "data.yaml").write_text(yaml_text)
    return formats.read(tmp_path)


YOLO_CATALOG = [
    (
        "not a number",
        "0 0.5 0.5 0.2 0.2\n1 0.5 x 0.2 0.2\n",
        None,
        "labels/train/a.txt:2",
        "not a number",
    ),
    ("not normalized", "0 0.5 0.5 1.2 0.2\n", None, "labels/train/a.txt:1", "normalized"),
    ("infinite class", "inf 0.5 0.5 0.2 0.2\n", None, "labels/train/a.txt:1", "non-negative"),
    ("NaN class", "nan 0.5 0.5 0.2 0.2\n", None, "labels/train/a.txt:1", "non-negative"),
    ("huge class", "99999999999 0.5 0.5 0.2 0.2\n", None, "labels/train/a.txt:1", "beyond 65535"),
    (
        "negative class",
        "-1 0.5 0.5 0.2 0.2\n",
        None,
        "labels/train/a.txt:1",
        "non-negative integer",
    ),
    (
        "fraction class",
        "1.5 0.5 0.5 0.2 0.2\n",
        None,
        "labels/train/a.txt:1",
        "non-negative integer",
    ),
    ("short line", "0 0.5 0.5\n", None, "labels/train/a.txt:1", "expected 5"),
    ("two-point polygon", "0 0.1 0.1 0.2 0.2 0.3\n", None, "labels/train/a.txt:1", "expected 5"),
    (
        "class without name",
        "3 0.5 0.5 0.2 0.2\n",
        "names: [a, b]\n",
        "labels/train/a.txt:1",
        "no name",
    ),
    (
        "pose length",
        "0 0.5 0.5 0.2 0.2 0.1 0.1 2\n",
        "names: [a]\nkpt_shape: [2, 3]\n",
        "labels/train/a.txt:1",
        "kpt_shape",
    ),
    (
        "bad kpt_shape",
        "0 0.5 0.5 0.2 0.2\n",
        "names: [a]\nkpt_shape: [2, 4]\n",
        "data.yaml:kpt_shape",
        "kpt_shape",
    ),
    ("bad yaml", "0 0.5 0.5 0.2 0.2\n", "names: [a\n", "data.yaml", "not valid YAML"),
    ("names gap", "0 0.5 0.5 0.2 0.2\n", "names: {0: a, 2: b}\n", "data.yaml:names", "0..N-1"),
]


@pytest.mark.parametrize(
    ("case", "label", "yaml_text", "path", "words"), YOLO_CATALOG, ids=[c[0] for c in YOLO_CATALOG]
)
def test_catalog_of_bad_yolo_labels(
    tmp_path: Path, case: str, label: str, yaml_text: str | None, path: str, words: str
) -> None:
    result = _yolo(tmp_path, label, yaml_text)
    assert not result.ok, f"{case}: accepted"
    matches = [p for p in result.errors if p.path == path]
    assert matches and any(words in p.message for p in matches), [str(p) for p in result.errors]


def test_yolo_duplicate_line_and_orphan_label_are_warnings(tmp_path: Path) -> None:
    result = _yolo(tmp_path, "0 0.5 0.5 0.2 0.2\n0 0.5 0.5 0.2 0.2\n", "names: [box]\n")
    (tmp_path / "labels/train/ghost.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    assert result.ok and [p.path for p in result.warnings] == ["labels/train/a.txt:2"]
    again = formats.read(tmp_path)
    assert "labels/train/ghost.txt" in {p.path for p in again.warnings}


def test_legacy_label_outside_the_class_list(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    PILImage.new("RGB", (40, 20)).save(tmp_path / "images/a.jpg")
    (tmp_path / "label_map.json").write_text(json.dumps(
        {"task_type": "det", "class_summary": {"classes": [{"name": "car", "idx": 0}]},
         "data_summary": [{"img_path": "D:/x/images/a.jpg", "label_path": "D:/x/labels/a.json"},
                          {"img_path": "D:/x/images/gone.jpg", "label_path": "D:/x/labels/gone.json"}]}))  # fmt: skip
    (tmp_path / "labels/a.json").write_text(json.dumps(
        {"shapes": [{"label": "bus", "points": [[1, 1], [5, 5]], "shape_type": "rectangle"}],
         "imageWidth": 40, "imageHeight": 20}))  # fmt: skip
    errors = {p.path for p in formats.read(tmp_path).errors}
    assert errors == {"labels/a.json:shapes[0].label", "label_map.json:data_summary[1].label_path"}


BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
names: [*f, *f]
"""


@pytest.mark.parametrize(
    ("yaml_text", "path", "words"),
    [
        (BOMB, "data.yaml", "once its aliases are followed"),
        ("x: &x 1\nnames: [" + ", ".join(["*x"] * 150) + "]\n", "data.yaml", "aliases"),
        ("names: [a]\n# " + "x" * 1_100_000 + "\n", "data.yaml", "bytes"),
        ("names: [[cat, dog], bird]\n", "data.yaml:names[0]", "must be a string"),
        ('names: ["ca\\0t"]\n', "names[0].name", "control characters"),
        ("names: " + "[" * 5000 + "]" * 5000 + "\n", "data.yaml", "nested deeper than 64"),
    ],
    ids=["alias bomb", "too many aliases", "too big", "name is a list", "NUL in a name", "deep"],
)
def test_data_yaml_is_loaded_with_bounds(
    tmp_path: Path, yaml_text: str, path: str, words: str
) -> None:
    result = _yolo(tmp_path, "0 0.5 0.5 0.2 0.2\n", yaml_text)
    matches = [p for p in result.errors if p.path == path]
    assert matches and words in matches[0].message, [str(p) for p in result.errors]


def test_yolo_without_names_is_a_warning_saying_how_to_name_them(tmp_path: Path) -> None:
    result = _yolo(tmp_path, "0 0.5 0.5 0.2 0.2\n3 0.5 0.5 0.2 0.2\n")
    assert result.ok
    (warning,) = [p for p in result.warnings if p.path == "names"]
    assert "4 class(es) are named by their index" in warning.message
    assert "class_names" in warning.message and "data.yaml" in warning.message
