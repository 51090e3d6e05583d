"""dataset_svc process: wires the catalog, object store and auth into one gRPC server."""

from __future__ import annotations

from collections.abc import Sequence

from visionmesh import config
from visionmesh.server import Service, parse_args, run, service_name
from visionmesh.v1 import (
    auth_pb2,
    auth_pb2_grpc,
    compatibility_pb2,
    compatibility_pb2_grpc,
    dataset_pb2,
    dataset_pb2_grpc,
)


def build_services() -> list[Service]:
    return [
        Service(
            service_name(auth_pb2, "AuthService"),
            auth_pb2_grpc.add_AuthServiceServicer_to_server,
            auth_pb2_grpc.AuthServiceServicer(),
        ),
        Service(
            service_name(dataset_pb2, "DatasetService"),
            dataset_pb2_grpc.add_DatasetServiceServicer_to_server,
            dataset_pb2_grpc.DatasetServiceServicer(),
        ),
        Service(
            service_name(compatibility_pb2, "CompatibilityService"),
            compatibility_pb2_grpc.add_CompatibilityServiceServicer_to_server,
            compatibility_pb2_grpc.CompatibilityServiceServicer(),
        ),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args("dataset_svc", config.DEFAULT_ADDRESSES["dataset"], argv)
    return run("dataset_svc", build_services(), args.listen, grace=args.grace)
