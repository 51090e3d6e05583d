"""Jobs name the trainer that owns them, and their checkpoints download over gRPC.

Two real trainers (ultralytics and timm) share one object store, as in a deployment: a job
is ``trainers/{framework}/jobs/{job}``, StartTraining and ListJobs take that trainer as
``parent`` (``trainers/-`` lists every framework's on each trainer), a job asked of the
wrong trainer answers NOT_FOUND naming the trainer that owns it, and DownloadCheckpoint
streams the stored bytes of best.pt / last.pt to the job's owner only.
"""

from __future__ import annotations

import hashlib
import re

import grpc
import pytest

from tests._trainers import (
    collect_metrics,
    shapes_dataset,
    spec,
    start_trainer,
)
from visionmesh.errors import bad_request_fields
from visionmesh.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(600)

S = trainer_pb2
SMALL = {"batch_size": 4, "image_size": 64}


@pytest.fixture(scope="module")
def dataset(fake):
    files, doc = shapes_dataset(12, size=64)
    return fake.add_dataset(files, doc, "alice")


@pytest.fixture(scope="module")
def yolo(fake, tmp_path_factory):
    server = start_trainer("ultralytics", fake, guard_dir=tmp_path_factory.mktemp("guard"))
    yield server
    assert server.network_attempts() == []
    server.stop()


@pytest.fixture(scope="module")
def timm(fake, tmp_path_factory):
    server = start_trainer("timm", fake, guard_dir=tmp_path_factory.mktemp("guard-timm"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def finished(fake, yolo, dataset):
    """One finished 1-epoch job of alice's, started with parent=trainers/ultralytics."""
    alice = yolo.stub(fake.token("alice"))
    job = alice.StartTraining(
        S.StartTrainingRequest(
            parent="trainers/ultralytics",
            request_id="contract-1",
            spec=spec(dataset, "detect", "yolo11n", epochs=1, **SMALL),
        ),
        timeout=120,
    ).job
    _, state = collect_metrics(alice, job.name, timeout=300)
    assert state == S.JOB_STATE_SUCCEEDED
    return alice.GetJob(S.GetJobRequest(name=job.name), timeout=10).job


def test_job_and_checkpoint_names_carry_the_trainer(finished):
    assert re.fullmatch(r"trainers/ultralytics/jobs/[A-Za-z0-9_-]+", finished.name)
    assert finished.framework == "ultralytics"
    names = {c.name for c in finished.checkpoints}
    assert f"{finished.name}/checkpoints/best.pt" in names
    assert f"{finished.name}/checkpoints/last.pt" in names


def test_parent_must_be_this_trainer(fake, yolo, dataset):
    alice = yolo.stub(fake.token("alice"))
    request = S.StartTrainingRequest(
        parent="trainers/timm", spec=spec(dataset, "detect", "yolo11n", epochs=1, **SMALL)
    )
    with pytest.raises(grpc.RpcError) as err:
        alice.StartTraining(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "trainers/ultralytics" in err.value.details()
    request.parent = "jobs"
    with pytest.raises(grpc.RpcError) as err:
        alice.StartTraining(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(bad_request_fields(err.value)) == ["parent"]


def test_list_jobs_by_parent(fake, yolo, finished):
    alice = yolo.stub(fake.token("alice"))
    for parent in ("", "trainers/ultralytics", "trainers/-"):
        listed = alice.ListJobs(S.ListJobsRequest(parent=parent), timeout=10).jobs
        assert finished.name in [j.name for j in listed], parent
    with pytest.raises(grpc.RpcError) as err:
        alice.ListJobs(S.ListJobsRequest(parent="trainers/hf"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_job_asked_of_the_wrong_trainer_names_its_owner(fake, yolo, timm, finished):
    job_id = finished.name.rsplit("/", 1)[1]
    # the right trainer, a name that says another one
    with pytest.raises(grpc.RpcError) as err:
        yolo.stub(fake.token("alice")).GetJob(
            S.GetJobRequest(name=f"trainers/timm/jobs/{job_id}"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "trainers/timm" in err.value.details()
    # another trainer of the same store, asked for the job under its own name
    with pytest.raises(grpc.RpcError) as err:
        timm.stub(fake.token("alice")).GetJob(
            S.GetJobRequest(name=f"trainers/timm/jobs/{job_id}"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert finished.name in err.value.details()  # names trainers/ultralytics/jobs/<id>
    # ... but says nothing of it to another user
    with pytest.raises(grpc.RpcError) as err:
        timm.stub(fake.token("bob")).GetJob(
            S.GetJobRequest(name=f"trainers/timm/jobs/{job_id}"), timeout=10
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "ultralytics" not in err.value.details()
    # the old name form is refused with the field at fault
    with pytest.raises(grpc.RpcError) as err:
        yolo.stub(fake.token("alice")).GetJob(S.GetJobRequest(name=f"jobs/{job_id}"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(bad_request_fields(err.value)) == ["name"]


def test_download_checkpoint_streams_the_stored_bytes(fake, yolo, finished):
    alice = yolo.stub(fake.token("alice"))
    job_id = finished.name.rsplit("/", 1)[1]
    for filename in ("best.pt", "last.pt"):
        pieces = list(
            alice.DownloadCheckpoint(
                S.DownloadCheckpointRequest(name=f"{finished.name}/checkpoints/{filename}"),
                timeout=60,
            )
        )
        data = b"".join(p.data for p in pieces)
        stored = fake.store.get_bytes(f"checkpoints/{job_id}/{filename}")
        assert hashlib.sha256(data).digest() == hashlib.sha256(stored).digest()
        assert len(data) > 100_000  # a real yolo11n checkpoint, not an empty file
        assert pieces[0].content_type == "application/octet-stream"
        assert all(len(p.data) <= 1024 * 1024 for p in pieces)
        assert len(pieces) == -(-len(data) // (1024 * 1024))


def test_download_checkpoint_errors(fake, yolo, finished):
    alice = yolo.stub(fake.token("alice"))
    cases = [
        (alice, f"{finished.name}/checkpoints/epoch_9.pt", grpc.StatusCode.NOT_FOUND),
        (alice, f"{finished.name}/checkpoints/../../x", grpc.StatusCode.INVALID_ARGUMENT),
        (alice, f"{finished.name}/checkpoints/model.onnx", grpc.StatusCode.INVALID_ARGUMENT),
        (
            yolo.stub(fake.token("bob")),
            f"{finished.name}/checkpoints/best.pt",
            grpc.StatusCode.NOT_FOUND,
        ),
    ]
    for stub, name, code in cases:
        with pytest.raises(grpc.RpcError) as err:
            list(stub.DownloadCheckpoint(S.DownloadCheckpointRequest(name=name), timeout=30))
        assert err.value.code() == code, (name, err.value.details())
    with pytest.raises(grpc.RpcError) as err:
        list(
            yolo.stub().DownloadCheckpoint(
                S.DownloadCheckpointRequest(name=f"{finished.name}/checkpoints/best.pt"),
                timeout=30,
            )
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
