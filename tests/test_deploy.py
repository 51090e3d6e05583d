"""deploy/: the Kubernetes manifests and the Dockerfile, checked offline.

The kustomize base and both overlays are rendered with the real ``kubectl kustomize`` (from
a copy of deploy/ with its secrets made by deploy/secrets.sh, as a user does first), every
object is validated against the Kubernetes schemas (kubernetes-validate, strict), and the
rendered pods are checked against the code they run: the probes' health service names are
asked of the real servers, the commands are modules that exist and import without torch,
every environment variable set is one the code reads, and deploy/docker/ready.py (the pods'
init container) is run against a real S3 server (moto) and database.
"""

from __future__ import annotations

import base64
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import yaml
from grpc_health.v1 import health_pb2
from sqlalchemy.engine import make_url

from tests._gateway import start_gateway
from tests._moto import MotoServer, free_port
from tests._servers import (
    ROOT,
    child_env,
    health_status,
    run_without_heavy_modules,
    start_server,
)
from visionmesh import config

DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
VARIANTS = ("base", "overlays/cpu", "overlays/gpu")
# The Kubernetes version the manifests are validated for (the kubectl this repository's CI
# uses); they are also validated for the newest one kubernetes-validate ships schemas for.
K8S_VERSION = "1.32"
OUR_IMAGES = ("visionmesh", "visionmesh-trainer")
FRAMEWORKS = ("ultralytics", "timm", "hf")
# Read by what the code runs on, not by the code itself.
THIRD_PARTY_ENV = {
    "PGPASSWORD": "libpq (psycopg): the password VISIONMESH_DATABASE_URL leaves out",
    "NVIDIA_DRIVER_CAPABILITIES": "the NVIDIA container runtime (nvidia-smi in the container)",
}
CODE_DIRS = ("sdk/visionmesh", "dataset_svc", "trainers", "gateway", "deploy/docker")
ENV_NAME = re.compile(r"\b((?:VISIONMESH|AWS)_[A-Z0-9_]+)\b")


# -- rendering ------------------------------------------------------------------------------


def kubectl() -> str:
    exe = shutil.which("kubectl")
    if not exe:
        pytest.fail(
            "kubectl is not on PATH: the manifests are rendered with `kubectl kustomize` "
            "(install kubectl 1.27 or later)"
        )
    return exe


@pytest.fixture(scope="module")
def deploy_copy(tmp_path_factory) -> Path:
    """deploy/ copied with fresh secrets made by deploy/secrets.sh (never the user's)."""
    if not shutil.which("openssl"):
        pytest.fail("openssl is not on PATH: deploy/secrets.sh makes the keys with it")
    copy = tmp_path_factory.mktemp("deploy") / "deploy"
    shutil.copytree(DEPLOY, copy, ignore=shutil.ignore_patterns("*.pem", "*-password", "s3-*"))
    out = subprocess.run(
        ["sh", str(copy / "secrets.sh")], capture_output=True, text=True, check=True
    ).stdout
    assert out.count("created ") == 5, out
    return copy


@pytest.fixture(scope="module")
def rendered(deploy_copy) -> dict[str, list[dict[str, Any]]]:
    """Variant (base, overlays/cpu, overlays/gpu) -> the objects `kubectl kustomize` renders."""
    exe = kubectl()
    result = {}
    for variant in VARIANTS:
        proc = subprocess.run(
            [exe, "kustomize", str(deploy_copy / variant)], capture_output=True, text=True
        )
        assert proc.returncode == 0, f"kubectl kustomize {variant}:\n{proc.stderr}"
        result[variant] = [doc for doc in yaml.safe_load_all(proc.stdout) if doc]
    return result


def of_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def workloads(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] in ("Deployment", "StatefulSet")]


def containers(workload: dict, init: bool = True) -> list[dict]:
    spec = workload["spec"]["template"]["spec"]
    return list(spec.get("initContainers", []) if init else []) + list(spec["containers"])


def ours(container: dict) -> bool:
    return container["image"].rpartition(":")[0].rpartition("/")[2] in OUR_IMAGES


def configmap(objects: list[dict]) -> dict[str, str]:
    (cm,) = of_kind(objects, "ConfigMap")
    return cm["data"]


def secret_values(objects: list[dict]) -> dict[str, str]:
    return {
        f"{s['metadata']['name']}/{key}": base64.b64decode(value).decode()
        for s in of_kind(objects, "Secret")
        for key, value in s.get("data", {}).items()
    }


def service_for(objects: list[dict], workload: dict) -> dict:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    matches = [
        s
        for s in of_kind(objects, "Service")
        if s["spec"].get("selector")
        and all(labels.get(k) == v for k, v in s["spec"]["selector"].items())
    ]
    assert len(matches) == 1, f"{workload['metadata']['name']}: services {matches}"
    return matches[0]


def container_port(container: dict, port: int | str) -> int:
    if isinstance(port, int):
        return port
    (number,) = [p["containerPort"] for p in container["ports"] if p.get("name") == port]
    return number


# -- the manifests --------------------------------------------------------------------------


def test_variants_render_and_validate_strictly(rendered):
    try:
        import kubernetes_validate
    except ImportError:
        pytest.fail("kubernetes-validate is not installed: `make setup` (the dev extra) adds it")
    versions = (K8S_VERSION, kubernetes_validate.latest_version())
    for variant, objects in rendered.items():
        kinds = {o["kind"] for o in objects}
        assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "Secret"} <= kinds, variant
        for obj in objects:
            for version in versions:
                try:
                    kubernetes_validate.validate(obj, version, strict=True)
                except kubernetes_validate.ValidationError as exc:
                    pytest.fail(
                        f"{variant}: {obj['kind']}/{obj['metadata']['name']} is not valid "
                        f"Kubernetes {version}: {exc.message} at {list(exc.path)}"
                    )
        names = {o["metadata"]["name"] for o in of_kind(objects, "Deployment")}
        assert names == {"dataset-svc", "gateway"} | {f"trainer-{f}" for f in FRAMEWORKS}
        statefulsets = {o["metadata"]["name"] for o in of_kind(objects, "StatefulSet")}
        assert statefulsets == {"postgres", "minio"}, variant


def test_probes_ask_the_port_the_service_targets(rendered):
    from visionmesh.server import service_name
    from visionmesh.v1 import dataset_pb2, trainer_pb2

    health_names = {
        "dataset-svc": service_name(dataset_pb2, "DatasetService"),
        **{f"trainer-{f}": service_name(trainer_pb2, "TrainerService") for f in FRAMEWORKS},
    }
    for variant, objects in rendered.items():
        for deployment in of_kind(objects, "Deployment"):
            name = deployment["metadata"]["name"]
            (container,) = containers(deployment, init=False)
            service = service_for(objects, deployment)
            (port,) = service["spec"]["ports"]
            target = container_port(container, port["targetPort"])
            assert {"readinessProbe", "livenessProbe"} <= set(container), f"{variant} {name}"
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                spec = container.get(probe)
                if spec is None:
                    continue
                if name == "gateway":  # HTTP: the gateway is not a gRPC server
                    assert container_port(container, spec["httpGet"]["port"]) == target
                    continue
                assert "grpc" in spec, f"{variant} {name}: {probe} is not a gRPC probe"
                assert spec["grpc"]["port"] == target, f"{variant} {name} {probe}"
                assert spec["grpc"]["service"] == health_names[name], f"{variant} {name}"
            assert port.get("appProtocol") == ("http" if name == "gateway" else "grpc")


def test_trainers_scale_behind_headless_services(rendered):
    objects = rendered["base"]
    data = configmap(objects)
    trainers = config.parse_trainers(data["VISIONMESH_TRAINERS"])
    assert set(trainers) == set(FRAMEWORKS)
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    for framework, addr in trainers.items():
        # dns:///name:port: gRPC resolves every ready pod of the headless Service
        parsed = urlparse(addr)
        assert parsed.scheme == "dns" and parsed.netloc == "", addr
        host, _, port = parsed.path.lstrip("/").rpartition(":")
        service = services[host]
        assert service["spec"]["clusterIP"] == "None", f"{host} must be headless"
        assert service["spec"]["ports"][0]["port"] == int(port)
        assert int(port) == int(config.DEFAULT_ADDRESSES[framework].rpartition(":")[2])
        (deployment,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == host]
        assert deployment["spec"]["replicas"] >= 2
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"][:3] == ["python", "-m", f"trainers.{framework}"]
        assert f"0.0.0.0:{port}" in container["args"]
        replica = {e["name"]: e for e in container["env"]}["VISIONMESH_TRAINER_REPLICA"]
        assert replica["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        # SIGTERM drains (jobs stopped at their last checkpoint): time enough for that
        assert pod["terminationGracePeriodSeconds"] >= 60
        (budget,) = [
            p for p in of_kind(objects, "PodDisruptionBudget") if p["metadata"]["name"] == host
        ]
        assert (
            budget["spec"]["selector"]["matchLabels"]
            == deployment["spec"]["selector"]["matchLabels"]
        )
    host, _, port = data["VISIONMESH_DATASET_ADDR"].rpartition(":")
    assert services[host]["spec"]["ports"][0]["port"] == int(port)
    db = urlparse(data["VISIONMESH_DATABASE_URL"])
    assert services[db.hostname]["spec"]["ports"][0]["port"] == db.port
    s3 = urlparse(data["AWS_ENDPOINT_URL"])
    assert services[s3.hostname]["spec"]["ports"][0]["port"] == s3.port


def test_gpus_only_in_the_gpu_overlay(rendered):
    for variant, objects in rendered.items():
        for workload in workloads(objects):
            name = workload["metadata"]["name"]
            pod = workload["spec"]["template"]["spec"]
            for container in containers(workload):
                gpus = {
                    part: container.get("resources", {}).get(part, {}).get("nvidia.com/gpu")
                    for part in ("requests", "limits")
                }
                wants = variant == "overlays/gpu" and name.startswith("trainer-")
                if not wants or container["name"] != "trainer":
                    assert gpus == {"requests": None, "limits": None}, f"{variant} {name}"
                    continue
                assert gpus == {"requests": "1", "limits": "1"}, f"{variant} {name}"
                assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
                assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in (
                    pod["tolerations"]
                )
                env = {e["name"]: e.get("value") for e in container["env"]}
                assert env["VISIONMESH_TRAINER_MAX_JOBS"] == "1"


def test_pods_run_as_non_root_with_limits(rendered):
    for variant, objects in rendered.items():
        for workload in workloads(objects):
            name = workload["metadata"]["name"]
            pod = workload["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            assert pod["securityContext"]["runAsUser"] > 0, name
            assert pod["automountServiceAccountToken"] is False, name
            assert pod["enableServiceLinks"] is False, name
            volumes = {v["name"]: v for v in pod.get("volumes", [])}
            for container in containers(workload):
                security = container["securityContext"]
                assert security["allowPrivilegeEscalation"] is False, (variant, name)
                assert security["readOnlyRootFilesystem"] is True, (variant, name)
                assert security["capabilities"]["drop"] == ["ALL"], (variant, name)
                for part in ("requests", "limits"):
                    assert {"cpu", "memory"} <= set(container["resources"][part]), (name, part)
                # a read-only root: every folder a process writes is a mounted volume
                mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
                if ours(container) and container["name"] != "keys":
                    assert "/tmp" in mounts, (variant, name, container["name"])
                if container["name"] in ("dataset-svc", "trainer"):
                    assert "emptyDir" in volumes[mounts["/var/lib/visionmesh"]], name


def test_config_holds_no_secrets(rendered):
    for variant, objects in rendered.items():
        data = configmap(objects)
        secretish = [k for k in data if re.search(r"PASSWORD|SECRET|TOKEN|PRIVATE|ACCESS_KEY", k)]
        assert not secretish, f"{variant}: {secretish} in the ConfigMap"
        assert make_url(data["VISIONMESH_DATABASE_URL"]).password is None
        secrets = secret_values(objects)
        assert len(secrets) == 5, sorted(secrets)
        plain = list(data.values()) + [
            e["value"]
            for w in workloads(objects)
            for c in containers(w)
            for e in c.get("env", [])
            if "value" in e
        ]
        for label, value in secrets.items():
            assert len(value) >= 16, f"{label} is too short to be a secret"
            assert not [p for p in plain if value.strip() in p], f"{label} in plain config"
        # the secrets come from Secrets: libpq's password, the S3 keys, the signing key
        dataset = next(
            d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "dataset-svc"
        )
        (container,) = containers(dataset, init=False)
        env = {e["name"]: e for e in container["env"]}
        assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"].startswith("visionmesh-db")
        refs = [r["secretRef"]["name"] for r in container["envFrom"] if "secretRef" in r]
        assert [r.rpartition("-")[0] for r in refs] == ["visionmesh-s3"]


def code_env_names() -> set[str]:
    names: set[str] = set()
    for folder in CODE_DIRS:
        for path in (ROOT / folder).rglob("*.py"):
            if "/v1/" not in path.as_posix():
                names.update(ENV_NAME.findall(path.read_text()))
    return names


def test_every_variable_set_is_one_the_code_reads(rendered):
    read = code_env_names()
    assert {"VISIONMESH_DATABASE_URL", "VISIONMESH_TRAINERS", "AWS_ENDPOINT_URL"} <= read
    for variant, objects in rendered.items():
        secret_keys = {s["metadata"]["name"]: set(s["data"]) for s in of_kind(objects, "Secret")}
        config_keys = set(configmap(objects))
        for workload in workloads(objects):
            for container in filter(ours, containers(workload)):
                names = {e["name"] for e in container.get("env", [])}
                for source in container.get("envFrom", []):
                    if "configMapRef" in source:
                        names |= config_keys
                    else:
                        names |= secret_keys[source["secretRef"]["name"]]
                unknown = names - read - set(THIRD_PARTY_ENV)
                where = f"{variant} {workload['metadata']['name']}/{container['name']}"
                assert not unknown, f"{where} sets variables no code reads: {sorted(unknown)}"


def test_images_are_pinned(rendered):
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for variant, objects in rendered.items():
        for workload in workloads(objects):
            for container in containers(workload):
                image = container["image"]
                name, sep, tag = image.rpartition(":")
                assert sep and "/" not in tag, f"{variant}: {image} has no tag"
                assert tag != "latest" and not tag.startswith("latest"), image
                if ours(container):
                    assert tag == version, f"{image}: our images are tagged {version}"


def test_entry_commands_are_real_modules(rendered):
    modules = set()
    for objects in rendered.values():
        for workload in workloads(objects):
            for container in filter(ours, containers(workload)):
                args = container.get("args") or container.get("command")
                if args[:2] == ["python", "-m"]:
                    modules.add(args[2])
                elif args[0] == "python":
                    assert (ROOT / args[1]).is_file(), args
                else:
                    assert args[0] == "sh", args
    assert modules == {"dataset_svc", "gateway"} | {f"trainers.{f}" for f in FRAMEWORKS}
    for module in modules:
        assert importlib.util.find_spec(f"{module}.__main__") is not None, module
    # what each `python -m` runs imports without torch (the trainers' server process never
    # imports it: jobs run in child processes)
    checks = ["dataset_svc.server", "gateway.app", "trainers.runtime.server"]
    checks += [f"trainers.{f}.adapter" for f in FRAMEWORKS]
    code = "import importlib\n" + "".join(f"importlib.import_module({m!r})\n" for m in checks)
    run_without_heavy_modules(code + "print('ok')")


def test_the_probes_are_answered_by_the_real_servers(rendered, tmp_path):
    """Each server started with its Deployment's arguments (but a free loopback port) and
    the rendered config answers its probes' health service SERVING; the gateway answers its
    probe path with backends it cannot reach."""
    objects = rendered["base"]
    data = configmap(objects)
    env = {
        "VISIONMESH_HOME": str(tmp_path / "home"),
        "VISIONMESH_TRAINERS": data["VISIONMESH_TRAINERS"],
        "VISIONMESH_DATASET_ADDR": f"127.0.0.1:{free_port()}",
    }
    started = []
    try:
        for deployment in of_kind(objects, "Deployment"):
            (container,) = containers(deployment, init=False)
            args = container["args"]
            if args[2] == "gateway":
                continue
            listen = args.index("--listen")
            extra = args[3:listen] + args[listen + 2 :]
            server = start_server(args[2], env=env, args=extra)
            started.append(server)
            service = container["readinessProbe"]["grpc"]["service"]
            assert service in server.services
            assert health_status(server.addr, service) == health_pb2.HealthCheckResponse.SERVING
        gateway = start_gateway(
            env["VISIONMESH_DATASET_ADDR"], config.parse_trainers(env["VISIONMESH_TRAINERS"])
        )
        try:
            (deployment,) = [
                d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "gateway"
            ]
            (container,) = containers(deployment, init=False)
            for probe in ("readinessProbe", "livenessProbe"):
                path = container[probe]["httpGet"]["path"]
                assert httpx.get(gateway.url + path, timeout=10).status_code == 200
            # the mesh report names the trainers' dns:/// addresses, unreachable here
            report = httpx.get(gateway.url + "/healthz", timeout=30)
            assert report.status_code == 503
            assert "dns:///trainer-ultralytics:50052" in report.text
        finally:
            assert gateway.stop() == 0
    finally:
        for server in started:
            assert server.stop() == 0, server.log()[-2000:]


# -- the init container ---------------------------------------------------------------------


def run_ready(env: dict[str, str], timeout: float = 20) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(DEPLOY / "docker" / "ready.py"), "--timeout", str(timeout)],
        cwd=ROOT,
        env=child_env(env),
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture(scope="module")
def moto():
    with MotoServer() as server:
        yield server


def test_ready_creates_the_bucket_once(moto, tmp_path):
    database = os.environ.get("VISIONMESH_TEST_DATABASE_URL", "").strip()
    env = {
        **moto.env(),
        "VISIONMESH_HOME": str(tmp_path),
        "VISIONMESH_DATABASE_URL": database or f"sqlite:///{tmp_path / 'catalog.db'}",
        "VISIONMESH_STORE_URL": "s3://made-by-ready/visionmesh",
    }
    first = run_ready(env)
    assert first.returncode == 0, first.stderr + first.stdout
    assert "created bucket made-by-ready" in first.stdout
    assert "database: ready" in first.stdout and "object store: ready" in first.stdout
    moto.client().head_bucket(Bucket="made-by-ready")
    again = run_ready(env)
    assert again.returncode == 0, again.stderr
    assert "created bucket" not in again.stdout


def test_ready_gives_up_on_a_database_that_never_answers(tmp_path):
    env = {
        "VISIONMESH_HOME": str(tmp_path),
        "VISIONMESH_DATABASE_URL": f"postgresql+psycopg://visionmesh@127.0.0.1:{free_port()}/x",
        "VISIONMESH_STORE_URL": f"file://{tmp_path / 'store'}",
    }
    result = run_ready(env, timeout=3)
    assert result.returncode == 1
    assert "database: not ready (OperationalError" in result.stdout
    assert "database: gave up waiting" in result.stderr


# -- secrets and images ---------------------------------------------------------------------


def test_secrets_script_makes_a_key_pair_dataset_svc_accepts(deploy_copy):
    from visionmesh import auth

    secrets = deploy_copy / "base" / "secrets"
    private = (secrets / "jwt_ed25519.pem").read_bytes()
    # equal to what dataset_svc derives, so it never rewrites the mounted public key
    assert auth.public_pem_from_private(private) == (secrets / "jwt_ed25519.pub.pem").read_bytes()
    assert auth.TokenIssuer(private).algorithm == "EdDSA"
    before = {p.name: p.read_bytes() for p in secrets.iterdir()}
    out = subprocess.run(
        ["sh", str(deploy_copy / "secrets.sh")], capture_output=True, text=True, check=True
    ).stdout
    assert out.count("kept ") == 5
    assert {p.name: p.read_bytes() for p in secrets.iterdir()} == before
    assert (DEPLOY / "base" / "secrets" / ".gitignore").read_text().splitlines()[1:] == [
        "*",
        "!.gitignore",
    ]


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its (INSTRUCTION, arguments) lines, continuations joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {"": []}
    current = ""
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, rest = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            current = rest.split(" AS ")[-1].strip() if " AS " in rest else rest
            stages[current] = []
        stages[current].append((instruction, rest.strip()))
    return stages


def test_dockerfile_basics(rendered):
    stages = dockerfile_stages()
    (arg,) = [r for i, r in stages[""] if i == "ARG" and r.startswith("PYTHON_IMAGE=")]
    base = arg.partition("=")[2]
    assert re.fullmatch(r"python:3\.11[.\w-]*-slim[\w-]*(@sha256:[0-9a-f]{64})?", base), base
    assert not any(i == "HEALTHCHECK" for lines in stages.values() for i, _ in lines)
    makefile = (ROOT / "Makefile").read_text()
    pins = re.findall(r"(torch(?:vision)?==[\d.]+)", makefile)
    assert pins and all(p in DOCKERFILE.read_text() for p in pins), pins
    extras = set(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    stage_of = {"visionmesh": "service", "visionmesh-trainer": "trainer"}
    # the extra each command needs: the servers' own, and the catalog driver for ready.py
    needs: dict[str, set[str]] = {stage: set() for stage in stage_of.values()}
    for objects in rendered.values():
        for workload in workloads(objects):
            for container in filter(ours, containers(workload)):
                args = container.get("args") or []
                stage = stage_of[container["image"].rpartition(":")[0]]
                if args[:2] == ["python", "-m"]:
                    needs[stage].add(args[2].removeprefix("trainers.").replace("_svc", ""))
                elif args[1:2] == ["deploy/docker/ready.py"]:
                    needs[stage].add("dataset")
    assert needs == {"service": {"dataset", "gateway"}, "trainer": {"dataset", *FRAMEWORKS}}
    for stage, needed in needs.items():
        lines = stages[stage]
        assert lines[0] == ("FROM", "os AS " + stage)
        (install,) = [r for i, r in lines if i == "RUN" and "install.sh" in r]
        installed = set(install.split()[-1].split(","))
        assert installed <= extras, install
        assert needed <= installed, f"{stage} image lacks extras {needed - installed}"
        users = [(n, r) for n, (i, r) in enumerate(lines) if i == "USER"]
        assert users and users[-1][1].split(":")[0] not in ("0", "root"), stage
        last_run = max(n for n, (i, _) in enumerate(lines) if i == "RUN")
        assert users[-1][0] > last_run, f"{stage}: USER must follow the last RUN"
        (cmd,) = [r for i, r in lines if i == "CMD"]
        args = yaml.safe_load(cmd)
        assert args[:2] == ["python", "-m"] and importlib.util.find_spec(args[2]) is not None
    entry = [r for i, r in stages["os"] if i == "ENTRYPOINT"]
    assert entry == ['["tini", "--"]']
    # k8s sets `args` only, so tini stays PID 1 for the servers
    for objects in rendered.values():
        for workload in workloads(objects):
            for container in filter(ours, containers(workload, init=False)):
                assert "command" not in container and container["args"][0] == "python"
    ignored = (ROOT / ".dockerignore").read_text().splitlines()
    assert {".venv", ".git", "var", "deploy/base/secrets", "node_modules"} <= set(ignored)
