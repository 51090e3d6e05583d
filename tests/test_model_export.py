"""ExportModel: ONNX and TorchScript files of a finished job, checked against the torch model.

Real trainers in child processes on the shapes dataset (64 px, 1 epoch). For each framework
and task family: ExportModel for both formats, poll GetModelExport until SUCCEEDED, download
the file with DownloadCheckpoint, then run the same random input through onnxruntime /
torch.jit and through the torch model rebuilt from the downloaded best.pt; the largest
absolute difference is printed and bounded.
"""

from __future__ import annotations

import io
import time

import grpc
import numpy as np
import pytest

from tests._trainers import collect_metrics, shapes_dataset, spec, start_trainer
from visionmesh.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(900)

S = trainer_pb2
SMALL = {"batch_size": 4, "image_size": 64, "epochs": 1}
BOUND = 1e-3  # relative to the output's scale


@pytest.fixture(scope="module")
def dataset(fake):
    files, doc = shapes_dataset(12, size=64)
    return fake.add_dataset(files, doc, "alice")


def download(stub, name: str) -> bytes:
    return b"".join(
        part.data
        for part in stub.DownloadCheckpoint(S.DownloadCheckpointRequest(name=name), timeout=120)
    )


def train(stub, dataset: str, task: str, model: str, **fields) -> trainer_pb2.Job:
    job = stub.StartTraining(
        S.StartTrainingRequest(spec=spec(dataset, task, model, **{**SMALL, **fields})),
        timeout=120,
    ).job
    _, state = collect_metrics(stub, job.name, timeout=600)
    job = stub.GetJob(S.GetJobRequest(name=job.name), timeout=10).job
    assert state == S.JOB_STATE_SUCCEEDED, job.error
    # every task family is evaluated at the end of its job, too
    evaluation = stub.GetEvaluation(
        S.GetEvaluationRequest(name=f"{job.name}/evaluation"), timeout=30
    ).evaluation
    classes = len(evaluation.classes)  # pose: only triangles carry keypoints
    assert classes == (1 if task == "pose" else 3)
    assert len(evaluation.confusion_matrix.rows) in (classes, classes + 1)
    assert {p.filename for p in evaluation.pictures} >= {"confusion_matrix.png"}
    return job


def export(stub, job_name: str, fmt: int, image_size: int = 0) -> trainer_pb2.ModelExport:
    started = stub.ExportModel(
        S.ExportModelRequest(name=job_name, format=fmt, image_size=image_size), timeout=30
    ).export
    assert started.state in (S.EXPORT_STATE_RUNNING, S.EXPORT_STATE_SUCCEEDED)
    deadline = time.monotonic() + 300
    while True:
        current = stub.GetModelExport(S.GetModelExportRequest(name=started.name), timeout=10).export
        if current.state != S.EXPORT_STATE_RUNNING:
            break
        assert time.monotonic() < deadline, "export still RUNNING after 300 s"
        time.sleep(0.5)
    assert current.state == S.EXPORT_STATE_SUCCEEDED, current.error
    return current


def scaled_difference(label: str, got: np.ndarray, want: np.ndarray) -> float:
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, (label, got.shape, want.shape)
    diff = float(np.abs(got - want).max())
    scale = max(float(np.abs(want).max()), 1.0)
    print(f"{label}: max abs difference {diff:.3g} (output scale {scale:.3g})")
    return diff / scale


def check_files(stub, job, tmp_path, torch_forward, names=("images",)) -> None:
    """Export both formats, download them, compare each with ``torch_forward(x)``."""
    import onnxruntime as ort
    import torch

    size = job.spec.image_size
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    want = torch_forward(torch.from_numpy(x))
    onnx = export(stub, job.name, S.MODEL_FORMAT_ONNX)
    assert onnx.file.filename == "best.onnx" and onnx.source == "best.pt"
    assert onnx.file.name == f"{job.name}/checkpoints/best.onnx"
    data = download(stub, onnx.file.name)
    assert len(data) == onnx.file.size_bytes > 0
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    outputs = session.run(None, {session.get_inputs()[0].name: x})
    for i, w in enumerate(want):
        assert scaled_difference(f"{job.spec.model} onnx[{i}]", outputs[i], w) < BOUND

    ts = export(stub, job.name, S.MODEL_FORMAT_TORCHSCRIPT)
    assert ts.file.filename == "best.torchscript"
    path = tmp_path / "best.torchscript"
    path.write_bytes(download(stub, ts.file.name))
    scripted = torch.jit.load(str(path), map_location="cpu").eval()
    with torch.no_grad():
        got = scripted(torch.from_numpy(x))
    got = list(got) if isinstance(got, (tuple, list)) else [got]
    for i, w in enumerate(want):
        value = got[i].numpy() if hasattr(got[i], "numpy") else got[i]
        assert scaled_difference(f"{job.spec.model} torchscript[{i}]", value, w) < BOUND
    job = stub.GetJob(S.GetJobRequest(name=job.name), timeout=10).job
    assert {e.format for e in job.exports} == {S.MODEL_FORMAT_ONNX, S.MODEL_FORMAT_TORCHSCRIPT}
    assert all(e.state == S.EXPORT_STATE_SUCCEEDED for e in job.exports)


# -- ultralytics ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yolo(fake, tmp_path_factory):
    server = start_trainer("ultralytics", fake, guard_dir=tmp_path_factory.mktemp("guard"))
    yield server
    assert server.network_attempts() == []
    server.stop()


def yolo_forward(checkpoint: bytes, tmp_path):
    import torch

    path = tmp_path / "best.pt"
    path.write_bytes(checkpoint)
    from trainers.ultralytics._yolo import setup_offline

    setup_offline(tmp_path / "ultralytics-config")
    from ultralytics import YOLO

    model = YOLO(str(path)).model.fuse().float().eval()

    def forward(x):
        with torch.no_grad():
            out = model(x)
        if isinstance(out, (tuple, list)):
            first = out[0]
            # segmentation: ((boxes + mask coefficients, protos), raw outputs)
            if isinstance(first, (tuple, list)):
                return [t.numpy() for t in first]
            return [first.numpy()]
        return [out.numpy()]

    return forward


@pytest.mark.parametrize("task", ["detect", "segment", "classify", "pose"])
def test_yolo_exports_match_torch(fake, dataset, yolo, task, tmp_path):
    stub = yolo.stub(fake.token("alice"))
    job = train(stub, dataset, task, "yolo11n")
    best = download(stub, f"{job.name}/checkpoints/best.pt")
    import torch

    state = torch.load(io.BytesIO(best), map_location="cpu", weights_only=False)
    assert state.get("optimizer") is None, "best.pt keeps its optimizer: not stripped"
    check_files(stub, job, tmp_path, yolo_forward(best, tmp_path))


def test_export_refusals(fake, dataset, yolo):
    stub = yolo.stub(fake.token("alice"))
    job = train(stub, dataset, "detect", "yolo11n")
    with pytest.raises(grpc.RpcError) as err:
        stub.ExportModel(S.ExportModelRequest(name=job.name), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as err:
        stub.GetModelExport(S.GetModelExportRequest(name=f"{job.name}/exports/onnx"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    bob = yolo.stub(fake.token("bob"))
    with pytest.raises(grpc.RpcError) as err:
        bob.ExportModel(S.ExportModelRequest(name=job.name, format=S.MODEL_FORMAT_ONNX), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


# -- timm ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def timm_trainer(fake, tmp_path_factory):
    server = start_trainer("timm", fake, guard_dir=tmp_path_factory.mktemp("guard-timm"))
    yield server
    assert server.network_attempts() == []
    server.stop()


def test_timm_exports_match_torch(fake, dataset, timm_trainer, tmp_path):
    import timm
    import torch

    stub = timm_trainer.stub(fake.token("alice"))
    job = train(stub, dataset, "classify", "test_resnet")
    ckpt = torch.load(
        io.BytesIO(download(stub, f"{job.name}/checkpoints/best.pt")),
        map_location="cpu",
        weights_only=False,
    )
    model = timm.create_model("test_resnet", num_classes=len(ckpt["class_names"]))
    model.load_state_dict(ckpt["model"])
    model.eval()

    def forward(x):
        with torch.no_grad():
            return [model(x).numpy()]

    check_files(stub, job, tmp_path, forward)


# -- transformers ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hf_trainer(fake, tmp_path_factory):
    server = start_trainer("hf", fake, guard_dir=tmp_path_factory.mktemp("guard-hf"))
    yield server
    assert server.network_attempts() == []
    server.stop()


@pytest.mark.parametrize(("task", "model"), [("classify", "vit-micro"), ("detect", "detr-micro")])
def test_hf_exports_match_torch(fake, dataset, hf_trainer, task, model, tmp_path):
    import torch

    from trainers.hf import models

    stub = hf_trainer.stub(fake.token("alice"))
    job = train(stub, dataset, task, model)
    ckpt = torch.load(
        io.BytesIO(download(stub, f"{job.name}/checkpoints/best.pt")),
        map_location="cpu",
        weights_only=False,
    )
    net = models.rebuild(ckpt["config"], ckpt["architecture"])
    net.load_state_dict(ckpt["model"])
    net.eval()

    def forward(x):
        with torch.no_grad():
            out = net(pixel_values=x)
        if task == "detect":
            return [out.logits.numpy(), out.pred_boxes.numpy()]
        return [out.logits.numpy()]

    check_files(stub, job, tmp_path, forward)
