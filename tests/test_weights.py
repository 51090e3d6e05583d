"""Weights in and out: UploadWeights / ListWeights / DeleteWeights, init_from, best.pt in the
framework itself.

Real trainers in child processes on the shapes dataset (64 px). A timm job trained for a
few epochs is the start of a 1-epoch fine-tune (init_from) that must begin better than the
same epoch from scratch; its best.pt, downloaded, loads with ``timm.create_model`` +
``load_state_dict`` and names the same class as Predict; the same for ``YOLO(path)`` and
for transformers' ``from_pretrained`` of a folder saved from the hf checkpoint.
"""

from __future__ import annotations

import io

import grpc
import numpy as np
import pytest
from PIL import Image

from tests._trainers import (
    collect_metrics,
    job_log,
    shapes_dataset,
    spec,
    start_trainer,
)
from visionmesh.v1 import common_pb2, trainer_pb2

pytestmark = pytest.mark.timeout(1200)

S = trainer_pb2
CLASSIFY = common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION


@pytest.fixture(scope="module")
def shapes():
    return shapes_dataset(60, size=64, max_shapes=1)


@pytest.fixture(scope="module")
def dataset(fake, shapes):
    files, doc = shapes
    return fake.add_dataset(files, doc, "alice")


@pytest.fixture(scope="module")
def timm_trainer(fake, tmp_path_factory):
    server = start_trainer("timm", fake, guard_dir=tmp_path_factory.mktemp("guard-timm"))
    yield server
    assert server.network_attempts() == []
    server.stop()


def run(stub, training_spec):
    job = stub.StartTraining(S.StartTrainingRequest(spec=training_spec), timeout=120).job
    epochs, state = collect_metrics(stub, job.name, timeout=900)
    job = stub.GetJob(S.GetJobRequest(name=job.name), timeout=10).job
    assert state == S.JOB_STATE_SUCCEEDED, job.error
    return job, epochs


def download(stub, name: str) -> bytes:
    return b"".join(
        p.data for p in stub.DownloadCheckpoint(S.DownloadCheckpointRequest(name=name), timeout=60)
    )


def upload(stub, model: str, filename: str, data: bytes, *, size: int | None = None, **header):
    def requests():
        yield S.UploadWeightsRequest(
            header=S.UploadWeightsHeader(
                parent=header.get("parent", "trainers/timm"),
                model=model,
                task_type=header.get("task_type", CLASSIFY),
                filename=filename,
            )
        )
        for i in range(0, len(data), 64 * 1024):
            yield S.UploadWeightsRequest(chunk=data[i : i + 64 * 1024])
        yield S.UploadWeightsRequest(
            end=S.UploadWeightsEnd(size_bytes=len(data) if size is None else size)
        )

    return stub.UploadWeights(requests(), timeout=300).weights


def small(dataset, model="test_resnet", **fields):
    base = {"batch_size": 8, "image_size": 64, "learning_rate": 0.003, "seed": 1}
    return spec(dataset, "classify", model, **{**base, **fields})


def val_image(shapes) -> bytes:
    files, doc = shapes
    return files[next(im["file_name"] for im in doc["images"] if im["split"] == "val")]


def test_init_from_a_finished_job_starts_better(fake, dataset, shapes, timm_trainer, tmp_path):
    import timm
    import torch

    alice = timm_trainer.stub(fake.token("alice"))
    base, base_epochs = run(alice, small(dataset, epochs=6))
    print("base job val/top1 by epoch:", [round(e.values["val/top1"], 3) for e in base_epochs])
    tuned, tuned_epochs = run(alice, small(dataset, epochs=1, init_from=base.name))
    scratch, scratch_epochs = run(alice, small(dataset, epochs=1))
    first_tuned, first_scratch = tuned_epochs[0].values, scratch_epochs[0].values
    print(
        f"epoch 1: init_from val/top1 {first_tuned['val/top1']:.3f} val/loss "
        f"{first_tuned['val/loss']:.3f}; scratch val/top1 {first_scratch['val/top1']:.3f} "
        f"val/loss {first_scratch['val/loss']:.3f}"
    )
    assert first_tuned["val/top1"] > first_scratch["val/top1"]
    assert first_tuned["val/loss"] < first_scratch["val/loss"]
    assert "init_from" in job_log(alice, tuned.name) and "head kept" in job_log(alice, tuned.name)
    assert tuned.spec.init_from == base.name

    # best.pt in timm itself names the same class as Predict
    ckpt = torch.load(
        io.BytesIO(download(alice, f"{tuned.name}/checkpoints/best.pt")),
        map_location="cpu",
        weights_only=False,
    )
    model = timm.create_model("test_resnet", num_classes=len(ckpt["class_names"]))
    model.load_state_dict(ckpt["model"])
    model.eval()
    config = ckpt["data_config"]
    transform = timm.data.create_transform(
        input_size=tuple(config["input_size"]),
        interpolation=config["interpolation"],
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        crop_pct=1.0,
        crop_mode="squash",
    )
    image = val_image(shapes)
    with torch.no_grad():
        logits = model(transform(Image.open(io.BytesIO(image)).convert("RGB")).unsqueeze(0))
    ours = ckpt["class_names"][int(logits.argmax())]
    predicted = alice.Predict(S.PredictRequest(name=tuned.name, image=image), timeout=120)
    assert predicted.classes[0].category_name == ours

    # errors: another architecture, another trainer's job, a stranger's job
    for init_from, code in [
        (base.name, grpc.StatusCode.FAILED_PRECONDITION),  # with model test_convnext below
        ("trainers/ultralytics/jobs/abc", grpc.StatusCode.INVALID_ARGUMENT),
        ("datasets/x", grpc.StatusCode.INVALID_ARGUMENT),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            alice.StartTraining(
                S.StartTrainingRequest(
                    spec=small(dataset, "test_convnext", epochs=1, init_from=init_from)
                ),
                timeout=60,
            )
        assert err.value.code() == code, err.value.details()
        print(init_from, "->", err.value.details())
    bob = timm_trainer.stub(fake.token("bob"))
    with pytest.raises(grpc.RpcError) as err:
        bob.StartTraining(
            S.StartTrainingRequest(spec=small(dataset, epochs=1, init_from=base.name)), timeout=60
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_upload_list_delete_weights(fake, dataset, timm_trainer, tmp_path):
    import timm
    import torch

    alice = timm_trainer.stub(fake.token("alice"))
    net = timm.create_model("test_resnet", num_classes=10)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    data = buffer.getvalue()

    # refused uploads keep nothing
    for kwargs, code in [
        ({"data": b"not a checkpoint"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"data": data, "size": len(data) + 1}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"data": data, "model": "test_convnext"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"data": data, "filename": "weights.zip"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"data": data, "parent": "trainers/hf"}, grpc.StatusCode.NOT_FOUND),
    ]:
        with pytest.raises(grpc.RpcError) as err:
            upload(
                alice,
                kwargs.pop("model", "test_resnet"),
                kwargs.pop("filename", "test_resnet.pth"),
                kwargs.pop("data"),
                **kwargs,
            )
        assert err.value.code() == code, err.value.details()
        print("refused:", err.value.details())
    assert list(alice.ListWeights(S.ListWeightsRequest(parent="trainers/timm")).weights) == []

    weights = upload(alice, "test_resnet", "test_resnet.pth", data)
    assert weights.name == "trainers/timm/weights/test_resnet"
    assert weights.key == "models/pretrained/timm/test_resnet.pth"
    assert weights.size_bytes == len(data) and weights.uploader == "users/alice"
    import hashlib

    assert weights.sha256 == hashlib.sha256(data).hexdigest()
    listed = alice.ListWeights(S.ListWeightsRequest(parent="trainers/timm"), timeout=10).weights
    assert [w.name for w in listed] == [weights.name]
    caps = alice.GetCapabilities(S.GetCapabilitiesRequest(), timeout=10)
    assert next(m for m in caps.models if m.name == "test_resnet").pretrained_available

    # pretrained=true and init_from=<weights> both start from the upload (head of 10 classes
    # re-initialised for the dataset's 3)
    job, _ = run(alice, small(dataset, epochs=1, pretrained=True))
    assert "loading pretrained weights" in job_log(alice, job.name)
    job, _ = run(alice, small(dataset, epochs=1, init_from=weights.name))
    assert "init_from trainers/timm/weights/test_resnet" in job_log(alice, job.name)

    bob = timm_trainer.stub(fake.token("bob"))
    with pytest.raises(grpc.RpcError) as err:
        bob.DeleteWeights(S.DeleteWeightsRequest(name=weights.name), timeout=10)
    assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
    alice.DeleteWeights(S.DeleteWeightsRequest(name=weights.name), timeout=10)
    assert list(alice.ListWeights(S.ListWeightsRequest(parent="trainers/timm")).weights) == []
    with pytest.raises(grpc.RpcError) as err:
        alice.DeleteWeights(S.DeleteWeightsRequest(name=weights.name), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_yolo_best_pt_loads_in_ultralytics(fake, dataset, shapes, tmp_path_factory, tmp_path):
    server = start_trainer("ultralytics", fake, guard_dir=tmp_path_factory.mktemp("guard-yolo"))
    try:
        alice = server.stub(fake.token("alice"))
        job, _ = run(alice, small(dataset, "yolo11n", epochs=2, learning_rate=0.01))
        path = tmp_path / "best.pt"
        path.write_bytes(download(alice, f"{job.name}/checkpoints/best.pt"))
        from trainers.ultralytics._yolo import setup_offline

        setup_offline(tmp_path / "ultralytics-config")
        from ultralytics import YOLO

        image = val_image(shapes)
        result = YOLO(str(path)).predict(
            Image.open(io.BytesIO(image)).convert("RGB"), imgsz=64, verbose=False
        )[0]
        ours = result.names[int(result.probs.top1)]
        predicted = alice.Predict(S.PredictRequest(name=job.name, image=image), timeout=120)
        assert predicted.classes[0].category_name == ours
        # uploading that best.pt as weights for yolo11n-cls passes the load check
        weights = upload(
            alice, "yolo11n", "best.pt", path.read_bytes(), parent="trainers/ultralytics"
        )
        assert weights.name == "trainers/ultralytics/weights/yolo11n-cls"
        with pytest.raises(grpc.RpcError) as err:  # a classifier is no detector
            upload(
                alice,
                "yolo11n",
                "best.pt",
                path.read_bytes(),
                parent="trainers/ultralytics",
                task_type=common_pb2.TASK_TYPE_OBJECT_DETECTION,
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        print("refused:", err.value.details())
        assert server.network_attempts() == []
    finally:
        server.stop()


def test_hf_best_pt_from_pretrained_folder(fake, dataset, shapes, tmp_path_factory, tmp_path):
    import torch
    import transformers

    from trainers.hf import data

    server = start_trainer("hf", fake, guard_dir=tmp_path_factory.mktemp("guard-hf"))
    try:
        alice = server.stub(fake.token("alice"))
        job, _ = run(alice, small(dataset, "vit-micro", epochs=2, learning_rate=0.001))
        ckpt = torch.load(
            io.BytesIO(download(alice, f"{job.name}/checkpoints/best.pt")),
            map_location="cpu",
            weights_only=False,
        )
        config = transformers.AutoConfig.for_model(**_config_dict(ckpt["config"]))
        model = getattr(transformers, ckpt["architecture"])(config)
        model.load_state_dict(ckpt["model"])
        folder = tmp_path / "saved"
        model.save_pretrained(folder)
        loaded = transformers.AutoModelForImageClassification.from_pretrained(folder).eval()
        image = val_image(shapes)
        pixels = data.to_tensor(
            Image.open(io.BytesIO(image)).convert("RGB"), int(ckpt["image_size"])
        )
        with torch.no_grad():
            logits = loaded(pixel_values=pixels.unsqueeze(0)).logits
        ours = loaded.config.id2label[int(logits.argmax())]
        predicted = alice.Predict(S.PredictRequest(name=job.name, image=image), timeout=120)
        assert predicted.classes[0].category_name == ours
        assert np.isfinite(logits.numpy()).all()
    finally:
        server.stop()


def _config_dict(text: str) -> dict:
    import json

    return json.loads(text)
