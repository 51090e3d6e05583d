"""multipart/form-data -> a client-streaming UploadImages call, as the bytes arrive.

The route is the RPC's own binding (``POST /v1/{header.parent=datasets/*}/images:upload``):
the path fills the header, the query string may add header fields (``on_conflict``,
``path_prefix``), and each file part (its filename is the relative path, as a browser's
folder picker sends it) becomes FileChunk pieces, small files packed several to a message
and big ones split, never more than about ``MESSAGE_BYTES`` held at once. The stream ends
with ``end`` (the file count) only when the whole body arrived and parsed; a client that
disconnects or a malformed body cancels the call, so nothing is committed.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import json_format
from grpc._cython import cygrpc
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from gateway.routes import RequestError, Route, query_dict
from visionmesh.uploads import MESSAGE_BYTES

if TYPE_CHECKING:
    from gateway.app import Gateway


class _Packer:
    """Parser callbacks that turn file parts into UploadImagesRequest messages."""

    def __init__(self, request_class: Any, limit: int = MESSAGE_BYTES) -> None:
        self.request_class = request_class
        self.limit = limit
        self.out: list[Any] = []
        self.pending: list[tuple[str, bytearray]] = []
        self.pending_bytes = 0
        self.file_count = 0
        self.in_file = False
        self.ended = False  # the closing boundary arrived
        self._headers: dict[bytes, bytes] = {}
        self._field = bytearray()
        self._value = bytearray()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self.part_begin,
            "on_header_field": lambda d, s, e: self._field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._value.extend(d[s:e]),
            "on_header_end": self.header_end,
            "on_headers_finished": self.headers_finished,
            "on_part_data": self.part_data,
            "on_end": self.end,
        }

    def end(self) -> None:
        self.ended = True

    def part_begin(self) -> None:
        self._headers = {}
        self.in_file = False

    def header_end(self) -> None:
        self._headers[bytes(self._field).lower()] = bytes(self._value)
        self._field.clear()
        self._value.clear()

    def headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        filename = options.get(b"filename")
        if filename is None:
            return  # a plain form field: not a file
        path = filename.decode("utf-8", errors="replace").replace("\\", "/")
        self.file_count += 1
        self.in_file = True
        self.pending.append((path, bytearray()))

    def part_data(self, data: bytes, start: int, end: int) -> None:
        if not self.in_file:
            return
        view = memoryview(data)[start:end]
        while len(view):
            if self.pending_bytes >= self.limit:
                self.flush()
                self.pending.append(("", bytearray()))
            room = self.limit - self.pending_bytes
            piece = view[:room]
            self.pending[-1][1].extend(piece)
            self.pending_bytes += len(piece)
            view = view[len(piece) :]

    def flush(self) -> None:
        if not self.pending:
            return
        cls = self.request_class
        chunk_cls = type(cls().chunk)
        chunks = [chunk_cls(path=p, data=bytes(d)) for p, d in self.pending]
        if len(chunks) == 1:
            self.out.append(cls(chunk=chunks[0]))
        else:
            message = cls()
            message.chunks.chunks.extend(chunks)
            self.out.append(message)
        self.pending = []
        self.pending_bytes = 0


def _boundary(content_type: str) -> bytes:
    kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise RequestError(
            "send the files as multipart/form-data (each part's filename its relative path)"
        )
    return boundary


async def handle(gateway: Gateway, request: Request, route: Route, values: dict) -> Response:
    from gateway.app import (
        json_response,
        request_error_response,
        rpc_error_response,
        status_response,
        to_json,
    )

    method = route.method
    cls = method.request_class
    fields = cls.DESCRIPTOR.fields_by_name
    if not route.bound or not {"chunk", "chunks", "end"} <= set(fields):
        return status_response(
            grpc.StatusCode.UNIMPLEMENTED,
            f"{method.name} streams {cls.DESCRIPTOR.name} messages: over REST only uploads "
            "shaped like UploadImagesRequest (header, chunk/chunks, end) are translated",
        )
    try:
        boundary = _boundary(request.headers.get("content-type", ""))
        first = route.build_request(values, (), None)  # the path fills the header
        header_field = next(iter(route.bound)).split(".")[0]
        header = getattr(first, header_field)
        query = [
            (k[len(header_field) + 1 :] if k.startswith(header_field + ".") else k, v)
            for k, v in request.query_params.multi_items()
        ]
        extra = type(header)()
        json_format.ParseDict(query_dict(header.DESCRIPTOR, query, {"parent"}), extra)
        header.MergeFrom(extra)
        addr = gateway.target(method, first)
    except RequestError as exc:
        return request_error_response(exc)
    except json_format.ParseError as exc:
        return request_error_response(RequestError(str(exc)))

    packer = _Packer(cls)
    parser = MultipartParser(boundary, packer.callbacks())
    call = gateway.backends.callable(addr, method)(metadata=gateway.metadata(request))
    try:
        await _send(call, first)
        async for data in request.stream():
            if data:
                parser.write(data)
            for message in packer.out:
                await _send(call, message)  # waits on gRPC flow control: bounded memory
            packer.out.clear()
        parser.finalize()
        if not packer.ended:
            raise RequestError("the multipart body ended before its closing boundary")
        packer.flush()
        packer.out.append(cls(end=type(cls().end)(file_count=packer.file_count)))
        for message in packer.out:
            await _send(call, message)
        await call.done_writing()
    except ClientDisconnect:
        call.cancel()  # no end message went out: nothing is committed
        return Response(status_code=499)
    except RequestError as exc:
        call.cancel()
        return request_error_response(exc)
    except MultipartParseError as exc:
        call.cancel()
        return request_error_response(RequestError(f"the multipart body is malformed: {exc}"))
    except (_Ended, grpc.aio.AioRpcError, asyncio.InvalidStateError, cygrpc.InternalError):
        pass  # the call ended early (e.g. NOT_FOUND): its status below says why
    except BaseException:
        call.cancel()
        raise
    try:
        reply = await call
    except grpc.aio.AioRpcError as exc:
        return rpc_error_response(exc)
    except asyncio.CancelledError:
        return status_response(grpc.StatusCode.CANCELLED, "the upload was cancelled")
    return json_response(to_json(reply))


class _Ended(Exception):
    """The call finished while the gateway was still sending."""


async def _send(call: Any, message: Any) -> None:
    """``call.write(message)``, except that a write racing the server's final status raises
    :class:`_Ended` and keeps that status: grpc.aio's own write replaces it with INTERNAL
    "Internal error from Core" (seen when dataset_svc refuses a header at once)."""
    cython_call = getattr(call, "_cython_call", None)
    metadata_sent = getattr(call, "_metadata_sent", None)
    if cython_call is None or metadata_sent is None:  # another grpcio: its public write
        await call.write(message)
        return
    if call.done():
        raise _Ended
    if not metadata_sent.is_set():
        await metadata_sent.wait()
        if call.done():
            raise _Ended
    try:
        await cython_call.send_serialized_message(message.SerializeToString())
    except cygrpc.InternalError:
        raise _Ended from None
