"""`vmesh eval`, `vmesh export` and `vmesh pretrained upload|list|delete` against a real trainer.

The CLI runs as a user runs it (``python -m visionmesh.cli`` in a child process, token and
trainer address from the environment) against a timm trainer in a child process.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from tests._servers import ROOT
from tests._trainers import collect_metrics, shapes_dataset, spec, start_trainer
from visionmesh.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(600)

S = trainer_pb2


@pytest.fixture(scope="module")
def trainer(fake, tmp_path_factory):
    server = start_trainer("timm", fake, guard_dir=tmp_path_factory.mktemp("guard"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def job(fake, trainer):
    files, doc = shapes_dataset(12, size=64)
    dataset = fake.add_dataset(files, doc, "alice")
    stub = trainer.stub(fake.token("alice"))
    training = spec(dataset, "classify", "test_resnet", epochs=2, batch_size=4, image_size=64)
    job = stub.StartTraining(S.StartTrainingRequest(spec=training), timeout=120).job
    _, state = collect_metrics(stub, job.name, timeout=300)
    assert state == S.JOB_STATE_SUCCEEDED
    return stub.GetJob(S.GetJobRequest(name=job.name), timeout=10).job


def vmesh(fake, trainer, *args, cwd=None):
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "sdk")]),
        "VISIONMESH_TOKEN": fake.token("alice"),
        "VISIONMESH_TRAINERS": f"timm={trainer.addr}",
        "VISIONMESH_DATASET_ADDR": fake.addr,
    }
    return subprocess.run(
        [sys.executable, "-m", "visionmesh.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_eval_prints_per_class_table_and_json(fake, trainer, job, tmp_path):
    out = vmesh(fake, trainer, "eval", job.name, "--pictures", str(tmp_path / "pics"))
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    lines = out.stdout.splitlines()
    assert lines[0] == f"evaluation of best.pt of {job.name} on its val split"
    assert "CLASS" in lines[2] and "PRECISION" in lines[2] and "ACCURACY" in lines[2]
    assert {line.split()[0] for line in lines[3:6]} == {"circle", "square", "triangle"}
    assert "confusion matrix (rows: true, columns: predicted)" in out.stdout
    assert sorted(p.name for p in (tmp_path / "pics").iterdir()) == [
        "confusion_matrix.png",
        "pr_curve.png",
    ]
    out = vmesh(fake, trainer, "eval", job.name.rsplit("/", 1)[-1], "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert [c["category_name"] for c in data["classes"]] == ["circle", "square", "triangle"]
    assert data["metrics"]["val/top1"] == pytest.approx(job.best_metrics["val/top1"])
    out = vmesh(fake, trainer, "eval", "trainers/timm/jobs/nosuchjob")
    assert out.returncode == 4 and "not found" in out.stderr


def test_export_downloads_an_onnx_file(fake, trainer, job, tmp_path):
    import numpy as np
    import onnxruntime as ort

    target = tmp_path / "model.onnx"
    out = vmesh(fake, trainer, "export", job.name, "--format", "onnx", "-o", str(target))
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    assert out.stdout.startswith(f"exported {job.name}/checkpoints/best.onnx (onnx, 64px")
    session = ort.InferenceSession(target.read_bytes(), providers=["CPUExecutionProvider"])
    x = np.zeros((2, 3, 64, 64), dtype=np.float32)
    (logits,) = session.run(None, {session.get_inputs()[0].name: x})
    assert logits.shape == (2, 3)
    out = vmesh(
        fake, trainer, "export", job.name, "--format", "torchscript", "--json", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["state"] == "EXPORT_STATE_SUCCEEDED"
    written = tmp_path / data["output"]
    assert written.name == f"{job.name.rsplit('/', 1)[-1]}-best.torchscript"
    assert written.stat().st_size == data["bytes"] > 0


def test_pretrained_upload_list_delete(fake, trainer, tmp_path):
    import timm
    import torch

    path = tmp_path / "resnet.pth"
    buffer = io.BytesIO()
    torch.save(timm.create_model("test_resnet", num_classes=5).state_dict(), buffer)
    path.write_bytes(buffer.getvalue())
    out = vmesh(
        fake,
        trainer,
        "pretrained",
        "upload",
        str(path),
        "--model",
        "test_resnet",
        "--task",
        "classify",
    )
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    assert out.stdout.startswith("uploaded trainers/timm/weights/test_resnet")
    out = vmesh(fake, trainer, "pretrained", "list")
    assert out.returncode == 0, out.stderr
    print(out.stdout)
    assert "trainers/timm/weights/test_resnet" in out.stdout and "alice" in out.stdout
    out = vmesh(fake, trainer, "pretrained", "list", "--json")
    assert [w["key"] for w in json.loads(out.stdout)["weights"]] == [
        "models/pretrained/timm/test_resnet.pth"
    ]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"junk")
    out = vmesh(
        fake,
        trainer,
        "pretrained",
        "upload",
        str(bad),
        "--model",
        "test_resnet",
        "--task",
        "classify",
    )
    assert out.returncode == 1 and "does not load" in out.stderr
    out = vmesh(fake, trainer, "pretrained", "delete", "trainers/timm/weights/test_resnet")
    assert out.returncode == 0, out.stderr
    out = vmesh(fake, trainer, "pretrained", "list", "--json")
    assert json.loads(out.stdout)["weights"] == []
