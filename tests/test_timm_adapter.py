"""The timm adapter in-process: capabilities, training, checkpoints, resume, Predict.

Runs ``TimmAdapter().train(job)`` with :class:`tests._job_context.RecordingJob` on tiny
synthetic ImageFolder datasets (timm's ``test_*`` networks at 64 px), with every socket
connection refused so that any network attempt fails the test.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests._job_context import RecordingJob, make_imagefolder, shape_png, spec
from tests._servers import ROOT, child_env
from trainers.runtime.adapter import IMAGE_CLASSIFICATION, OBJECT_DETECTION
from trainers.timm.adapter import TimmAdapter

IMAGENET10 = ROOT.parent / "shared" / "data" / "cls-imagenet-10"
METRICS = {"train/loss", "val/loss", "val/top1", "val/top5", "lr"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> tuple[Path, list[str]]:
    root = tmp_path_factory.mktemp("shapes-imagefolder")
    return root, make_imagefolder(root, n_train=12, n_val=6, size=64)


def new_job(tmp_path: Path, shapes, name: str = "job", **overrides) -> RecordingJob:
    root, names = shapes
    model = overrides.pop("model", "test_resnet")
    job_fields = {
        k: overrides.pop(k)
        for k in ("resume_from", "pretrained_weights", "stop_after")
        if k in overrides
    }
    return RecordingJob(
        spec(IMAGE_CLASSIFICATION, model, **overrides),
        root,
        names,
        tmp_path / name,
        **job_fields,
    )


def test_server_side_calls_do_not_import_the_framework():
    code = (
        "import json, sys\n"
        "from trainers.timm.adapter import TimmAdapter\n"
        "a = TimmAdapter()\n"
        "out = dict(models=[m.name for m in a.models()], hp=[h.name for h in a.hyperparameters()],\n"
        "           fmt=a.dataset_format('image_classification'), version=a.framework_version(),\n"
        "           best=a.best_metric('image_classification'))\n"
        "out['imported'] = sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules)\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, check=True
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["imported"] == []
    assert out["fmt"] == "imagefolder"
    assert out["best"] == "val/top1"
    assert out["version"].startswith("1.")
    assert {"resnet18", "efficientnet_b0", "vit_tiny_patch16_224", "test_resnet"} <= set(
        out["models"]
    )


def test_capabilities_describe_models_and_hyperparameters():
    adapter = TimmAdapter()
    models = adapter.models()
    assert all(m.task_types == (IMAGE_CLASSIFICATION,) and m.family for m in models)
    hps = {h.name: h for h in adapter.hyperparameters()}
    assert len(hps) == len(adapter.hyperparameters())
    for name in ("epochs", "batch_size", "image_size", "learning_rate", "seed", "patience"):
        assert not hps[name].extra and hps[name].default
    for name in ("optimizer", "scheduler", "weight_decay", "warmup_epochs", "label_smoothing"):
        assert hps[name].extra
    assert hps["optimizer"].default == "adamw" and "sgd" in hps["optimizer"].choices
    assert hps["scheduler"].default == "cosine" and "step" in hps["scheduler"].choices
    for h in hps.values():
        if h.choices:
            assert h.default in h.choices
        if h.type in ("int", "float") and h.default:
            float(h.default)
    with pytest.raises(ValueError, match="image_classification only"):
        adapter.dataset_format(OBJECT_DETECTION)


def test_train_reports_every_epoch_and_predicts(tmp_path, shapes):
    job = new_job(tmp_path, shapes, epochs=2)
    TimmAdapter().train(job)

    assert [e.epoch for e in job.epochs] == [1, 2]
    for e in job.epochs:
        assert set(e.values) == METRICS
        assert 0.0 <= e.values["val/top1"] <= e.values["val/top5"] <= 1.0
        assert e.values["train/loss"] > 0 and e.values["val/loss"] > 0
        assert e.images_seen == 8  # 12 images, batch 8, last partial batch dropped
        assert e.checkpoint is not None and e.checkpoint.stat().st_size > 0
    assert job.epochs[0].values["lr"] > job.epochs[1].values["lr"]  # cosine schedule
    assert any("test_resnet" in line for line in job.lines)

    prediction = TimmAdapter().predict(
        job.last_checkpoint,
        shape_png(90, ["circle"], seed=1),
        task_type=IMAGE_CLASSIFICATION,
        class_names=[],  # the checkpoint carries its class names
        confidence=0.25,
        max_detections=100,
        device="cpu",
    )
    assert (prediction.image_width, prediction.image_height) == (90, 90)
    assert [c["category_name"] for c in prediction.classes] != []
    assert {c["category_name"] for c in prediction.classes} == set(shapes[1])
    scores = [c["score"] for c in prediction.classes]
    assert scores == sorted(scores, reverse=True) and abs(sum(scores) - 1) < 1e-4
    for c in prediction.classes:
        assert shapes[1][c["category_id"]] == c["category_name"]


@pytest.mark.parametrize("model", ["test_vit", "test_convnext", "test_efficientnet"])
def test_other_architectures_train_one_epoch(tmp_path, shapes, model):
    job = new_job(tmp_path, shapes, model=model, epochs=1, extra={"optimizer": "sgd"})
    TimmAdapter().train(job)
    assert [e.epoch for e in job.epochs] == [1]
    assert set(job.epochs[0].values) == METRICS


def test_stop_request_then_resume_continues_from_next_epoch(tmp_path, shapes):
    first = new_job(tmp_path, shapes, "first", epochs=3, stop_after=1)
    TimmAdapter().train(first)
    assert [e.epoch for e in first.epochs] == [1]  # report_epoch returned True

    resumed = new_job(tmp_path, shapes, "resumed", epochs=3, resume_from=first.last_checkpoint)
    TimmAdapter().train(resumed)
    assert [e.epoch for e in resumed.epochs] == [2, 3]
    assert any("resuming" in line for line in resumed.lines)
    # The schedule continues where it stopped rather than restarting at the peak.
    assert resumed.epochs[0].values["lr"] < first.epochs[0].values["lr"]


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path, shapes):
    first = new_job(tmp_path, shapes, "first", epochs=1)
    TimmAdapter().train(first)
    other = new_job(
        tmp_path, shapes, "other", model="test_vit", epochs=2, resume_from=first.last_checkpoint
    )
    with pytest.raises(ValueError, match="another model"):
        TimmAdapter().train(other)


def test_patience_stops_when_top1_does_not_improve(tmp_path, shapes):
    job = new_job(tmp_path, shapes, epochs=5, patience=1, learning_rate=0.0)
    TimmAdapter().train(job)
    assert [e.epoch for e in job.epochs] == [1, 2]
    assert any("early stop" in line for line in job.lines)


def test_unknown_model_fails_with_close_matches(tmp_path, shapes):
    job = new_job(tmp_path, shapes, model="resnet_18")
    with pytest.raises(ValueError, match=r"no model named 'resnet_18'.*resnet18"):
        TimmAdapter().train(job)


def test_pretrained_without_weights_names_the_store_key(tmp_path, shapes):
    job = new_job(tmp_path, shapes, pretrained=True)
    with pytest.raises(FileNotFoundError, match="models/pretrained/timm/test_resnet"):
        TimmAdapter().train(job)


def test_pretrained_weights_load_from_a_local_file(tmp_path, shapes):
    import timm
    import torch

    source = timm.create_model("test_resnet", pretrained=False)  # 1000-class head
    weights = tmp_path / "test_resnet.pt"
    torch.save(source.state_dict(), weights)
    job = new_job(
        tmp_path, shapes, epochs=1, pretrained=True, pretrained_weights=weights, learning_rate=1e-9
    )
    TimmAdapter().train(job)
    trained = torch.load(job.last_checkpoint, weights_only=True)["model"]
    stem = next(k for k in trained if k.endswith("weight") and trained[k].dim() == 4)
    assert torch.allclose(trained[stem], source.state_dict()[stem], atol=1e-5)
    assert trained["fc.weight"].shape[0] == 3  # new head for the job's classes


def test_malformed_extra_is_rejected(tmp_path, shapes):
    job = new_job(tmp_path, shapes, extra={"weight_decay": "lots"})
    with pytest.raises(ValueError, match="weight_decay"):
        TimmAdapter().train(job)


@pytest.mark.skipif(not IMAGENET10.is_dir(), reason=f"sample data not present at {IMAGENET10}")
def test_trains_on_the_imagenet_sample(tmp_path):
    names = sorted(p.name for p in (IMAGENET10 / "train").iterdir() if p.is_dir())
    job = RecordingJob(
        spec(IMAGE_CLASSIFICATION, "test_resnet", epochs=1, image_size=64),
        IMAGENET10,
        names,
        tmp_path / "job",
    )
    TimmAdapter().train(job)
    assert [e.epoch for e in job.epochs] == [1]
    assert set(job.epochs[0].values) == METRICS
    image = next((IMAGENET10 / "val").rglob("*.JPEG")).read_bytes()
    prediction = TimmAdapter().predict(
        job.last_checkpoint,
        image,
        task_type=IMAGE_CLASSIFICATION,
        class_names=names,
        confidence=0.25,
        max_detections=100,
        device="cpu",
    )
    assert len(prediction.classes) == 5 and prediction.image_width > 64
