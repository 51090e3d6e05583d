"""gRPC server reflection, v1 and v1alpha, that resolves every symbol grpcurl asks about.

grpcio-reflection serves ``grpc.reflection.v1alpha`` only, and resolves a symbol with
``DescriptorPool.FindFileContainingSymbol``, which (with the upb protobuf runtime) does not
know method names: ``grpcurl describe visionmesh.v1.DatasetService.CreateDataset`` answered
"Symbol not found". This servicer answers both protocol versions (their messages are the
same on the wire, so one implementation serves both) and resolves services, methods,
messages, fields, enums, enum values and extensions::

    from visionmesh.reflection import enable_reflection
    enable_reflection(["visionmesh.v1.DatasetService", "grpc.health.v1.Health"], server)

so ``grpcurl -plaintext HOST:PORT list | describe SYMBOL | -d '{...}' SERVICE/METHOD`` all
work without .proto files.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2 as pb

V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
V1 = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1, V1ALPHA)
METHOD = "ServerReflectionInfo"


def _v1_pool() -> descriptor_pool.DescriptorPool:
    """A pool holding grpc/reflection/v1/reflection.proto (v1alpha's file, renamed)."""
    proto = descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(proto)
    old, new = ".grpc.reflection.v1alpha.", ".grpc.reflection.v1."
    for message in proto.message_type:
        for f in message.field:
            if f.type_name:
                f.type_name = f.type_name.replace(old, new)
    for service in proto.service:
        for method in service.method:
            method.input_type = method.input_type.replace(old, new)
            method.output_type = method.output_type.replace(old, new)
    proto.name = "grpc/reflection/v1/reflection.proto"
    proto.package = "grpc.reflection.v1"
    proto.options.Clear()
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return pool


_EXTRA_POOL: descriptor_pool.DescriptorPool | None = None


def _extra_pool() -> descriptor_pool.DescriptorPool:
    global _EXTRA_POOL
    if _EXTRA_POOL is None:
        _EXTRA_POOL = _v1_pool()
    return _EXTRA_POOL


def _with_dependencies(file: Any) -> list[bytes]:
    """The file and every file it depends on, serialized, the file first."""
    seen: dict[str, Any] = {}
    stack = [file]
    while stack:
        current = stack.pop()
        if current.name in seen:
            continue
        seen[current.name] = current
        stack.extend(current.dependencies)
    out = []
    for descriptor in seen.values():
        proto = descriptor_pb2.FileDescriptorProto()
        descriptor.CopyToProto(proto)
        out.append(proto.SerializeToString())
    return out


class ReflectionServicer:
    """Answers ServerReflectionInfo for the given services from the given pools."""

    def __init__(
        self,
        service_names: Iterable[str],
        pools: Iterable[descriptor_pool.DescriptorPool] | None = None,
    ) -> None:
        self.service_names = sorted(set(service_names) | set(SERVICE_NAMES))
        self.pools = list(pools) if pools is not None else [descriptor_pool.Default()]
        self.pools.append(_extra_pool())

    # lookups
    def _first(self, find: str, *args: Any) -> Any:
        for pool in self.pools:
            try:
                return getattr(pool, find)(*args)
            except KeyError:
                continue
        raise KeyError(args[0] if args else find)

    def file_containing_symbol(self, symbol: str) -> Any:
        symbol = symbol.lstrip(".")
        try:
            return self._first("FindFileContainingSymbol", symbol)
        except KeyError:
            pass
        parent, _, leaf = symbol.rpartition(".")
        if parent:
            try:  # a method: Service.Method
                service = self._first("FindServiceByName", parent)
                if leaf in service.methods_by_name:
                    return service.file
            except KeyError:
                pass
            try:  # a field or nested name of a message
                message = self._first("FindMessageTypeByName", parent)
                if (
                    leaf in message.fields_by_name
                    or leaf in message.nested_types_by_name
                    or leaf in message.enum_types_by_name
                    or leaf in message.oneofs_by_name
                ):
                    return message.file
            except KeyError:
                pass
            try:  # an enum value
                enum = self._first("FindEnumTypeByName", parent)
                if leaf in enum.values_by_name:
                    return enum.file
            except KeyError:
                pass
        for pool in self.pools:  # an extension
            try:
                return pool.FindExtensionByName(symbol).file
            except KeyError:
                continue
        raise KeyError(symbol)

    def _extension_pool(self, containing_type: str) -> tuple[Any, Any]:
        for pool in self.pools:
            try:
                return pool, pool.FindMessageTypeByName(containing_type)
            except KeyError:
                continue
        raise KeyError(containing_type)

    # the protocol
    def answer(self, request: pb.ServerReflectionRequest) -> pb.ServerReflectionResponse:
        kind = request.WhichOneof("message_request")
        try:
            if kind == "list_services":
                return pb.ServerReflectionResponse(
                    original_request=request,
                    list_services_response=pb.ListServiceResponse(
                        service=[pb.ServiceResponse(name=n) for n in self.service_names]
                    ),
                )
            if kind == "file_by_filename":
                file = self._first("FindFileByName", request.file_by_filename)
            elif kind == "file_containing_symbol":
                file = self.file_containing_symbol(request.file_containing_symbol)
            elif kind == "file_containing_extension":
                ext = request.file_containing_extension
                pool, message = self._extension_pool(ext.containing_type)
                file = pool.FindExtensionByNumber(message, ext.extension_number).file
            elif kind == "all_extension_numbers_of_type":
                pool, message = self._extension_pool(request.all_extension_numbers_of_type)
                numbers = sorted(e.number for e in pool.FindAllExtensions(message))
                return pb.ServerReflectionResponse(
                    original_request=request,
                    all_extension_numbers_response=pb.ExtensionNumberResponse(
                        base_type_name=message.full_name, extension_number=numbers
                    ),
                )
            else:
                return _error(request, grpc.StatusCode.INVALID_ARGUMENT, "empty request")
        except KeyError:
            what = getattr(request, kind) if kind else ""
            return _error(request, grpc.StatusCode.NOT_FOUND, f"not found: {what}")
        return pb.ServerReflectionResponse(
            original_request=request,
            file_descriptor_response=pb.FileDescriptorResponse(
                file_descriptor_proto=_with_dependencies(file)
            ),
        )

    def ServerReflectionInfo(
        self, requests: Iterator[pb.ServerReflectionRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ServerReflectionResponse]:
        for request in requests:
            yield self.answer(request)


def _error(request: Any, code: grpc.StatusCode, message: str) -> pb.ServerReflectionResponse:
    return pb.ServerReflectionResponse(
        original_request=request,
        error_response=pb.ErrorResponse(error_code=code.value[0], error_message=message),
    )


def enable_reflection(
    service_names: Iterable[str],
    server: grpc.Server,
    pools: Iterable[descriptor_pool.DescriptorPool] | None = None,
) -> ReflectionServicer:
    """Serve reflection v1 and v1alpha on ``server`` for ``service_names`` (+ themselves)."""
    servicer = ReflectionServicer(service_names, pools)
    handler = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=pb.ServerReflectionRequest.FromString,
        response_serializer=pb.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        [grpc.method_handlers_generic_handler(name, {METHOD: handler}) for name in SERVICE_NAMES]
    )
    return servicer
