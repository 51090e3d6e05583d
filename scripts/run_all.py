"""`make run`: start every visionmesh process, print their addresses, stop all on Ctrl-C.

Addresses come from the same environment variables the services read
(VISIONMESH_DATASET_ADDR, VISIONMESH_TRAINERS, VISIONMESH_GATEWAY_ADDR), so `make run` and
the services agree. The REST gateway starts once the gRPC services serve.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "sdk")]

import grpc  # noqa: E402
from grpc_health.v1 import health_pb2, health_pb2_grpc  # noqa: E402

from visionmesh import config  # noqa: E402

STARTUP_SECONDS = 60


def processes(settings: config.Settings) -> list[tuple[str, str, str]]:
    """(label, module, listen address) of each process to start."""
    procs = [("dataset_svc", "dataset_svc", settings.dataset_addr)]
    for framework, addr in settings.trainers.items():
        procs.append((f"trainer {framework}", f"trainers.{framework}", addr))
    return procs


def wait_serving(addr: str, deadline: float) -> bool:
    with grpc.insecure_channel(addr) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return True
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    return False


def wait_http(addr: str, deadline: float) -> bool:
    """True once the gateway answers /healthz at all (503 while a backend is down counts)."""
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{addr}/healthz", timeout=1):
                return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.2)
    return False


def main() -> int:
    settings = config.load()
    settings.home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "sdk"), env.get("PYTHONPATH", "")])
    # dataset_svc counts failed sign-ins per client by the address the gateway forwards
    gateway_host = settings.gateway_addr.rpartition(":")[0] or "127.0.0.1"
    if gateway_host in ("0.0.0.0", "", "localhost"):
        gateway_host = "127.0.0.1"
    env.setdefault("VISIONMESH_TRUSTED_PROXIES", gateway_host)
    children: list[tuple[str, subprocess.Popen]] = []
    stopping = False

    def stop_all(*_args: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        print("\nstopping all services ...", flush=True)
        for _, proc in children:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGINT, stop_all)
    signal.signal(signal.SIGTERM, stop_all)

    for label, module, addr in processes(settings):
        proc = subprocess.Popen([sys.executable, "-m", module, "--listen", addr], cwd=ROOT, env=env)
        children.append((label, proc))

    deadline = time.monotonic() + STARTUP_SECONDS
    for (label, proc), (_, _, addr) in zip(children, processes(settings), strict=True):
        if not wait_serving(addr, deadline) or proc.poll() is not None:
            print(f"{label} did not start serving on {addr}; stopping", file=sys.stderr)
            stop_all()
            break
    else:
        gateway = subprocess.Popen(
            [sys.executable, "-m", "gateway", "--listen", settings.gateway_addr],
            cwd=ROOT,
            env=env,
        )
        children.append(("gateway", gateway))
        if not wait_http(settings.gateway_addr, deadline) or gateway.poll() is not None:
            print(f"gateway did not start on {settings.gateway_addr}; stopping", file=sys.stderr)
            stop_all()
        else:
            print("\nvisionmesh is up:", flush=True)
            for (label, _), (_, _, addr) in zip(children, processes(settings), strict=False):
                print(f"  {label:<20} grpc://{addr}", flush=True)
            print(f"  {'gateway':<20} http://{settings.gateway_addr}  (REST, SSE, web UI)")
            print(f"  state in {settings.home}; Ctrl-C stops all\n", flush=True)

    status = 0
    while children:
        for item in list(children):
            label, proc = item
            code = proc.poll()
            if code is None:
                continue
            children.remove(item)
            if not stopping:
                print(f"{label} exited with status {code}; stopping the rest", file=sys.stderr)
                status = code or 1
                stop_all()
        time.sleep(0.2)
    return status


if __name__ == "__main__":
    sys.exit(main())
