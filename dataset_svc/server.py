"""dataset_svc process: wires the catalog, object store and auth into one gRPC server.

At start: the JWT key pair is created under ``$VISIONMESH_HOME/keys`` when absent, the
catalog is migrated (``alembic upgrade head``), stale upload temp files are removed, and a
garbage-collection thread starts (``VISIONMESH_GC_INTERVAL_SECONDS``). Every RPC except
Register, Login, health and reflection needs ``authorization: Bearer <jwt>``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from PIL import Image as PILImage

from dataset_svc import gc, uploads
from dataset_svc.app import App
from dataset_svc.identity import PUBLIC_METHODS
from dataset_svc.services.assistant import AssistantService
from dataset_svc.services.auth import AuthService
from dataset_svc.services.compatibility import CompatibilityService
from dataset_svc.services.datasets import DatasetService
from visionmesh import auth, config
from visionmesh.server import Service, parse_args, run, service_name
from visionmesh.v1 import (
    assistant_pb2,
    assistant_pb2_grpc,
    auth_pb2,
    auth_pb2_grpc,
    compatibility_pb2,
    compatibility_pb2_grpc,
    dataset_pb2,
    dataset_pb2_grpc,
)

log = logging.getLogger("dataset_svc")


def build_services(app: App) -> list[Service]:
    return [
        Service(
            service_name(auth_pb2, "AuthService"),
            auth_pb2_grpc.add_AuthServiceServicer_to_server,
            AuthService(app),
        ),
        Service(
            service_name(dataset_pb2, "DatasetService"),
            dataset_pb2_grpc.add_DatasetServiceServicer_to_server,
            DatasetService(app),
        ),
        Service(
            service_name(compatibility_pb2, "CompatibilityService"),
            compatibility_pb2_grpc.add_CompatibilityServiceServicer_to_server,
            CompatibilityService(app),
        ),
        Service(
            service_name(assistant_pb2, "AssistantService"),
            assistant_pb2_grpc.add_AssistantServiceServicer_to_server,
            AssistantService(app),
        ),
    ]


class GarbageCollector(threading.Thread):
    def __init__(self, app: App) -> None:
        super().__init__(name="dataset_svc-gc", daemon=True)
        self.app = app
        self.stopping = threading.Event()

    def run(self) -> None:
        interval = self.app.settings.gc_interval_seconds
        while not self.stopping.wait(interval):
            try:
                gc.collect(self.app.catalog, self.app.store)
            except Exception:
                log.exception("garbage collection failed; retrying in %ss", interval)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args("dataset_svc", config.DEFAULT_ADDRESSES["dataset"], argv)
    app = App.from_env()
    PILImage.MAX_IMAGE_PIXELS = app.settings.max_image_pixels
    uploads.clean_stale_tmp(app.settings)
    collector = GarbageCollector(app)
    if app.settings.gc_interval_seconds > 0:
        collector.start()
    try:
        return run(
            "dataset_svc",
            build_services(app),
            args.listen,
            interceptors=[auth.AuthInterceptor(app.verifier, PUBLIC_METHODS)],
            on_drain=[collector.stopping.set],
            grace=args.grace,
        )
    finally:
        app.close()
