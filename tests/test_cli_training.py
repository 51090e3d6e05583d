"""`vmesh models|compat|train|jobs|weights|predict|ask` against a real dataset_svc and real
ultralytics and timm trainers (one stack for the module), as a user types them.

Trainings are tiny (64 px, a few images, 1-2 epochs).
"""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from tests._cli import Cli, vmesh_command
from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture
from tests._trainers import start_trainer
from visionmesh.shapes import generate

pytestmark = pytest.mark.timeout(900)

server = dataset_server_fixture([DEFAULT_BACKEND])


@pytest.fixture(scope="module")
def trainers(server):  # type: ignore[no-untyped-def]
    started = {fw: start_trainer(fw, server) for fw in ("ultralytics", "timm")}
    yield started
    for trainer in started.values():
        trainer.stop()
        assert trainer.network_attempts() == []


@pytest.fixture(scope="module")
def stack(server, trainers, tmp_path_factory):  # type: ignore[no-untyped-def]
    """A signed-in Cli and a small labelled shapes dataset named 'geo'."""
    home = tmp_path_factory.mktemp("cli-training")
    cli = Cli(
        home,
        dataset_addr=server.addr,
        trainers={fw: t.addr for fw, t in trainers.items()},
    )
    cli.login(server, "trainer-user")
    data = home / "shapes"
    generate(data, images=16, size=64, seed=3, max_shapes=2)
    document = json.loads((data / "annotations.json").read_text())
    for i, image in enumerate(document["images"]):
        image["split"] = "val" if i % 4 == 3 else "train"
    (data / "annotations.json").write_text(json.dumps(document))
    assert cli("datasets", "create", "geo").code == 0
    assert cli("datasets", "upload", "geo", str(data)).code == 0
    assert cli("datasets", "import", "geo", str(data / "annotations.json")).code == 0
    return cli, data


TINY = ["--epochs", "1", "--imgsz", "64", "--batch", "4", "--extra", "workers=0"]


def test_models_lists_every_trainer_and_its_hyperparameters(stack) -> None:  # type: ignore[no-untyped-def]
    cli, _ = stack
    out = cli("models")
    assert out.code == 0, out
    rows = out.stdout.splitlines()
    assert rows[0].split()[:3] == ["FRAMEWORK", "MODEL", "TASKS"]
    assert any(r.startswith("ultralytics  yolo11n ") for r in rows)
    assert any(r.startswith("timm") and " resnet18 " in r for r in rows)
    assert "ultralytics" in out.stdout and "hyperparameters" in out.stdout
    assert "extra.warmup_epochs" in out.stdout
    data = cli("models", "--json").json()
    assert set(data["trainers"]) == {"ultralytics", "timm"}
    names = {m["name"] for m in data["trainers"]["timm"]["models"]}
    assert "resnet18" in names


def test_compat_is_one_table_of_task_by_framework(stack) -> None:  # type: ignore[no-untyped-def]
    cli, _ = stack
    out = cli("compat", "geo")
    assert out.code == 0, out
    lines = out.stdout.splitlines()
    detection = [line for line in lines if line.startswith("object_detection")]
    assert len(detection) == 1 and "ultralytics" in detection[0] and "native" in detection[0]
    classification = [line for line in lines if line.startswith("image_classification")]
    assert {line.split()[1] for line in classification} == {"timm", "ultralytics"}
    assert all("lossy: dominant class" in line for line in classification)
    semantic = next(line for line in lines if line.startswith("semantic_segmentation"))
    assert "(no trainer)" in semantic  # no hf trainer in this stack
    rows = cli("compat", "geo", "--json").json()["rows"]
    pose = next(r for r in rows if r["task"] == "pose_estimation")
    assert pose["verdict"] == "native" and pose["framework"] == "ultralytics"
    assert cli("compat", "no-such-dataset").code == 4


def test_newcomer_errors_name_what_exists(stack) -> None:  # type: ignore[no-untyped-def]
    cli, _ = stack
    unknown = cli("train", "geo", "--model", "yolo99z")
    assert unknown.code == 4, unknown
    assert "no trainer has a model 'yolo99z'" in unknown.stderr
    assert "ultralytics: yolo11n" in unknown.stderr and "timm: resnet18" in unknown.stderr

    other = cli("train", "geo", "--model", "resnet18", "--framework", "ultralytics")
    assert other.code == 4
    assert "the ultralytics trainer has no resnet18: it belongs to timm" in other.stderr
    other = cli("train", "geo", "--model", "yolo11n-seg", "--framework", "timm")
    assert "it belongs to ultralytics" in other.stderr

    wrong_task = cli("train", "geo", "--model", "resnet18", "--task", "detect")
    assert wrong_task.code == 1 and "trains image_classification" in wrong_task.stderr
    no_dataset = cli("train", "gone", "--model", "yolo11n")
    assert no_dataset.code == 4 and "no dataset named 'gone'" in no_dataset.stderr
    # --devices reaches the trainer, which says what it has (this machine has no GPU)
    gpus = cli("train", "geo", "--model", "resnet18", "--device", "cuda", "--devices", "2")
    assert gpus.code == 1 and "needs 2 GPUs" in gpus.stderr, gpus
    bad = cli("train", "geo", "--model", "resnet18", "--device", "0,1", "--devices", "3")
    assert bad.code == 1 and "spec.devices" in bad.stderr, bad
    anonymous = cli("train", "geo", "--model", "yolo11n", env={"XDG_CONFIG_HOME": "/nonexistent"})
    assert anonymous.code == 3 and "vmesh login" in anonymous.stderr


def test_train_follow_weights_predict_and_jobs(stack, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    cli, data = stack
    out = cli("train", "geo", "--model", "yolo11n", "--epochs", "2", *TINY[2:], "--follow")
    assert out.code == 0, out
    lines = out.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("EPOCH"))
    assert "VAL/MAP50" in lines[header] and lines[header].rstrip().endswith("BEST")
    rows = lines[header + 1 : header + 3]
    assert [r.split()[0] for r in rows] == ["1/2", "2/2"]
    assert any(r.rstrip().endswith("*") for r in rows)  # the best epoch is marked
    assert "task object_detection" in out.stderr  # the default it chose is said
    job = next(w for w in lines[0].split() if w.startswith("trainers/ultralytics/jobs/"))
    job = job.rstrip(":")
    assert f"{job}: succeeded; best epoch" in out.stdout

    listed = cli("jobs", "list")
    assert listed.code == 0 and job in listed.stdout and "succeeded" in listed.stdout
    only = cli("jobs", "list", "--framework", "timm", "--json").json()
    assert only["jobs"] == []
    got = cli("jobs", "get", job.rsplit("/", 1)[1], "--json").json()  # a bare id works
    assert got["name"] == job and got["state"] == "JOB_STATE_SUCCEEDED"
    assert {c["filename"] for c in got["checkpoints"]} >= {"best.pt", "last.pt"}
    human = cli("jobs", "get", job)
    assert "best epoch" in human.stdout and "best.pt" in human.stdout
    logs = cli("jobs", "logs", job)
    assert logs.code == 0 and "SUCCEEDED" in logs.stdout
    watch = cli("jobs", "watch", job, "--json")  # replays a finished job's epochs
    events = [json.loads(line) for line in watch.stdout.splitlines()]
    assert [e["metrics"]["epoch"] for e in events if "metrics" in e] == [1, 2]
    assert events[-1]["job"]["state"] == "JOB_STATE_SUCCEEDED"

    weights = tmp_path / "best.pt"
    out = cli("weights", job, "-o", str(weights))
    assert out.code == 0, out
    assert weights.stat().st_size == next(
        int(c["size_bytes"]) for c in got["checkpoints"] if c["filename"] == "best.pt"
    )
    assert cli("weights", job, "--checkpoint", "epoch_7").code == 4
    assert cli("weights", job, "--checkpoint", "nonsense").code == 2

    image = next((data / "images").glob("*.jpg"))
    overlay = tmp_path / "overlay.png"
    out = cli("predict", job, str(image), "-o", str(overlay), "--conf", "0.001")
    assert out.code == 0, out
    assert "object_detection by " + job in out.stdout
    assert f"overlay written to {overlay}" in out.stdout
    with Image.open(overlay) as drawn, Image.open(image) as original:
        assert drawn.size == original.size
        changed = ImageChops.difference(drawn.convert("RGB"), original.convert("RGB"))
        assert changed.getbbox() is not None  # something was drawn
    data_json = cli("predict", job, str(image), "--json", "--conf", "0.001").json()
    assert data_json["task_type"] == "TASK_TYPE_OBJECT_DETECTION"
    assert cli("predict", job, str(tmp_path / "missing.jpg")).code == 4
    assert cli("jobs", "get", "trainers/ultralytics/jobs/nope").code == 4
    assert cli("jobs", "get", "nope").code == 4


def test_ctrl_c_detaches_then_stop_cancel_and_resume(stack) -> None:  # type: ignore[no-untyped-def]
    cli, _ = stack
    follower = subprocess.Popen(
        [*vmesh_command(), "train", "geo", "--model", "yolo11n", "--epochs", "30", *TINY[2:]]
        + ["--follow"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    first = follower.stdout.readline()  # "started trainers/ultralytics/jobs/...: ..."
    assert first.startswith("started trainers/ultralytics/jobs/"), first
    name = first.split()[1].rstrip(":")
    assert follower.stdout.readline().startswith(f"following {name}")
    follower.send_signal(signal.SIGINT)
    _, err = follower.communicate(timeout=60)
    assert follower.returncode == 130, err
    assert f"re-attach: vmesh jobs watch {name}" in err
    assert cli("jobs", "get", name, "--json").json()["state"] in (
        "JOB_STATE_QUEUED",
        "JOB_STATE_PREPARING",
        "JOB_STATE_RUNNING",
    )  # detaching left the job running
    out = cli("jobs", "stop", name)
    assert out.code == 0 and "stops after this epoch" in out.stdout, out
    deadline = time.monotonic() + 300
    while (job := cli("jobs", "get", name, "--json").json())["state"] not in (
        "JOB_STATE_SUCCEEDED",
        "JOB_STATE_FAILED",
        "JOB_STATE_CANCELLED",
    ):
        assert time.monotonic() < deadline, job
        time.sleep(1)
    assert job["state"] in ("JOB_STATE_SUCCEEDED", "JOB_STATE_CANCELLED")
    assert int(job.get("current_epoch", 0)) < 30

    second = cli("train", "geo", "--model", "yolo11n", *TINY, "--json").json()["name"]
    out = cli("jobs", "cancel", second, "--json")
    assert out.code == 0 and out.json()["name"] == second
    refused = cli("jobs", "resume", second)
    assert refused.code == 1, refused  # a cancelled job does not resume
    assert "FAILED_PRECONDITION" in refused.stderr


def test_ask_shows_the_request_and_starts_it_on_yes(stack) -> None:  # type: ignore[no-untyped-def]
    cli, _ = stack
    out = cli("ask", "geo 데이터셋으로 yolo11n 학습시작 epochs 1 imgsz 64 with sparkles")
    assert out.code == 1, out  # no terminal to confirm on, no --yes
    assert "dataset       datasets/" in out.stdout and '("geo")' in out.stdout
    assert "model         yolo11n (ultralytics)" in out.stdout
    assert "epochs        1" in out.stdout
    assert "not understood (ignored): 'sparkles'" in out.stdout
    assert "--yes" in out.stderr

    missing = cli("ask", "train yolo11n on atlantis")
    assert missing.code == 1
    assert "no dataset named 'atlantis'" in missing.stdout
    nothing = cli("ask", "please do something nice")
    assert nothing.code == 1 and "a dataset and a model" in nothing.stderr
    wrong = cli("ask", "train resnet18 on geo", "--framework", "ultralytics")
    assert wrong.code == 1 and "belongs to timm" in wrong.stderr

    dry = cli("ask", "train yolo11n on geo for 1 epochs", "--dry-run", "--json").json()
    assert dry["started"] is False and dry["framework"] == "ultralytics"
    assert dry["parsed"]["spec"]["epochs"] == 1

    go = cli("ask", "train yolo11n on geo 1 epochs imgsz 64 batch 4", "--yes", "--follow")
    assert go.code == 0, go
    assert "started trainers/ultralytics/jobs/" in go.stdout
    assert ": succeeded" in go.stdout


def test_overlay_draws_masks_keypoints_boxes_and_classes() -> None:
    from visionmesh.overlay import draw_prediction
    from visionmesh.v1 import common_pb2, trainer_pb2

    base = Image.new("RGB", (80, 60), (0, 0, 0))
    prediction = trainer_pb2.PredictResponse(
        detections=[
            trainer_pb2.Detection(
                category_id=1,
                category_name="circle",
                score=0.9,
                box=common_pb2.BoundingBox(x=5, y=20, width=20, height=20),
            ),
            trainer_pb2.Detection(
                category_id=2,
                category_name="square",
                score=0.8,
                polygons=[common_pb2.Polygon(coordinates=[40, 30, 70, 30, 70, 55, 40, 55])],
            ),
            trainer_pb2.Detection(
                category_id=3,
                category_name="triangle",
                score=0.7,
                keypoints=[common_pb2.Keypoint(x=60, y=10, visibility=2)],
            ),
        ],
        classes=[trainer_pb2.ClassScore(category_id=1, category_name="circle", score=0.6)],
    )
    drawn = draw_prediction(base, prediction)
    assert drawn.size == base.size
    assert drawn.getpixel((5, 30)) != (0, 0, 0)  # box outline
    assert drawn.getpixel((55, 45)) != (0, 0, 0)  # filled mask
    assert drawn.getpixel((60, 10)) != (0, 0, 0)  # keypoint
