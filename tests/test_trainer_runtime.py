"""The shared trainer runtime through a real trainer server (ultralytics, tiny jobs).

dataset_svc is stood in for by an in-process fake (tests._trainers.FakeDatasetService) so
that these tests exercise the runtime alone: idempotency, queue limits, cancel, stop-early,
deadlines, crashes, restart/resume, logs, light server. End-to-end tests through the real
dataset_svc live in test_ultralytics.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from tests._job_context import check_kill_and_resume, check_retried_start_creates_one_job
from tests._servers import ROOT, child_env
from tests._trainers import (
    FakeDatasetService,
    collect_metrics,
    job_log,
    netguard_env,
    shapes_dataset,
    spec,
    start_job,
    start_trainer,
    state_name,
    wait_job,
)
from visionmesh.errors import bad_request_fields
from visionmesh.store import open_store
from visionmesh.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(900)

S = trainer_pb2
SMALL = {"batch_size": 4, "image_size": 64}


@pytest.fixture(scope="module")
def data(fake):
    files, doc = shapes_dataset(12, size=64)
    return files, doc, fake.add_dataset(files, doc, "alice")


@pytest.fixture(scope="module")
def trainer(fake, tmp_path_factory):
    server = start_trainer(
        "ultralytics",
        fake,
        extra_env={"VISIONMESH_TRAINER_MAX_JOBS": "1", "VISIONMESH_TRAINER_QUEUE": "1"},
        guard_dir=tmp_path_factory.mktemp("guard"),
    )
    yield server
    assert server.network_attempts() == []
    if server.process.proc.poll() is None:
        assert server.stop() == 0


@pytest.fixture
def alice(fake, trainer):
    stub = trainer.stub(fake.token("alice"))
    yield stub
    # leave nothing running for the next test
    for job in stub.ListJobs(S.ListJobsRequest(page_size=1000), timeout=30).jobs:
        if job.state not in (S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED):
            stub.CancelJob(S.CancelJobRequest(name=job.name), timeout=60)


def test_trainer_is_serving_fast_and_stays_light(tmp_path):
    own = FakeDatasetService(tmp_path / "home")
    started = time.monotonic()
    server = start_trainer("ultralytics", own, guard_dir=tmp_path)
    try:
        assert time.monotonic() - started < 2.5  # python start + SERVING health
        status = Path(f"/proc/{server.process.proc.pid}/status").read_text()
        rss_mb = (
            int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])
            / 1024
        )
        maps = Path(f"/proc/{server.process.proc.pid}/maps").read_text()
        assert "libtorch" not in maps and rss_mb < 200, rss_mb
        caps = server.stub().GetCapabilities(S.GetCapabilitiesRequest(), timeout=10)
        assert {m.name for m in caps.models} >= {"yolo11n", "yolo26x"}
        assert caps.max_concurrent_jobs == 1 and caps.queue_capacity == 16
    finally:
        server.stop()
        own.stop()


def test_network_guard_records_outbound_attempts(tmp_path):
    env = child_env(netguard_env(tmp_path))
    code = (
        "import socket\n"
        "try:\n"
        "    socket.socket().connect(('203.0.113.7', 80))\n"
        "except OSError:\n"
        "    pass\n"
        "try:\n"
        "    socket.create_connection(('example.com', 443), timeout=1)\n"
        "except OSError:\n"
        "    pass\n"
    )
    subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, check=True, timeout=60)
    attempts = [json.loads(line) for line in (tmp_path / "network-attempts.jsonl").open()]
    assert {a["kind"] for a in attempts} >= {"connect", "getaddrinfo"}


def test_calls_need_a_token_and_jobs_are_private(fake, trainer, data, alice):
    with pytest.raises(grpc.RpcError) as err:
        trainer.stub().ListJobs(S.ListJobsRequest(), timeout=10)
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    job = start_job(alice, spec(data[2], "detect", "yolo11n", epochs=1, **SMALL))
    bob = trainer.stub(fake.token("bob"))
    with pytest.raises(grpc.RpcError) as err:
        bob.GetJob(S.GetJobRequest(name=job.name), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert job.name not in [j.name for j in bob.ListJobs(S.ListJobsRequest(), timeout=10).jobs]
    # bob cannot train on alice's dataset either: dataset_svc says NOT_FOUND for him
    with pytest.raises(grpc.RpcError) as err:
        start_job(bob, spec(data[2], "detect", "yolo11n", epochs=1, **SMALL))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    epochs, state = collect_metrics(alice, job.name, timeout=300)
    assert state == S.JOB_STATE_SUCCEEDED and [e.epoch for e in epochs] == [1]
    listed = alice.ListJobs(S.ListJobsRequest(filter="state=JOB_STATE_SUCCEEDED"), timeout=10)
    assert job.name in [j.name for j in listed.jobs]
    assert all(j.state == S.JOB_STATE_SUCCEEDED for j in listed.jobs)


def test_invalid_specs_name_the_field(fake, trainer, data, alice):
    cases = [
        (spec(data[2], "detect", "resnet50"), "spec.model"),
        (spec(data[2], "detect", "yolo11n-cls"), "spec.model"),
        (spec("nonsense", "detect", "yolo11n"), "spec.dataset"),
        (spec(data[2], "detect", "yolo11n", epochs=-1), "spec.epochs"),
        (spec(data[2], "detect", "yolo11n", extra={"bogus_key": "1"}), "spec.extra[bogus_key]"),
        (spec(data[2], "detect", "yolo11n", extra={"data": "x.yaml"}), "spec.extra[data]"),
        (spec(data[2], "TASK_TYPE_SEMANTIC_SEGMENTATION", "yolo11n"), "spec.task_type"),
    ]
    for training_spec, field in cases:
        with pytest.raises(grpc.RpcError) as err:
            start_job(alice, training_spec)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert list(bad_request_fields(err.value)) == [field], err.value.details()


def test_missing_pretrained_weights_name_the_key(data, alice):
    with pytest.raises(grpc.RpcError) as err:
        start_job(alice, spec(data[2], "segment", "yolo26s", pretrained=True))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "models/pretrained/ultralytics/yolo26s-seg.pt" in err.value.details()


def test_incompatible_dataset_is_refused_with_the_reason(fake, alice):
    files, doc = shapes_dataset(6, size=64)
    for ann in doc["annotations"]:
        ann.pop("keypoints", None)
    name = fake.add_dataset(files, doc, "alice")
    with pytest.raises(grpc.RpcError) as err:
        start_job(alice, spec(name, "pose", "yolo11n", epochs=1, **SMALL))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "keypoints" in err.value.details()


def test_retried_start_creates_one_job(fake, data, alice):
    before = len([c for c in fake.calls if c[0] == "CreateSnapshot"])
    training = spec(data[2], "detect", "yolo11n", epochs=1, **SMALL)
    check_retried_start_creates_one_job(alice, training)
    assert len([c for c in fake.calls if c[0] == "CreateSnapshot"]) == before + 1


def test_queue_full_cancel_and_stop_early(fake, data, alice):
    store = open_store(fake.env["VISIONMESH_STORE_URL"])
    long_run = spec(data[2], "detect", "yolo11n", epochs=200, **SMALL)
    first = start_job(alice, long_run)
    second = start_job(alice, long_run)
    assert second.state == S.JOB_STATE_QUEUED and second.queue_position == 1
    with pytest.raises(grpc.RpcError) as err:
        start_job(alice, long_run)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full" in err.value.details()

    # cancel the queued one: it never runs
    cancelled = alice.CancelJob(S.CancelJobRequest(name=second.name), timeout=30).job
    assert cancelled.state == S.JOB_STATE_CANCELLED

    # cancel the running one after an epoch: its weights are discarded
    stream = alice.StreamMetrics(S.StreamMetricsRequest(name=first.name), timeout=300)
    assert next(iter(stream)).metrics.epoch == 1
    first_id = first.name.rsplit("/", 1)[1]
    # the epoch is streamed first, its checkpoints are stored right after
    wait_job_checkpoint(alice, first.name, "last.pt")
    assert store.exists(f"checkpoints/{first_id}/last.pt")
    job = alice.CancelJob(S.CancelJobRequest(name=first.name), timeout=60).job
    assert job.state == S.JOB_STATE_CANCELLED, state_name(job.state)
    assert list(store.list(f"checkpoints/{first_id}/")) == []
    assert [r.state for r in stream][-1] == S.JOB_STATE_CANCELLED  # the stream ends with the job

    # stop early: ends after the current epoch, keeps the weights, SUCCEEDS
    third = start_job(alice, long_run)
    stream = alice.StreamMetrics(S.StreamMetricsRequest(name=third.name), timeout=300)
    assert next(iter(stream)).metrics.epoch == 1
    alice.CancelJob(S.CancelJobRequest(name=third.name, stop_early=True), timeout=30)
    rest = list(stream)
    final = wait_job(alice, third.name, {S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED})
    assert final.state == S.JOB_STATE_SUCCEEDED, final.error
    assert 1 <= final.current_epoch < 200
    assert rest[-1].state == S.JOB_STATE_SUCCEEDED
    third_id = third.name.rsplit("/", 1)[1]
    assert store.exists(f"checkpoints/{third_id}/best.pt")
    assert {c.filename for c in final.checkpoints} >= {"best.pt", "last.pt"}
    with pytest.raises(grpc.RpcError) as err:
        alice.CancelJob(S.CancelJobRequest(name=third.name), timeout=30)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def wait_job_checkpoint(stub, name: str, filename: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stub.GetJob(S.GetJobRequest(name=name), timeout=10).job
        if filename in {c.filename for c in job.checkpoints}:
            return
        time.sleep(0.05)
    raise AssertionError(f"{name} listed no {filename} within {timeout}s")


def test_deadline_fails_the_job_and_keeps_checkpoints(data, alice):
    job = start_job(
        alice, spec(data[2], "detect", "yolo11n", epochs=500, max_duration_seconds=15, **SMALL)
    )
    epochs, state = collect_metrics(alice, job.name, timeout=300)
    final = alice.GetJob(S.GetJobRequest(name=job.name), timeout=10).job
    assert state == S.JOB_STATE_FAILED
    assert "max_duration_seconds=15" in final.error
    assert len(epochs) < 500
    if not epochs:  # a very loaded machine: not even one epoch in 15 s; nothing to resume
        with pytest.raises(grpc.RpcError) as err:
            alice.ResumeJob(S.ResumeJobRequest(name=job.name), timeout=30)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        return
    assert "last.pt" in {c.filename for c in final.checkpoints}
    # a FAILED job with a checkpoint can be resumed
    resumed = alice.ResumeJob(S.ResumeJobRequest(name=job.name), timeout=30).job
    assert resumed.state == S.JOB_STATE_QUEUED and resumed.resume_count == 1
    alice.CancelJob(S.CancelJobRequest(name=job.name), timeout=60)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out += [int(p) for p in text]
    return out


def test_a_crashing_job_fails_without_hurting_the_server(data, alice, trainer):
    job = start_job(alice, spec(data[2], "detect", "yolo11n", epochs=200, **SMALL))
    stream = alice.StreamMetrics(S.StreamMetricsRequest(name=job.name), timeout=300)
    assert next(iter(stream)).metrics.epoch == 1
    workers = _children(trainer.process.proc.pid)
    assert workers
    for pid in workers:  # what the kernel's OOM killer would do
        os.kill(pid, signal.SIGKILL)
    list(stream)
    final = alice.GetJob(S.GetJobRequest(name=job.name), timeout=10).job
    assert final.state == S.JOB_STATE_FAILED
    assert "SIGKILL" in final.error and "out of memory" in final.error
    assert trainer.process.proc.poll() is None
    assert alice.ListJobs(S.ListJobsRequest(), timeout=10).jobs


def test_second_job_on_a_snapshot_reuses_the_prepared_dataset(fake, alice):
    files, doc = shapes_dataset(8, size=64, seed=5)
    name = fake.add_dataset(files, doc, "alice")
    first = start_job(alice, spec(name, "detect", "yolo11n", epochs=1, **SMALL))
    _, state = collect_metrics(alice, first.name)
    assert state == S.JOB_STATE_SUCCEEDED
    snapshot = alice.GetJob(S.GetJobRequest(name=first.name), timeout=10).job.snapshot
    second = start_job(alice, spec(snapshot, "detect", "yolo11n", epochs=1, **SMALL))
    assert second.snapshot == snapshot
    _, state = collect_metrics(alice, second.name)
    assert state == S.JOB_STATE_SUCCEEDED
    log1, log2 = job_log(alice, first.name), job_log(alice, second.name)
    assert "(built; 8 images downloaded" in log1
    assert "already prepared" in log2 and "(from the cache; 0 images downloaded" in log2


def test_trainer_killed_during_epoch_2_resumes_and_counts_each_epoch_once(tmp_path):
    seen = check_kill_and_resume(
        "ultralytics",
        "detect",
        "yolo11n",
        tmp_path,
        resume_line="resuming from",
        batch_size=4,
        image_size=96,
    )
    assert S.JOB_STATE_RUNNING in seen or S.JOB_STATE_SUCCEEDED in seen
