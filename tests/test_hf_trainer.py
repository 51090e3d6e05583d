"""The HuggingFace trainer end to end: real dataset_svc and trainer server, tiny trainings.

Classification (ViT), detection (DETR) and semantic segmentation (SegFormer, masks
rasterized from the polygons) each train for 2 epochs on synthetic shapes, every epoch
arrives over StreamMetrics, and Predict answers from best.pt. The runtime's idempotency
and kill-and-resume checks run against this trainer too. A network guard proves that no
process of the trainer (server, job, predictor) tried to reach the network.
"""

from __future__ import annotations

import pytest

from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture
from tests._job_context import (
    check_kill_and_resume,
    check_retried_start_creates_one_job,
    server_mesh,
    train_and_predict,
)
from tests._trainers import spec
from visionmesh.v1 import common_pb2, trainer_pb2

pytestmark = pytest.mark.timeout(900)

S = trainer_pb2
T = common_pb2
SMALL = {"batch_size": 4, "image_size": 64}
dataset_server = dataset_server_fixture([DEFAULT_BACKEND])


@pytest.fixture(scope="module")
def mesh(dataset_server, tmp_path_factory):
    yield from server_mesh("hf", dataset_server, tmp_path_factory)


def test_capabilities_list_each_task_with_its_models(mesh):
    trainer, token, *_ = mesh
    caps = trainer.stub(token).GetCapabilities(S.GetCapabilitiesRequest(), timeout=30)
    assert caps.framework == "hf" and caps.framework_version
    by_task: dict[int, set[str]] = {}
    for m in caps.models:
        for t in m.task_types:
            by_task.setdefault(t, set()).add(m.name)
    assert {"vit-micro", "convnext-tiny", "swin-tiny", "deit-tiny"} <= by_task[
        T.TASK_TYPE_IMAGE_CLASSIFICATION
    ]
    assert {"detr-micro", "conditional-detr-resnet50", "yolos-tiny"} <= by_task[
        T.TASK_TYPE_OBJECT_DETECTION
    ]
    assert {"segformer-b0"} <= by_task[T.TASK_TYPE_SEMANTIC_SEGMENTATION]
    assert set(by_task) == {
        T.TASK_TYPE_IMAGE_CLASSIFICATION,
        T.TASK_TYPE_OBJECT_DETECTION,
        T.TASK_TYPE_SEMANTIC_SEGMENTATION,
    }
    hps = {h.name: h for h in caps.hyperparameters}
    assert hps["learning_rate"].default_value == "0.0001"
    assert hps["scheduler"].extra and "cosine" in hps["scheduler"].choices


def test_classification_trains_streams_every_epoch_then_predicts(mesh):
    metrics = {"train/loss", "val/loss", "val/top1", "val/top5", "lr"}
    final, reply = train_and_predict(
        mesh, T.TASK_TYPE_IMAGE_CLASSIFICATION, "vit-micro", metrics, **SMALL
    )
    assert final.best_metric_name == "val/top1"
    ids = {c["id"]: c["name"] for c in mesh[4]["categories"]}
    assert len(reply.classes) == 3
    assert all(ids[c.category_id] == c.category_name for c in reply.classes)


def test_detection_trains_streams_every_epoch_then_predicts(mesh):
    metrics = {"train/loss", "train/box_loss", "val/loss", "val/map50", "val/map50_95", "lr"}
    final, reply = train_and_predict(
        mesh, T.TASK_TYPE_OBJECT_DETECTION, "detr-micro", metrics, **SMALL
    )
    assert final.best_metric_name == "val/map50_95"
    ids = {c["id"]: c["name"] for c in mesh[4]["categories"]}
    assert reply.detections, "an untrained DETR still proposes boxes at conf 1e-4"
    for d in reply.detections:
        assert ids[d.category_id] == d.category_name
        assert d.box.width >= 0 and d.box.x + d.box.width <= 64.01


def test_segmentation_trains_on_rasterized_polygons_then_predicts(mesh):
    metrics = {"train/loss", "val/loss", "val/miou", "val/pixel_accuracy", "lr"}
    final, reply = train_and_predict(
        mesh,
        T.TASK_TYPE_SEMANTIC_SEGMENTATION,
        "segformer-micro",
        metrics,
        learning_rate=0.003,
        **SMALL,
    )
    assert final.best_metric_name == "val/miou"
    assert final.conversion  # the job records how the polygons were converted
    assert (reply.image_width, reply.image_height) == (64, 64)
    for d in reply.detections:  # two epochs may still label every pixel background
        assert d.polygons and len(d.polygons[0].coordinates) >= 6


def test_retried_start_creates_one_job(mesh):
    trainer, token, dataset, *_ = mesh
    training = spec(dataset, T.TASK_TYPE_OBJECT_DETECTION, "yolos-micro", epochs=1, **SMALL)
    check_retried_start_creates_one_job(trainer.stub(token), training)


def test_trainer_killed_during_epoch_2_resumes_and_counts_each_epoch_once(tmp_path):
    check_kill_and_resume("hf", "detect", "detr-micro", tmp_path, batch_size=4, image_size=96)
