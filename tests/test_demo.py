"""`make demo` end to end with a shortened recipe (VISIONMESH_DEMO_* variables): the demo
starts its own mesh on free ports in a fresh home, and must leave the overlay PNG and a
metric record for every epoch it trained. (checks/demo.py runs the full recipe and reports
its wall time and mAP50.)"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from tests._servers import ROOT

pytestmark = pytest.mark.timeout(900)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_demo_with_a_short_recipe(tmp_path: Path) -> None:
    home = tmp_path / "var"
    summary = tmp_path / "summary.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONMESH_")}
    env.update(
        {
            "VISIONMESH_HOME": str(home),
            "VISIONMESH_DATASET_ADDR": f"127.0.0.1:{_free_port()}",
            "VISIONMESH_TRAINERS": f"ultralytics=127.0.0.1:{_free_port()}",
            "VISIONMESH_GATEWAY_ADDR": f"127.0.0.1:{_free_port()}",
            "VISIONMESH_DEMO_IMAGES": "20",
            "VISIONMESH_DEMO_SIZE": "64",
            "VISIONMESH_DEMO_IMGSZ": "64",
            "VISIONMESH_DEMO_EPOCHS": "2",
            "VISIONMESH_DEMO_BATCH": "8",
            "VISIONMESH_DEMO_SUMMARY": str(summary),
        }
    )
    # the suite already runs inside the set-up virtualenv: `-o` keeps make from redoing setup
    proc = subprocess.run(
        ["make", "-o", ".venv/.visionmesh-setup", "demo", f"PY={sys.executable}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout
    for step in (
        "$ vmesh shapes",
        "$ vmesh register demo",
        "$ vmesh datasets create shapes-demo-",
        "$ vmesh datasets upload",
        "$ vmesh datasets import",
        "$ vmesh compat",
        "$ vmesh train",
        "$ vmesh predict",
    ):
        assert step in out, out
    assert "EPOCH" in out and "VAL/MAP50" in out
    assert "web UI: http://" in out
    assert "stopping the processes the demo started" in out

    result = json.loads(summary.read_text())
    assert result["epochs_received"] == 2
    assert [e["epoch"] for e in result["epochs"]] == [1, 2]
    assert all("val/map50" in e and "train/loss" in e for e in result["epochs"])
    overlay = Path(result["overlay"])
    assert overlay.is_file() and overlay.parent == home / "demo"
    with Image.open(overlay) as picture:
        assert picture.format == "PNG" and picture.size == (64, 64)
    assert result["recipe"]["epochs"] == 2 and result["recipe"]["images"] == 20
