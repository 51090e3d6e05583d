"""gRPC errors with actionable messages and, for a bad field, a google.rpc.BadRequest.

Service code raises :class:`ServiceError` (via the helpers below); :func:`grpc_errors`
turns it into a status with ``context.abort_with_status`` so every RPC answers the same
way. A field violation names the field as the client sent it, e.g. ``dataset.display_name``
or ``annotations[17].bbox``.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger("dataset_svc")

# (field, description) pairs.
Violation = tuple[str, str]


class ServiceError(Exception):
    def __init__(
        self, code: grpc.StatusCode, message: str, violations: Iterable[Violation] = ()
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.violations = list(violations)

    def to_status(self) -> grpc.Status:
        status = status_pb2.Status(code=self.code.value[0], message=self.message)
        if self.violations:
            detail = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in self.violations
                ]
            )
            packed = any_pb2.Any()
            packed.Pack(detail)
            status.details.append(packed)
        return rpc_status.to_status(status)


def invalid_argument(message: str, field: str | None = None, description: str = "") -> ServiceError:
    violations = [(field, description or message)] if field else []
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message, violations)


def invalid_fields(message: str, violations: Iterable[Violation]) -> ServiceError:
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message, violations)


def not_found(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.NOT_FOUND, message)


def permission_denied(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.PERMISSION_DENIED, message)


def unauthenticated(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAUTHENTICATED, message)


def already_exists(message: str, field: str | None = None) -> ServiceError:
    violations = [(field, message)] if field else []
    return ServiceError(grpc.StatusCode.ALREADY_EXISTS, message, violations)


def failed_precondition(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.FAILED_PRECONDITION, message)


def resource_exhausted(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.RESOURCE_EXHAUSTED, message)


def aborted(message: str) -> ServiceError:
    return ServiceError(grpc.StatusCode.ABORTED, message)


def _wrap(method: Callable[..., Any]) -> Callable[..., Any]:
    from dataset_svc.validation import check_enums  # imports this module

    @functools.wraps(method)
    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        try:
            if isinstance(request, Message):  # a stream checks its own messages
                check_enums(request)
            return method(self, request, context)
        except ServiceError as err:
            context.abort_with_status(err.to_status())
        except grpc.RpcError:
            raise  # the client went away (or abort() already ran): nothing to add
        except Exception:
            log.exception("%s failed", method.__qualname__)
            context.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error in {method.__name__}; the server log has the details",
            )

    return handler


def _wrap_stream(method: Callable[..., Any]) -> Callable[..., Any]:
    """_wrap for server-streaming handlers (generator functions): the checks, lookups and
    first piece run under _wrap; the rest is streamed lazily with the same error mapping."""

    def first(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        pieces = method(self, request, context)
        return pieces, next(pieces, None)

    checked = _wrap(first)

    @functools.wraps(method)
    def handler(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        pieces, head = checked(self, request, context)
        if head is None:
            return
        yield head
        try:
            yield from pieces
        except ServiceError as err:
            context.abort_with_status(err.to_status())
        except grpc.RpcError:
            raise
        except Exception:
            log.exception("%s failed", method.__qualname__)
            context.abort(
                grpc.StatusCode.INTERNAL,
                f"internal error in {method.__name__}; the server log has the details",
            )

    return handler


def grpc_errors(cls: type) -> type:
    """Class decorator: every public RPC method maps ServiceError to its gRPC status, after
    refusing enum values the request's enums do not declare (INVALID_ARGUMENT naming them)."""
    for name, member in list(vars(cls).items()):
        if name[0].isupper() and inspect.isfunction(member):
            wrap = _wrap_stream if inspect.isgeneratorfunction(member) else _wrap
            setattr(cls, name, wrap(member))
    return cls


def bad_request_fields(err: grpc.RpcError) -> dict[str, str]:
    """Client side: the BadRequest field violations of a failed call (field -> description)."""
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


__all__ = [
    "ServiceError",
    "Violation",
    "aborted",
    "already_exists",
    "bad_request_fields",
    "failed_precondition",
    "grpc_errors",
    "invalid_argument",
    "invalid_fields",
    "not_found",
    "permission_denied",
    "resource_exhausted",
    "unauthenticated",
]
