"""A service whose handlers fail on demand: ``python -m tests._errors_service --listen HOST:PORT``.

For tests/test_errors.py. ``visionmesh.test.Errors`` is a servicer decorated as a class with
:func:`visionmesh.errors.grpc_errors` (and a request check): ``Ask`` (unary) does what its
request's text says, ``Count`` (server stream) sends ``N`` messages and then does ``WHAT``
for a request ``N:WHAT``. ``visionmesh.test.Solo`` has one ``Ask`` decorated on its own.
Requests and replies are ``google.protobuf.StringValue``.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator

import grpc
from google.protobuf.wrappers_pb2 import StringValue

from visionmesh.errors import ServiceError, grpc_errors, invalid_argument, invalid_fields
from visionmesh.server import Service, parse_args, run

SECRET = "SECRET-42 in /srv/private/path"


def act(what: str) -> None:
    """Raise what ``what`` names (nothing for anything else)."""
    if what == "not_found":
        raise ServiceError("NOT_FOUND", "widget w1 not found")
    if what == "field":
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "spec.device 'cuda:0': no CUDA device",
            "spec.device",
        )
    if what == "fields":
        raise invalid_fields(
            "2 fields are wrong",
            [
                ("annotations[17].bbox", "bbox needs 4 numbers"),
                ("dataset.display_name", "must not be empty"),
            ],
        )
    if what == "crash":
        raise RuntimeError(SECRET)


def refuse_checked(request: StringValue) -> None:
    if request.value == "refused":
        raise invalid_argument("refused by the request check", "value")


@grpc_errors(check_request=refuse_checked)
class Errors:
    def Ask(self, request: StringValue, context: grpc.ServicerContext) -> StringValue:
        act(request.value)
        return StringValue(value=f"answered {request.value}")

    def Count(self, request: StringValue, context: grpc.ServicerContext) -> Iterator[StringValue]:
        count, _, what = request.value.partition(":")
        for n in range(int(count)):
            yield StringValue(value=str(n))
        act(what)

    def helper(self) -> str:  # not an RPC: left alone
        raise RuntimeError("not wrapped")


class Solo:
    @grpc_errors
    def Ask(self, request: StringValue, context: grpc.ServicerContext) -> StringValue:
        act(request.value)
        return StringValue(value=f"answered {request.value}")


def _add(name: str, streams: tuple[str, ...] = ()):
    def add(servicer: object, server: grpc.Server) -> None:
        handlers = {}
        for method in ("Ask", *streams):
            make = (
                grpc.unary_stream_rpc_method_handler
                if method in streams
                else (grpc.unary_unary_rpc_method_handler)
            )
            handlers[method] = make(
                getattr(servicer, method),
                request_deserializer=StringValue.FromString,
                response_serializer=StringValue.SerializeToString,
            )
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(name, handlers)])

    return add


def main(argv: list[str] | None = None) -> int:
    args = parse_args("errors-test", "127.0.0.1:0", argv)
    services = [
        Service("visionmesh.test.Errors", _add("visionmesh.test.Errors", ("Count",)), Errors()),
        Service("visionmesh.test.Solo", _add("visionmesh.test.Solo"), Solo()),
    ]
    return run("errors-test", services, args.listen, grace=1.0)


if __name__ == "__main__":
    sys.exit(main())
