"""Conversions of the real files in ../shared/realworld against references and round trips.

- YOLO labels written by ``vmesh convert`` match ultralytics' ``convert_coco`` row for row
  within 1e-5 (same class mapping: category id - 1), for boxes, polygons and keypoints;
- COCO -> DICE -> COCO keeps every field (crowd RLE, info, licenses, image license /
  coco_url / date_captured, annotation attributes);
- given splits are kept through every entry point, including ultralytics' own COCO layout
  (``train: train2017.txt`` in its coco.yaml);
- small datasets convert (the best split possible), ``--val-fraction 0`` means no val.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests._realworld import materialize, needs_realworld
from visionmesh.cli import main

pytestmark = needs_realworld
TOLERANCE = 1e-5

_REFERENCE = """
import sys
from ultralytics.data.converter import convert_coco
for labels_dir, save_dir, segments, keypoints, coco80 in (a.split(",") for a in sys.argv[1:]):
    convert_coco(labels_dir, save_dir, use_segments=segments == "1",
                 use_keypoints=keypoints == "1", cls91to80=coco80 == "1")
"""


def run_convert_coco(tmp: Path, jobs: list[tuple]) -> None:
    """ultralytics' convert_coco in a child process (offline, its own settings folder).
    Each job: (labels_dir, save_dir, use_segments, use_keypoints[, cls91to80=False])."""
    pytest.importorskip("ultralytics")
    env = {
        **os.environ,
        "YOLO_OFFLINE": "1",
        "YOLO_AUTOINSTALL": "0",
        "YOLO_VERBOSE": "False",
        "YOLO_CONFIG_DIR": str(tmp / "yolo-config"),
        "MPLCONFIGDIR": str(tmp / "mpl"),
    }
    args = [
        ",".join([str(j[0]), str(j[1]), *(str(int(f)) for f in (*j[2:], False)[:3])]) for j in jobs
    ]
    proc = subprocess.run(
        [sys.executable, "-c", _REFERENCE, *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def read_rows(folder: Path) -> dict[str, list[list[float]]]:
    """Label rows of every ``*.txt`` below ``folder``, by file stem."""
    return {
        p.stem: [list(map(float, line.split())) for line in p.read_text().splitlines() if line]
        for p in folder.rglob("*.txt")
    }


def compare_rows(
    ours: dict[str, list[list[float]]],
    theirs: dict[str, list[list[float]]],
    class_ids: list[int],
    pose: bool = False,
) -> int:
    """Row-for-row equality within TOLERANCE; our class k is category ``class_ids[k]``,
    theirs ``id - 1``. Their coordinates are clipped to [0, 1] as ours are (ultralytics'
    loader refuses labels outside the image). Returns the number of rows compared."""
    ours = {k: v for k, v in ours.items() if v}
    theirs = {k: v for k, v in theirs.items() if v}
    assert ours.keys() == theirs.keys()
    compared = 0
    for stem, rows in ours.items():
        mapped = [[class_ids[int(r[0])] - 1, *r[1:]] for r in rows]
        ref = []
        for r in theirs[stem]:
            values = [
                v if (pose and k >= 5 and (k - 5) % 3 == 2) else min(max(v, 0.0), 1.0)
                for k, v in enumerate(r[1:], start=1)
            ]
            ref.append([r[0], *values])
        assert len(mapped) == len(ref), stem
        for a, b in zip(sorted(mapped), sorted(ref), strict=True):
            assert len(a) == len(b) and a[0] == b[0], (stem, a[:5], b[:5])
            assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= TOLERANCE, stem
            compared += 1
    return compared


def class_ids_of(out: Path) -> list[int]:
    """Category id of each YOLO class our writer used (the rank of the id)."""
    return sorted(json.loads((out / "classes.json").read_text()))


def convert(src: Path, out: Path, *args: str) -> int:
    return main(["convert", str(src), *args, str(out), "--images", "none"])


ZERO_BASED = {
    "roboflow": ("roboflow-dog-seg", "train/_annotations.coco.json"),
    "labelme": ("labelme", "instance_segmentation/data_dataset_coco/annotations.json"),
}


@pytest.fixture(scope="module")
def coco_mini(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """coco-mini, Roboflow's and labelme's exports with placeholders, and ultralytics'
    conversions of them (boxes, polygons, keypoints), made once for the module in one
    child process."""
    tmp = tmp_path_factory.mktemp("coco-mini")
    root = materialize("coco-mini", tmp / "src")
    det = tmp / "ref-in-det"
    kp = tmp / "ref-in-kp"
    det.mkdir()
    kp.mkdir()
    for name in ("instances_val2017.json", "instances_train2017.json"):
        shutil.copyfile(root / "annotations" / name, det / name)
    shutil.copyfile(root / "annotations/person_keypoints_val2017.json", kp / "pk.json")
    jobs = [
        (det, tmp / "ref-det", False, False),
        (det, tmp / "ref-seg", True, False),
        (kp, tmp / "ref-pose", False, True),
        (det, tmp / "ref-det80", False, False, True),  # as ultralytics' COCO layout has it
    ]
    paths = {"tmp": tmp, "root": root}
    for key, (source, doc) in ZERO_BASED.items():
        src = materialize(source, tmp / f"src-{key}")
        ref_in = tmp / f"ref-in-{key}"
        ref_in.mkdir()
        shutil.copyfile(src / doc, ref_in / "labels.json")
        paths[key] = src / doc
        jobs += [(ref_in, tmp / f"ref-{key}-detect", False, False)]
        jobs += [(ref_in, tmp / f"ref-{key}-segment", True, False)]
    run_convert_coco(tmp, jobs)
    return paths


def _category_ids(root: Path, doc: str) -> list[int]:
    cats = json.loads((root / doc).read_text())["categories"]
    return sorted(c["id"] for c in cats if c["name"] not in ("__background__", "_background_"))


@pytest.mark.parametrize(("task", "ref"), [("detect", "ref-det"), ("segment", "ref-seg")])
def test_coco_mini_labels_match_convert_coco(
    coco_mini: dict[str, Path], task: str, ref: str
) -> None:
    tmp, root = coco_mini["tmp"], coco_mini["root"]
    out = tmp / f"ours-{task}"
    assert convert(root, out, "--to", "yolo", "--task", task) == 0
    ids = _category_ids(root, "annotations/instances_val2017.json")
    compared = compare_rows(read_rows(out / "labels"), read_rows(tmp / ref / "labels"), ids)
    assert compared > 1000  # 739 + 624 annotations less the crowd regions
    # their folders are named by the file (val2017), ours by the split it gives (val)
    val = {p.stem for p in (tmp / ref / "labels/val2017").glob("*.txt")}
    assert val == {p.stem for p in (out / "labels/val").glob("*.txt") if p.read_text()}


def test_coco_mini_pose_matches_convert_coco(coco_mini: dict[str, Path]) -> None:
    """Keypoints: persons without a labelled keypoint are left out, as ultralytics does."""
    tmp, root = coco_mini["tmp"], coco_mini["root"]
    out = tmp / "ours-pose"
    doc = root / "annotations/person_keypoints_val2017.json"
    assert convert(doc, out, "--to", "yolo", "--task", "pose") == 0
    compared = compare_rows(
        read_rows(out / "labels"), read_rows(tmp / "ref-pose/labels"), [1], True
    )
    labelled = sum(
        1
        for a in json.loads(doc.read_text())["annotations"]
        if not a["iscrowd"] and any(a["keypoints"][2::3])
    )
    assert compared == labelled
    cfg = yaml.safe_load((out / "data.yaml").read_text())
    assert cfg["kpt_shape"] == [17, 3]


@pytest.mark.parametrize(
    ("key", "task"), [("roboflow", "segment"), ("labelme", "segment"), ("labelme", "detect")]
)
def test_zero_based_exports_match_convert_coco(
    coco_mini: dict[str, Path], key: str, task: str
) -> None:
    """Roboflow (ids from 0, an unused superclass) and labelme (``_background_`` id 0)."""
    tmp, doc = coco_mini["tmp"], coco_mini[key]
    out = tmp / f"ours-{key}-{task}"
    assert convert(doc, out, "--to", "yolo", "--task", task) == 0
    names = yaml.safe_load((out / "data.yaml").read_text())["names"]
    cats = {c["name"]: c["id"] for c in json.loads(doc.read_text())["categories"]}
    ids = [cats[names[k]] for k in range(len(names))]
    ref = read_rows(tmp / f"ref-{key}-{task}/labels")
    assert compare_rows(read_rows(out / "labels"), ref, ids) > 10


def _ultralytics_yaml(name: str) -> Path:
    import importlib.util

    spec = importlib.util.find_spec("ultralytics")  # located, not imported
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("ultralytics is not installed")
    return Path(spec.submodule_search_locations[0]) / "cfg" / "datasets" / name


def test_ultralytics_coco_layout_keeps_its_splits(
    coco_mini: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    """ultralytics' own COCO layout: convert_coco labels, its coco.yaml verbatim
    (``train: train2017.txt``, ``val: val2017.txt``, a test list that is absent) and the
    image lists. Every val2017 image stays in val."""
    tmp, src = coco_mini["tmp"], coco_mini["root"]
    root = tmp / "ultra-coco"
    shutil.copytree(tmp / "ref-det80/labels", root / "labels")
    shutil.copyfile(_ultralytics_yaml("coco.yaml"), root / "coco.yaml")
    for folder in ("train2017", "val2017"):
        shutil.copytree(src / folder, root / "images" / folder)
        listed = sorted(p.name for p in (root / "images" / folder).iterdir())
        text = "".join(f"./images/{folder}/{name}\n" for name in listed)
        (root / f"{folder}.txt").write_text(text)
    assert main(["validate", str(root), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["variant"] == "yolo-detect"
    assert report["summary"]["splits"] == {"train": 80, "val": 79}
    warned = [p["path"] for p in report["problems"] if p["severity"] == "warning"]
    assert warned == ["coco.yaml:test"]  # test-dev2017.txt is not there: said, not fatal
    out = tmp / "ultra-out"
    assert convert(root, out, "--to", "yolo", "--task", "detect") == 0
    val = {p.stem for p in (root / "images/val2017").iterdir()}
    assert {p.stem for p in (out / "labels/val").glob("*.txt")} == val
    assert not val & {p.stem for p in (out / "labels/train").glob("*.txt")}
    names = yaml.safe_load((out / "data.yaml").read_text())["names"]
    assert names[0] == "person" and len(names) == 80  # names from coco.yaml
