"""Trainer servers in child processes, wired to a dataset_svc, for integration tests.

::

    from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture
    from tests._trainers import shapes_dataset, start_trainer, upload_dataset

    dataset_server = dataset_server_fixture([DEFAULT_BACKEND])

    def test_x(dataset_server):
        alice = dataset_server.user("alice")
        ds = upload_dataset(alice, *shapes_dataset(12, size=96))   # images + DICE document
        trainer = start_trainer("ultralytics", dataset_server)   # same home, store, keys
        stub = trainer.stub(alice.token)
        job = stub.StartTraining(...).job
        epochs = collect_metrics(stub, job.name)

Every trainer (and each of its job / predict children) runs under a network guard: a
``sitecustomize`` that refuses any non-loopback connection, DNS lookup or datagram and
records the attempt in ``TrainerServer.netlog``; ``trainer.network_attempts()`` must stay
empty. ``start_trainer(..., extra_env={"VISIONMESH_TRAINER_QUEUE": "1"})`` sets limits.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from tests._servers import ROOT, ServerProcess, start_server
from visionmesh.auth import with_token
from visionmesh.v1 import (
    common_pb2,
    compatibility_pb2_grpc,
    dataset_pb2,
    dataset_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)

NETGUARD = r'''
"""visionmesh test network guard: loopback only; every other attempt is logged and refused."""
import errno as _errno
import ipaddress as _ip
import json as _json
import os as _os
import socket as _socket
import sys as _sys

_LOG = _os.environ.get("VISIONMESH_NETGUARD_LOG", "")


def _local(host):
    if isinstance(host, bytes):
        host = host.decode(errors="replace")
    if host is None or host in ("", "localhost", "ip6-localhost"):
        return True
    try:
        return _ip.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


def _record(kind, target):
    try:
        with open(_LOG, "a") as f:
            f.write(_json.dumps({"pid": _os.getpid(), "kind": kind, "target": repr(target),
                                 "argv": _sys.argv[:3]}) + "\n")
    except OSError:
        pass


def _inet(sock):
    return sock.family in (_socket.AF_INET, _socket.AF_INET6)


if _LOG:
    _connect = _socket.socket.connect
    _connect_ex = _socket.socket.connect_ex
    _sendto = _socket.socket.sendto
    _getaddrinfo = _socket.getaddrinfo

    def connect(self, address):
        if _inet(self) and not _local(address[0]):
            _record("connect", address)
            raise OSError(_errno.ENETUNREACH, "network guard: outbound connection refused")
        return _connect(self, address)

    def connect_ex(self, address):
        if _inet(self) and not _local(address[0]):
            _record("connect_ex", address)
            return _errno.ENETUNREACH
        return _connect_ex(self, address)

    def sendto(self, data, *args):
        address = args[-1]
        if _inet(self) and isinstance(address, tuple) and not _local(address[0]):
            _record("sendto", address)
            raise OSError(_errno.ENETUNREACH, "network guard: outbound datagram refused")
        return _sendto(self, data, *args)

    def getaddrinfo(host, *args, **kwargs):
        if not _local(host):
            _record("getaddrinfo", host)
            raise _socket.gaierror(_socket.EAI_NONAME, "network guard: name lookup refused")
        return _getaddrinfo(host, *args, **kwargs)

    _socket.socket.connect = connect
    _socket.socket.connect_ex = connect_ex
    _socket.socket.sendto = sendto
    _socket.getaddrinfo = getaddrinfo
'''


def netguard_env(folder: Path) -> dict[str, str]:
    """Env that puts the guard on every Python process started with it (children too)."""
    guard_dir = folder / "netguard"
    guard_dir.mkdir(parents=True, exist_ok=True)
    (guard_dir / "sitecustomize.py").write_text(NETGUARD)
    log = folder / "network-attempts.jsonl"
    log.touch()
    return {
        "PYTHONPATH": os.pathsep.join(
            [str(guard_dir), str(ROOT), str(ROOT / "sdk"), os.environ.get("PYTHONPATH", "")]
        ),
        "VISIONMESH_NETGUARD_LOG": str(log),
    }


@dataclass
class TrainerServer:
    framework: str
    process: ServerProcess
    env: dict[str, str]
    netlog: Path
    _channels: list[grpc.Channel]

    @property
    def addr(self) -> str:
        return self.process.addr

    def channel(self) -> grpc.Channel:
        channel = self.process.channel()
        self._channels.append(channel)  # closed with the server
        return channel

    def stub(self, token: str | None = None) -> trainer_pb2_grpc.TrainerServiceStub:
        channel = self.channel()
        if token:
            channel = with_token(channel, token)
        return trainer_pb2_grpc.TrainerServiceStub(channel)

    def network_attempts(self) -> list[dict[str, Any]]:
        text = self.netlog.read_text() if self.netlog.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    def close_channels(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()

    def kill(self) -> None:
        """SIGKILL the server (its job children die with it)."""
        self.close_channels()
        self.process.kill()

    def stop(self) -> int:
        self.close_channels()
        return self.process.stop(timeout=60)

    def restart(self) -> None:
        if self.process.proc.poll() is None:
            self.stop()
        self.process = start_server(f"trainers.{self.framework}", env=self.env)


def start_trainer(
    framework: str,
    dataset_server: Any,
    *,
    extra_env: dict[str, str] | None = None,
    guard_dir: Path | None = None,
) -> TrainerServer:
    """Start ``python -m trainers.<framework>`` on the dataset server's home and store."""
    folder = guard_dir or Path(tempfile.mkdtemp(prefix=f"trainer-{framework}-"))
    env = {
        **dataset_server.env,
        "VISIONMESH_DATASET_ADDR": dataset_server.addr,
        "VISIONMESH_PREDICT_IDLE_SECONDS": "120",
        **netguard_env(folder),
        **(extra_env or {}),
    }
    process = start_server(f"trainers.{framework}", env=env)
    return TrainerServer(framework, process, env, Path(env["VISIONMESH_NETGUARD_LOG"]), [])


# -- tiny synthetic shapes ---------------------------------------------------------------------


def shapes_dataset(
    n_images: int,
    *,
    size: int = 96,
    seed: int = 0,
    val_every: int = 4,
    max_shapes: int = 2,
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """(files by relative path, DICE standard document) of ``visionmesh.shapes`` pictures.

    Every image has its split ("val" for every ``val_every``-th image) and PNG bytes at
    ``<split>/shape_<n>.png``; each class has its own colour, shapes are 12-22 % of the size
    in radius, and image i's first shape is of class i % 3, so every split holds every class. Annotations carry a box, a polygon and,
    for triangles, their three vertices as keypoints.
    """
    from visionmesh import shapes
    from visionmesh.formats import to_dice_dict

    dataset, pictures = shapes.sample(
        n_images,
        size=size,
        seed=seed,
        max_shapes=max_shapes,
        class_colours=True,
        cycle_classes=True,
        radius=(0.12, 0.22),  # large enough to learn in the few epochs the tests train
    )
    files: dict[str, bytes] = {}
    for i, (image, picture) in enumerate(zip(dataset.images, pictures, strict=True)):
        image.split = "val" if i % val_every == val_every - 1 else "train"
        image.path = f"{image.split}/shape_{i:04d}.png"
        out = io.BytesIO()
        picture.save(out, "PNG")
        files[image.path] = out.getvalue()
    dataset.info = {"description": "visionmesh test shapes"}
    return files, to_dice_dict(dataset)


def upload_dataset(
    client: Any, files: dict[str, bytes], document: dict[str, Any], name: str = "shapes"
) -> Any:
    """Create a dataset for ``client``, upload the images, import the document."""
    dataset = client.create_dataset(f"{name}-{uuid.uuid4().hex[:6]}")
    client.upload(dataset.name, files)
    client.datasets.ImportAnnotations(
        dataset_pb2.ImportAnnotationsRequest(
            parent=dataset.name,
            files=[
                dataset_pb2.AnnotationFile(
                    path="annotations.json", content=json.dumps(document).encode()
                )
            ],
            allow_warnings=True,
        ),
        timeout=60,
    )
    return dataset


# -- job helpers -----------------------------------------------------------------------------

TASKS = {
    "detect": common_pb2.TASK_TYPE_OBJECT_DETECTION,
    "segment": common_pb2.TASK_TYPE_INSTANCE_SEGMENTATION,
    "classify": common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION,
    "pose": common_pb2.TASK_TYPE_POSE_ESTIMATION,
}


def spec(dataset: str, task: str, model: str, **fields: Any) -> trainer_pb2.TrainingSpec:
    extra = fields.pop("extra", {})
    return trainer_pb2.TrainingSpec(
        dataset=dataset, task_type=TASKS.get(task, task), model=model, extra=extra, **fields
    )


def start_job(stub: Any, training_spec: Any, request_id: str | None = None) -> trainer_pb2.Job:
    return stub.StartTraining(
        trainer_pb2.StartTrainingRequest(
            request_id=request_id or uuid.uuid4().hex, spec=training_spec
        ),
        timeout=120,
    ).job


def collect_metrics(
    stub: Any, name: str, *, timeout: float = 600, from_epoch: int = 0
) -> tuple[list[trainer_pb2.EpochMetrics], int]:
    """Every epoch StreamMetrics sends until the job ends, and the final state."""
    epochs = []
    state = trainer_pb2.JOB_STATE_UNSPECIFIED
    for reply in stub.StreamMetrics(
        trainer_pb2.StreamMetricsRequest(name=name, from_epoch=from_epoch), timeout=timeout
    ):
        state = reply.state
        if reply.HasField("metrics"):
            epochs.append(reply.metrics)
    return epochs, state


def wait_job(
    stub: Any, name: str, states: set[int], *, timeout: float = 300, poll: float = 0.2
) -> trainer_pb2.Job:
    deadline = time.monotonic() + timeout
    while True:
        job = stub.GetJob(trainer_pb2.GetJobRequest(name=name), timeout=30).job
        if job.state in states:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{name} stayed {trainer_pb2.JobState.Name(job.state)}: {job.error}"
            )
        time.sleep(poll)


def job_log(stub: Any, name: str) -> str:
    lines: list[str] = []
    for reply in stub.StreamLogs(trainer_pb2.StreamLogsRequest(name=name), timeout=60):
        lines.extend(reply.lines)
    return "\n".join(lines)


def state_name(value: int) -> str:
    return trainer_pb2.JobState.Name(value)


# -- an in-process stand-in for dataset_svc (runtime tests that need no catalog) ----------------


class FakeDatasetService:
    """Snapshots and compatibility for datasets written straight into a local store.

    Serves DatasetService.CreateSnapshot/GetSnapshot and CompatibilityService.CheckCompatibility
    on 127.0.0.1 in this process; tokens come from a real key pair under ``home/keys`` so a
    trainer started with :attr:`env` verifies them. Use the real dataset_svc
    (tests._dataset) for end-to-end tests; this one keeps runtime tests fast and focused.
    """

    def __init__(self, home: Path) -> None:
        from concurrent import futures

        from visionmesh import auth, config
        from visionmesh.store import LocalStore

        self.home = Path(home)
        self.env = {
            "VISIONMESH_HOME": str(self.home),
            "VISIONMESH_STORE_URL": f"file://{self.home / 'store'}",
        }
        old = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        try:
            settings = config.load()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        self.issuer = auth.load_issuer(settings)
        self.store = LocalStore(self.home / "store")
        self.datasets: dict[str, dict[str, Any]] = {}
        self.snapshots: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, str]] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        dataset_pb2_grpc.add_DatasetServiceServicer_to_server(_FakeDatasets(self), self.server)
        compatibility_pb2_grpc.add_CompatibilityServiceServicer_to_server(
            _FakeCompat(self), self.server
        )
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()
        self.addr = f"127.0.0.1:{port}"

    def token(self, username: str) -> str:
        return self.issuer.issue(username)[0]

    def add_dataset(self, files: dict[str, bytes], document: dict[str, Any], owner: str) -> str:
        doc = json.loads(json.dumps(document))
        for image in doc["images"]:
            image["sha256"] = self.store.put_blob_bytes(files[image["file_name"]])
            image["size_bytes"] = len(files[image["file_name"]])
        name = f"datasets/ds{len(self.datasets) + 1}"
        self.datasets[name] = {"owner": owner, "document": doc}
        return name

    def stop(self) -> None:
        self.server.stop(0)


def _caller(context: Any) -> str:
    for key, value in context.invocation_metadata():
        if key == "authorization":
            import jwt

            return jwt.decode(value.split()[1], options={"verify_signature": False})["sub"]
    context.abort(grpc.StatusCode.UNAUTHENTICATED, "no token")
    return ""


class _FakeDatasets(dataset_pb2_grpc.DatasetServiceServicer):
    def __init__(self, fake: FakeDatasetService) -> None:
        self.fake = fake

    def CreateSnapshot(self, request: Any, context: Any) -> Any:
        user = _caller(context)
        self.fake.calls.append(("CreateSnapshot", request.parent))
        dataset = self.fake.datasets.get(request.parent)
        if dataset is None or dataset["owner"] != user:
            context.abort(grpc.StatusCode.NOT_FOUND, f"dataset {request.parent} not found")
        sid = f"s{len(self.fake.snapshots) + 1}"
        name = f"{request.parent}/snapshots/{sid}"
        key = f"{request.parent}/snapshots/{sid}/manifest.json"
        self.fake.store.put_bytes(key, json.dumps(dataset["document"]).encode())
        self.fake.snapshots[name] = {"dataset": request.parent, "manifest_key": key}
        return dataset_pb2.CreateSnapshotResponse(
            snapshot=dataset_pb2.Snapshot(
                name=name, reason=request.snapshot.reason, automatic=True, manifest_key=key
            )
        )

    def GetSnapshot(self, request: Any, context: Any) -> Any:
        user = _caller(context)
        snap = self.fake.snapshots.get(request.name)
        if snap is None or self.fake.datasets[snap["dataset"]]["owner"] != user:
            context.abort(grpc.StatusCode.NOT_FOUND, f"snapshot {request.name} not found")
        return dataset_pb2.GetSnapshotResponse(
            snapshot=dataset_pb2.Snapshot(name=request.name, manifest_key=snap["manifest_key"])
        )


class _FakeCompat(compatibility_pb2_grpc.CompatibilityServiceServicer):
    NEEDS = {
        common_pb2.TASK_TYPE_OBJECT_DETECTION: ("bbox", "segmentation", "boxes"),
        common_pb2.TASK_TYPE_INSTANCE_SEGMENTATION: ("segmentation", None, "polygons"),
        common_pb2.TASK_TYPE_POSE_ESTIMATION: ("keypoints", None, "keypoints"),
        common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION: ("category_id", None, "labels"),
    }

    def __init__(self, fake: FakeDatasetService) -> None:
        self.fake = fake

    def CheckCompatibility(self, request: Any, context: Any) -> Any:
        from visionmesh.v1 import compatibility_pb2

        user = _caller(context)
        self.fake.calls.append(("CheckCompatibility", request.dataset))
        snap = self.fake.snapshots.get(request.dataset)
        if snap is not None:
            doc = json.loads(self.fake.store.get_bytes(snap["manifest_key"]))
        else:  # the dataset itself (its head), as the real service allows
            dataset = self.fake.datasets.get(request.dataset)
            if dataset is None or dataset["owner"] != user:
                context.abort(grpc.StatusCode.NOT_FOUND, f"dataset {request.dataset} not found")
            doc = dataset["document"]
        field, alt, what = self.NEEDS.get(request.task_type, ("-", None, "?"))
        ok = any(a.get(field) or (alt and a.get(alt)) for a in doc["annotations"])
        task = common_pb2.TaskType.Name(request.task_type)
        return compatibility_pb2.CheckCompatibilityResponse(
            report=compatibility_pb2.CompatibilityReport(
                compatible=ok,
                task_type=request.task_type,
                conversion=compatibility_pb2.CONVERSION_NATIVE if ok else 5,
                errors=[] if ok else [f"the annotations have no {what}: {task} needs them"],
                split_seed=request.split_seed,
            )
        )
