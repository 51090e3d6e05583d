"""ExportModel's ONNX path for yolo11n at 320 px: export time, and ONNX Runtime against torch.

Builds yolo11n from its yaml (random init, offline), saves it as a checkpoint, exports it
with the function ExportModel's child runs (``trainers.ultralytics._yolo.export``:
ultralytics' own exporter, onnxslim when installed), then times CPU inference of one
1x3x320x320 image on both sides with the same thread count:

- ours: the exported ONNX file in onnxruntime (CPUExecutionProvider);
- peer: the same model in torch (fused, float32, eval, ``torch.inference_mode``).

Each side is warmed up, then run ``--runs`` times alternating in rounds; the median of each
side is reported. The outputs' largest absolute difference is printed too. The last line
printed is one JSON object: ``ours`` and ``peer`` (median milliseconds per image),
``ratio`` = ours / peer, ``export_seconds``, ``max_abs_diff``, ``threads``.

    python bench/export.py
    python bench/export.py --runs 50 --threads 1
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "sdk")]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="yolo11n")
    parser.add_argument("--imgsz", type=int, default=320)
    parser.add_argument("--runs", type=int, default=30, help="timed runs per side")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-export-"))
    from trainers.ultralytics._yolo import export, setup_offline

    setup_offline(work / "ultralytics-config")
    import numpy as np
    import onnxruntime as ort
    import torch
    from ultralytics import YOLO

    torch.set_num_threads(args.threads)  # importing ultralytics set OMP_NUM_THREADS=1
    checkpoint = work / f"{args.model}.pt"
    YOLO(f"{args.model}.yaml").save(str(checkpoint))

    started = time.perf_counter()
    onnx_path = export(checkpoint, "onnx", image_size=args.imgsz, out_dir=work, device="cpu")
    export_seconds = time.perf_counter() - started
    print(
        f"export: {onnx_path.name} ({onnx_path.stat().st_size / 1e6:.1f} MB) in "
        f"{export_seconds:.2f}s"
    )

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    model = YOLO(str(checkpoint)).model.fuse().float().eval()

    x = np.random.default_rng(0).random((1, 3, args.imgsz, args.imgsz), dtype=np.float32)
    tx = torch.from_numpy(x)

    def run_ort():
        return session.run(None, {input_name: x})[0]

    def run_torch():
        with torch.inference_mode():
            out = model(tx)
        return (out[0] if isinstance(out, (tuple, list)) else out).numpy()

    diff = float(np.abs(run_ort() - run_torch()).max())
    for _ in range(args.warmup):
        run_ort()
        run_torch()
    ours, peer = [], []
    for _ in range(args.runs):
        t = time.perf_counter()
        run_ort()
        ours.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        run_torch()
        peer.append((time.perf_counter() - t) * 1000)
    ours_ms, peer_ms = statistics.median(ours), statistics.median(peer)
    print(
        f"onnxruntime {ort.__version__}: median {ours_ms:.2f} ms per image "
        f"(min {min(ours):.2f}, {args.runs} runs)"
    )
    print(
        f"torch {torch.__version__}: median {peer_ms:.2f} ms per image "
        f"(min {min(peer):.2f}, {args.runs} runs)"
    )
    print(f"max abs difference of the outputs: {diff:.3g}")
    print(
        json.dumps(
            {
                "ours": round(ours_ms, 3),
                "peer": round(peer_ms, 3),
                "ratio": round(ours_ms / peer_ms, 3),
                "export_seconds": round(export_seconds, 3),
                "max_abs_diff": diff,
                "threads": args.threads,
                "model": args.model,
                "imgsz": args.imgsz,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
