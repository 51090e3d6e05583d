"""gRPC status codes and what they mean over HTTP.

``HTTP_STATUS`` is grpc-gateway's table (runtime.HTTPStatusFromCode): the gateway answers a
failed call with that HTTP status and a ``google.rpc.Status`` JSON body (code, message,
details), the details read from the ``grpc-status-details-bin`` trailing metadata so that a
``google.rpc.BadRequest`` keeps its field paths (e.g. ``annotations[17].bbox``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc
from google.protobuf import json_format
from google.rpc import code_pb2, error_details_pb2, status_pb2  # noqa: F401 (Any types)

StatusCode = grpc.StatusCode

# gRPC code -> HTTP status, exactly as grpc-gateway maps them.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    StatusCode.OK: 200,
    StatusCode.CANCELLED: 499,
    StatusCode.UNKNOWN: 500,
    StatusCode.INVALID_ARGUMENT: 400,
    StatusCode.DEADLINE_EXCEEDED: 504,
    StatusCode.NOT_FOUND: 404,
    StatusCode.ALREADY_EXISTS: 409,
    StatusCode.PERMISSION_DENIED: 403,
    StatusCode.UNAUTHENTICATED: 401,
    StatusCode.RESOURCE_EXHAUSTED: 429,
    StatusCode.FAILED_PRECONDITION: 400,
    StatusCode.ABORTED: 409,
    StatusCode.OUT_OF_RANGE: 400,
    StatusCode.UNIMPLEMENTED: 501,
    StatusCode.INTERNAL: 500,
    StatusCode.UNAVAILABLE: 503,
    StatusCode.DATA_LOSS: 500,
}

STATUS_DETAILS_KEY = "grpc-status-details-bin"


def http_status(code: grpc.StatusCode) -> int:
    """The HTTP status grpc-gateway answers for a gRPC code (500 for anything unknown)."""
    return HTTP_STATUS.get(code, 500)


def code_number(code: grpc.StatusCode) -> int:
    """The numeric value of a gRPC code (``NOT_FOUND`` -> 5), as google.rpc.Status carries."""
    return code.value[0]


def status_proto(
    code: grpc.StatusCode, message: str, trailing_metadata: Iterable[Any] | None = None
) -> status_pb2.Status:
    """A google.rpc.Status: the rich one from ``grpc-status-details-bin`` when the server sent
    it (its code and message agree with the call's), else one built from code and message."""
    for key, value in trailing_metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except Exception:  # noqa: BLE001 - a garbled trailer must not hide the error
                break
            if status.code == code_number(code):
                if not status.message:
                    status.message = message
                return status
            break
    return status_pb2.Status(code=code_number(code), message=message or "")


def status_json(status: status_pb2.Status) -> dict[str, Any]:
    """google.rpc.Status as proto3 JSON; details whose type is unknown here are dropped."""
    try:
        return json_format.MessageToDict(status, always_print_fields_with_no_presence=True)
    except (json_format.Error, TypeError, KeyError):
        plain = status_pb2.Status(code=status.code, message=status.message)
        return json_format.MessageToDict(plain, always_print_fields_with_no_presence=True)


def error_body(code: grpc.StatusCode, message: str, trailing_metadata: Any = None) -> dict:
    """The JSON body of an error reply: google.rpc.Status with its details."""
    return status_json(status_proto(code, message, trailing_metadata))


def bad_request(message: str, violations: dict[str, str]) -> status_pb2.Status:
    """INVALID_ARGUMENT with a google.rpc.BadRequest naming each field at fault."""
    detail = error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
            for f, d in violations.items()
        ]
    )
    status = status_pb2.Status(code=code_number(StatusCode.INVALID_ARGUMENT), message=message)
    status.details.add().Pack(detail)
    return status
