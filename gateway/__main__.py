"""``python -m gateway [--listen HOST:PORT]``: the REST/JSON + SSE gateway on one event loop.

Listens on ``--listen`` (default ``VISIONMESH_GATEWAY_ADDR``, else 127.0.0.1:8000; port 0
picks a free one) and prints ``gateway serving on HOST:PORT (http)`` once bound. Backends
come from ``VISIONMESH_DATASET_ADDR`` and ``VISIONMESH_TRAINERS``;
``VISIONMESH_GATEWAY_EXTRA=pkg.mod_pb2=host:port,...`` adds the services of more compiled
modules (their routes come from their own ``google.api.http`` options);
``VISIONMESH_GATEWAY_CORS_ORIGINS`` (``*`` or a comma list) turns CORS on.
"""

from __future__ import annotations

import argparse
import signal
import socket
import sys
from collections.abc import Sequence

import uvicorn

from gateway.app import create_app
from visionmesh import config


def main(argv: Sequence[str] | None = None) -> int:
    settings = config.load()
    parser = argparse.ArgumentParser(prog="gateway", description="visionmesh REST gateway")
    parser.add_argument(
        "--listen",
        default=settings.gateway_addr,
        help=f"HOST:PORT to bind (default {settings.gateway_addr}; port 0 picks a free one)",
    )
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    app = create_app(settings)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=10,
            lifespan="on",
        )
    )
    # uvicorn drains on SIGTERM/SIGINT, then re-raises the signal to the handler that was
    # there before it: make that one a no-op so a graceful stop exits 0 like the gRPC servers.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    print(f"gateway serving on {host}:{bound_port} (http)", flush=True)
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
