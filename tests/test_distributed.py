"""One job trained by several processes (#17): spec.device lists and spec.devices.

Through the platform (real dataset_svc, real trainer servers in child processes): a timm
and an hf classifier train with ``device="cpu", devices=2`` (two gloo processes) and give
the metric stream of the same spec trained by one process (epochs 1..N once each, the same
metric names), with a job log that names both ranks; Predict answers from the
2-process job's best.pt. A rank that dies fails the job with an error naming it, a
cancel stops every rank, and a 2-process job whose trainer was killed resumes from
last.pt with every epoch counted once. StartTraining refuses what cannot run here: GPUs this machine
lacks, a device list with a contradicting count, ultralytics' DDP on CPU.

ultralytics' own DDP needs several GPUs; without them its epoch relay (what carries
epochs out of its DDP children) is exercised with a real ultralytics training in one
process on CPU.
"""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import grpc
import pytest

from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture
from tests._job_context import check_kill_and_resume, server_mesh
from tests._trainers import (
    collect_metrics,
    job_log,
    spec,
    start_job,
    start_trainer,
    state_name,
    wait_job,
)
from tests.test_trainer_hardening import refused
from visionmesh.errors import bad_request_fields
from visionmesh.v1 import common_pb2, trainer_pb2

pytestmark = pytest.mark.timeout(1200)

S = trainer_pb2
CLASSIFY = common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION
SMALL = {"batch_size": 4, "image_size": 64}
RANKS = re.compile(r"rank 0 pid (\d+) on cpu, rank 1 pid (\d+) on cpu")
dataset_server = dataset_server_fixture([DEFAULT_BACKEND])


@pytest.fixture(scope="module")
def timm_mesh(dataset_server, tmp_path_factory):
    yield from server_mesh("timm", dataset_server, tmp_path_factory)


@pytest.fixture(scope="module")
def hf_mesh(dataset_server, tmp_path_factory):
    yield from server_mesh("hf", dataset_server, tmp_path_factory)


def train(stub, dataset: str, model: str, devices: int) -> tuple[S.Job, list, str]:
    training = spec(
        dataset, CLASSIFY, model, epochs=2, seed=1, device="cpu", devices=devices, **SMALL
    )
    job = start_job(stub, training)
    epochs, state = collect_metrics(stub, job.name, timeout=900)
    final = stub.GetJob(S.GetJobRequest(name=job.name), timeout=10).job
    assert state == S.JOB_STATE_SUCCEEDED, f"{state_name(state)}: {final.error}"
    return final, epochs, job_log(stub, job.name)


def stream_shape(epochs: list) -> list[tuple[int, int, list[str]]]:
    return [(e.epoch, e.epochs, sorted(e.values)) for e in epochs]


def check_two_processes_stream_like_one(mesh, model: str) -> None:
    trainer, token, dataset, files, doc = mesh
    stub = trainer.stub(token)
    one, one_epochs, one_log = train(stub, dataset, model, devices=1)
    two, two_epochs, two_log = train(stub, dataset, model, devices=2)

    assert [e.epoch for e in two_epochs] == [1, 2]  # each epoch once, in order
    assert stream_shape(two_epochs) == stream_shape(one_epochs)
    assert {"train/loss", "val/loss", "val/top1", "lr"} <= set(two_epochs[0].values)
    for e in two_epochs:
        assert e.epoch_seconds > 0 and e.images_per_second > 0
    assert two.spec.devices == 2 and one.spec.devices == 1
    assert two.current_epoch == 2 and two.best_metric_name == one.best_metric_name
    assert {c.filename for c in two.checkpoints} >= {"best.pt", "last.pt"}

    # Two gloo processes really trained: rank 0 names rank 1 and what each one trained.
    assert "world size 2, backend gloo" in two_log, two_log
    assert RANKS.search(two_log), two_log
    trained = re.search(r"2 gloo processes trained .*rank 0: (\d+) images, rank 1: (\d+)", two_log)
    assert trained and int(trained.group(1)) > 0 and int(trained.group(2)) > 0, two_log
    assert "world size" not in one_log and "gloo" not in one_log

    image = files[doc["images"][0]["file_name"]]
    reply = stub.Predict(S.PredictRequest(name=two.name, image=image), timeout=300)
    assert reply.task_type == CLASSIFY and reply.classes


def test_timm_trains_in_two_gloo_processes_with_the_stream_of_one(timm_mesh):
    check_two_processes_stream_like_one(timm_mesh, "test_resnet")


def test_hf_trains_in_two_gloo_processes_with_the_stream_of_one(hf_mesh):
    check_two_processes_stream_like_one(hf_mesh, "vit-micro")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return fields[0] not in ("Z", "X")


def gone_within(pids: tuple[int, ...], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(p) for p in pids):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def start_long_job(stub, dataset: str) -> tuple[S.Job, tuple[int, int]]:
    """A 2-process timm job that runs for a while, once its first epoch is in; with the
    pids of rank 0 and rank 1 from its log."""
    training = spec(dataset, CLASSIFY, "test_resnet", epochs=200, device="cpu", devices=2, **SMALL)
    job = start_job(stub, training)
    deadline = time.monotonic() + 300
    while True:
        current = stub.GetJob(S.GetJobRequest(name=job.name), timeout=10).job
        assert current.state in (S.JOB_STATE_QUEUED, S.JOB_STATE_PREPARING, S.JOB_STATE_RUNNING), (
            current.error
        )
        found = RANKS.search(job_log(stub, job.name))
        if found and current.current_epoch >= 1:
            return job, (int(found.group(1)), int(found.group(2)))
        assert time.monotonic() < deadline, "the job never reached its first epoch"
        time.sleep(0.5)


def test_a_rank_that_dies_fails_the_job_with_an_error_naming_it(timm_mesh):
    trainer, token, dataset, *_ = timm_mesh
    stub = trainer.stub(token)
    job, (rank0, rank1) = start_long_job(stub, dataset)
    os.kill(rank1, signal.SIGKILL)
    failed = wait_job(stub, job.name, {S.JOB_STATE_FAILED, S.JOB_STATE_SUCCEEDED}, timeout=90)
    assert failed.state == S.JOB_STATE_FAILED
    assert "rank 1 of 2" in failed.error and "SIGKILL" in failed.error, failed.error
    assert failed.current_epoch < 200
    assert gone_within((rank0, rank1), 15)


def test_cancel_stops_every_rank(timm_mesh):
    trainer, token, dataset, *_ = timm_mesh
    stub = trainer.stub(token)
    job, pids = start_long_job(stub, dataset)
    stub.CancelJob(S.CancelJobRequest(name=job.name), timeout=60)
    assert wait_job(stub, job.name, {S.JOB_STATE_CANCELLED}, timeout=60)
    assert gone_within(pids, 15), [p for p in pids if alive(p)]


def test_a_two_process_job_resumes_after_its_trainer_was_killed(tmp_path):
    check_kill_and_resume(
        "timm",
        "classify",
        "test_resnet",
        tmp_path,
        batch_size=4,
        image_size=96,
        device="cpu",
        devices=2,
    )


# -- StartTraining checks ------------------------------------------------------------------------


def test_devices_are_checked_at_start(timm_mesh, dataset_server, tmp_path_factory):
    trainer, token, dataset, *_ = timm_mesh
    timm = trainer.stub(token)
    caps = timm.GetCapabilities(S.GetCapabilitiesRequest(), timeout=10)

    def refuse(stub, code, field, **fields):
        training = spec(dataset, CLASSIFY, "test_resnet", epochs=1, **SMALL, **fields)
        err = refused(lambda: start_job(stub, training), code)
        assert list(bad_request_fields(err)) == [field], (fields, err.details())
        return err.details()

    invalid = grpc.StatusCode.INVALID_ARGUMENT
    assert "names one GPU" in refuse(timm, invalid, "spec.devices", device="cuda:0", devices=2)
    assert "names 2 GPUs" in refuse(timm, invalid, "spec.devices", device="0,1", devices=3)
    assert "twice" in refuse(timm, invalid, "spec.device", device="0,0")
    assert "0,1" in refuse(timm, invalid, "spec.device", device="gpu0,1")
    assert "0..64" in refuse(timm, invalid, "spec.devices", device="cpu", devices=-1)
    if caps.device == "cpu":  # GPUs this trainer lacks, counted at start
        missing = grpc.StatusCode.FAILED_PRECONDITION
        text = refuse(timm, missing, "spec.devices", device="cuda", devices=2)
        assert "needs 2 GPUs" in text and "0 GPU(s)" in text, text
        text = refuse(timm, missing, "spec.device", device="cuda:0,1")
        assert "cuda:1" in text and "0 GPU(s)" in text, text

    # ultralytics trains one job on several processes only with its own DDP, on GPUs.
    ultra = start_trainer(
        "ultralytics", dataset_server, guard_dir=tmp_path_factory.mktemp("guard-ultra")
    )
    try:
        stub = ultra.stub(token)
        cases = [{"device": "cpu", "devices": 2}]
        if caps.device == "cpu":
            cases.append({"devices": 2})  # an empty device means CPU on this machine
        for fields in cases:
            training = spec(dataset, "detect", "yolo11n", epochs=1, **SMALL, **fields)
            err = refused(lambda t=training: start_job(stub, t), invalid)
            assert list(bad_request_fields(err)) == ["spec.devices"]
            assert "ultralytics" in err.details() and "cuda" in err.details(), err.details()
        if caps.device == "cpu":
            training = spec(dataset, "detect", "yolo11n", epochs=1, device="0,1", **SMALL)
            err = refused(lambda: start_job(stub, training), grpc.StatusCode.FAILED_PRECONDITION)
            assert "0 GPU(s)" in err.details(), err.details()
        assert not stub.ListJobs(S.ListJobsRequest(parent="trainers/ultralytics"), timeout=30).jobs
        assert ultra.network_attempts() == []
    finally:
        assert ultra.stop() == 0


# -- ultralytics' DDP epoch relay (its DDP itself needs GPUs) -------------------------------------


def test_ultralytics_ddp_callbacks_relay_each_epoch_once_and_stop_on_request(tmp_path):
    """The callbacks ultralytics' DDP children get (cloudpickled, as its generate_ddp_file
    does) report through the relay in the job's process: each epoch once, with its
    checkpoint, and a stop request ends training after that epoch. One real ultralytics
    process on CPU stands in for the DDP rank 0 that writes them on GPUs."""
    from tests._job_context import RecordingJob, prepared_shapes
    from tests._job_context import spec as train_spec
    from trainers.ultralytics import _yolo

    _yolo.setup_offline(tmp_path / "ultralytics-config")
    import cloudpickle
    from ultralytics import YOLO

    data, names = prepared_shapes(
        tmp_path / "data", "object_detection", "yolo", images=8, size=96, max_shapes=2
    )
    job = RecordingJob(
        train_spec("object_detection", "yolo11n", epochs=3, batch_size=4, image_size=96),
        data,
        names,
        tmp_path / "work",
        stop_after=2,
    )
    relay = _yolo.DDPEpochRelay(job, job.work_dir / "ddp-epochs")
    model = YOLO("yolo11n.yaml")
    _yolo.add_ddp_callbacks(model, relay)
    cloudpickle.loads(cloudpickle.dumps(model.callbacks))  # what the DDP children load
    relay.start()
    try:
        model.train(
            data=str(_yolo.build_view(data, "object_detection", job.work_dir)),
            epochs=3,
            batch=4,
            imgsz=96,
            device="cpu",
            workers=0,
            plots=False,
            amp=False,
            project=str(job.work_dir / "runs"),
            name="train",
            exist_ok=True,
        )
    finally:
        relay.finish()
    assert [e.epoch for e in job.epochs] == [1, 2]  # stopped after epoch 2, as asked
    for e in job.epochs:
        assert e.checkpoint is not None and e.checkpoint.stat().st_size > 0
        assert {"train/loss", "val/map50_95", "lr"} <= set(e.values), sorted(e.values)
        assert e.images_seen > 0
