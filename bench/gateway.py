"""The REST gateway against direct gRPC, side by side, on one machine.

Starts dataset_svc, the timm trainer and ``python -m gateway`` on a fresh home, signs in and
makes a small labelled dataset, then measures:

- GetDataset through the gateway (``GET /v1/datasets/{id}``, keep-alive HTTP/1.1 with
  ``http.client``) against the same call over gRPC (a sync channel per client), alternating
  sides, best of ``--rounds``: one client (sequential calls: p50) and ``--clients`` clients
  (threads, each with its own connection, for ``--seconds``: calls/s and p50);
- epoch metrics to SSE: a ``--epochs`` timm job on tiny images followed at once over the
  gateway's SSE route and over gRPC StreamMetrics; for each epoch, the time from the
  worker's timestamp of the epoch's metrics (``EpochMetrics.time``, taken just before
  metrics.jsonl is written) to the event's arrival: p50/p99 of each path.

The last line printed is one JSON object: ``ours`` (gateway GetDataset p50, seconds, one
client), ``peer`` (direct gRPC p50), ``ratio`` = ours/peer, ``added_p50_ms`` (goal <= 1),
``throughput_ratio`` (gateway / direct calls/s with ``--clients`` clients; goal >= 0.5),
``sse_p99_ms`` (goal <= 100) beside ``grpc_stream_p99_ms``, and every figure measured.

    python bench/gateway.py [--calls 300] [--seconds 3] [--clients 16] [--rounds 2] [--epochs 12]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "sdk")]

import grpc  # noqa: E402

from tests._dataset import start_dataset_server  # noqa: E402
from tests._gateway import multipart_files, sign_in, start_gateway  # noqa: E402
from tests._trainers import shapes_dataset, start_trainer  # noqa: E402
from visionmesh.auth import with_token  # noqa: E402
from visionmesh.v1 import dataset_pb2, dataset_pb2_grpc, trainer_pb2, trainer_pb2_grpc  # noqa: E402


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


class Direct:
    def __init__(self, addr: str, token: str, name: str) -> None:
        self.channel = with_token(grpc.insecure_channel(addr), token)
        self.stub = dataset_pb2_grpc.DatasetServiceStub(self.channel)
        self.request = dataset_pb2.GetDatasetRequest(name=name)

    def call(self) -> None:
        self.stub.GetDataset(self.request, timeout=30)


class Rest:
    def __init__(self, url: str, token: str, name: str) -> None:
        host, port = url.removeprefix("http://").split(":")
        self.conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self.path = f"/v1/{name}"
        self.headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}

    def call(self) -> None:
        self.conn.request("GET", self.path, headers=self.headers)
        reply = self.conn.getresponse()
        body = reply.read()
        if reply.status != 200:
            raise RuntimeError(f"{reply.status}: {body[:200]!r}")


def sequential(client, calls: int) -> list[float]:
    for _ in range(20):  # warm-up
        client.call()
    out = []
    for _ in range(calls):
        t0 = time.perf_counter()
        client.call()
        out.append(time.perf_counter() - t0)
    return out


def concurrent(make, clients: int, seconds: float) -> tuple[float, float]:
    """(calls per second, p50 seconds) of ``clients`` threads calling for ``seconds``."""
    workers = [make() for _ in range(clients)]
    for w in workers:
        w.call()
    latencies: list[list[float]] = [[] for _ in workers]
    start = threading.Barrier(clients + 1)
    stop = time.perf_counter() + seconds + 0.1

    def run(i: int) -> None:
        start.wait()
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            workers[i].call()
            latencies[i].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    began = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - began
    flat = [x for lst in latencies for x in lst]
    return len(flat) / elapsed, statistics.median(flat)


def follow_sse(url: str, token: str, job: str, arrivals: dict[int, float], done: threading.Event):
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=900)
    conn.request(
        "GET",
        f"/v1/{job}:streamMetrics",
        headers={"Authorization": f"Bearer {token}", "Accept": "text/event-stream"},
    )
    reply = conn.getresponse()
    assert reply.status == 200, reply.read()
    data = None
    while True:
        line = reply.fp.readline()
        if not line:
            break
        line = line.rstrip(b"\r\n")
        if line.startswith(b"data: "):
            data = line[6:]
        elif line == b"" and data is not None:
            message = json.loads(data)
            metrics = message.get("metrics")
            if metrics and metrics.get("epoch"):
                arrivals[metrics["epoch"]] = (time.time(), metrics["time"])
            data = None
        elif line.startswith(b"event: end"):
            break
    done.set()


def follow_grpc(addr: str, token: str, job: str, arrivals: dict[int, float]) -> None:
    channel = with_token(grpc.insecure_channel(addr), token)
    stub = trainer_pb2_grpc.TrainerServiceStub(channel)
    for reply in stub.StreamMetrics(trainer_pb2.StreamMetricsRequest(name=job), timeout=900):
        if reply.HasField("metrics"):
            arrivals[reply.metrics.epoch] = (time.time(), reply.metrics.time.ToMicroseconds() / 1e6)
    channel.close()


def rfc3339(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=12)
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    dataset, cleanup = start_dataset_server("sqlite+local", home)
    trainer = gateway = None
    try:
        trainer = start_trainer("timm", dataset)
        gateway = start_gateway(dataset.addr, {"timm": trainer.addr})
        import httpx

        with httpx.Client(base_url=gateway.url, timeout=120) as h:
            token = sign_in(h, f"bench{uuid.uuid4().hex[:6]}")
            h.headers["Authorization"] = f"Bearer {token}"
            name = h.post("/v1/datasets", json={"displayName": "bench"}).json()["dataset"]["name"]
            files, document = shapes_dataset(8, size=32, val_every=4)
            h.post(f"/v1/{name}/images:upload", files=multipart_files(sorted(files.items())))
            content = base64.b64encode(json.dumps(document).encode()).decode()
            reply = h.post(
                f"/v1/{name}:importAnnotations",
                json={"files": [{"path": "a.json", "content": content}], "allowWarnings": True},
            )
            assert reply.status_code == 200, reply.text

            # -- unary: GetDataset ------------------------------------------------------
            seq = {"direct": [], "gateway": []}
            conc = {"direct": [], "gateway": []}
            for _ in range(args.rounds):
                for side, make in (
                    ("direct", lambda: Direct(dataset.addr, token, name)),
                    ("gateway", lambda: Rest(gateway.url, token, name)),
                ):
                    seq[side].append(statistics.median(sequential(make(), args.calls)))
                    conc[side].append(concurrent(make, args.clients, args.seconds))
            direct_p50, gateway_p50 = min(seq["direct"]), min(seq["gateway"])
            direct_rps = max(r for r, _ in conc["direct"])
            gateway_rps = max(r for r, _ in conc["gateway"])
            direct_p50_c = min(p for _, p in conc["direct"])
            gateway_p50_c = min(p for _, p in conc["gateway"])

            # -- epoch metrics -> SSE -------------------------------------------------------
            reply = h.post(
                "/v1/trainers/timm/jobs",
                json={
                    "requestId": uuid.uuid4().hex,
                    "spec": {
                        "dataset": name,
                        "taskType": "TASK_TYPE_IMAGE_CLASSIFICATION",
                        "model": "test_resnet",
                        "epochs": args.epochs,
                        "batchSize": 4,
                        "imageSize": 32,
                        "seed": 1,
                        "keepLastCheckpoints": 1,
                    },
                },
            )
            assert reply.status_code == 200, reply.text
            job = reply.json()["job"]["name"]
        sse: dict[int, tuple] = {}
        direct: dict[int, tuple] = {}
        done = threading.Event()
        threads = [
            threading.Thread(target=follow_sse, args=(gateway.url, token, job, sse, done)),
            threading.Thread(target=follow_grpc, args=(trainer.addr, token, job, direct)),
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=900)
        sse_lat = [arrived - rfc3339(stamp) for arrived, stamp in sse.values()]
        grpc_lat = [arrived - stamp for arrived, stamp in direct.values()]
        result = {
            "ours": round(gateway_p50, 6),
            "peer": round(direct_p50, 6),
            "ratio": round(gateway_p50 / direct_p50, 3),
            "added_p50_ms": round((gateway_p50 - direct_p50) * 1000, 3),
            "added_p50_ms_goal": 1.0,
            "clients": args.clients,
            "gateway_calls_per_s": round(gateway_rps, 1),
            "direct_calls_per_s": round(direct_rps, 1),
            "throughput_ratio": round(gateway_rps / direct_rps, 3),
            "throughput_ratio_goal": 0.5,
            "gateway_p50_ms_concurrent": round(gateway_p50_c * 1000, 3),
            "direct_p50_ms_concurrent": round(direct_p50_c * 1000, 3),
            "added_p50_ms_concurrent": round((gateway_p50_c - direct_p50_c) * 1000, 3),
            "epochs_seen_sse": sorted(sse),
            "epochs_seen_grpc": sorted(direct),
            "sse_p50_ms": round(pct(sse_lat, 0.5) * 1000, 2) if sse_lat else None,
            "sse_p99_ms": round(pct(sse_lat, 0.99) * 1000, 2) if sse_lat else None,
            "sse_p99_ms_goal": 100.0,
            "grpc_stream_p50_ms": round(pct(grpc_lat, 0.5) * 1000, 2) if grpc_lat else None,
            "grpc_stream_p99_ms": round(pct(grpc_lat, 0.99) * 1000, 2) if grpc_lat else None,
            "rounds": args.rounds,
            "calls": args.calls,
        }
        print(
            f"GetDataset p50, 1 client: gateway {gateway_p50 * 1000:.3f} ms, "
            f"gRPC {direct_p50 * 1000:.3f} ms (+{(gateway_p50 - direct_p50) * 1000:.3f} ms)"
        )
        print(
            f"{args.clients} clients: gateway {gateway_rps:.0f} calls/s, gRPC {direct_rps:.0f} "
            f"calls/s (x{gateway_rps / direct_rps:.2f})"
        )
        print(
            f"epoch metrics -> event, {len(sse_lat)} epochs: SSE p99 {result['sse_p99_ms']} ms, "
            f"gRPC stream p99 {result['grpc_stream_p99_ms']} ms"
        )
        print(json.dumps(result))
    finally:
        if gateway is not None:
            gateway.stop()
        if trainer is not None and trainer.process.proc.poll() is None:
            trainer.stop()
        cleanup()


if __name__ == "__main__":
    main()
