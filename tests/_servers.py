"""Real servers in child processes for tests.

``start_server("dataset_svc", env=...)`` runs ``python -m dataset_svc --listen 127.0.0.1:0``,
reads the port it bound from its ``serving on`` line and waits until every service it
serves reports SERVING over grpc.health.v1. ``ServerProcess.stop()`` sends SIGTERM and
returns the exit status. Output goes to a log file whose tail is shown when start fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
SERVING_LINE = re.compile(r"serving on (\S+):(\d+) \(([^)]*)\)")


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "sdk"), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


@dataclass
class ServerProcess:
    module: str
    proc: subprocess.Popen
    log_path: Path
    addr: str = ""
    services: list[str] = field(default_factory=list)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def channel(self) -> grpc.Channel:
        """A channel to the server that takes messages of up to 64 MiB either way."""
        return grpc.insecure_channel(
            self.addr,
            options=[
                ("grpc.max_receive_message_length", 64 * 1024 * 1024),
                ("grpc.max_send_message_length", 64 * 1024 * 1024),
            ],
        )

    def stop(self, timeout: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"{self.module} did not exit {timeout}s after SIGTERM") from None

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def health_status(addr: str, service: str, timeout: float = 2) -> int | None:
    with grpc.insecure_channel(addr) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
        except grpc.RpcError:
            return None
        return reply.status


def start_server(
    module: str,
    *,
    env: dict[str, str] | None = None,
    listen: str = "127.0.0.1:0",
    args: list[str] | None = None,
    timeout: float = 60,
) -> ServerProcess:
    log_file = tempfile.NamedTemporaryFile(
        prefix=f"{module.replace('.', '_')}-", suffix=".log", delete=False
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--listen", listen, *(args or [])],
        cwd=ROOT,
        env=child_env(env),
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    server = ServerProcess(module, proc, Path(log_file.name))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        match = SERVING_LINE.search(server.log())
        if match:
            server.addr = f"{match.group(1)}:{match.group(2)}"
            server.services = [s.strip() for s in match.group(3).split(",")]
            break
        if proc.poll() is not None:
            raise AssertionError(f"{module} exited with {proc.returncode}:\n{server.log()[-3000:]}")
        time.sleep(0.05)
    else:
        server.kill()
        raise AssertionError(
            f"{module} printed no serving line in {timeout}s:\n{server.log()[-3000:]}"
        )
    for service in server.services:
        while health_status(server.addr, service) != health_pb2.HealthCheckResponse.SERVING:
            if time.monotonic() > deadline or proc.poll() is not None:
                server.kill()
                raise AssertionError(f"{module}: {service} never SERVING:\n{server.log()[-3000:]}")
            time.sleep(0.05)
    return server


HEAVY_MODULES = ("torch", "torchvision", "ultralytics", "timm", "transformers")


def run_python(code: str) -> str:
    """Run ``code`` in a child Python of this environment (repository on its path); asserts
    it exits 0 and returns what it printed."""
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def run_without_heavy_modules(code: str) -> str:
    """:func:`run_python` in a child in which importing torch or a training framework
    raises ImportError."""
    prelude = f"import sys\nfor _mod in {HEAVY_MODULES!r}:\n    sys.modules[_mod] = None\n"
    return run_python(prelude + code)
