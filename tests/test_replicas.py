"""Three replicas of the ultralytics trainer on one PostgreSQL queue and one object store.

Jobs go in through one round-robin channel over the three addresses (the same target that
``VISIONMESH_TRAINERS=ultralytics=a,b,c`` gives the gateway and the CLI); each runs on exactly
one replica; a replica SIGKILLed during a job's second epoch loses the job to another
replica within the lease time, which resumes it from last.pt with every epoch reported once;
StreamMetrics and CancelJob sent to one replica follow and stop a job another replica runs;
an export running on one replica is followed from the others.
Needs VISIONMESH_TEST_DATABASE_URL (a schema of its own per test).
"""

from __future__ import annotations

import os
import threading
import time
import uuid

import grpc
import pytest
import sqlalchemy as sa

from tests._trainers import (
    FakeDatasetService,
    job_log,
    shapes_dataset,
    spec,
    start_job,
    start_trainer,
    wait_job,
)
from visionmesh import config
from visionmesh.auth import with_token
from visionmesh.store import open_store
from visionmesh.v1 import trainer_pb2 as S
from visionmesh.v1 import trainer_pb2_grpc

PG_URL = os.environ.get("VISIONMESH_TEST_DATABASE_URL", "")
pytestmark = [
    pytest.mark.skipif(
        not PG_URL, reason="VISIONMESH_TEST_DATABASE_URL is not set (PostgreSQL replicas)"
    ),
    pytest.mark.timeout(900),
]
TINY = {"batch_size": 4, "image_size": 64}
LEASE = 3
DONE = {S.JOB_STATE_SUCCEEDED, S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED}


@pytest.fixture(scope="module")
def mesh(tmp_path_factory):
    """A fake dataset service, a PostgreSQL schema of its own and three trainer replicas."""
    home = tmp_path_factory.mktemp("replicas")
    schema = f"replicas_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(PG_URL)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    url = sa.engine.make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})
    db_url = url.render_as_string(hide_password=False)
    fake = FakeDatasetService(home / "home")
    files, doc = shapes_dataset(12, size=64, seed=11)
    dataset = fake.add_dataset(files, doc, "alice")
    replicas = {}
    try:
        for i in range(3):
            replicas[f"replica-{i}"] = start_trainer(
                "ultralytics",
                fake,
                extra_env={
                    "VISIONMESH_DATABASE_URL": db_url,
                    "VISIONMESH_TRAINER_REPLICA": f"replica-{i}",
                    "VISIONMESH_TRAINER_LEASE_SECONDS": str(LEASE),
                    "VISIONMESH_TRAINER_MAX_JOBS": "1",
                    "VISIONMESH_TRAINER_QUEUE": "16",
                },
                guard_dir=home / f"guard-{i}",
            )
        target = config.parse_trainers(
            "ultralytics=" + ",".join(r.addr for r in replicas.values())
        )["ultralytics"]
        channel = grpc.insecure_channel(target, options=config.CHANNEL_LB_OPTIONS)
        token = fake.token("alice")
        yield {
            "fake": fake,
            "dataset": dataset,
            "replicas": replicas,
            "rr": trainer_pb2_grpc.TrainerServiceStub(with_token(channel, token)),
            "token": token,
            "engine": engine,
            "schema": schema,
            "store": open_store(fake.env["VISIONMESH_STORE_URL"]),
        }
        channel.close()
        for server in replicas.values():
            assert server.network_attempts() == []
    finally:
        for server in replicas.values():
            if server.process.proc.poll() is None:
                server.stop()
        fake.stop()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def on(mesh, replica: str):
    return mesh["replicas"][replica].stub(mesh["token"])


def epoch_events(mesh, job_name: str) -> list[int]:
    job_id = job_name.rsplit("/", 1)[1]
    with mesh["engine"].connect() as conn:
        rows = conn.execute(
            sa.text(
                f'SELECT payload FROM "{mesh["schema"]}".trainer_events '
                "WHERE job_id = :j AND kind = 'epoch' ORDER BY seq"
            ),
            {"j": job_id},
        ).all()
    import json

    return [json.loads(r.payload)["epoch"] for r in rows]


def wait_replica(
    stub, name: str, timeout: float = 180, *, seen: set | None = None, not_on: str = ""
):
    """The job once a replica (other than ``not_on``) runs it (RUNNING, with Job.replica);
    ``seen`` collects the states on the way."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = stub.GetJob(S.GetJobRequest(name=name), timeout=10).job
        if seen is not None:
            seen.add(job.state)
        if job.state == S.JOB_STATE_RUNNING and job.replica and job.replica != not_on:
            return job
        assert job.state not in DONE, job.error
        time.sleep(0.1)
    raise AssertionError(f"{name} never ran")


def test_six_jobs_through_one_round_robin_channel_each_run_exactly_once(mesh):
    rr = mesh["rr"]
    jobs = [start_job(rr, spec(mesh["dataset"], "detect", "yolo11n", epochs=1, **TINY))]
    jobs += [
        start_job(rr, spec(mesh["dataset"], "detect", "yolo11n", epochs=1, **TINY))
        for _ in range(5)
    ]
    # the calls were spread: a job's GetJob answers on every replica
    for replica in mesh["replicas"]:
        names = {j.name for j in on(mesh, replica).ListJobs(S.ListJobsRequest()).jobs}
        assert {j.name for j in jobs} <= names
    ran_on = {}
    for job in jobs:
        final = wait_job(rr, job.name, DONE, timeout=600)
        assert final.state == S.JOB_STATE_SUCCEEDED, final.error
        assert final.replica in mesh["replicas"] and final.resume_count == 0
        log = job_log(rr, job.name)
        assert log.count("[visionmesh] starting worker") == 1, log[-2000:]
        assert log.count("[visionmesh] job SUCCEEDED") == 1
        assert epoch_events(mesh, job.name) == [1]
        ran_on[job.name] = final.replica
    assert len(set(ran_on.values())) >= 2, ran_on  # the replicas shared the queue


def test_a_sigkilled_replicas_job_resumes_on_another_with_each_epoch_once(mesh):
    rr = mesh["rr"]
    job = start_job(rr, spec(mesh["dataset"], "detect", "yolo11n", epochs=4, **TINY))
    running = wait_replica(rr, job.name)
    victim = running.replica
    survivor = next(r for r in mesh["replicas"] if r != victim)
    stub = on(mesh, survivor)
    stream = stub.StreamMetrics(S.StreamMetricsRequest(name=job.name), timeout=600)
    first = next(iter(stream))
    assert first.metrics.epoch == 1  # the job is in its second epoch now
    killed = time.monotonic()
    mesh["replicas"][victim].kill()
    seen: set[int] = set()
    moved = wait_replica(stub, job.name, timeout=120, seen=seen, not_on=victim)
    assert moved.resume_count == 1
    assert S.JOB_STATE_INTERRUPTED in seen
    assert time.monotonic() - killed < LEASE * 3 + 60
    rest = [r for r in stream]
    assert [r.metrics.epoch for r in rest if r.HasField("metrics")] == [2, 3, 4]
    assert rest[-1].state == S.JOB_STATE_SUCCEEDED
    final = stub.GetJob(S.GetJobRequest(name=job.name), timeout=10).job
    assert final.state == S.JOB_STATE_SUCCEEDED and final.current_epoch == 4, final.error
    assert epoch_events(mesh, job.name) == [1, 2, 3, 4]  # each epoch reported once
    lines = mesh["store"].get_bytes(f"runs/{job.name.rsplit('/', 1)[1]}/metrics.jsonl")
    assert len(lines.decode().splitlines()) == 4
    log = job_log(stub, job.name)
    assert f"replica {victim} stopped renewing its lease" in log
    assert "INTERRUPTED" in log and "resuming from" in log


def test_streams_and_cancel_through_one_replica_reach_the_job_on_another(mesh):
    alive = [r for r, s in mesh["replicas"].items() if s.process.proc.poll() is None]
    assert len(alive) >= 2
    # the job lands on a replica; the other one is asked
    job = start_job(
        on(mesh, alive[0]), spec(mesh["dataset"], "detect", "yolo11n", epochs=200, **TINY)
    )
    running = wait_replica(on(mesh, alive[0]), job.name)
    runner = running.replica
    other = next(r for r in alive if r != runner)
    got: dict[str, float] = {}

    def follow(replica: str) -> None:
        call = on(mesh, replica).StreamMetrics(S.StreamMetricsRequest(name=job.name), timeout=600)
        for reply in call:
            if reply.HasField("metrics") and reply.metrics.epoch == 2:
                got[replica] = time.monotonic()
                call.cancel()
                return

    threads = [threading.Thread(target=follow, args=(r,)) for r in (runner, other)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert set(got) == {runner, other}
    # the replica that does not run it hears of the epoch within a second
    assert abs(got[other] - got[runner]) < 1.0, got
    cancelled = on(mesh, other).CancelJob(S.CancelJobRequest(name=job.name), timeout=60).job
    assert cancelled.state == S.JOB_STATE_CANCELLED, S.JobState.Name(cancelled.state)
    assert cancelled.replica == runner
    log = job_log(on(mesh, other), job.name)
    assert "cancel requested" in log and "cancelled; checkpoints discarded" in log
    job_id = job.name.rsplit("/", 1)[1]
    assert list(mesh["store"].list(f"checkpoints/{job_id}/")) == []


def test_an_export_running_on_one_replica_is_followed_from_the_others(mesh):
    rr = mesh["rr"]
    job = start_job(rr, spec(mesh["dataset"], "detect", "yolo11n", epochs=1, **TINY))
    final = wait_job(rr, job.name, DONE, timeout=600)
    assert final.state == S.JOB_STATE_SUCCEEDED, final.error
    # the replicas still alive (an earlier test SIGKILLs one)
    names = [n for n, r in mesh["replicas"].items() if r.process.proc.poll() is None]
    assert len(names) >= 2, names
    runner, others = names[0], names[1:]
    started = (
        on(mesh, runner)
        .ExportModel(
            S.ExportModelRequest(name=job.name, format=S.MODEL_FORMAT_TORCHSCRIPT), timeout=30
        )
        .export
    )
    assert started.state == S.EXPORT_STATE_RUNNING
    # the other replicas answer for it while it runs (without failing it as if its trainer
    # had died: the replica running it is alive)
    seen_running = 0
    deadline = time.monotonic() + 300
    while True:
        states = [
            on(mesh, replica)
            .GetModelExport(S.GetModelExportRequest(name=started.name), timeout=10)
            .export.state
            for replica in others
        ]
        if set(states) != {S.EXPORT_STATE_RUNNING}:
            break
        seen_running += 1
        assert time.monotonic() < deadline, "export still RUNNING after 300 s"
        time.sleep(0.2)
    assert seen_running >= 1  # the others were asked while it ran
    done = on(mesh, runner).GetModelExport(S.GetModelExportRequest(name=started.name)).export
    assert done.state == S.EXPORT_STATE_SUCCEEDED, done.error
    for replica in others:
        seen = on(mesh, replica).GetModelExport(S.GetModelExportRequest(name=started.name)).export
        assert seen.state == S.EXPORT_STATE_SUCCEEDED and seen.file.filename == "best.torchscript"
    log = job_log(rr, job.name)
    assert log.count("export torchscript of best.pt") == 1, log[-2000:]
