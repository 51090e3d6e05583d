"""Fidelity: training through the platform vs calling ultralytics directly, same everything.

Starts dataset_svc and the ultralytics trainer (child processes, fresh home), uploads a
synthetic shapes dataset, trains yolo11n through StartTraining, then trains again by calling
``YOLO("yolo11n.yaml").train(...)`` in a fresh process on a copy of the very folder the job
was prepared into, with the same seed and settings. Prints both runs' final mAP50 and, as
the last line, JSON with their difference (goal: within 0.01, platform mAP50 >= 0.5).

    python bench/fidelity.py [--images 300] [--size 128] [--epochs 20] [--batch 16]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "sdk")]

DIRECT = r"""
import json, sys, time
from pathlib import Path
sys.path[:0] = [{root!r}, {sdk!r}]
from trainers.ultralytics._yolo import setup_offline
setup_offline(Path({cfg!r}))
from ultralytics import YOLO
epochs, pending = [], {{"e": None}}
model = YOLO("yolo11n.yaml")
model.add_callback("on_train_epoch_end", lambda t: pending.update(e=t.epoch))
def fit_end(t):
    if pending["e"] == t.epoch:
        epochs.append({{"epoch": t.epoch + 1, "map50": float(t.metrics.get("metrics/mAP50(B)", 0))}})
        pending["e"] = None
model.add_callback("on_fit_epoch_end", fit_end)
model.train(**{kwargs!r})
print("RESULT " + json.dumps(epochs), flush=True)
"""


def run_direct(data_dir: Path, work: Path, **settings: Any) -> tuple[list[dict], float]:
    """Train with ultralytics directly in a fresh process; (per-epoch mAP50, wall seconds)."""
    work.mkdir(parents=True, exist_ok=True)
    copy = work / "direct-data"
    shutil.copytree(data_dir, copy, symlinks=False)
    for path in [copy, *copy.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    import yaml

    data = (
        yaml.safe_load((copy / "data.yaml").read_text()) if (copy / "data.yaml").exists() else None
    )
    target = str(copy)
    if data is not None:
        data["path"] = str(copy)
        (copy / "data.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
        target = str(copy / "data.yaml")
    kwargs = {
        "data": target,
        "epochs": settings["epochs"],
        "batch": settings["batch"],
        "imgsz": settings["imgsz"],
        "lr0": 0.01,
        "seed": settings["seed"],
        "patience": 0,
        "device": "cpu",
        "workers": min(2, os.cpu_count() or 1),
        "plots": False,
        "project": str(work / "direct-runs"),
        "name": "train",
        "exist_ok": True,
    }
    code = DIRECT.format(
        root=str(ROOT), sdk=str(ROOT / "sdk"), cfg=str(work / "direct-cfg"), kwargs=kwargs
    )
    started = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=3600, cwd=work
    )
    seconds = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(
            f"direct ultralytics run failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
        )
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :]), seconds


class Mesh:
    """dataset_svc + the ultralytics trainer on a fresh home, and a signed-in user."""

    def __init__(self, home: Path) -> None:
        from tests._dataset import start_dataset_server
        from tests._trainers import start_trainer

        self.home = home
        self.dataset, self._cleanup = start_dataset_server("sqlite+local", home / "mesh")
        self.user = self.dataset.user("bench")
        self.trainer = start_trainer("ultralytics", self.dataset, guard_dir=home / "guard")
        self.stub = self.trainer.stub(self.user.token)

    def upload_shapes(self, n: int, size: int, seed: int = 1) -> str:
        from tests._trainers import shapes_dataset, upload_dataset

        files, doc = shapes_dataset(n, size=size, max_shapes=1, seed=seed, val_every=5)
        return upload_dataset(self.user, files, doc).name

    def train(self, dataset: str, **fields: Any) -> dict[str, Any]:
        """Run a job to its end; wall time from StartTraining to the terminal state."""
        from tests._trainers import collect_metrics, job_log, spec, start_job
        from visionmesh.v1 import trainer_pb2

        started = time.perf_counter()
        job = start_job(self.stub, spec(dataset, "detect", "yolo11n", **fields))
        epochs, state = collect_metrics(self.stub, job.name, timeout=7200)
        seconds = time.perf_counter() - started
        final = self.stub.GetJob(trainer_pb2.GetJobRequest(name=job.name), timeout=30).job
        if state != trainer_pb2.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"platform job ended {state}: {final.error}")
        log = job_log(self.stub, job.name)
        ready = next(
            (
                float(x.split("dataset ready in ")[1].split("s", 1)[0])
                for x in log.splitlines()
                if "dataset ready in " in x
            ),
            float("nan"),
        )
        return {"job": final, "epochs": epochs, "seconds": seconds, "prepare_seconds": ready}

    def prepared_dir(self, job: Any) -> Path:
        snapshot = job.snapshot.split("/")
        pattern = f"{snapshot[1]}-{snapshot[3]}-yolo-object_detection-*"
        found = sorted((self.home / "mesh" / "trainer-cache" / "prepared").glob(pattern))
        if not found:
            raise RuntimeError(f"no prepared folder {pattern}")
        return found[0]

    def close(self) -> None:
        attempts = self.trainer.network_attempts()
        self.trainer.stop()
        self._cleanup()
        if attempts:
            raise RuntimeError(f"network attempts: {attempts}")


def compare(images: int, size: int, epochs: int, batch: int, seed: int = 0) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="vm-fidelity-"))
    mesh = Mesh(home)
    try:
        dataset = mesh.upload_shapes(images, size)
        platform = mesh.train(
            dataset, epochs=epochs, batch_size=batch, image_size=size, seed=seed, learning_rate=0.01
        )
        direct, direct_seconds = run_direct(
            mesh.prepared_dir(platform["job"]),
            home,
            epochs=epochs,
            batch=batch,
            imgsz=size,
            seed=seed,
        )
    finally:
        mesh.close()
        shutil.rmtree(home, ignore_errors=True)
    p_map = [e.values.get("val/map50", 0.0) for e in platform["epochs"]]
    d_map = [e["map50"] for e in direct]
    return {
        "images": images,
        "size": size,
        "epochs": epochs,
        "platform_map50": p_map[-1],
        "direct_map50": d_map[-1],
        "diff": abs(p_map[-1] - d_map[-1]),
        "platform_curve": [round(v, 4) for v in p_map],
        "direct_curve": [round(v, 4) for v in d_map],
        "platform_seconds": round(platform["seconds"], 1),
        "direct_seconds": round(direct_seconds, 1),
        "ours": round(platform["seconds"], 1),
        "peer": round(direct_seconds, 1),
        "ratio": round(platform["seconds"] / direct_seconds, 4),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch", type=int, default=16)
    args = parser.parse_args()
    result = compare(args.images, args.size, args.epochs, args.batch)
    print(f"platform mAP50 {result['platform_map50']:.4f} in {result['platform_seconds']}s")
    print(f"direct   mAP50 {result['direct_map50']:.4f} in {result['direct_seconds']}s")
    print(json.dumps({"bench": "fidelity", **result}))
    return 0 if result["diff"] <= 0.01 and result["platform_map50"] >= 0.5 else 1


if __name__ == "__main__":
    sys.exit(main())
