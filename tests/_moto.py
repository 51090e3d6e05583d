"""moto's S3-compatible server in a child process, for any test that needs real S3 over HTTP.

Reusable from every test module (this is a helper, not a conftest)::

    from tests._moto import MotoServer

    @pytest.fixture(scope="session")
    def moto():
        with MotoServer() as server:
            yield server

    def test_x(moto, monkeypatch):
        bucket = moto.create_bucket()                  # fresh, uniquely named bucket
        moto.apply_env(monkeypatch)                    # AWS_ENDPOINT_URL + dummy credentials
        store = open_store(f"s3://{bucket}/prefix")

For child processes (a server under test) pass ``child_env(moto.env())``. The server runs
``python -m moto.server -H 127.0.0.1 -p PORT`` on a free loopback port (needs the
``moto[server]`` extra: flask, flask-cors), allows multipart parts down to 5 KiB
(``S3_UPLOAD_PART_MIN_SIZE``) so multipart paths can be tested with small files, and logs
to a temp file whose tail is shown if it fails to start.
"""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

MIN_PART_SIZE = 5 * 1024
UNSET_VARS = ("AWS_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN", "AWS_REGION")
_bucket_counter = itertools.count(1)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    def __init__(self, start_timeout: float = 20.0) -> None:
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.endpoint = ""
        self._client: Any = None
        self._log = Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])

    def env(self) -> dict[str, str]:
        """Environment that points boto3 (and so S3Store) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            # Never read a developer's ~/.aws files or profile.
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }

    def apply_env(self, monkeypatch: Any) -> None:
        """Set :meth:`env` with pytest's monkeypatch and unset variables that would override it."""
        for name in UNSET_VARS:
            monkeypatch.delenv(name, raising=False)
        for name, value in self.env().items():
            monkeypatch.setenv(name, value)

    def client(self) -> Any:
        """A boto3 S3 client for this server (cached; boto3 clients are thread-safe)."""
        if self._client is None:
            self._client = self._new_client()
        return self._client

    def _new_client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"test-bucket-{os.getpid()}-{next(_bucket_counter)}"
        self.client().create_bucket(Bucket=name)
        return name

    def log_tail(self, n: int = 3000) -> str:
        return self._log.read_text(errors="replace")[-n:]

    def start(self) -> MotoServer:
        env = dict(os.environ)
        env.update(
            S3_UPLOAD_PART_MIN_SIZE=str(MIN_PART_SIZE),
            MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=str(16 * 1024 * 1024),
            PYTHONUNBUFFERED="1",
        )
        last_error = ""
        for _attempt in range(3):  # the free port may be taken between probe and bind
            self.port = free_port()
            self.endpoint = f"http://127.0.0.1:{self.port}"
            with open(self._log, "ab") as log:
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                )
            deadline = time.monotonic() + self.start_timeout
            while time.monotonic() < deadline and self.proc.poll() is None:
                try:
                    with urllib.request.urlopen(f"{self.endpoint}/moto-api/", timeout=1):
                        return self
                except urllib.error.HTTPError:
                    return self  # it answered
                except OSError as exc:
                    last_error = str(exc)
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError(
            f"moto server did not start ({last_error}); log tail:\n{self.log_tail()}"
        )

    def stop(self) -> None:
        self._client = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._log.unlink(missing_ok=True)
