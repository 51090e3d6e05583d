"""gRPC server bootstrap shared by every visionmesh process.

One way to run a server: :func:`run` builds a ``grpc.server`` with the given services, adds
``grpc.health.v1.Health`` (one status per service name, NOT_SERVING while draining) and
server reflection (so ``grpcurl -plaintext HOST:PORT list`` works without .proto files),
binds ``--listen``, prints one ``serving`` line with the bound address, and on SIGTERM or
SIGINT drains: every service goes NOT_SERVING, ``on_drain`` hooks run (finish or checkpoint
work), in-flight RPCs get ``grace`` seconds, and the process exits 0.

Open streams: every server counts its streaming calls per caller and in all
(:mod:`visionmesh.limits`, ``VISIONMESH_MAX_STREAMS*`` / ``VISIONMESH_MAX_UPLOADS_PER_USER``)
and keeps threads that only unary calls use, so health, GetCapabilities and the catalog
calls answer however many streams are open; a caller over a limit gets RESOURCE_EXHAUSTED.

Files: :func:`parse_args` (the first thing every server's ``main`` calls) and :func:`run`
set the process umask to 0o077, so everything a server and its child processes create
(catalog, its -wal/-shm, blobs, manifests, caches, keys) is 0600 in 0700 folders.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from visionmesh.limits import StreamLimitInterceptor, StreamLimits
from visionmesh.reflection import enable_reflection

log = logging.getLogger("visionmesh.server")

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
PRIVATE_UMASK = 0o077


def private_files() -> None:
    """Make every file this process (and its children) creates private: umask 0o077."""
    os.umask(PRIVATE_UMASK)


@dataclass(frozen=True)
class Service:
    """A servicer and how to add it: ``full_name`` is e.g. ``visionmesh.v1.DatasetService``."""

    full_name: str
    add_to_server: Callable[[Any, grpc.Server], None]
    servicer: Any


def service_name(module_pb2: Any, short_name: str) -> str:
    """Full name of a service declared in a generated ``*_pb2`` module."""
    return module_pb2.DESCRIPTOR.services_by_name[short_name].full_name


def parse_args(
    prog: str, default_listen: str, argv: Sequence[str] | None = None
) -> argparse.Namespace:
    """The server's command line; also makes the process's files private (umask 0o077)."""
    private_files()
    parser = argparse.ArgumentParser(prog=prog, description=f"visionmesh {prog} gRPC server")
    parser.add_argument(
        "--listen",
        default=default_listen,
        help=f"HOST:PORT to bind (default {default_listen}; port 0 picks a free one)",
    )
    parser.add_argument(
        "--grace", type=float, default=10.0, help="seconds in-flight RPCs get on shutdown"
    )
    return parser.parse_args(argv)


class Server:
    """A running gRPC server with health and reflection; see :func:`run`.

    ``limits`` (default from the environment) bounds open streams per caller and in all;
    the pool has a thread for each stream allowed plus ``limits.rpc_threads`` for unary
    calls. The stream limiter runs inside ``interceptors`` (after authentication).
    """

    def __init__(
        self,
        name: str,
        services: Sequence[Service],
        *,
        interceptors: Sequence[grpc.ServerInterceptor] = (),
        limits: StreamLimits | None = None,
    ) -> None:
        self.name = name
        self.services = list(services)
        self.limits = limits or StreamLimits.from_env()
        self.stream_limiter = StreamLimitInterceptor(self.limits)
        self._grpc = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=self.limits.worker_threads, thread_name_prefix=name
            ),
            interceptors=[*interceptors, self.stream_limiter],
            maximum_concurrent_rpcs=self.limits.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                ("grpc.so_reuseport", 0),
            ],
        )
        self.health = health.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._grpc)
        for service in self.services:
            service.add_to_server(service.servicer, self._grpc)
        enable_reflection([s.full_name for s in self.services] + [health.SERVICE_NAME], self._grpc)
        self.port = 0
        self._serving: bool | None = None
        self._stopped = threading.Event()

    def start(self, listen: str) -> str:
        host, _, port = listen.rpartition(":")
        self.port = self._grpc.add_insecure_port(listen)
        if not self.port:
            raise OSError(f"cannot bind {listen}")
        self._grpc.start()
        self.set_serving(True)
        return f"{host or '0.0.0.0'}:{self.port}"

    def set_serving(self, serving: bool) -> None:
        if self._serving is serving:
            return  # health watchers see each change once
        self._serving = serving
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        self.health.set("", status)
        for service in self.services:
            self.health.set(service.full_name, status)

    def stop(self, grace: float) -> None:
        self.set_serving(False)
        self._grpc.stop(grace).wait()
        self._stopped.set()

    def wait(self) -> None:
        self._stopped.wait()


def run(
    name: str,
    services: Sequence[Service],
    listen: str,
    *,
    interceptors: Sequence[grpc.ServerInterceptor] = (),
    on_drain: Sequence[Callable[[], None]] = (),
    grace: float = 10.0,
) -> int:
    """Serve until SIGTERM/SIGINT, then drain and return the exit status (0)."""
    private_files()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    server = Server(name, services, interceptors=interceptors)
    bound = server.start(listen)
    names = ", ".join(s.full_name for s in services)
    print(f"visionmesh {name} serving on {bound} ({names})", flush=True)

    shutdown = threading.Event()

    def _on_signal(signum: int, _frame: Any) -> None:
        log.info("%s: %s received, draining", name, signal.Signals(signum).name)
        shutdown.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    while not shutdown.wait(0.5):
        pass
    server.set_serving(False)  # health first, so load balancers stop sending work
    for hook in on_drain:
        try:
            hook()
        except Exception:  # a failing hook must not keep the process alive
            log.exception("%s: drain hook failed", name)
    server.stop(grace)
    print(f"visionmesh {name} stopped", flush=True)
    sys.stdout.flush()
    return 0
