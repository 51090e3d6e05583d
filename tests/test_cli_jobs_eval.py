"""`vmesh jobs get` shows a finished job's evaluation: the real ``vmesh`` executable against a
real dataset_svc and ultralytics trainer, after one tiny training (shapes, 64 px, 2 epochs).

The text output's per-class table and confusion matrix, and ``--json``'s ``evaluation``, are
checked against GetEvaluation asked over gRPC with the same user's token.
"""

from __future__ import annotations

import json

import pytest
from google.protobuf import json_format

from tests._cli import Cli
from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture
from tests._trainers import start_trainer
from visionmesh.shapes import generate
from visionmesh.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(600)

server = dataset_server_fixture([DEFAULT_BACKEND])


@pytest.fixture(scope="module")
def stack(server, tmp_path_factory):  # type: ignore[no-untyped-def]
    trainer = start_trainer("ultralytics", server)
    home = tmp_path_factory.mktemp("cli-jobs-eval")
    cli = Cli(home, dataset_addr=server.addr, trainers={"ultralytics": trainer.addr})
    cli.login(server, "evaluator")
    data = home / "shapes"
    generate(data, images=16, size=64, seed=5, max_shapes=2)
    document = json.loads((data / "annotations.json").read_text())
    for i, image in enumerate(document["images"]):
        image["split"] = "val" if i % 4 == 3 else "train"
    (data / "annotations.json").write_text(json.dumps(document))
    assert cli("datasets", "create", "geo").code == 0
    assert cli("datasets", "upload", "geo", str(data)).code == 0
    assert cli("datasets", "import", "geo", str(data / "annotations.json")).code == 0
    try:
        yield cli, trainer
    finally:
        trainer.stop()


def token_of(cli: Cli) -> str:
    stored = json.loads(cli.token_file.read_text())
    return next(v for k, v in stored.items() if "token" in k and isinstance(v, str))


def test_jobs_get_shows_the_evaluation(stack) -> None:  # type: ignore[no-untyped-def]
    cli, trainer = stack
    started = cli(
        "train", "geo", "--model", "yolo11n", "--epochs", "2", "--imgsz", "64", "--batch", "4",
        "--extra", "workers=0", "--follow", "--json",
    )  # fmt: skip
    assert started.code == 0, started
    job = next(
        json.loads(line)["job"]["name"]
        for line in started.stdout.splitlines()
        if line.startswith("{") and "job" in json.loads(line)
    )
    evaluation = (
        trainer.stub(token_of(cli))
        .GetEvaluation(trainer_pb2.GetEvaluationRequest(name=f"{job}/evaluation"), timeout=30)
        .evaluation
    )
    assert evaluation.classes and evaluation.confusion_matrix.labels

    # --json: the job as before, plus its evaluation (pictures named with their size)
    got = cli("jobs", "get", job, "--json")
    assert got.code == 0, got
    data = got.json()
    assert data["name"] == job and data["state"] == "JOB_STATE_SUCCEEDED"
    ev = data["evaluation"]
    want = json_format.MessageToDict(evaluation, preserving_proto_field_name=True)
    assert ev["metrics"] == pytest.approx(want["metrics"])
    assert ev["classes"] == want["classes"]
    assert ev["confusion_matrix"] == want["confusion_matrix"]
    assert [(p["filename"], p["size_bytes"]) for p in ev["pictures"]] == [
        (p.filename, len(p.data)) for p in evaluation.pictures
    ]
    assert all(p["size_bytes"] > 0 for p in ev["pictures"])

    # text: the overall metrics, one table row per class with its values and instances
    human = cli("jobs", "get", job)
    assert human.code == 0, human
    lines = human.stdout.splitlines()
    assert f"evaluation of {evaluation.checkpoint} on the val split" in lines
    for key, value in evaluation.metrics.items():
        assert f"{key} {value:.4f}" in human.stdout
    header = next(i for i, line in enumerate(lines) if line.startswith("CLASS "))
    keys = [k.lower() for k in lines[header].split()[1:-1]]
    assert lines[header].split()[-1] == "INSTANCES"
    assert keys[:2] == ["ap50", "ap50_95"]
    assert set(keys) == {k for c in evaluation.classes for k in c.values}
    shown = [c for c in evaluation.classes if c.instance_count or any(c.values.values())]
    assert shown and sum(c.instance_count for c in shown) > 0
    for offset, cls in enumerate(shown, start=1):
        cells = lines[header + offset].split()
        assert cells[0] == cls.category_name
        assert cells[1:-1] == [f"{cls.values[k]:.4f}" for k in keys]
        assert cells[-1] == str(cls.instance_count)

    # the confusion matrix (a few shape classes + background: printed), rows true
    labels = list(evaluation.confusion_matrix.labels)
    counts = [list(r.counts) for r in evaluation.confusion_matrix.rows]
    keep = [i for i in range(len(labels)) if any(counts[i]) or any(r[i] for r in counts)]
    top = next(i for i, line in enumerate(lines) if line.startswith("TRUE \\ PREDICTED"))
    assert lines[top].split()[3:] == [labels[j].upper() for j in keep]
    for offset, i in enumerate(keep, start=1):
        cells = lines[top + offset].split()
        assert cells[0] == labels[i]
        assert cells[1:] == [f"{counts[i][j]:g}" for j in keep]
    assert sum(map(sum, counts)) > 0
