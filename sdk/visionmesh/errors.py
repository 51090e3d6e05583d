"""Errors, one way for every service: the error type, the handler decorator, the HTTP table.

- :class:`ServiceError` is a refusal the caller can act on: a gRPC code (``grpc.StatusCode``
  or its name), a message, and for a bad field a ``google.rpc.BadRequest`` naming the field
  as the client sent it (``dataset.display_name``, ``annotations[17].bbox``, ``spec.epochs``).
  The helpers (:func:`invalid_argument`, :func:`not_found`, ...) build the common ones.
- :func:`grpc_errors` decorates a servicer class (every RPC method) or one handler, unary or
  server-streaming (a generator): a ServiceError becomes the call's status with its details;
  any other exception is logged and answers INTERNAL without its text; a ``grpc.RpcError``
  passes through (the client went away). ``check_request`` runs first on a unary request
  message (dataset_svc refuses undeclared enum values there).
- :func:`bad_request_fields` is the client side: the field violations of a failed call.
- ``HTTP_STATUS`` is grpc-gateway's table (runtime.HTTPStatusFromCode): the gateway answers a
  failed call with that HTTP status and a ``google.rpc.Status`` JSON body (code, message,
  details), the details read from the ``grpc-status-details-bin`` trailing metadata so that a
  ``google.rpc.BadRequest`` keeps its field paths.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2  # noqa: F401 (Any types)
from grpc_status import rpc_status

StatusCode = grpc.StatusCode

# (field, description) pairs.
Violation = tuple[str, str]


class ServiceError(Exception):
    """A refusal turned into a gRPC status by :func:`grpc_errors`.

    ``field`` names one field at fault (its description is the message); ``violations``
    names several, each with its own description.
    """

    def __init__(
        self,
        code: grpc.StatusCode | str,
        message: str,
        field: str = "",
        *,
        violations: Iterable[Violation] = (),
    ) -> None:
        super().__init__(message)
        self.code = code if isinstance(code, grpc.StatusCode) else grpc.StatusCode[code]
        self.message = message
        self.violations = ([(field, message)] if field else []) + list(violations)

    def status_proto(self) -> status_pb2.Status:
        """google.rpc.Status with a BadRequest detail when fields are named."""
        status = status_pb2.Status(code=code_number(self.code), message=self.message)
        if self.violations:
            detail = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations
                ]
            )
            status.details.add().Pack(detail)
        return status

    def to_status(self) -> grpc.Status:
        return rpc_status.to_status(self.status_proto())


def invalid_argument(message: str, field: str | None = None, description: str = "") -> ServiceError:
    violations = [(field, description or message)] if field else []
    return ServiceError(StatusCode.INVALID_ARGUMENT, message, violations=violations)


def invalid_fields(message: str, violations: Iterable[Violation]) -> ServiceError:
    return ServiceError(StatusCode.INVALID_ARGUMENT, message, violations=violations)


def not_found(message: str) -> ServiceError:
    return ServiceError(StatusCode.NOT_FOUND, message)


def permission_denied(message: str) -> ServiceError:
    return ServiceError(StatusCode.PERMISSION_DENIED, message)


def unauthenticated(message: str) -> ServiceError:
    return ServiceError(StatusCode.UNAUTHENTICATED, message)


def already_exists(message: str, field: str | None = None) -> ServiceError:
    return ServiceError(StatusCode.ALREADY_EXISTS, message, field or "")


def failed_precondition(message: str) -> ServiceError:
    return ServiceError(StatusCode.FAILED_PRECONDITION, message)


def resource_exhausted(message: str) -> ServiceError:
    return ServiceError(StatusCode.RESOURCE_EXHAUSTED, message)


def aborted(message: str) -> ServiceError:
    return ServiceError(StatusCode.ABORTED, message)


# -- server side: the decorator ----------------------------------------------------------------
RequestCheck = Callable[[Message], None]


def _abort(context: grpc.ServicerContext, exc: Exception, method: Callable[..., Any]) -> NoReturn:
    """Answer the call for ``exc`` (called while handling it); always raises."""
    if isinstance(exc, ServiceError):
        context.abort_with_status(exc.to_status())
    elif isinstance(exc, grpc.RpcError):
        raise exc  # the client went away: nothing to add
    else:
        logging.getLogger(method.__module__).exception("%s failed", method.__qualname__)
        context.abort(
            StatusCode.INTERNAL,
            f"internal error in {method.__name__}; the server log has the details",
        )
    raise AssertionError("not reached: abort raises")


def _unary(method: Callable[..., Any], check: RequestCheck | None) -> Callable[..., Any]:
    @functools.wraps(method)
    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            if check is not None and isinstance(request, Message):  # not a request stream
                check(request)
            return method(self, request, context)
        except Exception as exc:
            _abort(context, exc, method)

    return handler


def _stream(method: Callable[..., Any], check: RequestCheck | None) -> Callable[..., Any]:
    """For generator handlers: the same mapping, also for an error raised mid-stream (the
    messages already sent stay sent; the call then ends with the error's status)."""

    @functools.wraps(method)
    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            if check is not None and isinstance(request, Message):
                check(request)
            yield from method(self, request, context)
        except Exception as exc:
            _abort(context, exc, method)

    return handler


def _wrap(method: Callable[..., Any], check: RequestCheck | None) -> Callable[..., Any]:
    if getattr(method, "__grpc_errors__", False):
        return method
    wrap = _stream if inspect.isgeneratorfunction(method) else _unary
    handler = wrap(method, check)
    handler.__grpc_errors__ = True  # type: ignore[attr-defined]
    return handler


def grpc_errors(target: Any = None, *, check_request: RequestCheck | None = None) -> Any:
    """Map errors to gRPC statuses, on a servicer class (every method whose name starts with
    a capital: the RPCs) or on one handler method; ``@grpc_errors`` or, with a request check,
    ``@grpc_errors(check_request=f)`` (``f`` raises ServiceError for a bad request).

    Handlers raise ServiceError rather than call ``context.abort`` themselves: the bare
    exception abort raises would read as unexpected here and answer INTERNAL."""
    if target is None:
        return functools.partial(grpc_errors, check_request=check_request)
    if isinstance(target, type):
        for name, member in list(vars(target).items()):
            if name[0].isupper() and inspect.isfunction(member):
                setattr(target, name, _wrap(member, check_request))
        return target
    return _wrap(target, check_request)


# -- client side ----------------------------------------------------------------------------
def bad_request_fields(err: grpc.RpcError) -> dict[str, str]:
    """The BadRequest field violations of a failed call (field -> description, in order)."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    fields: dict[str, str] = {}
    if status is None:
        return fields
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            for v in bad.field_violations:
                fields[v.field] = v.description
    return fields


# -- over HTTP ------------------------------------------------------------------------------
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
    return invalid_fields(message, violations.items()).status_proto()


__all__ = [
    "HTTP_STATUS",
    "STATUS_DETAILS_KEY",
    "ServiceError",
    "Violation",
    "aborted",
    "already_exists",
    "bad_request",
    "bad_request_fields",
    "code_number",
    "error_body",
    "failed_precondition",
    "grpc_errors",
    "http_status",
    "invalid_argument",
    "invalid_fields",
    "not_found",
    "permission_denied",
    "resource_exhausted",
    "status_json",
    "status_proto",
    "unauthenticated",
]
