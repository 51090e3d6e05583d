"""dataset_svc in a child process, per storage backend, with signed-in clients.

Backends (``BACKENDS``): ``sqlite+local`` always; ``sqlite+s3`` (moto's S3 server in a
child process); ``postgres+local`` when ``VISIONMESH_TEST_DATABASE_URL`` is set (each
server gets a fresh schema, dropped afterwards, so runs never collide). Use it from a test
module (start once per module and backend; fixtures are plain functions here)::

    from tests._dataset import BACKENDS, DEFAULT_BACKEND, dataset_server_fixture

    server = dataset_server_fixture([DEFAULT_BACKEND])   # or BACKENDS

    def test_x(server):
        alice = server.user("alice")            # registers (once) and signs in
        ds = alice.create_dataset("cats")
        alice.upload(ds.name, {"a/train/x.png": png_bytes(8, 8)})

``server.store()`` opens the server's object store in the test process (to corrupt a blob
on purpose, say); ``server.env`` is what the child got (reuse it for another process, e.g.
a trainer, that must see the same home, catalog and store).
"""

from __future__ import annotations

import io
import itertools
import os
import re
import shutil
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from tests._moto import MotoServer
from tests._servers import ROOT, ServerProcess, start_server
from visionmesh.auth import with_token
from visionmesh.store import ObjectStore, open_store
from visionmesh.uploads import folder_files, upload_requests
from visionmesh.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    common_pb2,
    compatibility_pb2_grpc,
    dataset_pb2,
    dataset_pb2_grpc,
)

DEFAULT_BACKEND = "sqlite+local"
PG_URL = os.environ.get("VISIONMESH_TEST_DATABASE_URL", "").strip()
BACKENDS = [DEFAULT_BACKEND, "sqlite+s3"] + (["postgres+local"] if PG_URL else [])
SHARED_DATA = ROOT.parent / "shared" / "data"
PASSWORD = "correct horse battery"
_counter = itertools.count(1)


def shared_data(name: str) -> Path:
    """A sample folder of ../shared/data; skips the test when it is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"{path} is absent (sample data lives in ../shared/data beside the repo)")
    return path


def image_bytes(
    width: int = 8, height: int = 6, color: Any = (200, 30, 30), fmt: str = "PNG"
) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (width, height), color).save(out, fmt)
    return out.getvalue()


# -- clients -----------------------------------------------------------------------------------


@dataclass
class Client:
    """A signed-in user's stubs (every call carries the user's token)."""

    username: str
    token: str
    channel: grpc.Channel
    auth: auth_pb2_grpc.AuthServiceStub = field(init=False)
    datasets: dataset_pb2_grpc.DatasetServiceStub = field(init=False)
    compat: compatibility_pb2_grpc.CompatibilityServiceStub = field(init=False)

    def __post_init__(self) -> None:
        authed = with_token(self.channel, self.token)
        self.auth = auth_pb2_grpc.AuthServiceStub(authed)
        self.datasets = dataset_pb2_grpc.DatasetServiceStub(authed)
        self.compat = compatibility_pb2_grpc.CompatibilityServiceStub(authed)

    def create_dataset(
        self, display_name: str, visibility: int = common_pb2.VISIBILITY_PRIVATE, **fields: Any
    ) -> dataset_pb2.Dataset:
        return self.datasets.CreateDataset(
            dataset_pb2.CreateDatasetRequest(
                dataset=dataset_pb2.Dataset(
                    display_name=display_name, visibility=visibility, **fields
                )
            ),
            timeout=30,
        ).dataset

    def upload(
        self, parent: str, files: dict[str, bytes] | Iterable[tuple[str, bytes | Path]], **kw: Any
    ) -> dataset_pb2.UploadImagesResponse:
        items = files.items() if isinstance(files, dict) else files
        return self.datasets.UploadImages(upload_requests(parent, items, **kw), timeout=120)

    def upload_folder(
        self, parent: str, folder: Path, **kw: Any
    ) -> dataset_pb2.UploadImagesResponse:
        return self.upload(parent, folder_files(folder, images_only=True), **kw)

    def import_folder_labels(
        self,
        parent: str,
        folder: Path,
        *,
        suffixes: tuple[str, ...] = (".txt", ".json", ".yaml", ".yml"),
        **kw: Any,
    ) -> dataset_pb2.ImportAnnotationsResponse:
        files = [
            dataset_pb2.AnnotationFile(path=rel, content=path.read_bytes())
            for rel, path in folder_files(folder)
            if path.suffix.lower() in suffixes
        ]
        return self.datasets.ImportAnnotations(
            dataset_pb2.ImportAnnotationsRequest(parent=parent, files=files, **kw), timeout=60
        )

    def all_images(self, parent: str) -> list[dataset_pb2.Image]:
        out: list[dataset_pb2.Image] = []
        token = ""
        while True:
            page = self.datasets.ListImages(
                dataset_pb2.ListImagesRequest(parent=parent, page_size=1000, page_token=token),
                timeout=30,
            )
            out.extend(page.images)
            token = page.next_page_token
            if not token:
                return out


@dataclass
class DatasetServer:
    backend: str
    process: ServerProcess
    home: Path
    env: dict[str, str]
    moto: MotoServer | None = None
    _users: dict[str, Client] = field(default_factory=dict)
    _channels: list[grpc.Channel] = field(default_factory=list)

    @property
    def addr(self) -> str:
        return self.process.addr

    def channel(self) -> grpc.Channel:
        channel = self.process.channel()
        self._channels.append(channel)  # closed with the server
        return channel

    def anonymous(
        self,
    ) -> tuple[auth_pb2_grpc.AuthServiceStub, dataset_pb2_grpc.DatasetServiceStub]:
        channel = self.channel()
        return auth_pb2_grpc.AuthServiceStub(channel), dataset_pb2_grpc.DatasetServiceStub(channel)

    def register(self, username: str, password: str = PASSWORD) -> auth_pb2.User:
        auth, _ = self.anonymous()
        return auth.Register(
            auth_pb2.RegisterRequest(username=username, password=password), timeout=30
        ).user

    def login(self, username: str, password: str = PASSWORD) -> str:
        auth, _ = self.anonymous()
        return auth.Login(
            auth_pb2.LoginRequest(username=username, password=password), timeout=30
        ).access_token

    def client(self, username: str, token: str) -> Client:
        return Client(username, token, self.channel())

    def user(self, name: str) -> Client:
        """A signed-in client for a user unique to this server (registered on first use)."""
        if name not in self._users:
            username = f"{name}{next(_counter)}"
            self.register(username)
            self._users[name] = self.client(username, self.login(username))
        return self._users[name]

    def store(self) -> ObjectStore:
        """The server's object store, opened in this process."""
        url = self.env["VISIONMESH_STORE_URL"]
        if url.startswith("s3://") and self.moto is not None:
            from visionmesh.store.s3 import S3Store

            bucket, _, prefix = url[len("s3://") :].partition("/")
            return S3Store(bucket, prefix, client=self.moto.client())
        return open_store(url)

    def restart(self) -> None:
        """Start the server again on the same home/catalog/store (after stop or kill)."""
        self.close_channels()
        if self.process.proc.poll() is None:
            self.process.stop()
        self.process = start_server("dataset_svc", env=self.env)
        self._users.clear()

    def close_channels(self) -> None:
        for channel in self._channels:
            channel.close()
        self._channels.clear()


# -- starting servers --------------------------------------------------------------------------


def _pg_admin(sql: str) -> None:
    import psycopg

    conninfo = re.sub(r"^postgresql\+psycopg://", "postgresql://", PG_URL)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(sql)


def _pg_schema_url(schema: str) -> str:
    separator = "&" if "?" in PG_URL else "?"
    return f"{PG_URL}{separator}options=-csearch_path%3D{schema}"


def start_dataset_server(
    backend: str,
    home: Path,
    *,
    moto: Callable[[], MotoServer] | None = None,
    extra_env: dict[str, str] | None = None,
) -> tuple[DatasetServer, Callable[[], None]]:
    """Start dataset_svc for ``backend``; returns the server and its cleanup function."""
    database, _, store = backend.partition("+")
    env = {
        "VISIONMESH_HOME": str(home),
        "VISIONMESH_GC_INTERVAL_SECONDS": "0",
        **(extra_env or {}),
    }
    cleanups: list[Callable[[], None]] = []
    moto_server = None
    if database == "postgres":
        if not PG_URL:
            pytest.skip("VISIONMESH_TEST_DATABASE_URL is not set")
        schema = f"vmtest_{os.getpid()}_{next(_counter)}"
        _pg_admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}")
        env["VISIONMESH_DATABASE_URL"] = _pg_schema_url(schema)
        cleanups.append(lambda: _pg_admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))
    if store == "s3":
        assert moto is not None, "an s3 backend needs the moto server"
        moto_server = moto()
        bucket = moto_server.create_bucket()
        env.update(moto_server.env())
        env["VISIONMESH_STORE_URL"] = f"s3://{bucket}/vm"
    else:
        env["VISIONMESH_STORE_URL"] = f"file://{home / 'store'}"
    process = start_server("dataset_svc", env=env)
    server = DatasetServer(backend, process, home, env, moto_server)

    def cleanup() -> None:
        server.close_channels()
        if server.process.proc.poll() is None:
            server.process.kill()
        for fn in cleanups:
            fn()
        shutil.rmtree(home, ignore_errors=True)

    return server, cleanup


_moto_server: MotoServer | None = None


def shared_moto() -> MotoServer:
    """One moto server for the whole test session (stopped at interpreter exit)."""
    global _moto_server
    if _moto_server is None or _moto_server.proc is None or _moto_server.proc.poll() is not None:
        import atexit

        _moto_server = MotoServer().start()
        atexit.register(_moto_server.stop)
    return _moto_server


def dataset_server_fixture(
    backends: list[str] | None = None, *, extra_env: dict[str, str] | None = None
) -> Any:
    """A module-scoped fixture yielding a :class:`DatasetServer` per backend."""

    @pytest.fixture(scope="module", params=backends or [DEFAULT_BACKEND])
    def fixture(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[DatasetServer]:
        home = tmp_path_factory.mktemp(f"home-{request.param.replace('+', '-')}")
        server, cleanup = start_dataset_server(
            request.param, home, moto=shared_moto, extra_env=extra_env
        )
        try:
            yield server
        finally:
            cleanup()

    return fixture
