"""Queue throughput: 200 tiny jobs through 1 vs 3 trainer replicas on one PostgreSQL queue.

Each replica is a real trainer server (``python -m bench.trainer_queue --listen ...``) with a stub
adapter (no torch: a job sleeps ``--epoch-seconds`` per epoch, standing in for a GPU, and
reports its epochs), ``VISIONMESH_TRAINER_MAX_JOBS=1``, sharing one PostgreSQL schema (the
catalog database) and one object store; a stand-in dataset service (tests._trainers) answers
snapshots. The jobs go in through one round-robin channel over the replicas' addresses from
8 client threads; the time is from the first StartTraining until every job SUCCEEDED.
The lease overhead per job is the database work a job's lease costs (claim, start, one
heartbeat, end + release), timed on the same database without any training.

The last line is JSON: ``ours`` (seconds, 3 replicas), ``peer`` (seconds, 1 replica),
``ratio`` = ours / peer (goal: <= 1, the 3-replica run is not slower), the jobs per second
of both and ``lease_ms_per_job``.

    python bench/trainer_queue.py [--jobs 200] [--epochs 2] [--epoch-seconds 0.1]
    (database: VISIONMESH_TEST_DATABASE_URL, default postgresql+psycopg://postgres@127.0.0.1:5432/test)
"""

from __future__ import annotations

import os
import sys

# the repository root (bench.trainer_queue, tests._trainers) and the SDK, importable
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
for _p in (os.path.join(_ROOT, "sdk"), _ROOT):
    if _p not in sys.path:
        sys.path.insert(0, _p)

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

from trainers.runtime.adapter import (  # noqa: E402
    OBJECT_DETECTION,
    FrameworkAdapter,
    Hyperparameter,
    JobContext,
    ModelSpec,
    Prediction,
)

FRAMEWORK = "stub"
DEFAULT_DB = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


class StubAdapter(FrameworkAdapter):
    """A framework that trains nothing: each epoch sleeps, then is reported."""

    framework = FRAMEWORK

    def models(self) -> list[ModelSpec]:
        return [ModelSpec("stub-net", (OBJECT_DETECTION,), family="stub", description="sleeps")]

    def hyperparameters(self) -> list[Hyperparameter]:
        h = Hyperparameter
        return [
            h("epochs", "int", "1", "Epochs", min_value="1"),
            h("batch_size", "int", "1", "Images per step", min_value="1"),
            h("image_size", "int", "32", "Input size", min_value="16"),
            h("learning_rate", "float", "0.01", "Learning rate", min_value="0"),
            h("seed", "int", "0", "Seed"),
            h("patience", "int", "0", "Patience"),
            h("pretrained", "bool", "false", "Pretrained weights"),
            h("epoch_seconds", "float", "0.1", "Seconds per epoch", extra=True),
        ]

    def dataset_format(self, task_type: str) -> str:
        return "yolo"

    def framework_version(self) -> str:
        return "0"

    def train(self, job: JobContext) -> None:
        seconds = float(job.spec.extra.get("epoch_seconds", "0.1"))
        for epoch in range(1, job.spec.epochs + 1):
            time.sleep(seconds)
            if job.report_epoch(epoch, {"train/loss": 1.0 / epoch, "val/map50_95": 0.1 * epoch}):
                return

    def predict(self, checkpoint: Path, image: bytes, **options: Any) -> Prediction:
        raise NotImplementedError("the stub trainer does not predict")


def serve(argv: Sequence[str]) -> int:
    from trainers.runtime.server import main as serve_trainer

    return serve_trainer(StubAdapter(), argv)


def schema_url(base: str, schema: str) -> str:
    import sqlalchemy as sa

    url = sa.engine.make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
    return url.render_as_string(hide_password=False)


def run_replicas(
    count: int, *, jobs: int, epochs: int, epoch_seconds: float, database: str, home: Path
) -> dict[str, Any]:
    import grpc
    import sqlalchemy as sa

    from tests._servers import start_server
    from tests._trainers import FakeDatasetService, shapes_dataset
    from tests._trainers import spec as job_spec
    from visionmesh import config
    from visionmesh.auth import with_token
    from visionmesh.v1 import trainer_pb2 as S
    from visionmesh.v1 import trainer_pb2_grpc

    schema = f"bench_queue_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(database)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    fake = FakeDatasetService(home)
    servers = []
    try:
        files, doc = shapes_dataset(8, size=32, seed=1)
        dataset = fake.add_dataset(files, doc, "bench")
        env = {
            **fake.env,
            "VISIONMESH_DATASET_ADDR": fake.addr,
            "VISIONMESH_DATABASE_URL": schema_url(database, schema),
            "VISIONMESH_TRAINER_MAX_JOBS": "1",
            "VISIONMESH_TRAINER_QUEUE": str(jobs + 10),
            "VISIONMESH_TRAINER_LEASE_SECONDS": "10",
        }
        for i in range(count):
            servers.append(
                start_server(
                    "bench.trainer_queue", env={**env, "VISIONMESH_TRAINER_REPLICA": f"r{i}"}
                )
            )
        target = config.parse_trainers(f"{FRAMEWORK}=" + ",".join(s.addr for s in servers))[
            FRAMEWORK
        ]
        channel = grpc.insecure_channel(target, options=config.CHANNEL_LB_OPTIONS)
        stub = trainer_pb2_grpc.TrainerServiceStub(with_token(channel, fake.token("bench")))

        def start(source: str) -> Any:
            training = job_spec(
                source,
                "detect",
                "stub-net",
                epochs=epochs,
                extra={"epoch_seconds": str(epoch_seconds)},
            )
            return stub.StartTraining(
                S.StartTrainingRequest(request_id=uuid.uuid4().hex, spec=training), timeout=60
            ).job

        def wait(names: set[str]) -> None:
            while True:
                listed = stub.ListJobs(S.ListJobsRequest(page_size=1000), timeout=60).jobs
                states = {j.name: j.state for j in listed if j.name in names}
                ended = (S.JOB_STATE_FAILED, S.JOB_STATE_CANCELLED)
                bad = [n for n, s in states.items() if s in ended]
                if bad:
                    raise SystemExit(f"{len(bad)} job(s) did not succeed, e.g. {bad[0]}")
                if len(states) == len(names) and all(
                    s == S.JOB_STATE_SUCCEEDED for s in states.values()
                ):
                    return
                time.sleep(0.05)

        # one warm-up job prepares the dataset snapshot every job then trains on
        first = start(dataset)
        wait({first.name})
        snapshot = stub.GetJob(S.GetJobRequest(name=first.name), timeout=30).job.snapshot
        names: list[str] = []
        lock = threading.Lock()
        todo = list(range(jobs))

        def client() -> None:
            while True:
                with lock:
                    if not todo:
                        return
                    todo.pop()
                job = start(snapshot)
                with lock:
                    names.append(job.name)

        began = time.monotonic()
        threads = [threading.Thread(target=client) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait(set(names))
        seconds = time.monotonic() - began
        listed = stub.ListJobs(S.ListJobsRequest(page_size=1000), timeout=60).jobs
        per_replica: dict[str, int] = {}
        for job in listed:
            if job.name in set(names):
                per_replica[job.replica] = per_replica.get(job.replica, 0) + 1
        channel.close()
        return {"seconds": seconds, "jobs_per_second": jobs / seconds, "per_replica": per_replica}
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.stop(timeout=60)
        fake.stop()
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def lease_overhead(database: str, jobs: int = 200) -> float:
    """Milliseconds of database work per job for its lease: claim, PREPARING, one heartbeat,
    SUCCEEDED with the lease released."""
    from trainers.runtime.jobstore import JobStore
    from trainers.runtime.records import JobRecord

    prefix = f"bq{uuid.uuid4().hex[:6]}_"
    store = JobStore(database, FRAMEWORK, "bench", lease_seconds=30, table_prefix=prefix)
    try:
        store.open()
        for i in range(jobs):
            store.submit(
                JobRecord(
                    job_id=f"j{i}",
                    framework=FRAMEWORK,
                    owner="users/bench",
                    request_id="",
                    spec={},
                    task_type="detect",
                    model="stub-net",
                    dataset="d",
                )
            )
        began = time.perf_counter()
        for _ in range(jobs):
            (row,) = store.claim(1)
            store.update(row.job_id, target="PREPARING", lease="mine")
            store.heartbeat()
            store.update(row.job_id, target="SUCCEEDED", lease="mine", release=True)
        return (time.perf_counter() - began) * 1000 / jobs
    finally:
        store.drop_tables()
        store.close()


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--listen" in argv:
        return serve(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--epoch-seconds", type=float, default=0.1)
    args = parser.parse_args(argv)
    database = os.environ.get("VISIONMESH_TEST_DATABASE_URL", "") or DEFAULT_DB
    home = Path(tempfile.mkdtemp(prefix="vm-bench-queue-"))
    try:
        results = {}
        for count in (1, 3):
            results[count] = run_replicas(
                count,
                jobs=args.jobs,
                epochs=args.epochs,
                epoch_seconds=args.epoch_seconds,
                database=database,
                home=home / f"r{count}",
            )
            print(
                f"{count} replica(s): {args.jobs} jobs in {results[count]['seconds']:.1f}s = "
                f"{results[count]['jobs_per_second']:.2f} jobs/s; jobs per replica "
                f"{results[count]['per_replica']}",
                flush=True,
            )
        lease_ms = lease_overhead(database)
        print(f"lease overhead: {lease_ms:.2f} ms of database work per job", flush=True)
        ours, peer = results[3]["seconds"], results[1]["seconds"]
        print(f"3 vs 1 replicas: ratio {ours / peer:.3f} (time; < 1 is faster)")
        print(
            json.dumps(
                {
                    "bench": "queue",
                    "jobs": args.jobs,
                    "ours": round(ours, 3),
                    "peer": round(peer, 3),
                    "ratio": round(ours / peer, 4),
                    "jobs_per_second_3_replicas": round(results[3]["jobs_per_second"], 3),
                    "jobs_per_second_1_replica": round(results[1]["jobs_per_second"], 3),
                    "lease_ms_per_job": round(lease_ms, 3),
                }
            )
        )
        return 0
    finally:
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    # the adapter by its importable name (the job's worker imports bench.trainer_queue:StubAdapter)
    from bench.trainer_queue import main as _main

    sys.exit(_main())
