"""The gateway in a child process, in front of real dataset_svc and trainer processes.

``start_gateway(dataset_addr, {"timm": addr})`` runs ``python -m gateway --listen
127.0.0.1:0``, reads the port from its ``gateway serving on`` line and waits until it
answers HTTP. ``GatewayProcess.client(token)`` is an ``httpx.Client`` on it (with the
user's bearer token when given). Helpers below speak plain HTTP only, as a browser would.
"""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests._servers import ROOT, child_env

SERVING_LINE = re.compile(r"gateway serving on (\S+):(\d+) \(http\)")
PASSWORD = "correct horse battery"


@dataclass
class GatewayProcess:
    proc: subprocess.Popen
    log_path: Path
    url: str = ""

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, token: str | None = None, **kw: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(
            base_url=self.url, headers=headers, timeout=kw.pop("timeout", 120), **kw
        )

    def stop(self, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"the gateway did not exit {timeout}s after SIGTERM") from None


def gateway_env(dataset_addr: str, trainers: dict[str, str], extra: dict[str, str] | None = None):
    return {
        "VISIONMESH_DATASET_ADDR": dataset_addr,
        "VISIONMESH_TRAINERS": ",".join(f"{k}={v}" for k, v in trainers.items()),
        **(extra or {}),
    }


def start_gateway(
    dataset_addr: str,
    trainers: dict[str, str],
    *,
    extra_env: dict[str, str] | None = None,
    timeout: float = 60,
) -> GatewayProcess:
    log_file = tempfile.NamedTemporaryFile(prefix="gateway-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "--listen", "127.0.0.1:0"],
        cwd=ROOT,
        env=child_env(gateway_env(dataset_addr, trainers, extra_env)),
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    gw = GatewayProcess(proc, Path(log_file.name))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = SERVING_LINE.search(gw.log())
        if found:
            gw.url = f"http://{found.group(1)}:{found.group(2)}"
            break
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited with {proc.returncode}:\n{gw.log()[-3000:]}")
        time.sleep(0.05)
    else:
        proc.kill()
        raise AssertionError(f"gateway printed no serving line in {timeout}s:\n{gw.log()[-3000:]}")
    while time.monotonic() < deadline:
        try:
            httpx.get(gw.url + "/healthz", timeout=5)
            return gw
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"gateway never answered HTTP:\n{gw.log()[-3000:]}")


def sign_in(http: httpx.Client, username: str, password: str = PASSWORD) -> str:
    """Register (tolerating an existing user) and log in over REST; returns the token."""
    reply = http.post("/v1/auth:register", json={"username": username, "password": password})
    assert reply.status_code in (200, 409), reply.text
    reply = http.post("/v1/auth:login", json={"username": username, "password": password})
    assert reply.status_code == 200, reply.text
    return reply.json()["accessToken"]


def multipart_files(files: list[tuple[str, bytes]]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """httpx ``files=`` for a folder upload: one ``files`` part per file, filename = path."""
    return [("files", (path, data, "application/octet-stream")) for path, data in files]


def sse_events(lines: Any) -> list[dict[str, Any]]:
    """Parse Server-Sent Events from an iterator of text lines into dicts (id, event, data)."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {"data": []}
    for line in lines:
        line = line.rstrip("\r")
        if line == "":
            if current["data"] or "event" in current:
                events.append(
                    {**current, "data": "\n".join(current["data"]) if current["data"] else None}
                )
            current = {"data": []}
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if key == "data":
            current["data"].append(value)
        elif key in ("id", "event", "retry"):
            current[key] = value
    return events
