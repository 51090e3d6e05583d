"""Latency: unary catalog calls (GetDataset, ListDatasets) against a floor server.

Starts dataset_svc on a fresh home, signs in, creates datasets (one with images, boxes and
a health summary to build), then starts the floor in the same run: a minimal grpcio server
(a thread pool of the same size, no interceptor) that answers the same two RPCs with one
SQLite lookup per call on a copy of the same catalog file. Both sides get the same client
(a channel that sends the caller's token; the floor ignores it). Each side is measured with 1
client (sequential calls: p50/p90) and 16 clients (threads with a channel each, for a fixed
time: total calls/s and p50). The sides alternate throughout (1-client calls in batches of
25, 16-client runs of ``--seconds`` each, ``--rounds`` per side), so both meet the same
background load; calls/s is all calls over all time of a side's runs.

The last line is JSON: ``ours``/``peer`` (p50 seconds of GetDataset from one client),
``ratio`` = ours/peer (goal <= 2), ``throughput_ratio`` (ours/peer calls/s, GetDataset with
16 clients; goal >= 0.5), and every figure per method and client count.

    python bench/latency.py [--calls 1000] [--seconds 1.5] [--rounds 4] [--clients 16]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "sdk")]

import grpc  # noqa: E402

from visionmesh.auth import with_token  # noqa: E402
from visionmesh.v1 import (  # noqa: E402
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    dataset_pb2,
    dataset_pb2_grpc,
)

SERVING = re.compile(r"serving on (\S+):(\d+)")
PASSWORD = "latency-bench-password"
FLOOR_WORKERS = 32  # what visionmesh.server.Server uses by default


# -- the floor server --------------------------------------------------------------------------


class FloorDatasets(dataset_pb2_grpc.DatasetServiceServicer):
    """GetDataset / ListDatasets with one SQLite query each, nothing else."""

    def __init__(self, db_path: str) -> None:
        self.db_path = db_path
        self.local = threading.local()

    def _db(self) -> sqlite3.Connection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = self.local.conn = sqlite3.connect(self.db_path, check_same_thread=False)
        return conn

    @staticmethod
    def _message(row: tuple) -> dataset_pb2.Dataset:
        dataset_id, display_name, description, visibility = row
        return dataset_pb2.Dataset(
            name=f"datasets/{dataset_id}",
            display_name=display_name,
            description=description,
            visibility=visibility,
        )

    def GetDataset(self, request, context):  # type: ignore[no-untyped-def]
        row = (
            self._db()
            .execute(
                "SELECT id, display_name, description, visibility FROM datasets WHERE id = ?",
                (request.name.removeprefix("datasets/"),),
            )
            .fetchone()
        )
        if row is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "no such dataset")
        return dataset_pb2.GetDatasetResponse(dataset=self._message(row))

    def ListDatasets(self, request, context):  # type: ignore[no-untyped-def]
        rows = (
            self._db()
            .execute(
                "SELECT id, display_name, description, visibility FROM datasets "
                "ORDER BY create_time DESC, id LIMIT ?",
                (request.page_size or 50,),
            )
            .fetchall()
        )
        return dataset_pb2.ListDatasetsResponse(datasets=[self._message(r) for r in rows])


def serve_floor(db_path: str) -> int:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=FLOOR_WORKERS))
    dataset_pb2_grpc.add_DatasetServiceServicer_to_server(FloorDatasets(db_path), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"floor serving on 127.0.0.1:{port}", flush=True)
    server.wait_for_termination()
    return 0


# -- processes -------------------------------------------------------------------------------


def start(args: list[str], env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    out = open(log, "w")  # noqa: SIM115 - lives as long as the process
    proc = subprocess.Popen(args, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        match = SERVING.search(log.read_text())
        if match:
            return proc, f"{match.group(1)}:{match.group(2)}"
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{args} did not start:\n{log.read_text()[-2000:]}")


def child_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VISIONMESH_")}
    env.update(
        VISIONMESH_HOME=str(home),
        VISIONMESH_GC_INTERVAL_SECONDS="0",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "sdk")]),
    )
    return env


def png(seed: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (64, 48), (seed % 256, (seed * 7) % 256, 90)).save(out, "PNG")
    return out.getvalue()


def populate(stub: dataset_pb2_grpc.DatasetServiceStub, images: int, extra: int) -> str:
    """A public dataset with images and boxes (what GetDataset summarizes), plus others."""
    from visionmesh.uploads import upload_requests

    ds = stub.CreateDataset(
        dataset_pb2.CreateDatasetRequest(
            dataset=dataset_pb2.Dataset(
                display_name="bench", description="latency", visibility=common_pb2.VISIBILITY_PUBLIC
            )
        )
    ).dataset
    split = lambda i: "val" if i % 5 == 0 else "train"  # noqa: E731
    files = [(f"images/{split(i)}/{i:04d}.png", png(i)) for i in range(images)]
    stub.UploadImages(upload_requests(ds.name, files), timeout=120)
    doc = {
        "categories": [{"id": c, "name": f"class{c}"} for c in range(1, 6)],
        "images": [
            {"id": i + 1, "file_name": path, "width": 64, "height": 48}
            for i, (path, _) in enumerate(files)
        ],
        "annotations": [
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": i % 5 + 1,
                "bbox": [4, 4, 20, 16],
                "area": 320,
                "iscrowd": 0,
            }
            for i in range(images)
        ],
    }
    stub.ImportAnnotations(
        dataset_pb2.ImportAnnotationsRequest(
            parent=ds.name,
            files=[
                dataset_pb2.AnnotationFile(
                    path="annotations.json", content=json.dumps(doc).encode()
                )
            ],
        ),
        timeout=120,
    )
    for i in range(extra):
        stub.CreateDataset(
            dataset_pb2.CreateDatasetRequest(dataset=dataset_pb2.Dataset(display_name=f"other {i}"))
        )
    return ds.name


# -- measuring -------------------------------------------------------------------------------


def calls_for(stub: dataset_pb2_grpc.DatasetServiceStub, method: str, name: str):  # type: ignore[no-untyped-def]
    if method == "GetDataset":
        request = dataset_pb2.GetDatasetRequest(name=name)
        return lambda: stub.GetDataset(request, timeout=30)
    request = dataset_pb2.ListDatasetsRequest(page_size=10)
    return lambda: stub.ListDatasets(request, timeout=30)


def one_client(makers: dict[str, object], method: str, name: str, calls: int) -> dict[str, dict]:  # type: ignore[type-arg]
    """Sequential calls, the sides interleaved in batches of 25 (both see the same load)."""
    sides = {side: calls_for(make(), method, name) for side, make in makers.items()}  # type: ignore[operator]
    times: dict[str, list[float]] = {side: [] for side in sides}
    for call in sides.values():
        for _ in range(50):
            call()
    for _ in range(max(1, calls // 25)):
        for side, call in sides.items():
            mine = times[side]
            for _ in range(25):
                t0 = time.perf_counter()
                call()
                mine.append(time.perf_counter() - t0)
    result = {}
    for side, xs in times.items():
        xs.sort()
        result[side] = {"p50": statistics.median(xs), "p90": xs[int(len(xs) * 0.9)]}
    return result


def many_clients(make, method: str, name: str, clients: int, seconds: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
    calls = [calls_for(make(), method, name) for _ in range(clients)]
    for call in calls:
        call()
    barrier = threading.Barrier(clients + 1)
    stop = threading.Event()
    latencies: list[list[float]] = [[] for _ in range(clients)]

    def worker(i: int) -> None:
        call, mine = calls[i], latencies[i]
        barrier.wait()
        while not stop.is_set():
            t0 = time.perf_counter()
            call()
            mine.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    every = sorted(x for xs in latencies for x in xs)
    return {"calls": len(every), "seconds": elapsed, "p50": statistics.median(every)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000, help="sequential calls per side")
    parser.add_argument("--seconds", type=float, default=1.5, help="length of each 16-client run")
    parser.add_argument(
        "--rounds", type=int, default=4, help="16-client runs per side, alternating"
    )
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--floor", metavar="DB", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.floor:
        return serve_floor(args.floor)

    load_before = os.getloadavg()[0]
    work = Path(tempfile.mkdtemp(prefix="vm-bench-latency-"))
    home = work / "home"
    procs: list[subprocess.Popen] = []
    try:
        env = child_env(home)
        proc, ours_addr = start(
            [sys.executable, "-m", "dataset_svc", "--listen", "127.0.0.1:0"], env, work / "ours.log"
        )
        procs.append(proc)
        channel = grpc.insecure_channel(ours_addr)
        auth = auth_pb2_grpc.AuthServiceStub(channel)
        auth.Register(auth_pb2.RegisterRequest(username="bench", password=PASSWORD))
        token = auth.Login(auth_pb2.LoginRequest(username="bench", password=PASSWORD)).access_token
        name = populate(
            dataset_pb2_grpc.DatasetServiceStub(with_token(channel, token)), args.images, 20
        )
        channel.close()
        floor_db = work / "floor.db"
        source = sqlite3.connect(home / "catalog.db")
        with sqlite3.connect(floor_db) as target:
            source.backup(target)
        source.close()
        proc, floor_addr = start(
            [sys.executable, str(Path(__file__).resolve()), "--floor", str(floor_db)],
            env,
            work / "floor.log",
        )
        procs.append(proc)

        channels: list[grpc.Channel] = []

        def stub_maker(addr: str, authed: bool):  # type: ignore[no-untyped-def]
            def make() -> dataset_pb2_grpc.DatasetServiceStub:
                ch = grpc.insecure_channel(addr)
                channels.append(ch)
                return dataset_pb2_grpc.DatasetServiceStub(with_token(ch, token) if authed else ch)

            return make

        # Both sides get the same client: a channel that sends the token (the floor ignores it).
        sides = {"ours": stub_maker(ours_addr, True), "peer": stub_maker(floor_addr, True)}
        # Interleaved: 1-client batches alternate sides; 16-client windows alternate too
        # (--rounds windows per side; calls/s = all calls / all time, p50 over all calls).
        figures: dict[str, float] = {}
        for method in ("GetDataset", "ListDatasets"):
            single = one_client(sides, method, name, args.calls)
            runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
            for _ in range(max(1, args.rounds)):
                for side, make in sides.items():
                    runs[side].append(many_clients(make, method, name, args.clients, args.seconds))
                    for ch in channels:
                        ch.close()
                    channels.clear()
            for side in sides:
                figures[f"{side}.{method}.1.p50"] = single[side]["p50"]
                figures[f"{side}.{method}.1.p90"] = single[side]["p90"]
                total_calls = sum(r["calls"] for r in runs[side])
                total_seconds = sum(r["seconds"] for r in runs[side])
                figures[f"{side}.{method}.{args.clients}.calls_per_second"] = (
                    total_calls / total_seconds
                )
                figures[f"{side}.{method}.{args.clients}.p50"] = statistics.median(
                    r["p50"] for r in runs[side]
                )
        n = args.clients
        per_method = {}
        for method in ("GetDataset", "ListDatasets"):
            ours_1, peer_1 = figures[f"ours.{method}.1.p50"], figures[f"peer.{method}.1.p50"]
            ours_n = figures[f"ours.{method}.{n}.calls_per_second"]
            peer_n = figures[f"peer.{method}.{n}.calls_per_second"]
            per_method[method] = {
                "p50_ours": round(ours_1, 6),
                "p50_peer": round(peer_1, 6),
                "p50_ratio": round(ours_1 / peer_1, 3),
                "p90_ours": round(figures[f"ours.{method}.1.p90"], 6),
                "p90_peer": round(figures[f"peer.{method}.1.p90"], 6),
                f"calls_per_second_{n}_ours": round(ours_n, 1),
                f"calls_per_second_{n}_peer": round(peer_n, 1),
                "throughput_ratio": round(ours_n / peer_n, 3),
                f"p50_{n}_ours": round(figures[f"ours.{method}.{n}.p50"], 6),
                f"p50_{n}_peer": round(figures[f"peer.{method}.{n}.p50"], 6),
            }
            print(f"{method}: {json.dumps(per_method[method])}", flush=True)
        get = per_method["GetDataset"]
        result = {
            "benchmark": "latency",
            "ours": get["p50_ours"],
            "peer": get["p50_peer"],
            "ratio": get["p50_ratio"],
            "throughput_ratio": get["throughput_ratio"],
            "list_ratio": per_method["ListDatasets"]["p50_ratio"],
            "list_throughput_ratio": per_method["ListDatasets"]["throughput_ratio"],
            "clients": n,
            "images": args.images,
            "cpus": os.cpu_count(),
            "load_before": round(load_before, 2),
            "methods": per_method,
        }
        print(json.dumps(result), flush=True)
        return 0
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
