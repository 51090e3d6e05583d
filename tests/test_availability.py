"""Servers stay responsive with 1,000 open streams, and one caller cannot hold them all.

Real dataset_svc and trainer processes. The streams are what clients really leave open: a
StreamMetrics per browser tab following a job (on the trainer) and UploadImages calls that
sent their header and then went quiet (on dataset_svc), from several users. The trainer's
framework is ``tests._idle_trainer`` (the real runtime around a training loop that waits),
so jobs stay RUNNING / QUEUED without keeping the CPUs busy meanwhile.

The clients are asyncio gRPC channels (one thread for any number of streams); the servers
are the ordinary synchronous ones under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture
from tests._idle_trainer import FRAMEWORK, MODEL
from tests._servers import start_server
from tests._trainers import shapes_dataset, spec, start_job, upload_dataset
from visionmesh.auth import with_token
from visionmesh.v1 import dataset_pb2, dataset_pb2_grpc, trainer_pb2, trainer_pb2_grpc

pytestmark = pytest.mark.timeout(300)

S = trainer_pb2
USERS = 4
PER_USER = 125  # StreamMetrics on the trainer and uploads on dataset_svc, per user each
TRAINER_MAX_STREAMS = USERS * PER_USER + 20
LIMITS = {
    "VISIONMESH_MAX_STREAMS_PER_USER": str(PER_USER),
    "VISIONMESH_MAX_UPLOADS_PER_USER": str(PER_USER),
}
CHANNELS = 8  # client connections per server the streams are spread over

dataset_server = dataset_server_fixture([DEFAULT_BACKEND], extra_env=LIMITS)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def quota_subjects(err: grpc.RpcError) -> list[str]:
    status = rpc_status.from_call(err)
    subjects = []
    for detail in status.details if status else []:
        info = error_details_pb2.QuotaFailure()
        if detail.Unpack(info):
            subjects += [v.subject for v in info.violations]
    return subjects


class Mesh:
    def __init__(
        self,
        dataset_server: Any,
        trainer: Any,
        users: list[Any],
        datasets: list[str],
        jobs: list[str],
    ) -> None:
        self.dataset = dataset_server
        self.trainer = trainer
        self.users = users  # signed-in tests._dataset.Client
        self.datasets = datasets  # one dataset per user
        self.jobs = jobs  # one job per user on the idle trainer


@pytest.fixture(scope="module")
def mesh(dataset_server):
    trainer = start_server(
        "tests._idle_trainer",
        env={
            **dataset_server.env,
            "VISIONMESH_DATASET_ADDR": dataset_server.addr,
            "VISIONMESH_MAX_STREAMS": str(TRAINER_MAX_STREAMS),
            **LIMITS,
        },
    )
    try:
        users, datasets, jobs = [], [], []
        files, doc = shapes_dataset(4, size=32)
        for i in range(USERS + 1):  # the last one opens nothing until a test needs it
            user = dataset_server.user(f"crowd{i}")
            dataset = upload_dataset(user, files, doc).name
            stub = trainer_pb2_grpc.TrainerServiceStub(with_token(trainer.channel(), user.token))
            job = start_job(stub, spec(dataset, "detect", MODEL, epochs=1))
            users.append(user)
            datasets.append(dataset)
            jobs.append(job.name)
        yield Mesh(dataset_server, trainer, users, datasets, jobs)
    finally:
        trainer.stop(timeout=60)


# -- async helpers ----------------------------------------------------------------------------


class Crowd:
    """Streams opened with asyncio channels; each is open once its response headers came."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.trainer_channels = [grpc.aio.insecure_channel(mesh.trainer.addr) for _ in range(3)]
        self.dataset_channels = [
            grpc.aio.insecure_channel(mesh.dataset.addr) for _ in range(CHANNELS)
        ]
        self.trainer_channels += [
            grpc.aio.insecure_channel(mesh.trainer.addr) for _ in range(CHANNELS - 3)
        ]
        self.calls: list[Any] = []
        self._n = 0

    def _next(self, channels: list[Any]) -> Any:
        self._n += 1
        return channels[self._n % len(channels)]

    def stream_metrics(self, user: int) -> Any:
        stub = trainer_pb2_grpc.TrainerServiceStub(self._next(self.trainer_channels))
        call = stub.StreamMetrics(
            S.StreamMetricsRequest(name=self.mesh.jobs[user]),
            metadata=bearer(self.mesh.users[user].token),
        )
        self.calls.append(call)
        return call

    async def upload(self, user: int) -> Any:
        """An UploadImages that sent its header and nothing more."""
        stub = dataset_pb2_grpc.DatasetServiceStub(self._next(self.dataset_channels))
        call = stub.UploadImages(metadata=bearer(self.mesh.users[user].token))
        self.calls.append(call)
        header = dataset_pb2.UploadImagesHeader(parent=self.mesh.datasets[user])
        try:
            await call.write(dataset_pb2.UploadImagesRequest(header=header))
        except grpc.aio.AioRpcError:
            # a call over a limit is refused as it opens, before the server reads anything:
            # the write can lose that race; the call's own status (``refused``) says why
            if not call.done():
                raise
        return call

    async def open_all(self, per_user: int, users: range) -> None:
        calls = []
        for user in users:
            for _ in range(per_user):
                calls.append(self.stream_metrics(user))
                calls.append(await self.upload(user))
        await opened(calls)

    async def refused(self, call: Any) -> grpc.aio.AioRpcError:
        async def finish() -> None:
            if isinstance(call, grpc.aio.UnaryStreamCall):
                async for _ in call:
                    pass
            else:
                await call

        with pytest.raises(grpc.aio.AioRpcError) as err:
            await asyncio.wait_for(finish(), 30)
        return err.value

    async def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for channel in self.trainer_channels + self.dataset_channels:
            await channel.close()


async def opened(calls: list[Any], within: float = 60) -> None:
    """Wait until every call has its response headers, i.e. the server holds it open."""
    try:
        await asyncio.wait_for(asyncio.gather(*(c.initial_metadata() for c in calls)), within)
    except TimeoutError:
        waiting = sum(not c.done() for c in calls)
        raise AssertionError(
            f"{waiting} of {len(calls)} streams not open after {within}s"
        ) from None
    for call in calls:  # none of them ended (refused or failed) instead of opening
        assert not call.done(), f"{await call.code()}: {await call.details()}"


async def timed(what: str, call: Callable[[], Awaitable[Any]]) -> Any:
    started = time.monotonic()
    try:
        return await call()
    finally:
        took = time.monotonic() - started
        assert took < 1.0, f"{what} took {took:.2f}s"


async def check_responsive(mesh: Mesh, channel_t: Any, channel_d: Any) -> None:
    """Health of every service, GetCapabilities, GetJob, GetDataset and ListDatasets < 1 s."""
    token = mesh.users[0].token
    for channel, services in (
        (channel_t, ["", *mesh.trainer.services]),
        (channel_d, ["", *mesh.dataset.process.services]),
    ):
        health = health_pb2_grpc.HealthStub(channel)
        for service in services:
            reply = await timed(
                f"health {service}",
                lambda s=service, h=health: h.Check(
                    health_pb2.HealthCheckRequest(service=s), timeout=1
                ),
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
    trainer = trainer_pb2_grpc.TrainerServiceStub(channel_t)
    caps = await timed(
        "GetCapabilities", lambda: trainer.GetCapabilities(S.GetCapabilitiesRequest(), timeout=1)
    )
    assert caps.framework == FRAMEWORK
    job = await timed(
        "GetJob",
        lambda: trainer.GetJob(
            S.GetJobRequest(name=mesh.jobs[0]), metadata=bearer(token), timeout=1
        ),
    )
    assert job.job.state in (S.JOB_STATE_RUNNING, S.JOB_STATE_PREPARING, S.JOB_STATE_QUEUED)
    datasets = dataset_pb2_grpc.DatasetServiceStub(channel_d)
    got = await timed(
        "GetDataset",
        lambda: datasets.GetDataset(
            dataset_pb2.GetDatasetRequest(name=mesh.datasets[0]), metadata=bearer(token), timeout=1
        ),
    )
    assert got.dataset.name == mesh.datasets[0]
    listed = await timed(
        "ListDatasets",
        lambda: datasets.ListDatasets(
            dataset_pb2.ListDatasetsRequest(), metadata=bearer(token), timeout=1
        ),
    )
    assert mesh.datasets[0] in [d.name for d in listed.datasets]


# -- tests ------------------------------------------------------------------------------------


def test_1000_open_streams_leave_both_servers_responsive_and_idle(mesh):
    async def scenario() -> None:
        crowd = Crowd(mesh)
        probe_t = grpc.aio.insecure_channel(mesh.trainer.addr)
        probe_d = grpc.aio.insecure_channel(mesh.dataset.addr)
        try:
            started = time.monotonic()
            await crowd.open_all(PER_USER, range(USERS))
            took = time.monotonic() - started
            assert len(crowd.calls) == 2 * USERS * PER_USER == 1000
            await check_responsive(mesh, probe_t, probe_d)

            # idle streams cost no CPU: neither server works while nothing happens (a 1 s
            # poll per stream, as StreamMetrics had, costs the trainer 0.05-0.06 s here)
            pids = [mesh.trainer.proc.pid, mesh.dataset.process.proc.pid]
            # each new stream first reads its job's history from the database once (500
            # reads): let that finish, then nothing may happen while the streams wait
            await asyncio.sleep(2)
            before = [cpu_seconds(p) for p in pids]
            await asyncio.sleep(3)
            used = [cpu_seconds(p) - b for p, b in zip(pids, before, strict=True)]
            assert max(used) < 0.04, f"CPU seconds in 3 s with 1,000 idle streams: {used}"
            print(f"\n1000 streams opened in {took:.1f}s; server CPU over 3 s idle: {used}")

            # the users are at their limits: one more of either kind is refused, with reasons
            err = await crowd.refused(crowd.stream_metrics(0))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "VISIONMESH_MAX_STREAMS_PER_USER" in err.details(), err.details()
            assert f"{PER_USER} open" in err.details()
            err = await crowd.refused(await crowd.upload(1))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "uploads in progress" in err.details(), err.details()
            assert "VISIONMESH_MAX_UPLOADS_PER_USER" in err.details()

            # ... which is theirs alone: another user still opens both kinds
            await opened([crowd.stream_metrics(USERS), await crowd.upload(USERS)])
            await check_responsive(mesh, probe_t, probe_d)
        finally:
            await crowd.close()
            await probe_t.close()
            await probe_d.close()

    asyncio.run(scenario())


def test_streams_at_the_server_limit_still_leave_threads_for_health_and_calls(mesh):
    """Filling the trainer to VISIONMESH_MAX_STREAMS: the next stream is refused, unary calls
    and health still answer, and closed streams give their places back."""

    async def scenario() -> None:
        crowd = Crowd(mesh)
        probe_t = grpc.aio.insecure_channel(mesh.trainer.addr)
        probe_d = grpc.aio.insecure_channel(mesh.dataset.addr)
        try:
            calls = [crowd.stream_metrics(u) for u in range(USERS) for _ in range(PER_USER)]
            calls += [crowd.stream_metrics(USERS) for _ in range(TRAINER_MAX_STREAMS - len(calls))]
            await opened(calls)

            err = await crowd.refused(crowd.stream_metrics(USERS))
            assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert f"VISIONMESH_MAX_STREAMS={TRAINER_MAX_STREAMS}" in err.details()
            assert quota_subjects(err) == [f"user:{mesh.users[USERS].username}"]
            await check_responsive(mesh, probe_t, probe_d)

            # a client that goes away frees its places: user 0 opens as many again
            for call in calls[:PER_USER]:
                call.cancel()
            deadline = time.monotonic() + 10
            while True:
                again = crowd.stream_metrics(0)
                with contextlib.suppress(grpc.aio.AioRpcError, TimeoutError):
                    await asyncio.wait_for(again.initial_metadata(), 5)
                    if not again.done():
                        break
                assert time.monotonic() < deadline, "cancelled streams still counted after 10 s"
                await asyncio.sleep(0.2)
            await opened([crowd.stream_metrics(0) for _ in range(PER_USER - 1)])
        finally:
            await crowd.close()
            await probe_t.close()
            await probe_d.close()

    asyncio.run(scenario())


def test_a_stream_on_a_job_of_someone_else_is_refused_and_counts_nothing(mesh):
    """Refusals by the handler (NOT_FOUND) come after the stream was counted: they give the
    place back, so a user cannot be locked out by their own failed calls."""
    intruder = mesh.users[USERS]
    stub = trainer_pb2_grpc.TrainerServiceStub(with_token(mesh.trainer.channel(), intruder.token))
    for _ in range(PER_USER + 5):
        with pytest.raises(grpc.RpcError) as err:
            list(stub.StreamMetrics(S.StreamMetricsRequest(name=mesh.jobs[0]), timeout=10))
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
    own = stub.StreamMetrics(S.StreamMetricsRequest(name=mesh.jobs[USERS]), timeout=30)
    stub.CancelJob(S.CancelJobRequest(name=mesh.jobs[USERS]), timeout=30)
    assert [r.state for r in own][-1] == S.JOB_STATE_CANCELLED
