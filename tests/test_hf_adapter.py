"""The HuggingFace adapter in-process: every task trains, checkpoints, resumes, predicts.

Runs ``HFAdapter().train(job)`` with :class:`tests._job_context.RecordingJob` on tiny
synthetic datasets in the prepared layouts (ImageFolder for classification, COCO with
non-contiguous category ids for detection and segmentation), "-micro" model configs at
64 px, every socket connection refused.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests._job_context import (
    RecordingJob,
    make_coco,
    make_imagefolder,
    prepared_shapes,
    shape_png,
    spec,
)
from tests._servers import child_env
from trainers.hf.adapter import MODELS, HFAdapter
from trainers.runtime.adapter import (
    IMAGE_CLASSIFICATION,
    INSTANCE_SEGMENTATION,
    OBJECT_DETECTION,
    SEMANTIC_SEGMENTATION,
    SpecError,
)

CLS_METRICS = {"train/loss", "val/loss", "val/top1", "val/top5", "lr"}
DET_METRICS = {
    "train/loss",
    "train/cls_loss",
    "train/box_loss",
    "train/giou_loss",
    "val/loss",
    "val/map50",
    "val/map50_95",
    "lr",
}
SEG_METRICS = {"train/loss", "val/loss", "val/miou", "val/pixel_accuracy", "lr"}


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] or kwargs}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("imagefolder")
    return root, make_imagefolder(root, n_train=12, n_val=6, size=64)


@pytest.fixture(scope="module")
def coco(tmp_path_factory):
    root = tmp_path_factory.mktemp("coco")
    return root, make_coco(root, n_train=8, n_val=4, size=64)


def new_job(tmp_path: Path, dataset, task: str, model: str, name="job", **overrides):
    root, names = dataset
    job_fields = {
        k: overrides.pop(k)
        for k in ("resume_from", "pretrained_weights", "stop_after")
        if k in overrides
    }
    return RecordingJob(spec(task, model, **overrides), root, names, tmp_path / name, **job_fields)


def predict(job: RecordingJob, image: bytes, task: str, confidence: float = 0.0, **kw):
    return HFAdapter().predict(
        job.last_checkpoint,
        image,
        task_type=task,
        class_names=kw.get("class_names", job.class_names),
        confidence=confidence,
        max_detections=kw.get("max_detections", 100),
        device="cpu",
    )


def sample_image(size=80, kinds=("circle", "square")) -> bytes:
    return shape_png(size, list(kinds), seed=3, class_colours=True)


# --- capabilities -------------------------------------------------------------------------


def test_server_side_calls_do_not_import_the_framework():
    code = (
        "import json, sys\n"
        "from trainers.hf.adapter import HFAdapter\n"
        "a = HFAdapter()\n"
        "tasks = ('image_classification', 'object_detection', 'semantic_segmentation')\n"
        "out = dict(models={m.name: list(m.task_types) for m in a.models()},\n"
        "           hp=[h.name for h in a.hyperparameters()], version=a.framework_version(),\n"
        "           fmt={t: a.dataset_format(t) for t in tasks},\n"
        "           best={t: a.best_metric(t) for t in tasks})\n"
        "out['imported'] = sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules)\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, check=True
    )
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["imported"] == []
    assert out["version"].split(".")[0].isdigit()
    assert out["fmt"] == {
        IMAGE_CLASSIFICATION: "imagefolder",
        OBJECT_DETECTION: "coco",
        SEMANTIC_SEGMENTATION: "coco",
    }
    assert out["best"] == {
        IMAGE_CLASSIFICATION: "val/top1",
        OBJECT_DETECTION: "val/map50_95",
        SEMANTIC_SEGMENTATION: "val/miou",
    }
    families = {name.split("-")[0] for name in out["models"]}
    assert {"vit", "deit", "convnext", "swin", "detr", "conditional", "yolos", "segformer"} <= (
        families
    )


def test_check_spec_validates_task_model_and_extras():
    adapter = HFAdapter()
    adapter.check_spec(spec(OBJECT_DETECTION, "detr-micro", extra={"grad_clip": "0.5"}))
    cases = [
        (spec(INSTANCE_SEGMENTATION, "segformer-micro"), "spec.task_type"),
        (spec(OBJECT_DETECTION, "vit-micro"), "spec.model"),
        (spec(IMAGE_CLASSIFICATION, "vit-micro", extra={"optimiser": "sgd"}), "optimiser"),
        (spec(IMAGE_CLASSIFICATION, "vit-micro", extra={"optimizer": "lbfgs"}), "optimizer"),
        (spec(IMAGE_CLASSIFICATION, "vit-micro", extra={"warmup_epochs": "x"}), "warmup"),
    ]
    for bad, field in cases:
        with pytest.raises(SpecError) as err:
            adapter.check_spec(bad)
        assert field in err.value.field
    with pytest.raises(ValueError, match="not supported"):
        adapter.dataset_format(INSTANCE_SEGMENTATION)


def test_every_catalogued_model_builds_and_computes_its_loss():
    """Small configs run a training forward pass; large ones are built on the meta device."""
    import torch

    from trainers.hf import models

    names = ["a", "b", "c"]
    size = 64
    for name, (task, _, _) in MODELS.items():
        config, architecture = models.build_config(name, names, size)
        if not name.endswith(("-micro", "-tiny", "-b0")) or name == "convnext-tiny":
            with torch.device("meta"):
                model = models.instantiate(config, architecture)
            assert sum(p.numel() for p in model.parameters()) > 3_000_000, name
            continue
        model = models.instantiate(config, architecture)
        x = torch.randn(1, 3, size, size)
        if task == IMAGE_CLASSIFICATION:
            out = model(pixel_values=x, labels=torch.tensor([1]))
        elif task == OBJECT_DETECTION:
            labels = [{"class_labels": torch.tensor([2]), "boxes": torch.tensor([[0.5] * 4])}]
            out = model(pixel_values=x, labels=labels)
        else:
            out = model(pixel_values=x, labels=torch.zeros(1, size, size, dtype=torch.long))
        assert torch.isfinite(out.loss), name
        rebuilt = models.rebuild(models.config_to_json(model.config), architecture)
        assert type(rebuilt) is type(model)
        rebuilt.load_state_dict(model.state_dict())


# --- classification -----------------------------------------------------------------------


def test_classification_trains_reports_and_predicts(tmp_path, folder):
    job = new_job(tmp_path, folder, IMAGE_CLASSIFICATION, "vit-micro", epochs=2)
    HFAdapter().train(job)
    assert [e.epoch for e in job.epochs] == [1, 2]
    for e in job.epochs:
        assert set(e.values) == CLS_METRICS
        assert 0 <= e.values["val/top1"] <= e.values["val/top5"] <= 1
        assert e.images_seen == 8
    prediction = predict(job, sample_image(90), IMAGE_CLASSIFICATION, class_names=[])
    assert prediction.task_type == IMAGE_CLASSIFICATION
    assert (prediction.image_width, prediction.image_height) == (90, 90)
    assert {c["category_name"] for c in prediction.classes} == set(folder[1])
    assert abs(sum(c["score"] for c in prediction.classes) - 1) < 1e-4


@pytest.mark.parametrize(
    "model,augmentation",
    [("deit-micro", "light"), ("convnext-micro", "flip"), ("swin-micro", "none")],
)
def test_other_classifiers_train_one_epoch(tmp_path, folder, model, augmentation):
    job = new_job(
        tmp_path,
        folder,
        IMAGE_CLASSIFICATION,
        model,
        epochs=1,
        extra={"augmentation": augmentation},
    )
    HFAdapter().train(job)
    assert [e.epoch for e in job.epochs] == [1]
    assert set(job.epochs[0].values) == CLS_METRICS
    assert len(predict(job, sample_image(), IMAGE_CLASSIFICATION).classes) == 3


# --- detection ----------------------------------------------------------------------------


def test_detection_trains_reports_map_and_predicts_pixel_boxes(tmp_path, coco):
    job = new_job(tmp_path, coco, OBJECT_DETECTION, "detr-micro", epochs=2, batch_size=4)
    HFAdapter().train(job)
    assert [e.epoch for e in job.epochs] == [1, 2]
    for e in job.epochs:
        assert set(e.values) == DET_METRICS
        assert 0 <= e.values["val/map50_95"] <= e.values["val/map50"] <= 1
        assert e.images_seen == 8
    prediction = predict(job, sample_image(120), OBJECT_DETECTION, max_detections=7)
    assert prediction.task_type == OBJECT_DETECTION
    assert (prediction.image_width, prediction.image_height) == (120, 120)
    assert 0 < len(prediction.detections) <= 7
    for d in prediction.detections:
        x, y, w, h = d["box"]
        assert 0 <= x and 0 <= y and w >= 0 and h >= 0
        assert x + w <= 120.01 and y + h <= 120.01
        assert coco[1][d["category_id"]] == d["category_name"]
    scores = [d["score"] for d in prediction.detections]
    assert scores == sorted(scores, reverse=True)
    assert predict(job, sample_image(120), OBJECT_DETECTION, confidence=1.0).detections == []


@pytest.mark.parametrize("model", ["conditional-detr-micro", "yolos-micro"])
def test_other_detectors_train_one_epoch(tmp_path, coco, model):
    job = new_job(tmp_path, coco, OBJECT_DETECTION, model, epochs=1, batch_size=4)
    HFAdapter().train(job)
    assert [e.epoch for e in job.epochs] == [1]
    assert set(job.epochs[0].values) == DET_METRICS
    assert predict(job, sample_image(), OBJECT_DETECTION).detections


def test_detection_stop_then_resume_continues_from_next_epoch(tmp_path, coco):
    first = new_job(tmp_path, coco, OBJECT_DETECTION, "detr-micro", "first", epochs=3, stop_after=1)
    HFAdapter().train(first)
    assert [e.epoch for e in first.epochs] == [1]
    resumed = new_job(
        tmp_path,
        coco,
        OBJECT_DETECTION,
        "detr-micro",
        "resumed",
        epochs=3,
        resume_from=first.last_checkpoint,
    )
    HFAdapter().train(resumed)
    assert [e.epoch for e in resumed.epochs] == [2, 3]
    assert any("resuming" in line for line in resumed.lines)
    assert resumed.epochs[0].values["lr"] < first.epochs[0].values["lr"]


def test_detection_learns_the_shapes_dataset(tmp_path):
    """mAP50 rises over epochs on visionmesh.shapes (checks/hf_detection.py goes further)."""
    root, names = prepared_shapes(
        tmp_path, OBJECT_DETECTION, "coco", images=160, size=96, max_shapes=2
    )
    job = RecordingJob(
        spec(OBJECT_DETECTION, "rt-detr-micro", epochs=10, image_size=96, learning_rate=5e-4),
        root,
        names,
        tmp_path / "job",
    )
    HFAdapter().train(job)
    map50 = [e.values["val/map50"] for e in job.epochs]
    assert len(map50) == 10
    assert map50[0] < 0.02 and max(map50[-3:]) >= 0.05, map50


# --- semantic segmentation ----------------------------------------------------------------


def test_segmentation_trains_reports_miou_and_predicts_polygons(tmp_path, coco):
    job = new_job(
        tmp_path,
        coco,
        SEMANTIC_SEGMENTATION,
        "segformer-micro",
        epochs=2,
        batch_size=4,
        learning_rate=3e-3,
    )
    HFAdapter().train(job)
    assert [e.epoch for e in job.epochs] == [1, 2]
    for e in job.epochs:
        assert set(e.values) == SEG_METRICS
        assert 0 <= e.values["val/miou"] <= 1 and 0 <= e.values["val/pixel_accuracy"] <= 1
    check_segmentation(predict(job, sample_image(100), SEMANTIC_SEGMENTATION), coco[1], 100)

    # Two epochs mostly predict background; make "square" (class 1 -> label 2) win
    # everywhere to check the outline path end to end.
    import torch

    ckpt = torch.load(job.last_checkpoint, weights_only=True)
    bias = ckpt["model"]["decode_head.classifier.bias"]
    bias.zero_()
    bias[2] = 50.0
    forced = tmp_path / "forced.pt"
    torch.save(ckpt, forced)
    prediction = HFAdapter().predict(
        forced,
        sample_image(100),
        task_type=SEMANTIC_SEGMENTATION,
        class_names=coco[1],
        confidence=0.25,
        max_detections=100,
        device="cpu",
    )
    check_segmentation(prediction, coco[1], 100)
    assert [d["category_name"] for d in prediction.detections] == ["square"]
    (square,) = prediction.detections
    assert square["box"] == (0.0, 0.0, 100.0, 100.0) and square["score"] > 0.99
    xs, ys = square["polygons"][0][0::2], square["polygons"][0][1::2]
    assert (min(xs), max(xs), min(ys), max(ys)) == (0.5, 99.5, 0.5, 99.5)


def check_segmentation(prediction, class_names, size):
    assert prediction.task_type == SEMANTIC_SEGMENTATION
    assert (prediction.image_width, prediction.image_height) == (size, size)
    for d in prediction.detections:
        assert class_names[d["category_id"]] == d["category_name"]
        assert d["polygons"] and all(len(p) >= 6 and len(p) % 2 == 0 for p in d["polygons"])
        x, y, w, h = d["box"]
        for polygon in d["polygons"]:
            xs, ys = polygon[0::2], polygon[1::2]
            assert x <= min(xs) and max(xs) <= x + w and y <= min(ys) and max(ys) <= y + h


# --- errors and options -------------------------------------------------------------------


def test_pretrained_without_weights_names_the_store_key(tmp_path, folder):
    job = new_job(tmp_path, folder, IMAGE_CLASSIFICATION, "vit-micro", pretrained=True)
    with pytest.raises(FileNotFoundError, match="models/pretrained/hf/vit-micro"):
        HFAdapter().train(job)


def test_pretrained_weights_load_where_shapes_agree(tmp_path, folder):
    import torch

    from trainers.hf import models

    config, architecture = models.build_config("vit-micro", [f"c{i}" for i in range(10)], 64)
    source = models.instantiate(config, architecture)
    weights = tmp_path / "vit-micro.pt"
    torch.save(source.state_dict(), weights)
    job = new_job(
        tmp_path,
        folder,
        IMAGE_CLASSIFICATION,
        "vit-micro",
        epochs=1,
        pretrained=True,
        pretrained_weights=weights,
        learning_rate=1e-9,
    )
    HFAdapter().train(job)
    assert any("pretrained weights vit-micro.pt" in line for line in job.lines)
    trained = torch.load(job.last_checkpoint, weights_only=True)["model"]
    key = "vit.embeddings.patch_embeddings.projection.weight"
    assert torch.allclose(trained[key], source.state_dict()[key], atol=1e-5)
    assert trained["classifier.weight"].shape[0] == 3


def test_model_of_another_task_is_refused(tmp_path, coco):
    job = new_job(tmp_path, coco, OBJECT_DETECTION, "segformer-micro")
    with pytest.raises(ValueError, match="trains semantic_segmentation"):
        HFAdapter().train(job)


def test_train_sets_the_offline_switches(tmp_path, folder, monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    job = new_job(tmp_path, folder, IMAGE_CLASSIFICATION, "vit-micro", epochs=1)
    HFAdapter().train(job)
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1" and os.environ["TRANSFORMERS_OFFLINE"] == "1"
    assert os.environ["HF_DATASETS_OFFLINE"] == "1"


# --- helpers: rasterizing, outlines, COCO mAP ---------------------------------------------


def test_rasterize_polygons_and_rle_and_overlaps():
    from pycocotools import mask as mask_utils

    from trainers.hf.data import rasterize, semantic_mask

    square = {"category_id": 3, "segmentation": [[10, 10, 30, 10, 30, 30, 10, 30]]}
    region = rasterize(square, 40, 50)
    assert region.shape == (40, 50) and 380 <= region.sum() <= 460  # ~20x20
    rle = mask_utils.encode(np.asfortranarray(region.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode()
    assert (rasterize({"segmentation": rle}, 40, 50) == region).all()
    assert rasterize({"segmentation": []}, 40, 50) is None
    small = {"category_id": 7, "segmentation": [[15, 15, 20, 15, 20, 20, 15, 20]]}
    mask = semantic_mask([small, square], {3: 0, 7: 1}, 40, 50)
    assert mask[17, 17] == 2  # the small shape stays on top of the large one
    assert mask[12, 12] == 1 and mask[0, 0] == 0


def test_region_polygons_outline_each_connected_region():
    from trainers.hf.metrics import region_polygons

    mask = np.zeros((60, 80), dtype=bool)
    mask[10:30, 5:25] = True  # square
    yy, xx = np.mgrid[:60, :80]
    mask |= (yy - 40) ** 2 + (xx - 55) ** 2 <= 12**2  # disc
    mask[0, 79] = True  # a speck below min_pixels
    polygons = region_polygons(mask, min_pixels=4)
    assert len(polygons) == 2

    def area(p):
        xs, ys = np.array(p[0::2]), np.array(p[1::2])
        return 0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1)))

    square = min(polygons, key=len)
    assert len(square) == 8  # simplified to its 4 corners
    xs, ys = square[0::2], square[1::2]
    assert (min(xs), max(xs), min(ys), max(ys)) == (5.5, 24.5, 10.5, 29.5)
    disc = max(polygons, key=len)
    assert abs(area(disc) - np.pi * 12**2) < 0.15 * np.pi * 12**2


def test_coco_map_perfect_and_empty():
    from trainers.hf.metrics import coco_map

    gt = {
        "info": {},
        "images": [{"id": 1, "width": 50, "height": 50}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 9, "bbox": [5, 5, 20, 20], "area": 400.0, "iscrowd": 0}
        ],
        "categories": [{"id": 9, "name": "x"}],
    }  # fmt: skip
    perfect = [{"image_id": 1, "category_id": 9, "bbox": [5, 5, 20, 20], "score": 0.9}]
    assert coco_map(gt, perfect) == pytest.approx({"val/map50": 1.0, "val/map50_95": 1.0})
    assert coco_map(gt, []) == {"val/map50": 0.0, "val/map50_95": 0.0}
    shifted = [{"image_id": 1, "category_id": 9, "bbox": [9, 9, 20, 20], "score": 0.9}]
    result = coco_map(gt, shifted)  # IoU 0.47: below every threshold
    assert result["val/map50"] == 0.0
