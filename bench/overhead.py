"""Overhead: a platform job vs calling ultralytics directly (same data and settings).

Starts dataset_svc and the ultralytics trainer on a fresh home, uploads synthetic shapes,
runs two 10-epoch yolo11n jobs on the same snapshot (the second finds the dataset prepared),
and one direct ``YOLO("yolo11n.yaml").train(...)`` in a fresh process on a copy of the
prepared folder. Wall times: platform = StartTraining until the job's stream ends;
direct = the whole process (imports included, as a job's worker pays them too).
The last line is JSON: ``ratio`` (second job / direct; goal <= 1.03) and
``prepare_ratio`` (second job's preparation / first's; goal <= 0.10).

    python bench/overhead.py [--images 64] [--size 128] [--epochs 10] [--batch 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fidelity import Mesh, run_direct  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--repeat", type=int, default=3, help="interleaved platform/direct pairs; minimum kept"
    )
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="vm-overhead-"))
    mesh = Mesh(home)
    try:
        dataset = mesh.upload_shapes(args.images, args.size)
        settings = {
            "epochs": args.epochs,
            "batch_size": args.batch,
            "image_size": args.size,
            "learning_rate": 0.01,
        }
        first = mesh.train(dataset, **settings)
        snapshot = first["job"].snapshot
        seconds, prepares, directs = [], [], []
        for _ in range(max(args.repeat, 1)):
            _, direct = run_direct(
                mesh.prepared_dir(first["job"]),
                home / f"direct-{len(directs)}",
                epochs=args.epochs,
                batch=args.batch,
                imgsz=args.size,
                seed=0,
            )
            directs.append(direct)
            again = mesh.train(snapshot, **settings)  # same snapshot: prepared folder reused
            seconds.append(again["seconds"])
            prepares.append(again["prepare_seconds"])
        second = {"seconds": min(seconds), "prepare_seconds": max(prepares)}
        direct = min(directs)
    finally:
        mesh.close()
        shutil.rmtree(home, ignore_errors=True)
    result = {
        "bench": "overhead",
        "ours": round(second["seconds"], 2),
        "peer": round(direct, 2),
        "epochs": args.epochs,
        "direct_seconds": round(direct, 2),
        "first_job_seconds": round(first["seconds"], 2),
        "second_job_seconds": round(second["seconds"], 2),
        "runs": {
            "direct": [round(x, 2) for x in directs],
            "platform": [round(x, 2) for x in seconds],
        },
        "first_ratio": round(first["seconds"] / direct, 4),
        "ratio": round(second["seconds"] / direct, 4),
        "first_prepare_seconds": round(first["prepare_seconds"], 3),
        "second_prepare_seconds": round(second["prepare_seconds"], 3),
        "prepare_ratio": round(second["prepare_seconds"] / max(first["prepare_seconds"], 1e-9), 4),
    }
    print(f"direct ultralytics: {result['direct_seconds']}s")
    print(
        f"platform job 1:     {result['first_job_seconds']}s (prepare {result['first_prepare_seconds']}s)"
    )
    print(
        f"platform job 2:     {result['second_job_seconds']}s (prepare {result['second_prepare_seconds']}s)"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
