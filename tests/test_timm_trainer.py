"""The timm trainer end to end: real dataset_svc and trainer server, real (tiny) trainings.

Classification trains for 2 epochs on synthetic shapes, every epoch arrives over
StreamMetrics, and Predict answers from best.pt. The runtime's idempotency and
kill-and-resume checks run against this trainer too. A network guard proves that no
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
CLASSIFY = common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION
SMALL = {"batch_size": 4, "image_size": 64}
dataset_server = dataset_server_fixture([DEFAULT_BACKEND])


@pytest.fixture(scope="module")
def mesh(dataset_server, tmp_path_factory):
    yield from server_mesh("timm", dataset_server, tmp_path_factory)


def test_capabilities_list_models_and_hyperparameters(mesh):
    trainer, token, *_ = mesh
    caps = trainer.stub(token).GetCapabilities(S.GetCapabilitiesRequest(), timeout=30)
    assert caps.framework == "timm" and caps.framework_version.startswith("1.")
    models = {m.name: m for m in caps.models}
    assert {"resnet18", "efficientnet_b0", "convnext_nano", "test_resnet"} <= set(models)
    assert all(list(m.task_types) == [CLASSIFY] for m in caps.models)
    hps = {h.name: h for h in caps.hyperparameters}
    assert hps["optimizer"].extra and hps["optimizer"].default_value == "adamw"
    assert hps["scheduler"].default_value == "cosine" and "step" in hps["scheduler"].choices
    assert hps["epochs"].default_value and not hps["epochs"].extra
    # where a job trains: the runtime's, listed for every framework (the web form shows them)
    assert not hps["device"].extra and hps["device"].default_value == ""
    assert hps["devices"].type == "int" and hps["devices"].min_value == "1"
    assert "cpu or cuda" in hps["devices"].description


def test_trains_streams_every_epoch_then_predicts(mesh):
    metrics = {"train/loss", "val/loss", "val/top1", "val/top5", "lr"}
    final, reply = train_and_predict(mesh, CLASSIFY, "test_resnet", metrics, **SMALL)
    assert final.best_metric_name == "val/top1"
    doc = mesh[4]
    assert (reply.image_width, reply.image_height) == (64, 64)
    ids = {c["id"]: c["name"] for c in doc["categories"]}
    assert len(reply.classes) == 3
    for c in reply.classes:
        assert ids[c.category_id] == c.category_name  # dataset ids, not class indices
    assert reply.classes[0].score >= reply.classes[-1].score


def test_any_timm_model_name_is_accepted_and_unknown_ones_fail_clearly(mesh):
    from tests._trainers import collect_metrics, start_job

    trainer, token, dataset, *_ = mesh
    stub = trainer.stub(token)
    job = start_job(stub, spec(dataset, CLASSIFY, "test_convnext", epochs=1, **SMALL))
    _, state = collect_metrics(stub, job.name, timeout=600)
    assert state == S.JOB_STATE_SUCCEEDED
    job = start_job(stub, spec(dataset, CLASSIFY, "resnet_18", epochs=1, **SMALL))
    _, state = collect_metrics(stub, job.name, timeout=600)
    final = stub.GetJob(S.GetJobRequest(name=job.name), timeout=10).job
    assert state == S.JOB_STATE_FAILED
    assert "no model named 'resnet_18'" in final.error and "resnet18" in final.error


def test_retried_start_creates_one_job(mesh):
    trainer, token, dataset, *_ = mesh
    training = spec(dataset, CLASSIFY, "test_vit", epochs=1, **SMALL)
    check_retried_start_creates_one_job(trainer.stub(token), training)


def test_trainer_killed_during_epoch_2_resumes_and_counts_each_epoch_once(tmp_path):
    check_kill_and_resume("timm", "classify", "test_resnet", tmp_path, batch_size=4, image_size=96)
