"""The trainers' shared job list and queue (trainers/runtime/jobstore.py) on SQLite and on
PostgreSQL (VISIONMESH_TEST_DATABASE_URL): claims, leases, compare-and-set, notifications,
the one-replica rule of SQLite. Each test uses its own table prefix, so runs never collide."""

from __future__ import annotations

import os
import threading
import time
import uuid

import pytest

from trainers.runtime import jobstore
from trainers.runtime.jobstore import (
    IllegalTransition,
    JobStore,
    LeaseLost,
    QueueFull,
    ReplicaRefused,
)
from trainers.runtime.records import JobRecord

PG_URL = os.environ.get("VISIONMESH_TEST_DATABASE_URL", "")
BACKENDS = [
    "sqlite",
    pytest.param(
        "postgresql",
        marks=pytest.mark.skipif(
            not PG_URL, reason="VISIONMESH_TEST_DATABASE_URL is not set (PostgreSQL tests)"
        ),
    ),
]


@pytest.fixture(params=BACKENDS)
def stores(request, tmp_path):
    """make(replica, lease_seconds=...) -> JobStore on one database and one table prefix."""
    url = PG_URL if request.param == "postgresql" else f"sqlite:///{tmp_path / 'catalog.db'}"
    prefix = f"t{uuid.uuid4().hex[:8]}_"
    made: list[JobStore] = []

    def make(replica: str, lease_seconds: float = 30, framework: str = "ultralytics"):
        store = JobStore(url, framework, replica, lease_seconds=lease_seconds, table_prefix=prefix)
        store.create_tables()
        made.append(store)
        return store

    make.backend = request.param
    yield make
    for store in made:
        store.close(unregister=False)
    cleanup = JobStore(url, "ultralytics", "cleanup", table_prefix=prefix)
    cleanup.drop_tables()
    cleanup.close(unregister=False)


def record(n: int | str, owner: str = "users/alice", request_id: str = "") -> JobRecord:
    return JobRecord(
        job_id=f"job{n}",
        framework="ultralytics",
        owner=owner,
        request_id=request_id,
        spec={"epochs": 3},
        task_type="detect",
        model="yolo11n",
        dataset="datasets/d",
    )


def test_claim_exactly_once_under_concurrent_claimers(stores):
    submitter = stores("submitter")
    for i in range(60):
        submitter.submit(record(i))
    claimers = [stores(f"replica-{i}") for i in range(6)]
    got: dict[str, list[str]] = {c.replica: [] for c in claimers}
    start = threading.Barrier(len(claimers))

    def work(store: JobStore) -> None:
        start.wait()
        while True:
            batch = store.claim(2)
            if not batch and store.waiting() == 0:
                return
            got[store.replica] += [row.job_id for row in batch]

    threads = [threading.Thread(target=work, args=(c,)) for c in claimers]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    claimed = [job for jobs in got.values() for job in jobs]
    assert sorted(claimed) == sorted(f"job{i}" for i in range(60))  # each exactly once
    for replica, jobs in got.items():
        for job_id in jobs:
            row = submitter.get(job_id)
            assert row.lease_owner == replica
    if stores.backend == "postgresql":  # SKIP LOCKED: the claimers really shared the work
        assert sum(1 for jobs in got.values() if jobs) >= 2
    assert submitter.claim(1) == []


def test_claim_takes_the_oldest_first_and_the_queue_bound_holds(stores):
    store = stores("a")
    for i in range(3):
        store.submit(record(i), capacity=3)
    with pytest.raises(QueueFull):
        store.submit(record(9), capacity=3)
    assert store.queue_positions() == {"job0": 1, "job1": 2, "job2": 3}
    assert [r.job_id for r in store.claim(1)] == ["job0"]
    # a claimed job no longer counts against the bound
    store.submit(record(9), capacity=3)
    assert store.queue_positions() == {"job1": 1, "job2": 2, "job9": 3}


def test_one_job_per_request_id(stores):
    a, b = stores("a"), stores("b")
    first, created = a.submit(record(1, request_id="req-1"))
    again, created_again = b.submit(record(2, request_id="req-1"))
    assert created and not created_again
    assert again.job_id == first.job_id == "job1"
    other, created_other = b.submit(record(3, owner="users/bob", request_id="req-1"))
    assert created_other and other.job_id == "job3"


def test_expired_lease_is_reaped_and_the_job_resumes_elsewhere(stores):
    a = stores("replica-a", lease_seconds=1.0)
    b = stores("replica-b", lease_seconds=1.0)
    a.submit(record(1))
    (row,) = a.claim(1)
    assert not row.resume and row.record.resume_count == 0
    a.update("job1", target="PREPARING", lease="mine")
    a.update("job1", lambda r: setattr(r, "current_epoch", 1), target="RUNNING", lease="mine")
    assert list(a.heartbeat()) == ["job1"]
    assert b.reap() == []  # the lease is fresh
    assert b.claim(1) == []
    time.sleep(1.3)  # replica-a stops renewing (SIGKILL, lost node)
    assert b.reap() == ["job1"]
    row = b.get("job1")
    assert row.state == "INTERRUPTED" and row.lease_owner is None
    (resumed,) = b.claim(1)
    assert resumed.job_id == "job1" and resumed.resume and resumed.record.resume_count == 1
    assert resumed.record.current_epoch == 1 and resumed.lease_owner == "replica-b"
    b.update("job1", target="PREPARING", lease="mine")
    # the old holder comes back: its writes are fenced off, its heartbeat no longer has it
    with pytest.raises(LeaseLost):
        a.update("job1", target="SUCCEEDED", lease="mine")
    assert "job1" not in a.heartbeat()
    kinds = [(e.kind, e.payload) for e in b.events("job1")]
    assert ("state", {"state": "INTERRUPTED"}) in kinds
    assert any(k == "log" and "replica-a stopped renewing" in p[0] for k, p in kinds)
    assert [e.payload["state"] for e in b.events("job1", kinds=("state",))] == [
        "PREPARING",
        "RUNNING",
        "INTERRUPTED",
        "PREPARING",
    ]


def test_compare_and_set_refuses_an_illegal_transition(stores):
    store = stores("a")
    store.submit(record(1))
    with pytest.raises(IllegalTransition):
        store.update("job1", target="RUNNING")  # QUEUED -> RUNNING skips PREPARING
    store.update("job1", target="PREPARING")
    store.update("job1", target="RUNNING")
    # several replicas end one job at once: exactly one wins, the rest are refused
    racers = [stores(f"r{i}") for i in range(6)]
    targets = ["SUCCEEDED", "FAILED", "CANCELLED", "SUCCEEDED", "FAILED", "CANCELLED"]
    outcome: list[str] = []
    go = threading.Barrier(len(racers))

    def race(store: JobStore, target: str) -> None:
        go.wait()
        try:
            store.update("job1", target=target)
            outcome.append(target)
        except IllegalTransition:
            outcome.append("refused")

    threads = [threading.Thread(target=race, args=p) for p in zip(racers, targets, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    winners = [o for o in outcome if o != "refused"]
    assert len(outcome) == 6 and len(winners) == 1
    final = store.get("job1")
    assert final.state == winners[0] and final.record.end_time > 0
    with pytest.raises(IllegalTransition):
        store.update("job1", target="QUEUED" if final.state != "FAILED" else "RUNNING")
    states = [e.payload["state"] for e in store.events("job1", kinds=("state",))]
    assert states == ["PREPARING", "RUNNING", winners[0]]


def test_resume_requeues_a_failed_job_and_a_cancel_request_reaches_the_holder(stores):
    a, b = stores("a"), stores("b")
    a.submit(record(1))
    a.claim(1)
    a.update("job1", target="PREPARING", lease="mine")
    # b answers CancelJob for a job a runs: a flag a's heartbeat (and NOTIFY) carries
    with pytest.raises(LeaseLost):
        b.update("job1", target="CANCELLED", lease="free")
    b.request("job1", stop=True)
    assert a.heartbeat()["job1"] == jobstore.Control(cancel=False, stop=True)
    b.request("job1", cancel=True)
    assert a.heartbeat()["job1"] == jobstore.Control(cancel=True, stop=True)
    a.update("job1", target="FAILED", error="boom", lease="mine", release=True)
    assert a.heartbeat() == {}
    row = b.update(
        "job1",
        lambda r: setattr(r, "resume_count", r.resume_count + 1),
        target="QUEUED",
        lease="free",
        requeue=True,
        resume=True,
    )
    assert row.state == "QUEUED" and row.resume and not row.cancel_requested
    (again,) = b.claim(1)
    assert again.resume and again.record.resume_count == 1 and again.record.error == "boom"


def test_an_event_reaches_a_subscriber_of_another_replica(stores):
    a = stores("replica-a")
    # on SQLite one replica exists: its own subscribers are woken in-process
    b = stores("replica-b") if stores.backend == "postgresql" else a
    a.open()
    if b is not a:
        b.open()
    heard: list[tuple[str, int, str, float]] = []
    got = threading.Event()

    def listener(job_id: str, seq: int, kind: str) -> None:
        heard.append((job_id, seq, kind, time.monotonic()))
        if kind == "epoch":
            got.set()

    a.subscribe(listener)
    b.submit(record(1))
    sent = time.monotonic()
    seq = b.append_event("job1", "epoch", {"epoch": 1, "values": {"train/loss": 1.5}})
    assert got.wait(5), "the epoch event did not reach replica-a's subscriber"
    job_id, heard_seq, kind, when = next(h for h in heard if h[2] == "epoch")
    assert (job_id, heard_seq) == ("job1", seq) and when - sent < 1.0
    assert a.events("job1", since=seq - 1)[0].payload["values"] == {"train/loss": 1.5}
    b.request("job1", cancel=True)
    deadline = time.monotonic() + 5
    while not any(h[2] == "control" for h in heard) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert any(h[2] == "control" for h in heard)


def test_sqlite_refuses_a_second_replica(stores, tmp_path):
    first = stores("replica-a")
    first.open()
    second = stores("replica-b")
    if stores.backend == "postgresql":
        second.open()  # PostgreSQL: any number of replicas
        assert {r["id"] for r in first.replicas()} == {"replica-a", "replica-b"}
        return
    with pytest.raises(ReplicaRefused, match="PostgreSQL") as refused:
        second.open()
    assert "replica-a" in str(refused.value) and "VISIONMESH_DATABASE_URL" in str(refused.value)
    # other frameworks have their own replica
    stores("timm-a", framework="timm").open()
    # once the first one has gone (clean stop), a new replica starts
    first.close()
    second.open()
    assert [r["id"] for r in second.replicas()] == ["replica-b"]


def test_a_dead_replica_on_this_host_does_not_block_a_restart(stores):
    """A replica SIGKILLed a moment ago leaves a fresh heartbeat; its pid is gone, so a
    restart on this host takes over at once and its jobs are free to resume."""
    import subprocess
    import sys

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    old = stores("old")
    old.open()
    old.submit(record(1))
    old.claim(1)
    old.update("job1", target="PREPARING", lease="mine")
    with old.engine.begin() as conn:  # as if that replica had been the exited process
        conn.execute(
            jobstore.update(old.t.replicas).where(old.t.replicas.c.id == "old").values(pid=dead.pid)
        )
    new = stores("new")
    new.open()
    assert new.reap() == ["job1"]
    assert [r.job_id for r in new.claim(1)] == ["job1"]
    assert [r["id"] for r in new.replicas()] == ["new"]


def test_a_second_trainer_on_sqlite_is_refused_at_start(tmp_path):
    """What a user sees: the second ``python -m trainers.ultralytics`` on one SQLite catalog
    exits at once saying to use PostgreSQL; once the first has stopped, one starts again."""
    from tests._servers import start_server

    home = tmp_path / "home"
    env = {
        "VISIONMESH_HOME": str(home),
        "VISIONMESH_STORE_URL": f"file://{home / 'store'}",
        "VISIONMESH_DATABASE_URL": f"sqlite:///{home / 'catalog.db'}",
    }
    first = start_server("trainers.ultralytics", env=env)
    try:
        with pytest.raises(AssertionError) as refused:
            start_server("trainers.ultralytics", env=env)
        message = str(refused.value)
        assert "exited with 2" in message, message
        assert "SQLite allows one trainer replica per framework" in message
        assert "VISIONMESH_DATABASE_URL to a PostgreSQL database" in message
    finally:
        assert first.stop() == 0
    again = start_server("trainers.ultralytics", env=env)
    assert again.stop() == 0


def test_job_json_files_from_before_the_database_are_imported_once(tmp_path):
    """A trainer upgraded in place: its jobs were only runs/<job>/job.json files. The first
    start imports them (a RUNNING one comes back INTERRUPTED and claimable, to resume), a
    second start imports nothing, and jobs of other frameworks are left alone."""
    from tests._idle_trainer import IdleAdapter
    from trainers.runtime import records
    from trainers.runtime.jobs import JobManager
    from visionmesh.store import open_store

    url = (tmp_path / "store").as_uri()
    store = open_store(url)
    old = {}
    for job_id, state, framework in (
        ("done1", "SUCCEEDED", "idle"),
        ("run1", "RUNNING", "idle"),
        ("other1", "RUNNING", "timm"),
    ):
        rec = record(job_id)
        rec.job_id, rec.state, rec.framework = job_id, state, framework
        store.put_bytes(records.run_key(job_id, "job.json"), rec.to_json())
        old[job_id] = rec

    def manager() -> JobManager:
        return JobManager(IdleAdapter(), store, home=tmp_path / "home", store_url=url)

    first = manager()
    first.recover()
    rows = {row.job_id: row for row in first.db.list()}
    assert set(rows) == {"done1", "run1"}
    assert rows["done1"].state == "SUCCEEDED"
    assert rows["run1"].state == "INTERRUPTED" and rows["run1"].resume
    assert first.db.queue_positions() == {"run1": 1}
    (claimed,) = first.db.claim(1)
    assert claimed.job_id == "run1" and claimed.record.resume_count == 1
    first.db.close()
    again = manager()
    again.recover()  # the rows exist: nothing imported twice, the claim was a dead replica's
    assert len(again.db.list()) == 2
    assert again.db.get("run1").lease_owner is None  # taken back at once (same host, gone)
    again.db.close()


def test_log_lines_of_long_ended_jobs_leave_the_database_and_stay_readable(tmp_path):
    """The events table does not keep every log line forever: once a job ended longer ago
    than VISIONMESH_TRAINER_LOG_EVENTS_KEEP_SECONDS its log lines go (epochs and states
    stay), and the job's log is read from runs/<job>/log.txt, written when it ended."""
    from tests._idle_trainer import IdleAdapter
    from trainers.runtime import records
    from trainers.runtime.jobs import JobManager
    from visionmesh.store import open_store

    url = (tmp_path / "store").as_uri()
    store = open_store(url)
    manager = JobManager(IdleAdapter(), store, home=tmp_path / "home", store_url=url)
    manager.recover()
    db = manager.db
    for job_id in ("ended", "waiting"):
        rec = record(job_id)
        rec.job_id, rec.framework = job_id, "idle"
        db.submit(rec)
        db.append_event(job_id, "log", [f"{job_id} line 1", f"{job_id} line 2"])
        db.append_event(job_id, "epoch", {"epoch": 1})
    db.update("ended", target="CANCELLED")
    store.put_bytes(records.run_key("ended", "log.txt"), b"ended line 1\nended line 2\n")

    manager.log_events_keep_seconds = 3600
    assert manager.prune_log_events() == 0  # ended a moment ago: kept
    time.sleep(0.05)
    manager.log_events_keep_seconds = 0
    assert manager.prune_log_events() == 1
    assert db.events("ended", kinds=("log",)) == []
    assert [e.kind for e in db.events("ended")] == ["epoch", "state"]
    assert manager._history("ended") == ["ended line 1", "ended line 2"]  # from log.txt
    assert len(db.events("waiting", kinds=("log",))) == 1  # not ended: untouched
    db.close()
