"""The ultralytics trainer end to end: real dataset_svc and trainer servers, real trainings.

Each of detect / segment / classify / pose trains for 2 epochs on tiny synthetic shapes,
streams every epoch, and its best.pt is downloaded and used by Predict. A network guard
proves no process of the trainer (server, job, predictor) tried to reach the network.
"""

from __future__ import annotations

import grpc
import pytest

from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture
from tests._trainers import (
    FakeDatasetService,
    collect_metrics,
    shapes_dataset,
    spec,
    start_job,
    start_trainer,
    state_name,
    upload_dataset,
)
from trainers.ultralytics import _yolo
from trainers.ultralytics.adapter import UltralyticsAdapter
from visionmesh.v1 import common_pb2, dataset_pb2, trainer_pb2

pytestmark = pytest.mark.timeout(900)

S = trainer_pb2
dataset_server = dataset_server_fixture([DEFAULT_BACKEND])


# -- adapter units (no framework import) ------------------------------------------------------


def test_models_cover_yolo11_and_yolo26_every_scale_and_task():
    adapter = UltralyticsAdapter()
    names = {m.name for m in adapter.models()}
    assert names == {f"{f}{s}" for f in ("yolo11", "yolo26") for s in "nsmlx"}
    assert adapter.resolve_model("yolo26m", "instance_segmentation") == "yolo26m-seg"
    assert adapter.resolve_model("yolo11n", "pose_estimation") == "yolo11n-pose"
    assert adapter.resolve_model("yolo11x", "image_classification") == "yolo11x-cls"
    assert adapter.resolve_model("yolo11n-seg", "instance_segmentation") == "yolo11n-seg"
    assert adapter.pretrained_key("yolo11n", "object_detection") == (
        "models/pretrained/ultralytics/yolo11n.pt"
    )
    assert adapter.dataset_format("image_classification") == "imagefolder"
    assert adapter.dataset_format("pose_estimation") == "yolo"
    assert adapter.best_metric("instance_segmentation") == "val/mask_map50_95"


def test_metric_names_are_normalized():
    raw = {
        "train/box_loss": 1.0,
        "train/cls_loss": 2.0,
        "train/dfl_loss": 0.5,
        "metrics/precision(B)": 0.1,
        "metrics/recall(B)": 0.2,
        "metrics/mAP50(B)": 0.3,
        "metrics/mAP50-95(B)": 0.25,
        "metrics/mAP50(M)": 0.4,
        "metrics/mAP50-95(M)": 0.35,
        "metrics/mAP50(P)": 0.5,
        "metrics/mAP50-95(P)": 0.45,
        "metrics/accuracy_top1": 0.9,
        "metrics/accuracy_top5": 1.0,
        "val/box_loss": 0.5,
        "val/cls_loss": 0.25,
        "lr/pg0": 0.01,
        "lr/pg1": 0.02,
        "fitness": 0.7,
    }
    out = _yolo.normalize_metrics(raw)
    assert out == {
        "train/box_loss": 1.0,
        "train/cls_loss": 2.0,
        "train/dfl_loss": 0.5,
        "train/loss": 3.5,
        "val/precision": 0.1,
        "val/recall": 0.2,
        "val/map50": 0.3,
        "val/map50_95": 0.25,
        "val/mask_map50": 0.4,
        "val/mask_map50_95": 0.35,
        "val/pose_map50": 0.5,
        "val/pose_map50_95": 0.45,
        "val/top1": 0.9,
        "val/top5": 1.0,
        "val/box_loss": 0.5,
        "val/cls_loss": 0.25,
        "val/loss": 0.75,
        "lr": 0.01,
    }


def test_extras_are_typed_and_devices_mapped():
    assert _yolo.parse_extra("true") is True
    assert _yolo.parse_extra("0.5") == 0.5
    assert _yolo.parse_extra("AdamW") == "AdamW"
    assert _yolo.ultralytics_device("cuda") == "0"
    assert _yolo.ultralytics_device("cuda:1") == "1"
    assert _yolo.ultralytics_device("") == "cpu"


# -- end to end -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mesh(dataset_server, tmp_path_factory):
    """(trainer, signed-in dataset client or None, make_dataset) over the real dataset_svc.

    Falls back to the in-process stand-in only while dataset_svc cannot import
    annotations yet (UNIMPLEMENTED), so the trainer path keeps being exercised.
    """
    alice = dataset_server.user("alice")
    files, doc = shapes_dataset(12, size=64)
    try:
        dataset = upload_dataset(alice, files, doc)
        trainer = start_trainer(
            "ultralytics", dataset_server, guard_dir=tmp_path_factory.mktemp("guard")
        )
        yield trainer, alice.token, dataset.name, files, doc
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
        import warnings

        warnings.warn(
            f"dataset_svc cannot import annotations yet ({exc.details()}): using the "
            "in-process stand-in for dataset_svc",
            stacklevel=1,
        )
        fake = FakeDatasetService(tmp_path_factory.mktemp("fake-home"))
        name = fake.add_dataset(files, doc, "alice")
        trainer = start_trainer("ultralytics", fake, guard_dir=tmp_path_factory.mktemp("guard"))
        yield trainer, fake.token("alice"), name, files, doc
        fake.stop()
    assert trainer.network_attempts() == [], trainer.network_attempts()
    if trainer.process.proc.poll() is None:
        assert trainer.stop() == 0


TASKS = {
    "detect": (common_pb2.TASK_TYPE_OBJECT_DETECTION, "yolo11n", "val/map50"),
    "segment": (common_pb2.TASK_TYPE_INSTANCE_SEGMENTATION, "yolo11n", "val/mask_map50"),
    "classify": (common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION, "yolo26n", "val/top1"),
    "pose": (common_pb2.TASK_TYPE_POSE_ESTIMATION, "yolo26n", "val/pose_map50"),
}


@pytest.mark.parametrize("task", list(TASKS))
def test_trains_streams_every_epoch_then_predicts(mesh, task):
    trainer, token, dataset, files, doc = mesh
    task_type, model, metric = TASKS[task]
    stub = trainer.stub(token)
    job = start_job(
        stub, spec(dataset, task_type, model, epochs=2, batch_size=4, image_size=64, seed=1)
    )
    assert job.snapshot.startswith(f"{dataset}/snapshots/")
    epochs, state = collect_metrics(stub, job.name, timeout=600)
    final = stub.GetJob(S.GetJobRequest(name=job.name), timeout=10).job
    assert state == S.JOB_STATE_SUCCEEDED, f"{state_name(state)}: {final.error}"
    assert [e.epoch for e in epochs] == [1, 2]
    for e in epochs:
        assert e.epochs == 2 and metric in e.values and "lr" in e.values
        assert "train/loss" in e.values and e.epoch_seconds > 0
    assert final.current_epoch == 2 and final.best_epoch in (1, 2)
    assert final.best_metric_name and final.best_metric_name in final.best_metrics
    names = {c.filename: c for c in final.checkpoints}
    assert {"best.pt", "last.pt"} <= set(names)

    # download best.pt from the object store, as a client would
    from visionmesh.store import open_store

    store = open_store(trainer.env["VISIONMESH_STORE_URL"])
    best = store.get_bytes(names["best.pt"].key)
    assert best[:2] == b"PK" and len(best) == names["best.pt"].size_bytes

    image = files[doc["images"][0]["file_name"]]
    reply = stub.Predict(
        S.PredictRequest(name=job.name, image=image, confidence_threshold=0.0001), timeout=300
    )
    assert reply.task_type == task_type
    assert (reply.image_width, reply.image_height) == (64, 64)
    assert reply.checkpoint_key == names["best.pt"].key
    category_ids = {c["id"] for c in doc["categories"]}
    if task == "classify":
        assert reply.classes and reply.classes[0].category_id in category_ids
        assert reply.classes[0].score >= reply.classes[-1].score
    else:
        assert reply.detections, "an untrained model still proposes boxes at conf 1e-4"
        det = reply.detections[0]
        assert det.category_id in category_ids and det.box.width > 0
        if task == "segment":
            assert any(
                len(d.polygons) and len(d.polygons[0].coordinates) >= 6 for d in reply.detections
            )
        if task == "pose":
            assert all(len(d.keypoints) == 3 for d in reply.detections)


def test_incompatible_dataset_is_refused_by_the_real_compatibility_check(dataset_server, mesh):
    trainer = mesh[0]
    bob = dataset_server.user("bob")
    files, doc = shapes_dataset(6, size=64, seed=9)
    for ann in doc["annotations"]:
        ann.pop("keypoints", None)
        ann.pop("num_keypoints", None)
    for cat in doc["categories"]:
        cat.pop("keypoints", None)
    dataset = upload_dataset(bob, files, doc)
    stub = trainer.stub(bob.token)
    with pytest.raises(grpc.RpcError) as err:
        start_job(stub, spec(dataset.name, "pose", "yolo11n", epochs=1))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "keypoint" in err.value.details().lower(), err.value.details()
    # compatibility is checked before the automatic snapshot: a refused start leaves none
    snaps = bob.datasets.ListSnapshots(
        dataset_pb2.ListSnapshotsRequest(parent=dataset.name), timeout=30
    ).snapshots
    assert not any(s.reason.startswith("training ") for s in snaps), snaps
