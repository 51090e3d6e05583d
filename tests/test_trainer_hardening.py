"""Careless and hostile StartTraining / ListJobs / Predict calls, and what jobs leave on disk.

Over real trainer processes: the ultralytics trainer for the checks of a spec (nothing in
these cases starts a job, so nothing trains), and ``tests._idle_trainer`` (the real runtime
around a training loop that only waits) where jobs must run, be cancelled or end without
keeping both CPUs busy. dataset_svc is stood in for by tests._trainers.FakeDatasetService,
which records every CreateSnapshot, so "no snapshot was taken" is observable.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import grpc
import pytest

from tests._idle_trainer import MODEL as IDLE_MODEL
from tests._servers import start_server
from tests._trainers import (
    shapes_dataset,
    spec,
    start_job,
    start_trainer,
    wait_job,
)
from visionmesh.errors import bad_request_fields
from visionmesh.v1 import trainer_pb2

pytestmark = pytest.mark.timeout(600)

S = trainer_pb2
SMALL = {"batch_size": 4, "image_size": 64}
# A HEIC photo's first bytes (ISO BMFF 'ftyp' box, brand heic): PIL has no plugin for it.
HEIC = b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 200


@pytest.fixture(scope="module")
def data(fake):
    files, doc = shapes_dataset(6, size=64)
    return files, doc, fake.add_dataset(files, doc, "alice")


@pytest.fixture(scope="module")
def ultra(fake, tmp_path_factory):
    server = start_trainer("ultralytics", fake, guard_dir=tmp_path_factory.mktemp("guard"))
    yield server
    assert server.network_attempts() == []
    assert server.stop() == 0


@pytest.fixture(scope="module")
def idle(fake):
    server = start_server(
        "tests._idle_trainer",
        env={**fake.env, "VISIONMESH_DATASET_ADDR": fake.addr, "VISIONMESH_TRAINER_MAX_JOBS": "2"},
    )
    yield server
    assert server.stop(timeout=60) == 0


def stub_for(server, token):
    from visionmesh.auth import with_token
    from visionmesh.v1 import trainer_pb2_grpc

    return trainer_pb2_grpc.TrainerServiceStub(with_token(server.channel(), token))


def refused(call, code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call()
    assert err.value.code() == code, err.value.details()
    return err.value


def snapshots_taken(fake) -> int:
    return sum(1 for what, _ in fake.calls if what == "CreateSnapshot")


# -- StartTraining ------------------------------------------------------------------------------


def test_extra_values_are_checked_against_the_adapters_hyperparameters(fake, data, ultra):
    alice = stub_for(ultra, fake.token("alice"))
    caps = alice.GetCapabilities(S.GetCapabilitiesRequest(), timeout=10)
    declared = {h.name: h for h in caps.hyperparameters if h.extra}
    assert declared["workers"].min_value == "0" and declared["momentum"].max_value == "1"
    before = snapshots_taken(fake)
    cases = {
        "momentum": ["abc", "1.5", "nan"],
        "workers": ["-5", "2.5"],
        "optimizer": ["Bogus"],
        "cos_lr": ["maybe"],
        "fliplr": ["-0.1"],
    }
    for key, values in cases.items():
        for value in values:
            training = spec(data[2], "detect", "yolo11n", extra={key: value}, **SMALL)
            err = refused(lambda t=training: start_job(alice, t), grpc.StatusCode.INVALID_ARGUMENT)
            assert list(bad_request_fields(err)) == [f"spec.extra[{key}]"], (key, value)
            assert repr(value) in err.details(), err.details()
    assert snapshots_taken(fake) == before


def test_cuda_on_a_cpu_only_trainer_is_refused_at_start(fake, data, ultra):
    alice = stub_for(ultra, fake.token("alice"))
    caps = alice.GetCapabilities(S.GetCapabilitiesRequest(), timeout=10)
    if caps.device != "cpu":
        pytest.skip(f"this machine has a GPU ({caps.device})")
    before = snapshots_taken(fake)
    for device in ("cuda", "cuda:0", "cuda:3"):
        training = spec(data[2], "detect", "yolo11n", device=device, epochs=1, **SMALL)
        err = refused(lambda t=training: start_job(alice, t), grpc.StatusCode.FAILED_PRECONDITION)
        assert list(bad_request_fields(err)) == ["spec.device"]
        assert "no CUDA device" in err.details() and "'cpu'" in err.details(), err.details()
    bad = spec(data[2], "detect", "yolo11n", device="tpu", **SMALL)
    err = refused(lambda: start_job(alice, bad), grpc.StatusCode.INVALID_ARGUMENT)
    assert list(bad_request_fields(err)) == ["spec.device"]
    assert snapshots_taken(fake) == before


def test_a_refused_start_leaves_no_snapshot(fake, ultra):
    files, doc = shapes_dataset(4, size=64, seed=3)
    for ann in doc["annotations"]:
        ann.pop("keypoints", None)
    name = fake.add_dataset(files, doc, "alice")
    alice = stub_for(ultra, fake.token("alice"))
    before = snapshots_taken(fake)
    err = refused(
        lambda: start_job(alice, spec(name, "pose", "yolo11n", epochs=1, **SMALL)),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert "keypoints" in err.details()
    assert ("CheckCompatibility", name) in fake.calls  # checked on the dataset itself ...
    assert snapshots_taken(fake) == before  # ... and nothing was snapshotted for it


def test_list_jobs_refuses_page_tokens_it_did_not_issue(fake, ultra):
    alice = stub_for(ultra, fake.token("alice"))
    for token in ("-5", "abc", "1e3", "9" * 30, " 1"):
        err = refused(
            lambda t=token: alice.ListJobs(S.ListJobsRequest(page_token=t), timeout=10),
            grpc.StatusCode.INVALID_ARGUMENT,
        )
        assert list(bad_request_fields(err)) == ["page_token"], token
    assert alice.ListJobs(S.ListJobsRequest(page_token="0"), timeout=10) is not None


def test_a_reused_request_id_with_another_spec_is_refused(fake, data, idle):
    alice = stub_for(idle, fake.token("alice"))
    first = spec(data[2], "detect", IDLE_MODEL, epochs=3)
    job = start_job(alice, first, request_id="rid-1")
    try:
        assert start_job(alice, spec(data[2], "detect", IDLE_MODEL, epochs=3), "rid-1").name == (
            job.name
        )
        before = snapshots_taken(fake)
        other = spec(data[2], "detect", IDLE_MODEL, epochs=4)
        err = refused(lambda: start_job(alice, other, "rid-1"), grpc.StatusCode.ALREADY_EXISTS)
        assert job.name in err.details() and "epochs" in err.details(), err.details()
        assert list(bad_request_fields(err)) == ["request_id"]
        assert snapshots_taken(fake) == before
        # another user's identical request_id is theirs alone
        bob_data = fake.add_dataset(*shapes_dataset(4, size=64, seed=4), "bob")
        bob = stub_for(idle, fake.token("bob"))
        bobs = start_job(bob, spec(bob_data, "detect", IDLE_MODEL, epochs=1), "rid-1")
        assert bobs.name != job.name
        bob.CancelJob(S.CancelJobRequest(name=bobs.name), timeout=60)
    finally:
        alice.CancelJob(S.CancelJobRequest(name=job.name), timeout=60)


def _children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        out += [int(p) for p in (task / "children").read_text().split()]
    return out


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def test_predict_on_a_file_that_is_not_an_image_is_invalid_argument(fake, data, idle):
    alice = stub_for(idle, fake.token("alice"))
    job = start_job(alice, spec(data[2], "detect", IDLE_MODEL, epochs=1))
    png = data[0][data[1]["images"][0]["file_name"]]
    try:
        for payload, words in (
            (HEIC, "HEIC"),
            (b"%PDF-1.7\n" + b"x" * 100, "not a picture"),
            (png[: len(png) // 2], "damaged"),  # a PNG cut in half
        ):
            err = refused(
                lambda p=payload: alice.Predict(
                    S.PredictRequest(name=job.name, image=p), timeout=30
                ),
                grpc.StatusCode.INVALID_ARGUMENT,
            )
            assert list(bad_request_fields(err)) == ["image"]
            assert words in err.details(), err.details()
        # refused in the server process: no prediction process was started for them
        assert not any("predictor" in _cmdline(p) for p in _children(idle.proc.pid))
        # a real picture passes that check and meets the next one (no weights yet)
        err = refused(
            lambda: alice.Predict(S.PredictRequest(name=job.name, image=png), timeout=30),
            grpc.StatusCode.FAILED_PRECONDITION,
        )
        assert list(bad_request_fields(err)) == ["checkpoint"]
    finally:
        alice.CancelJob(S.CancelJobRequest(name=job.name), timeout=60)


# -- what jobs leave on disk --------------------------------------------------------------------


def _modes(root: Path) -> list[str]:
    """Paths under ``root`` that someone other than the owner could read or enter."""
    found = []
    for folder, _dirs, files in os.walk(root):
        for path in [Path(folder), *(Path(folder) / f for f in files)]:
            if path.lstat().st_mode & 0o077:
                found.append(f"{oct(stat.S_IMODE(path.lstat().st_mode))} {path}")
    return found


def _prepared(cache: Path) -> set[str]:
    root = cache / "prepared"
    return (
        {p.name for p in root.iterdir() if not p.name.startswith(".")} if root.is_dir() else set()
    )


def _images(cache: Path) -> set[str]:
    root = cache / "blobs"
    return {p.name for p in root.rglob("*") if p.is_file()} if root.is_dir() else set()


def _wait(predicate, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_jobs_leave_nothing_readable_and_their_cache_goes_when_unused(fake, idle):
    home = Path(fake.env["VISIONMESH_HOME"])
    cache, work = home / "trainer-cache", home / "trainer-work" / "idle"
    carol = stub_for(idle, fake.token("carol"))
    running = {S.JOB_STATE_RUNNING}

    def dataset(seed: int) -> tuple[str, set[str]]:
        name = fake.add_dataset(*shapes_dataset(4, size=64, seed=seed), "carol")
        return name, {im["sha256"] for im in fake.datasets[name]["document"]["images"]}

    # a job runs: its images are cached and prepared, private to the trainers' user
    name1, sha1 = dataset(11)
    first = start_job(carol, spec(name1, "detect", IDLE_MODEL))
    wait_job(carol, first.name, running, timeout=120)
    first_id = first.name.rsplit("/", 1)[1]
    mine = _prepared(cache)
    assert (work / first_id).is_dir() and mine and sha1 <= _images(cache)
    assert _modes(cache) == [] and _modes(work) == []

    # cancelled (its results discarded): work folder, prepared dataset and images go
    carol.CancelJob(S.CancelJobRequest(name=first.name), timeout=60)
    assert not (work / first_id).exists()
    _wait(lambda: not (mine & _prepared(cache)) and not (sha1 & _images(cache)), "cache kept")

    # a job that ends keeping its results keeps its prepared dataset for a rerun ...
    name2, sha2 = dataset(12)
    second = start_job(carol, spec(name2, "detect", IDLE_MODEL))
    wait_job(carol, second.name, running, timeout=120)
    kept = _prepared(cache)
    assert kept and sha2 <= _images(cache)
    carol.CancelJob(S.CancelJobRequest(name=second.name, stop_early=True), timeout=60)
    final = wait_job(carol, second.name, {S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED})
    assert final.state == S.JOB_STATE_SUCCEEDED, final.error
    time.sleep(1)
    assert kept <= _prepared(cache) and sha2 <= _images(cache)

    # ... until its dataset is deleted (dataset_svc then deletes the snapshot's manifest):
    # the next job to end sweeps it away, images included
    fake.store.delete(fake.snapshots[final.snapshot]["manifest_key"])
    name3, _ = dataset(13)
    third = start_job(carol, spec(name3, "detect", IDLE_MODEL))
    wait_job(carol, third.name, running, timeout=120)
    carol.CancelJob(S.CancelJobRequest(name=third.name), timeout=60)
    _wait(lambda: not (kept & _prepared(cache)) and not (sha2 & _images(cache)), "deleted kept")
    assert _modes(cache) == []
