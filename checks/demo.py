"""Check: the full `make demo` (the recipe in scripts/demo.py, unshortened) from a fresh home.

Starts nothing itself: runs ``scripts/demo.py`` with a fresh VISIONMESH_HOME and free
ports, so the demo starts its own mesh and the wall time covers everything a newcomer
waits for (servers starting, dataset, upload, training, prediction). The demo's output
streams through; the last stdout line is JSON: ``wall_seconds`` (start to overlay, as the
demo measured it), ``final_map50``, ``epochs_received``, ``goal_met`` (mAP50 >= 0.5 within
240 s) and the recipe.

    python checks/demo.py
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="visionmesh-demo-check-"))
    summary_file = home / "summary.json"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("VISIONMESH_DEMO_") and k != "VISIONMESH_TOKEN"
    }
    env.update(
        {
            "VISIONMESH_HOME": str(home / "var"),
            "VISIONMESH_DATASET_ADDR": f"127.0.0.1:{free_port()}",
            "VISIONMESH_TRAINERS": f"ultralytics=127.0.0.1:{free_port()}",
            "VISIONMESH_GATEWAY_ADDR": f"127.0.0.1:{free_port()}",
            "VISIONMESH_DEMO_SUMMARY": str(summary_file),
        }
    )
    started = time.monotonic()
    try:
        code = subprocess.call([sys.executable, str(ROOT / "scripts" / "demo.py")], env=env)
        outer = time.monotonic() - started
        summary = json.loads(summary_file.read_text()) if summary_file.exists() else {}
    finally:
        shutil.rmtree(home, ignore_errors=True)
    result = {
        "exit_code": code,
        "wall_seconds": summary.get("wall_seconds"),
        "wall_seconds_with_shutdown": round(outer, 1),
        "final_map50": summary.get("final_map50"),
        "best_map50": summary.get("best_map50"),
        "epochs_received": summary.get("epochs_received"),
        "goal_met": summary.get("goal_met", False),
        "recipe": summary.get("recipe"),
    }
    print(json.dumps(result), flush=True)
    return 0 if code == 0 and result["goal_met"] else 1


if __name__ == "__main__":
    sys.exit(main())
