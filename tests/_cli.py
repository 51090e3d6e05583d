"""Run the real ``vmesh`` executable against real servers, as a user's terminal would.

::

    cli = Cli(tmp_path, dataset_addr=server.addr, trainers={"ultralytics": t.addr})
    cli.login(server, "alice")                   # registers on dataset_svc, then `vmesh login`
    out = cli("datasets", "list", "--json")      # CompletedProcess; out.json() parses stdout
    assert out.code == 0, out.stderr

Each Cli has its own config folder (XDG_CONFIG_HOME), so its stored token is its own.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests._dataset import PASSWORD
from tests._servers import child_env


def vmesh_command() -> list[str]:
    """The installed ``vmesh`` script of this interpreter's environment."""
    script = Path(sys.executable).parent / "vmesh"
    if script.exists():
        return [str(script)]
    found = shutil.which("vmesh")
    return [found] if found else [sys.executable, "-m", "visionmesh.cli"]


@dataclass
class Result:
    code: int
    stdout: str
    stderr: str
    args: tuple[str, ...]

    def json(self) -> Any:
        return json.loads(self.stdout)

    def __str__(self) -> str:
        return f"vmesh {' '.join(self.args)} -> {self.code}\n{self.stdout}\n{self.stderr}"


class Cli:
    def __init__(
        self,
        home: Path,
        *,
        dataset_addr: str,
        trainers: dict[str, str] | None = None,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        self.home = Path(home)
        self.config = self.home / "config"
        self.config.mkdir(parents=True, exist_ok=True)
        env = child_env(extra_env)
        env.pop("VISIONMESH_TOKEN", None)
        env["XDG_CONFIG_HOME"] = str(self.config)
        env["VISIONMESH_DATASET_ADDR"] = dataset_addr
        env["VISIONMESH_TRAINERS"] = ",".join(f"{k}={v}" for k, v in (trainers or {}).items())
        env["COLUMNS"] = "200"
        self.env = env

    @property
    def token_file(self) -> Path:
        return self.config / "visionmesh" / "token.json"

    def __call__(
        self,
        *args: str,
        input: str | None = None,
        timeout: float = 300,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Result:
        proc = subprocess.run(
            [*vmesh_command(), *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**self.env, **(env or {})},
            cwd=cwd or self.home,
            stdin=None if input is not None else subprocess.DEVNULL,
        )
        return Result(proc.returncode, proc.stdout, proc.stderr, args)

    def login(self, server: Any, name: str) -> str:
        """Register ``name`` (unique per server) via the SDK, then `vmesh login`; the username."""
        username = server.user(name).username
        out = self("login", username, "--password-stdin", input=PASSWORD + "\n")
        assert out.code == 0, out
        return username
