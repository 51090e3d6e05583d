"""``vmesh convert`` / ``validate`` / ``shapes``: offline, clear exit codes, problems listed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests._servers import run_python
from visionmesh.cli import COMMAND_MODULES, command_modules, main

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_data = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"sample datasets not found at {SHARED} (../shared/data)"
)


@pytest.fixture
def shapes_dir(tmp_path: Path) -> Path:
    out = tmp_path / "shapes"
    assert main(["shapes", str(out), "--images", "10", "--size", "48", "--seed", "2"]) == 0
    return out


def test_shapes_command(shapes_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (shapes_dir / "annotations.json").is_file()
    assert len(list((shapes_dir / "images").glob("*.jpg"))) == 10
    assert main(["shapes", str(shapes_dir)]) == 1  # not empty
    assert "not empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("to", "task", "expect"),
    [
        ("yolo", "detect", "data.yaml"),
        ("yolo", "segment", "labels/train"),
        ("yolo", "pose", "data.yaml"),
        ("yolo", "classify", "train"),
        ("coco", "segment", "annotations/instances_train.json"),
        ("dice", "semantic", "masks"),
        ("imagefolder", "classify", "val"),
    ],
)
def test_convert_shapes_to_every_format(
    shapes_dir: Path, tmp_path: Path, to: str, task: str, expect: str
) -> None:
    out = tmp_path / "out"
    assert main(["convert", str(shapes_dir), "--to", to, "--task", task, str(out)]) == 0
    assert (out / expect).exists()


@needs_data
def test_convert_sample_yolo_with_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    names = tmp_path / "coco.yaml"
    names.write_text(yaml.safe_dump({"names": {i: f"class{i}" for i in range(80)}}))
    out = tmp_path / "dice"
    code = main(
        [
            "convert",
            str(SHARED / "det-coco8"),
            "--to",
            "dice",
            "--task",
            "detect",
            str(out),
            "--names",
            str(names),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "read yolo-detect: 8 images" in printed and "wrote dice" in printed
    doc = json.loads((out / "annotations_detection.json").read_text())
    assert doc["categories"][45]["name"] == "class45"
    assert len(list((out / "images").rglob("*.jpg"))) == 8


def test_bad_input_exits_1_with_problem_paths(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "bad"
    src.mkdir()
    (src / "annotations.json").write_text(json.dumps({
        "categories": [{"id": 1, "name": "a"}],
        "images": [{"id": 1, "file_name": "../x.jpg", "width": 10, "height": 10}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 20, 5]}],
    }))  # fmt: skip
    code = main(
        [
            "convert",
            str(src),
            "--to",
            "yolo",
            "--task",
            "detect",
            str(tmp_path / "out"),
            "--images",
            "none",
        ]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "error: images[0].file_name: '../x.jpg' climbs out of the dataset" in err
    assert "error: annotations[0].bbox:" in err
    assert "refused, 2 error(s)" in err
    assert not (tmp_path / "out").exists()


def test_incompatible_task_is_refused(
    shapes_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    labels = tmp_path / "labels"
    assert (
        main(["convert", str(shapes_dir), "--to", "imagefolder", "--task", "classify", str(labels)])
        == 0
    )
    capsys.readouterr()
    assert (
        main(["convert", str(labels), "--to", "yolo", "--task", "detect", str(tmp_path / "o")]) == 1
    )
    assert "classification labels cannot train object detection" in capsys.readouterr().err


def test_refuses_missing_source_and_non_empty_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", str(tmp_path / "nope"), "--to", "coco", str(tmp_path / "o")]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "x").write_text("x")
    assert main(["convert", str(tmp_path), "--to", "coco", str(busy)]) == 1
    assert "not empty" in capsys.readouterr().err


def test_bad_arguments_exit_2(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["convert", str(tmp_path), "--to", "voc", str(tmp_path / "o")])
    assert exc.value.code == 2


def test_validate_command(
    shapes_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["validate", str(shapes_dir), "--task", "detect"]) == 0
    out = capsys.readouterr().out
    assert "read dice-standard" in out and "object_detection: compatible" in out
    assert main(["validate", str(shapes_dir), "--task", "classify", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["compatibility"]["conversion"] == "dominant_class"
    broken = tmp_path / "broken"
    shutil.copytree(shapes_dir, broken)
    (broken / "images/shape_00000.jpg").unlink()
    assert main(["validate", str(broken)]) == 1
    assert "image file not found: images/shape_00000.jpg" in capsys.readouterr().err
    assert main(["validate", str(broken), "--no-check-images"]) == 0


def test_installed_entry_point(shapes_dir: Path, tmp_path: Path) -> None:
    vmesh = Path(sys.executable).with_name("vmesh")
    if not vmesh.exists():
        pytest.skip("the vmesh script is not installed in this environment (pip install -e .)")
    proc = subprocess.run(
        [
            str(vmesh),
            "convert",
            str(shapes_dir),
            "--to",
            "coco",
            "--task",
            "detect",
            str(tmp_path / "c"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "c/annotations").is_dir()


def test_offline_commands_import_no_network_code(shapes_dir: Path, tmp_path: Path) -> None:
    """convert and validate are parsed with their own module alone: grpc, protobuf, the
    client, the other command groups (and Pillow, with --images none) are never imported."""
    out = tmp_path / "y"
    code = (
        "import sys\n"
        "from visionmesh.cli import main\n"
        f"argv = ['convert', {str(shapes_dir)!r}, '--to', 'yolo', '--task', 'detect', {str(out)!r}]\n"
        "assert main(argv + ['--images', 'none']) == 0\n"
        f"assert main(['validate', {str(shapes_dir)!r}, '--no-check-images']) == 0\n"
        "heavy = ('grpc', 'google.protobuf', 'jwt', 'PIL', 'visionmesh.client',\n"
        "         'visionmesh.cli.datasets', 'visionmesh.cli.training')\n"
        "print('loaded:', sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    assert run_python(code).splitlines()[-1] == "loaded: []"
    assert (out / "data.yaml").is_file()


def test_only_a_sure_offline_command_narrows_the_parser(
    capsys: pytest.CaptureFixture[str],
) -> None:
    convert_only = ["visionmesh.cli.convert"]
    assert command_modules(["convert", "src", "--to", "yolo", "out"]) == convert_only
    assert command_modules(["--json", "--dataset-addr", "h:1", "validate", "x"]) == convert_only
    assert command_modules(["--trainers=timm=h:2", "shapes", "out"]) == convert_only
    # Anything else, or an option argparse might read differently, gets every command.
    for argv in (["datasets", "list"], ["-h", "convert"], ["--dataset", "convert"], []):
        assert command_modules(argv) == COMMAND_MODULES, argv
    with pytest.raises(SystemExit):
        main(["--help"])
    listed = capsys.readouterr().out
    assert all(word in listed for word in ("convert", "validate", "datasets", "login", "train"))
