"""COCO -> YOLO segmentation labels: visionmesh against ultralytics, on the same file, in one run.

Builds a COCO instances file (default 20,000 images, 10 polygons each = 200,000 polygons
of 6 to 32 vertices, 80 categories with ids 1..80), then converts it twice, each side in
its own child process so that peak memory is comparable:

- ours: ``vmesh convert FILE --to yolo --task instance_segmentation OUT --images none``
  (read + validate + compatibility check + stratified split + write);
- peer: ``ultralytics.data.converter.convert_coco(DIR, OUT, use_segments=True,
  cls91to80=False)``.

Each side runs ``--repeat`` times (default 3), alternating, each run in a fresh child; the
best time of each side is reported. Times exclude interpreter start-up and imports (for
ours: ``visionmesh.cli`` and the convert command's module; argument parsing is timed). The
outputs are compared line by line on
a sample of images. The last line printed is one JSON object: ``ours`` and ``peer``
(seconds), ``ratio`` = ours / peer, ``ours_peak_rss_mb`` / ``peer_peak_rss_mb`` (peak
resident memory of each child, imports included) and the RSS after imports of each.

    python bench/convert.py              # the full size
    python bench/convert.py --images 2000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def build_coco(path: Path, images: int, per_image: int, seed: int) -> dict[str, int]:
    """Write a COCO instances file with random star-shaped polygons; return its sizes."""
    rng = np.random.default_rng(seed)
    n = images * per_image
    widths = rng.integers(320, 1281, images)
    heights = rng.integers(240, 961, images)
    owner = np.repeat(np.arange(images), per_image)
    w, h = widths[owner].astype(float), heights[owner].astype(float)
    sides = rng.integers(6, 33, n)
    size = rng.uniform(0.05, 0.2, n) * np.minimum(w, h)
    cx = rng.uniform(0.2, 0.8, n) * w
    cy = rng.uniform(0.2, 0.8, n) * h
    starts = np.concatenate([[0], np.cumsum(sides)])
    poly_of = np.repeat(np.arange(n), sides)
    angle = rng.uniform(0, 2 * np.pi, starts[-1])
    order = np.lexsort((angle, poly_of))  # vertices sorted by angle within each polygon
    angle = angle[order]
    radius = rng.uniform(0.3, 1.0, starts[-1]) * size[poly_of]
    xs = np.clip(cx[poly_of] + radius * np.cos(angle), 0, w[poly_of]).round(2)
    ys = np.clip(cy[poly_of] + radius * np.sin(angle), 0, h[poly_of]).round(2)
    x0 = np.minimum.reduceat(xs, starts[:-1])
    y0 = np.minimum.reduceat(ys, starts[:-1])
    x1 = np.maximum.reduceat(xs, starts[:-1])
    y1 = np.maximum.reduceat(ys, starts[:-1])
    cross = xs * np.roll(ys, -1) - ys * np.roll(xs, -1)
    nxt = starts[1:] - 1  # fix the wrap-around term of each polygon
    cross[nxt] = xs[nxt] * ys[starts[:-1]] - ys[nxt] * xs[starts[:-1]]
    area = np.abs(np.add.reduceat(cross, starts[:-1])) / 2
    flat = np.stack([xs, ys], axis=1).reshape(-1).tolist()
    categories = rng.integers(1, 81, n).tolist()
    bx0, by0 = x0.round(2).tolist(), y0.round(2).tolist()
    bw, bh = (x1 - x0).round(2).tolist(), (y1 - y0).round(2).tolist()
    areas = area.round(2).tolist()
    bounds = (starts * 2).tolist()
    annotations = [
        {
            "id": i + 1,
            "image_id": int(owner[i]) + 1,
            "category_id": categories[i],
            "segmentation": [flat[bounds[i] : bounds[i + 1]]],
            "area": areas[i],
            "bbox": [bx0[i], by0[i], bw[i], bh[i]],
            "iscrowd": 0,
        }
        for i in range(n)
    ]
    doc = {
        "info": {"description": "visionmesh bench"},
        "licenses": [],
        "images": [
            {
                "id": i + 1,
                "file_name": f"{i:012d}.jpg",
                "width": int(widths[i]),
                "height": int(heights[i]),
            }
            for i in range(images)
        ],
        "annotations": annotations,
        "categories": [
            {"id": c, "name": f"class{c}", "supercategory": "thing"} for c in range(1, 81)
        ],
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(doc, fh)
    return {
        "images": images,
        "polygons": n,
        "vertices": int(starts[-1]),
        "bytes": path.stat().st_size,
    }


def _rss_mb() -> float:
    """Peak resident memory of this process (VmHWM, which, unlike ru_maxrss, exec resets)."""
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(side: str, coco_file: Path, out: Path) -> None:
    """Run one side in this (child) process and print its figures as JSON."""
    if side == "ours":
        sys.path.insert(0, str(ROOT / "sdk"))
        # The command's module too (numpy, orjson, the formats library): the CLI imports it
        # lazily, inside main(), and imports are not timed (the peer's converter module,
        # with numpy and torch, is imported before its clock as well).
        import visionmesh.cli.convert  # noqa: F401
        from visionmesh.cli import main

        baseline = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        argv = ["convert", str(coco_file), "--to", "yolo", "--task", "instance_segmentation"]
        code = main(argv + [str(out), "--images", "none", "--max-problems", "5"])
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        if code != 0:
            raise SystemExit(f"vmesh convert failed with {code}")
    else:
        os.environ.update(YOLO_OFFLINE="1", YOLO_AUTOINSTALL="0", YOLO_VERBOSE="False")
        os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-config-"))
        from ultralytics.data.converter import convert_coco

        baseline = _rss_mb()
        start, cpu = time.perf_counter(), time.process_time()
        convert_coco(str(coco_file.parent), str(out), use_segments=True, cls91to80=False)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    figures = {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": _rss_mb()}
    print(json.dumps({**figures, "baseline_rss_mb": baseline}))


def _child(side: str, coco_file: Path, out: Path, env: dict[str, str]) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--child", side, "--file", str(coco_file), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"{side} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _labels(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in folder.rglob("*.txt")}


def compare(ours: Path, peer: Path, sample: int = 200) -> float:
    """Largest coordinate difference between the two outputs on a sample of label files."""
    mine, theirs = _labels(ours / "labels"), _labels(peer / "labels")
    if set(mine) != set(theirs):
        raise SystemExit(f"label files differ: {len(mine)} ours, {len(theirs)} peer")
    worst = 0.0
    for stem in sorted(mine)[:: max(1, len(mine) // sample)]:
        a = [list(map(float, line.split())) for line in mine[stem].read_text().splitlines()]
        b = [list(map(float, line.split())) for line in theirs[stem].read_text().splitlines()]
        if len(a) != len(b) or any(
            len(x) != len(y) or x[0] != y[0] for x, y in zip(a, b, strict=True)
        ):
            raise SystemExit(f"{stem}: lines differ between the outputs")
        for x, y in zip(a, b, strict=True):
            worst = max(worst, float(np.max(np.abs(np.subtract(x, y)))))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--polygons-per-image", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--workdir",
        help="where to build files (default: a temporary folder in /dev/shm when there is "
        "one, so that both sides are timed converting rather than waiting on the disk)",
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="runs of each side, alternating; best is kept"
    )
    parser.add_argument("--child", choices=("build", "ours", "peer"), help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child == "build":
        sizes = build_coco(Path(args.file), args.images, args.polygons_per_image, args.seed)
        print(json.dumps(sizes))
        return
    if args.child:
        run_child(args.child, Path(args.file), Path(args.out))
        return
    ram = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    work = Path(args.workdir or tempfile.mkdtemp(prefix="vmesh-bench-", dir=ram))
    try:
        coco_file = work / "coco" / "instances_bench.json"
        t0 = time.perf_counter()
        # Built in a child too, so that this process stays small while the sides run.
        cmd = [sys.executable, __file__, "--child", "build", "--file", str(coco_file)]
        cmd += ["--images", str(args.images), "--polygons-per-image", str(args.polygons_per_image)]
        cmd += ["--seed", str(args.seed)]
        built = subprocess.run(cmd, capture_output=True, text=True, check=True)
        sizes = json.loads(built.stdout.strip().splitlines()[-1])
        print(f"built {coco_file} in {time.perf_counter() - t0:.1f}s: {sizes}", file=sys.stderr)
        env = {**os.environ, "YOLO_CONFIG_DIR": str(work / "yolo-config")}
        runs: dict[str, list[dict[str, float]]] = {"ours": [], "peer": []}
        for r in range(args.repeat):  # alternate the sides so that both see the same load
            for side in ("ours", "peer"):
                out = work / f"{side}{r}"
                runs[side].append(_child(side, coco_file, out, env))
                print(f"{side}: {runs[side][-1]}", file=sys.stderr)
                if r < args.repeat - 1:
                    shutil.rmtree(out, ignore_errors=True)
        last = args.repeat - 1
        ours = min(runs["ours"], key=lambda x: x["seconds"])
        peer = min(runs["peer"], key=lambda x: x["seconds"])
        ours["peak_rss_mb"] = max(x["peak_rss_mb"] for x in runs["ours"])
        peer["peak_rss_mb"] = max(x["peak_rss_mb"] for x in runs["peer"])
        diff = compare(work / f"ours{last}", work / f"peer{last}")
        result = {
            "images": sizes["images"],
            "polygons": sizes["polygons"],
            "vertices": sizes["vertices"],
            "file_mb": round(sizes["bytes"] / 2**20, 1),
            "ours": round(ours["seconds"], 3),
            "peer": round(peer["seconds"], 3),
            "ratio": round(ours["seconds"] / peer["seconds"], 3),
            "ours_cpu": round(ours["cpu_seconds"], 3),
            "peer_cpu": round(peer["cpu_seconds"], 3),
            "cpu_ratio": round(ours["cpu_seconds"] / peer["cpu_seconds"], 3),
            "ours_peak_rss_mb": round(ours["peak_rss_mb"], 1),
            "peer_peak_rss_mb": round(peer["peak_rss_mb"], 1),
            "ours_rss_after_import_mb": round(ours["baseline_rss_mb"], 1),
            "peer_rss_after_import_mb": round(peer["baseline_rss_mb"], 1),
            "max_coordinate_difference": diff,
            "runs": args.repeat,
            "workdir": str(work.parent),
        }
        print(json.dumps(result))
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
