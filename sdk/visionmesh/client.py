"""Typed clients for the whole mesh: dataset_svc and every trainer, with the caller's token.

::

    from visionmesh.client import Mesh

    mesh = Mesh.from_env()                    # VISIONMESH_DATASET_ADDR, VISIONMESH_TRAINERS
    token = mesh.login("alice", "secret")     # AuthService.Login; also sets mesh.token
    for ds in mesh.list_datasets():
        print(ds.name, ds.display_name)
    framework = mesh.framework_of_model("yolo11n")   # "ultralytics", from GetCapabilities

The signed-in token lives in one file (:func:`token_path`: ``$XDG_CONFIG_HOME/visionmesh``
or ``~/.config/visionmesh``, mode 0600); ``VISIONMESH_TOKEN`` overrides it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from visionmesh import config
from visionmesh.auth import with_token
from visionmesh.v1 import (
    assistant_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    compatibility_pb2_grpc,
    dataset_pb2,
    dataset_pb2_grpc,
    trainer_pb2,
    trainer_pb2_grpc,
)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
CHANNEL_OPTIONS = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
TOKEN_ENV = "VISIONMESH_TOKEN"
# Model name suffixes a trainer resolves itself (ultralytics: yolo11n-seg is yolo11n for
# segmentation), so "yolo11n-seg" belongs to the trainer that lists "yolo11n".
MODEL_SUFFIXES = ("-seg", "-cls", "-pose")
JOB_NAME = re.compile(r"^trainers/([^/]+)/jobs/([^/]+)$")


# -- the stored token ----------------------------------------------------------------------


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".config") / "visionmesh"


def token_path() -> Path:
    return config_dir() / "token.json"


@dataclass
class StoredToken:
    token: str
    username: str = ""
    dataset_addr: str = ""
    expire_time: str = ""
    source: str = "file"  # "file" or "env"


def load_token() -> StoredToken | None:
    """VISIONMESH_TOKEN if set, else the stored token, else None."""
    env = os.environ.get(TOKEN_ENV, "").strip()
    if env:
        return StoredToken(env, source="env")
    path = token_path()
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not data.get("token"):
        return None
    return StoredToken(
        str(data["token"]),
        str(data.get("username", "")),
        str(data.get("dataset_addr", "")),
        str(data.get("expire_time", "")),
    )


def save_token(stored: StoredToken) -> Path:
    """Write the token file with mode 0600 (its folder 0700), atomically."""
    path = token_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    payload = {
        "token": stored.token,
        "username": stored.username,
        "dataset_addr": stored.dataset_addr,
        "expire_time": stored.expire_time,
    }
    fd, tmp = tempfile.mkstemp(prefix=".token-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def clear_token() -> bool:
    """Remove the stored token; True if there was one."""
    try:
        token_path().unlink()
        return True
    except FileNotFoundError:
        return False


# -- errors --------------------------------------------------------------------------------


class ClientError(Exception):
    """A problem found on the client side; ``code`` is a grpc.StatusCode it resembles."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT):
        super().__init__(message)
        self.code = code
        self.message = message


def not_found(message: str) -> ClientError:
    return ClientError(message, grpc.StatusCode.NOT_FOUND)


# -- the mesh -------------------------------------------------------------------------------


@dataclass
class Mesh:
    """Stubs for dataset_svc and each trainer; every call carries ``token`` when set."""

    dataset_addr: str
    trainer_addrs: dict[str, str]
    token: str = ""
    timeout: float = 60.0
    _channels: dict[str, grpc.Channel] = field(default_factory=dict)
    _capabilities: dict[str, Any] | None = None
    unreachable: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(
        cls,
        *,
        dataset_addr: str | None = None,
        trainers: str | dict[str, str] | None = None,
        token: str | None = None,
    ) -> Mesh:
        settings = config.load()
        if isinstance(trainers, str):
            trainers = config.parse_trainers(trainers)
        if token is None:
            stored = load_token()
            token = stored.token if stored else ""
        return cls(dataset_addr or settings.dataset_addr, trainers or settings.trainers, token)

    # channels and stubs
    def _channel(self, addr: str) -> grpc.Channel:
        if addr not in self._channels:
            self._channels[addr] = grpc.insecure_channel(
                addr, options=CHANNEL_OPTIONS + config.CHANNEL_LB_OPTIONS
            )
        channel = self._channels[addr]
        return with_token(channel, lambda: self.token or None) if self.token else channel

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def __enter__(self) -> Mesh:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def auth(self) -> auth_pb2_grpc.AuthServiceStub:
        return auth_pb2_grpc.AuthServiceStub(self._channel(self.dataset_addr))

    @property
    def datasets(self) -> dataset_pb2_grpc.DatasetServiceStub:
        return dataset_pb2_grpc.DatasetServiceStub(self._channel(self.dataset_addr))

    @property
    def compat(self) -> compatibility_pb2_grpc.CompatibilityServiceStub:
        return compatibility_pb2_grpc.CompatibilityServiceStub(self._channel(self.dataset_addr))

    @property
    def assistant(self) -> assistant_pb2_grpc.AssistantServiceStub:
        return assistant_pb2_grpc.AssistantServiceStub(self._channel(self.dataset_addr))

    def trainer(self, framework: str) -> trainer_pb2_grpc.TrainerServiceStub:
        addr = self.trainer_addrs.get(framework)
        if addr is None:
            known = ", ".join(sorted(self.trainer_addrs)) or "none"
            raise not_found(
                f"no trainer {framework!r} is configured (VISIONMESH_TRAINERS has {known})"
            )
        return trainer_pb2_grpc.TrainerServiceStub(self._channel(addr))

    # auth
    def login(self, username: str, password: str) -> auth_pb2.LoginResponse:
        reply = self.auth.Login(
            auth_pb2.LoginRequest(username=username, password=password), timeout=self.timeout
        )
        self.token = reply.access_token
        return reply

    # datasets
    def list_datasets(self, filter: str = "", order_by: str = "") -> Iterator[dataset_pb2.Dataset]:
        token = ""
        while True:
            page = self.datasets.ListDatasets(
                dataset_pb2.ListDatasetsRequest(
                    page_size=200, page_token=token, filter=filter, order_by=order_by
                ),
                timeout=self.timeout,
            )
            yield from page.datasets
            token = page.next_page_token
            if not token:
                return

    def resolve_dataset(self, ref: str) -> dataset_pb2.Dataset:
        """A dataset by resource name, id or display name (among those the caller can see)."""
        ref = ref.strip()
        if not ref:
            raise ClientError("a dataset is needed (its name, id or datasets/{id})")
        if ref.startswith("datasets/") and ref.count("/") == 1:
            return self.datasets.GetDataset(
                dataset_pb2.GetDatasetRequest(name=ref), timeout=self.timeout
            ).dataset
        matches = []
        for dataset in self.list_datasets():
            if dataset.name == f"datasets/{ref}":
                return dataset
            if dataset.display_name == ref:
                matches.append(dataset)
        if len(matches) == 1:
            return matches[0]
        if len(matches) > 1:
            names = ", ".join(f"{d.name} (owner {d.owner})" for d in matches)
            raise ClientError(
                f"{len(matches)} datasets are named {ref!r}: {names}; use the datasets/... name",
                grpc.StatusCode.FAILED_PRECONDITION,
            )
        raise not_found(
            f"no dataset named {ref!r} among those you can see; "
            "`vmesh datasets list` shows them, `vmesh datasets create` makes one"
        )

    def list_images(self, parent: str) -> Iterator[dataset_pb2.Image]:
        token = ""
        while True:
            page = self.datasets.ListImages(
                dataset_pb2.ListImagesRequest(parent=parent, page_size=1000, page_token=token),
                timeout=self.timeout,
            )
            yield from page.images
            token = page.next_page_token
            if not token:
                return

    # trainers
    def capabilities(self) -> dict[str, trainer_pb2.GetCapabilitiesResponse]:
        """framework -> GetCapabilities of every reachable trainer (``unreachable`` says why not)."""
        if self._capabilities is None:
            found: dict[str, Any] = {}
            for framework in self.trainer_addrs:
                try:
                    found[framework] = self.trainer(framework).GetCapabilities(
                        trainer_pb2.GetCapabilitiesRequest(framework=framework), timeout=10
                    )
                except grpc.RpcError as err:
                    self.unreachable[framework] = f"{err.code().name}: {err.details()}"
            self._capabilities = found
        return self._capabilities

    def frameworks_of_model(self, model: str) -> list[str]:
        """Frameworks whose trainer lists ``model`` (or it without a -seg/-cls/-pose suffix)."""
        names = {model.lower()}
        for suffix in MODEL_SUFFIXES:
            if model.lower().endswith(suffix):
                names.add(model.lower()[: -len(suffix)])
        return [
            fw
            for fw, caps in self.capabilities().items()
            if any(m.name.lower() in names for m in caps.models)
        ]

    def model_info(self, framework: str, model: str) -> trainer_pb2.ModelInfo | None:
        caps = self.capabilities().get(framework)
        if caps is None:
            return None
        low = model.lower()
        for m in caps.models:
            if m.name.lower() == low or any(
                low == m.name.lower() + suffix for suffix in MODEL_SUFFIXES
            ):
                return m
        return None

    def framework_of_model(self, model: str, framework: str = "") -> str:
        """The framework that trains ``model``; a ClientError naming what exists otherwise."""
        caps = self.capabilities()
        owners = self.frameworks_of_model(model)
        if framework:
            if framework not in self.trainer_addrs:
                raise not_found(
                    f"no trainer {framework!r}; configured: {', '.join(sorted(self.trainer_addrs))}"
                )
            if framework in owners:
                return framework
            if owners:
                raise not_found(
                    f"the {framework} trainer has no {model}: it belongs to {', '.join(owners)} "
                    f"(use --framework {owners[0]}, or leave --framework out)"
                )
            if framework not in caps:
                raise ClientError(
                    f"the {framework} trainer at {self.trainer_addrs[framework]} is unreachable "
                    f"({self.unreachable.get(framework, 'no answer')})",
                    grpc.StatusCode.UNAVAILABLE,
                )
            raise not_found(
                f"the {framework} trainer has no model {model!r}; it has: "
                + ", ".join(m.name for m in caps[framework].models)
            )
        if len(owners) == 1:
            return owners[0]
        if len(owners) > 1:
            raise ClientError(
                f"{model} is offered by {', '.join(owners)}: pick one with --framework",
                grpc.StatusCode.FAILED_PRECONDITION,
            )
        if not caps:
            raise ClientError(
                "no trainer is reachable: "
                + "; ".join(f"{fw} at {self.trainer_addrs[fw]}" for fw in self.trainer_addrs)
                + " (start them with `make run`)",
                grpc.StatusCode.UNAVAILABLE,
            )
        offered = "; ".join(
            f"{fw}: {', '.join(m.name for m in c.models)}" for fw, c in sorted(caps.items())
        )
        missing = (
            f" (unreachable: {', '.join(sorted(self.unreachable))})" if self.unreachable else ""
        )
        raise not_found(f"no trainer has a model {model!r}. Models: {offered}{missing}")

    def job_name(self, ref: str) -> tuple[str, str]:
        """(framework, trainers/{framework}/jobs/{id}) of a job name or bare id."""
        ref = ref.strip().rstrip("/")
        match = JOB_NAME.match(ref)
        if match:
            return match.group(1), ref
        job_id = ref.removeprefix("jobs/")
        if not job_id or "/" in job_id:
            raise ClientError(f"{ref!r} is not a job: use trainers/{{framework}}/jobs/{{id}}")
        # A bare id: ask each trainer (a job of another trainer answers NOT_FOUND).
        for framework in self.trainer_addrs:
            name = f"trainers/{framework}/jobs/{job_id}"
            try:
                self.trainer(framework).GetJob(trainer_pb2.GetJobRequest(name=name), timeout=10)
                return framework, name
            except grpc.RpcError as err:
                if err.code() in (grpc.StatusCode.UNAUTHENTICATED,):
                    raise
        raise not_found(f"no job {job_id!r} of yours on any trainer; `vmesh jobs list` shows them")

    def get_job(self, ref: str) -> trainer_pb2.Job:
        framework, name = self.job_name(ref)
        return (
            self.trainer(framework)
            .GetJob(trainer_pb2.GetJobRequest(name=name), timeout=self.timeout)
            .job
        )

    def list_jobs(self, framework: str, filter: str = "") -> Iterator[trainer_pb2.Job]:
        token = ""
        stub = self.trainer(framework)
        while True:
            page = stub.ListJobs(
                trainer_pb2.ListJobsRequest(
                    parent=f"trainers/{framework}", page_size=100, page_token=token, filter=filter
                ),
                timeout=self.timeout,
            )
            yield from page.jobs
            token = page.next_page_token
            if not token:
                return
