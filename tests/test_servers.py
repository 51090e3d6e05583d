"""Every process starts, serves health per service and reflection, and stops on SIGTERM."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (
    ProtoReflectionDescriptorDatabase,
)

from tests._servers import (
    ROOT,
    child_env,
    health_status,
    run_python,
    run_without_heavy_modules,
    start_server,
)
from visionmesh.v1 import (
    assistant_pb2,
    auth_pb2,
    compatibility_pb2,
    dataset_pb2,
    trainer_pb2,
    trainer_pb2_grpc,
)

BUF = ROOT / "node_modules" / ".bin" / "buf"


def declared_methods(module_pb2, service: str) -> set[str]:
    """The methods a proto declares for a service (what reflection must list)."""
    return {m.name for m in module_pb2.DESCRIPTOR.services_by_name[service].methods}


# Every service each process serves, with every method its proto declares.
EXPECTED = {
    "dataset_svc": {
        f"visionmesh.v1.{name}": declared_methods(module, name)
        for module, name in (
            (auth_pb2, "AuthService"),
            (dataset_pb2, "DatasetService"),
            (compatibility_pb2, "CompatibilityService"),
            (assistant_pb2, "AssistantService"),
        )
    },
}
TRAINER_METHODS = declared_methods(trainer_pb2, "TrainerService")
# the contract's core, spelled out so that a method dropped from the proto is noticed
assert {"GetCapabilities", "StartTraining", "StreamMetrics", "Predict"} <= TRAINER_METHODS
assert {"CreateDataset", "UploadImages", "ExportDataset", "DownloadExport"} <= EXPECTED[
    "dataset_svc"
]["visionmesh.v1.DatasetService"]
for _framework in ("ultralytics", "timm", "hf"):
    EXPECTED[f"trainers.{_framework}"] = {"visionmesh.v1.TrainerService": TRAINER_METHODS}


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    started = {}
    try:
        for module in EXPECTED:
            started[module] = start_server(module, env={"VISIONMESH_HOME": str(home)})
        yield started
    finally:
        for server in started.values():
            if server.proc.poll() is None:
                server.kill()


def reflected_services(addr: str) -> dict[str, set[str]]:
    with grpc.insecure_channel(addr) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        pool = descriptor_pool.DescriptorPool(db)
        return {
            name: {m.name for m in pool.FindServiceByName(name).methods}
            for name in db.get_services()
        }


@pytest.mark.parametrize("module", list(EXPECTED))
def test_health_serving_per_service(servers, module):
    server = servers[module]
    for service in [*EXPECTED[module], ""]:
        assert health_status(server.addr, service) == health_pb2.HealthCheckResponse.SERVING
    assert health_status(server.addr, "visionmesh.v1.NoSuchService") is None


@pytest.mark.parametrize("module", list(EXPECTED))
def test_reflection_lists_and_describes_every_service(servers, module):
    services = reflected_services(servers[module].addr)
    for name, methods in EXPECTED[module].items():
        assert services[name] == methods
    assert "grpc.health.v1.Health" in services


@pytest.mark.parametrize("module", list(EXPECTED))
def test_buf_curl_lists_services_and_methods_over_reflection(servers, module):
    assert BUF.exists(), "buf CLI missing: run `make setup` (npm install)"
    url = f"http://{servers[module].addr}"
    base = [str(BUF), "curl", "--protocol", "grpc", "--http2-prior-knowledge"]
    listed = subprocess.run(
        [*base, "--list-services", url], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    assert set(EXPECTED[module]) <= set(listed)
    methods = subprocess.run(
        [*base, "--list-methods", url], capture_output=True, text=True, timeout=60, check=True
    ).stdout.split()
    for service, names in EXPECTED[module].items():
        assert {f"{service}/{m}" for m in names} <= set(methods)
    health = subprocess.run(
        [
            *base,
            "-d",
            json.dumps({"service": next(iter(EXPECTED[module]))}),
            f"{url}/grpc.health.v1.Health/Check",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert json.loads(health) == {"status": "SERVING"}


@pytest.mark.parametrize("framework", ["ultralytics", "timm", "hf"])
def test_trainer_capabilities_name_the_framework(servers, framework):
    with servers[f"trainers.{framework}"].channel() as channel:
        reply = trainer_pb2_grpc.TrainerServiceStub(channel).GetCapabilities(
            trainer_pb2.GetCapabilitiesRequest(), timeout=10
        )
        assert reply.framework == framework
        with pytest.raises(grpc.RpcError) as err:
            trainer_pb2_grpc.TrainerServiceStub(channel).GetCapabilities(
                trainer_pb2.GetCapabilitiesRequest(framework="other"), timeout=10
            )
        assert err.value.code() == grpc.StatusCode.NOT_FOUND


def _watch_statuses(addr: str, service: str, seen: list[int]) -> None:
    with grpc.insecure_channel(addr) as channel:
        try:
            for reply in health_pb2_grpc.HealthStub(channel).Watch(
                health_pb2.HealthCheckRequest(service=service), timeout=60
            ):
                seen.append(reply.status)
                if reply.status == health_pb2.HealthCheckResponse.NOT_SERVING:
                    break  # leave, so the drain does not wait on this stream
        except grpc.RpcError:
            pass  # the server went away after draining


def test_sigterm_drains_and_exits_cleanly(servers):
    for module, server in servers.items():
        service = next(iter(EXPECTED[module]))
        seen: list[int] = []
        watcher = threading.Thread(target=_watch_statuses, args=(server.addr, service, seen))
        watcher.start()
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.stop() == 0, server.log()
        watcher.join(30)
        # Watchers see the service go NOT_SERVING before the process ends.
        assert seen == [
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        ], (module, seen)
        assert f"{module} stopped" in server.log()
        assert health_status(server.addr, "", timeout=0.5) is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_make_run_script_starts_all_and_stops_on_ctrl_c(tmp_path):
    ports = [_free_port() for _ in range(4)]
    env = child_env(
        {
            "VISIONMESH_HOME": str(tmp_path),
            "VISIONMESH_DATASET_ADDR": f"127.0.0.1:{ports[0]}",
            "VISIONMESH_TRAINERS": ",".join(
                f"{fw}=127.0.0.1:{port}"
                for fw, port in zip(("timm", "ultralytics", "hf"), ports[1:], strict=True)
            ),
        }
    )
    log = tmp_path / "run.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [sys.executable, "scripts/run_all.py"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while "visionmesh is up" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        for port in ports:
            assert f"127.0.0.1:{port}" in log.read_text()
            assert health_status(f"127.0.0.1:{port}", "") == health_pb2.HealthCheckResponse.SERVING
        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0, log.read_text()
        for port in ports:
            assert health_status(f"127.0.0.1:{port}", "", timeout=0.5) is None
    finally:
        if proc.poll() is None:
            proc.kill()


def test_default_addresses_are_the_documented_ports(monkeypatch):
    from visionmesh import config

    for var in ("VISIONMESH_DATASET_ADDR", "VISIONMESH_TRAINERS", "VISIONMESH_HOME"):
        monkeypatch.delenv(var, raising=False)
    settings = config.load()
    assert settings.dataset_addr == "127.0.0.1:50050"
    assert settings.trainers == {
        "timm": "127.0.0.1:50051",
        "ultralytics": "127.0.0.1:50052",
        "hf": "127.0.0.1:50053",
    }
    assert settings.home == Path("var").resolve()
    assert settings.database_url.startswith("sqlite:///")
    with pytest.raises(ValueError, match="framework=host:port"):
        config.parse_trainers("ultralytics")


# Server-side packages that must never need torch (DESIGN.md section 1).
TORCH_FREE = ["dataset_svc", "visionmesh", "gateway"]


def test_light_processes_import_without_torch():
    code = (
        "import importlib, pkgutil\n"
        f"for name in {TORCH_FREE!r}:\n"
        "    pkg = importlib.import_module(name)\n"
        "    for info in pkgutil.walk_packages(pkg.__path__, name + '.'):\n"
        "        if info.name.endswith('__main__'):\n"
        "            continue\n"
        "        importlib.import_module(info.name)\n"
        "print('ok')\n"
    )
    assert run_without_heavy_modules(code).strip() == "ok"


def test_trainer_server_process_does_not_import_the_framework():
    # The trainer server stays light: frameworks load only in job child processes.
    code = (
        "import sys\n"
        "import trainers.runtime.server, trainers.ultralytics.adapter, trainers.timm.adapter, "
        "trainers.hf.adapter\n"
        "heavy = [m for m in ('torch', 'ultralytics', 'timm', 'transformers') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    assert run_python(code).strip() == "[]"
