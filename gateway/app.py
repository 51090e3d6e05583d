"""The REST/JSON + SSE gateway: one asyncio process in front of the gRPC services.

Every route under ``/v1`` comes from :mod:`gateway.routes` (the ``google.api.http``
options of the compiled descriptors); this module only knows kinds of calls:

- unary: proto3 JSON in, proto3 JSON out (lowerCamel names, enums as names, int64 as
  strings, Timestamps RFC 3339; requests may use either spelling of a field name);
- server streaming: Server-Sent Events when the client accepts ``text/event-stream`` (an
  ``id:`` per message, ``Last-Event-ID`` resumes), else NDJSON (``{"result": ...}`` per line,
  ``{"error": Status}`` on failure, as grpc-gateway writes it); a streamed
  ``google.api.HttpBody`` goes out as raw bytes with the first piece's content type;
- client streaming of ``UploadImagesRequest``: a multipart/form-data upload parsed as it
  arrives (:mod:`gateway.upload`).

Backends: TrainerService goes to the trainer named by the ``trainers/{framework}`` segment
of the request's name or parent (or its ``framework`` field); ``trainers/-`` in a List call
fans out to every trainer and merges pages newest first. Every other service goes to
dataset_svc unless an extra module registered it elsewhere (``VISIONMESH_GATEWAY_EXTRA``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import importlib
import logging
import mimetypes
import os
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import orjson
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from gateway import jsonfast, openapi, routes
from gateway.routes import Method, RequestError
from visionmesh import config, errors

log = logging.getLogger("visionmesh.gateway")

TRAINER_SERVICE = "visionmesh.v1.TrainerService"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
WEB_DIR = Path(__file__).resolve().parent / "web"
FIRST_MESSAGE_WAIT = 0.5  # seconds a stream may take to fail before its 200 is sent
KEEPALIVE_SECONDS = 15.0
# Request field that resumes a stream -> the response field that is its SSE id.
RESUME_FIELDS = {"from_epoch": ("metrics", "epoch")}
JSON_TYPE = "application/json"

for _ext, _type in {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".json": "application/json",
    ".wasm": "application/wasm",
    ".webmanifest": "application/manifest+json",
    ".woff2": "font/woff2",
}.items():
    mimetypes.add_type(_type, _ext)


def to_json(message: Message) -> dict[str, Any]:
    """proto3 JSON (json_format's output, fields without presence printed), faster."""
    return jsonfast.to_dict(message)


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers=headers, media_type=JSON_TYPE)


def status_response(
    code: grpc.StatusCode, message: str, trailing: Any = None, http: int | None = None
) -> Response:
    return json_response(
        errors.error_body(code, message, trailing), http or errors.http_status(code)
    )


def rpc_error_response(exc: grpc.aio.AioRpcError) -> Response:
    return status_response(exc.code(), exc.details() or "", exc.trailing_metadata())


def request_error_response(exc: RequestError) -> Response:
    if exc.field:
        status = errors.bad_request(str(exc), {exc.field: str(exc)})
        return json_response(errors.status_json(status), 400)
    return status_response(grpc.StatusCode.INVALID_ARGUMENT, str(exc))


def extra_modules_from_env(spec: str) -> dict[str, str]:
    """``pkg.mod_pb2=host:port,other_pb2=host:port`` -> {module: address}."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        module, sep, addr = part.partition("=")
        if not sep or not module.strip() or not addr.strip():
            raise ValueError(f"VISIONMESH_GATEWAY_EXTRA entry {part!r} is not module=host:port")
        out[module.strip()] = addr.strip()
    return out


@dataclass
class Backends:
    """Where each service lives, and one pooled asyncio channel per address."""

    dataset_addr: str
    trainers: dict[str, str]
    service_addrs: dict[str, str] = field(default_factory=dict)  # registered elsewhere
    _channels: dict[str, grpc.aio.Channel] = field(default_factory=dict)
    _callables: dict[tuple[str, str], Any] = field(default_factory=dict)

    def channel(self, addr: str) -> grpc.aio.Channel:
        channel = self._channels.get(addr)
        if channel is None:
            channel = grpc.aio.insecure_channel(
                addr,
                options=[
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                    *config.CHANNEL_LB_OPTIONS,  # a trainer's replicas: round_robin
                ],
            )
            self._channels[addr] = channel
        return channel

    def callable(self, addr: str, method: Method) -> Any:
        key = (addr, method.path)
        found = self._callables.get(key)
        if found is None:
            channel = self.channel(addr)
            kind = (
                "stream_stream"
                if method.client_streaming and method.server_streaming
                else "stream_unary"
                if method.client_streaming
                else "unary_stream"
                if method.server_streaming
                else "unary_unary"
            )
            found = getattr(channel, kind)(
                method.path,
                request_serializer=method.request_class.SerializeToString,
                response_deserializer=method.response_class.FromString,
            )
            self._callables[key] = found
        return found

    def all(self) -> dict[str, str]:
        """Label -> address of every backend, for /healthz."""
        out = {"dataset_svc": self.dataset_addr}
        for framework, addr in self.trainers.items():
            out[f"trainers/{framework}"] = addr
        for service, addr in self.service_addrs.items():
            out.setdefault(service, addr)
        return out

    async def close(self) -> None:
        channels = list(self._channels.values())
        self._channels.clear()
        self._callables.clear()
        for channel in channels:
            await channel.close()


class Unroutable(Exception):
    """No backend for a request: answered with the status inside."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def framework_of(message: Message) -> str | None:
    """The framework a TrainerService request is for, from name / parent / framework."""
    desc = message.DESCRIPTOR
    for name in ("name", "parent"):
        if name in desc.fields_by_name:
            value = getattr(message, name)
            if value:
                found = re.match(r"^trainers/([^/]+)", value)
                if not found:
                    raise Unroutable(
                        grpc.StatusCode.INVALID_ARGUMENT,
                        f"{name} {value!r} does not start with trainers/{{framework}}",
                    )
                return found.group(1)
    if "framework" in desc.fields_by_name and message.framework:
        return message.framework
    return None


class Gateway:
    def __init__(
        self,
        settings: config.Settings,
        *,
        extra_modules: dict[str, str] | None = None,
        cors_origins: Sequence[str] = (),
        web_dir: Path = WEB_DIR,
    ) -> None:
        modules: list[ModuleType] = routes.service_modules()
        service_addrs: dict[str, str] = {}
        for module_name, addr in (extra_modules or {}).items():
            module = importlib.import_module(module_name)
            modules.append(module)
            for service in module.DESCRIPTOR.services_by_name.values():
                service_addrs[service.full_name] = addr
        self.modules = modules
        self.backends = Backends(settings.dataset_addr, dict(settings.trainers), service_addrs)
        self.routes = routes.collect_routes(modules)
        self.router = routes.Router(self.routes)
        self.web_dir = web_dir
        self._openapi: bytes | None = None
        middleware = []
        if cors_origins:
            middleware.append(
                Middleware(
                    CORSMiddleware,
                    allow_origins=list(cors_origins),
                    allow_methods=["*"],
                    allow_headers=["*"],
                    expose_headers=["Content-Disposition"],
                    max_age=600,
                )
            )
        middleware.append(Middleware(_Api, gateway=self))
        self.app = Starlette(
            routes=[
                Route("/healthz", self.healthz, methods=["GET"]),
                Route("/openapi.json", self.openapi, methods=["GET"]),
                Mount("/", app=_Static(web_dir)),
            ],
            middleware=middleware,
            lifespan=self._lifespan,
        )

    @contextlib.asynccontextmanager
    async def _lifespan(self, _app: Any) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await self.backends.close()

    # -- plumbing -----------------------------------------------------------------------

    def target(self, method: Method, message: Message) -> str:
        if method.service != TRAINER_SERVICE:
            return self.backends.service_addrs.get(method.service, self.backends.dataset_addr)
        framework = framework_of(message)
        if framework is None:
            raise Unroutable(
                grpc.StatusCode.INVALID_ARGUMENT,
                "say which trainer: parent or name trainers/{framework} "
                f"(known: {', '.join(sorted(self.backends.trainers))})",
            )
        addr = self.backends.trainers.get(framework)
        if addr is None:
            raise Unroutable(
                grpc.StatusCode.NOT_FOUND,
                f"no trainer {framework!r}; known trainers: "
                + ", ".join(f"trainers/{f}" for f in sorted(self.backends.trainers)),
            )
        return addr

    @staticmethod
    def metadata(request: Request) -> list[tuple[str, str]]:
        """The caller's token, and its address appended to ``x-forwarded-for`` (dataset_svc
        counts failed sign-ins per client by it when it trusts this gateway:
        VISIONMESH_TRUSTED_PROXIES)."""
        out = []
        auth = request.headers.get("authorization")
        if auth:
            out.append(("authorization", auth))
        if request.client is not None:
            chain = request.headers.get("x-forwarded-for", "").strip()
            host = request.client.host
            out.append(("x-forwarded-for", f"{chain}, {host}" if chain else host))
        return out

    # -- endpoints ----------------------------------------------------------------------

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Every request under /v1: always answered with JSON (google.rpc.Status on errors)."""
        request = Request(scope, receive)
        try:
            response = await self.dispatch(request)
        except Exception:  # noqa: BLE001 - a bug here must still answer as the API does
            log.exception("%s %s failed", request.method, request.url.path)
            response = status_response(
                grpc.StatusCode.INTERNAL, "the gateway failed on this request (see its log)"
            )
        await response(scope, receive, send)

    async def dispatch(self, request: Request) -> Response:
        route, values, known = self.router.match(request.method, request.url.path)
        if route is None:
            if known:
                return status_response(
                    grpc.StatusCode.UNIMPLEMENTED,
                    f"{request.method} is not allowed on {request.url.path}",
                    http=405,
                )
            return status_response(
                grpc.StatusCode.NOT_FOUND, f"no route for {request.method} {request.url.path}"
            )
        method = route.method
        if method.client_streaming:
            from gateway import upload

            return await upload.handle(self, request, route, values)
        try:
            body = None
            if route.body:
                raw = await request.body()
                if raw.strip():
                    try:
                        body = orjson.loads(raw)
                    except orjson.JSONDecodeError as exc:
                        raise RequestError(f"the body is not JSON: {exc}") from None
            message = route.build_request(values, request.query_params.multi_items(), body)
            if (
                method.service == TRAINER_SERVICE
                and getattr(message, "parent", None) == "trainers/-"
                and "page_token" in message.DESCRIPTOR.fields_by_name
                and not method.server_streaming
            ):
                return await self.fan_out_list(method, message, self.metadata(request))
            addr = self.target(method, message)
        except RequestError as exc:
            return request_error_response(exc)
        except Unroutable as exc:
            return status_response(exc.code, str(exc))
        if method.server_streaming:
            return await self.stream(request, method, addr, message)
        try:
            reply = await self.backends.callable(addr, method)(
                message, metadata=self.metadata(request)
            )
        except grpc.aio.AioRpcError as exc:
            return rpc_error_response(exc)
        return json_response(to_json(reply))

    async def fan_out_list(
        self, method: Method, message: Message, metadata: list[tuple[str, str]]
    ) -> Response:
        """A List call for ``trainers/-``: every trainer asked, pages merged newest first.

        The page token holds each trainer's position: its own page token and how many jobs
        of that page were already returned (None once a trainer has no more)."""
        page_size = message.page_size or 50
        frameworks = sorted(self.backends.trainers)
        if message.page_token:
            try:
                state = orjson.loads(base64.urlsafe_b64decode(message.page_token.encode()))
                if not isinstance(state, dict) or set(state) - set(frameworks):
                    raise ValueError(state)
                for position in state.values():
                    if position is not None and not (
                        isinstance(position, list)
                        and len(position) == 2
                        and isinstance(position[0], str)
                        and isinstance(position[1], int)
                        and position[1] >= 0
                    ):
                        raise ValueError(position)
            except (ValueError, orjson.JSONDecodeError, TypeError):
                return request_error_response(
                    RequestError("page_token is not one this gateway gave out", "page_token")
                )
        else:
            state = {f: ["", 0] for f in frameworks}

        async def ask(framework: str, token: str) -> Message:
            request = type(message)()
            request.CopyFrom(message)
            request.parent = f"trainers/{framework}"
            request.page_token = token
            request.page_size = page_size
            call = self.backends.callable(self.backends.trainers[framework], method)
            return await call(request, metadata=metadata)

        live = [f for f in frameworks if state.get(f) is not None]
        try:
            replies = await asyncio.gather(*(ask(f, state[f][0]) for f in live))
        except grpc.aio.AioRpcError as exc:
            return rpc_error_response(exc)
        list_field = next(
            f.name
            for f in method.response_class.DESCRIPTOR.fields
            if f.is_repeated and f.message_type is not None
        )
        candidates = []
        for framework, reply in zip(live, replies, strict=True):
            items = list(getattr(reply, list_field))[state[framework][1] :]
            for item in items:
                ts = item.create_time
                candidates.append(((-ts.seconds, -ts.nanos, item.name), framework, item))
        candidates.sort(key=lambda c: c[0])
        chosen = candidates[:page_size]
        taken = {f: 0 for f in live}
        for _, framework, _ in chosen:
            taken[framework] += 1
        next_state: dict[str, Any] = {f: None for f in frameworks}
        for framework, reply in zip(live, replies, strict=True):
            token, skip = state[framework]
            used = skip + taken[framework]
            if used < len(getattr(reply, list_field)):
                next_state[framework] = [token, used]
            elif reply.next_page_token:
                next_state[framework] = [reply.next_page_token, 0]
        out = method.response_class()
        getattr(out, list_field).extend(item for _, _, item in chosen)
        if any(v is not None for v in next_state.values()):
            out.next_page_token = base64.urlsafe_b64encode(orjson.dumps(next_state)).decode()
        return json_response(to_json(out))

    async def stream(
        self, request: Request, method: Method, addr: str, message: Message
    ) -> Response:
        sse = "text/event-stream" in request.headers.get("accept", "")
        resume = next(
            (
                (name, path)
                for name, path in RESUME_FIELDS.items()
                if name in message.DESCRIPTOR.fields_by_name
            ),
            None,
        )
        skip = 0
        last_id = request.headers.get("last-event-id", "").strip()
        if sse and last_id and not method.http_body_response:
            if not last_id.isdigit():
                return request_error_response(
                    RequestError(f"Last-Event-ID {last_id!r} is not a number", "Last-Event-ID")
                )
            if int(last_id) >= 2**31 - 1:
                return request_error_response(
                    RequestError(f"Last-Event-ID {last_id} is out of range", "Last-Event-ID")
                )
            if resume is not None:
                setattr(message, resume[0], max(getattr(message, resume[0]), int(last_id) + 1))
            else:
                skip = int(last_id)
        call = self.backends.callable(addr, method)(message, metadata=self.metadata(request))
        first = asyncio.ensure_future(call.read())
        done, _ = await asyncio.wait({first}, timeout=FIRST_MESSAGE_WAIT)
        if done:
            try:
                first.result()
            except grpc.aio.AioRpcError as exc:
                return rpc_error_response(exc)
        if method.http_body_response:
            return await self._bytes(call, first, method, message)
        if sse:
            body = self._sse(call, first, resume, skip, str(int(last_id)) if last_id else "0")
            media = "text/event-stream"
        else:
            body = self._ndjson(call, first)
            media = "application/x-ndjson"
        return StreamingResponse(
            body,
            media_type=media,
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    @staticmethod
    async def _messages(
        call: Any, first: asyncio.Future, keepalive: bool
    ) -> AsyncIterator[Message | None]:
        """The stream's messages (None = time for a keepalive); cancels the call on exit."""
        pending = first
        try:
            while True:
                if keepalive:
                    done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE_SECONDS)
                    if not done:
                        yield None
                        continue
                item = await pending
                if item is grpc.aio.EOF:
                    return
                yield item
                pending = asyncio.ensure_future(call.read())
        finally:
            if not pending.done():
                pending.cancel()
            call.cancel()

    async def _sse(
        self,
        call: Any,
        first: asyncio.Future,
        resume: tuple[str, tuple] | None,
        skip: int,
        last: str,
    ) -> AsyncIterator[bytes]:
        """Events with ids: the resume field's value (an epoch), kept by messages without one
        (so a reconnect never goes back), else the message's position in the stream."""
        seq = 0
        yield b"retry: 2000\n\n"
        try:
            async for item in self._messages(call, first, keepalive=True):
                if item is None:
                    yield b": keepalive\n\n"
                    continue
                seq += 1
                if resume is None:
                    if seq <= skip:
                        continue
                    last = str(seq)
                else:
                    value: Any = item
                    for part in resume[1]:
                        value = getattr(value, part)
                    if value:
                        last = str(value)
                yield b"id: " + last.encode() + b"\ndata: " + orjson.dumps(to_json(item)) + b"\n\n"
        except grpc.aio.AioRpcError as exc:
            status = errors.error_body(exc.code(), exc.details() or "", exc.trailing_metadata())
            yield b"event: error\ndata: " + orjson.dumps(status) + b"\n\n"
            return
        yield b"event: end\n\n"

    async def _ndjson(self, call: Any, first: asyncio.Future) -> AsyncIterator[bytes]:
        try:
            async for item in self._messages(call, first, keepalive=False):
                yield orjson.dumps({"result": to_json(item)}) + b"\n"
        except grpc.aio.AioRpcError as exc:
            status = errors.error_body(exc.code(), exc.details() or "", exc.trailing_metadata())
            yield orjson.dumps({"error": status}) + b"\n"

    async def _bytes(
        self, call: Any, first: asyncio.Future, method: Method, message: Message
    ) -> Response:
        try:
            head = await first
        except grpc.aio.AioRpcError as exc:
            return rpc_error_response(exc)
        if head is grpc.aio.EOF:
            return Response(b"", 200, media_type="application/octet-stream")
        content_type = head.content_type or "application/octet-stream"
        headers = {"Cache-Control": "private, max-age=300"}
        name = getattr(message, "name", "") or ""
        if name:
            filename = name.rsplit("/", 1)[-1]
            kind = content_type.split(";")[0].strip()
            ext = "" if kind == "application/octet-stream" else mimetypes.guess_extension(kind)
            if ext and not filename.lower().endswith(ext):
                filename += ext
            disposition = "attachment" if method.name.startswith("Download") else "inline"
            safe = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
            headers["Content-Disposition"] = f'{disposition}; filename="{safe}"'

        async def body() -> AsyncIterator[bytes]:
            if head.data:
                yield head.data
            try:
                while True:
                    piece = await call.read()
                    if piece is grpc.aio.EOF:
                        return
                    if piece.data:
                        yield piece.data
            except grpc.aio.AioRpcError:
                return  # the status line is gone: a short body is all the client can see
            finally:
                call.cancel()

        return StreamingResponse(body(), media_type=content_type, headers=headers)

    async def healthz(self, request: Request) -> Response:
        async def check(addr: str) -> str:
            stub = health_pb2_grpc.HealthStub(self.backends.channel(addr))
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            except grpc.aio.AioRpcError as exc:
                return f"UNREACHABLE ({exc.code().name})"
            return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)

        backends = self.backends.all()
        states = await asyncio.gather(*(check(a) for a in backends.values()))
        report = {
            label: {"address": addr, "status": state}
            for (label, addr), state in zip(backends.items(), states, strict=True)
        }
        ok = all(s == "SERVING" for s in states)
        return json_response(
            {"status": "SERVING" if ok else "NOT_SERVING", "backends": report}, 200 if ok else 503
        )

    async def openapi(self, request: Request) -> Response:
        if self._openapi is None:
            self._openapi = orjson.dumps(openapi.document(self.routes))
        return Response(self._openapi, media_type=JSON_TYPE)


class _Api:
    """ASGI middleware that hands /v1 to the gateway before Starlette's router sees it."""

    def __init__(self, app: Any, gateway: Gateway) -> None:
        self.app = app
        self.gateway = gateway

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http" and (path == "/v1" or path.startswith("/v1/")):
            await self.gateway.handle(scope, receive, send)
        else:
            await self.app(scope, receive, send)


class _Static:
    """gateway/web at ``/`` (index.html for directories); 404 while the folder is absent."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.files = StaticFiles(directory=directory, html=True, check_dir=False)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.directory.is_dir():
            await json_response(
                errors.error_body(grpc.StatusCode.NOT_FOUND, "no web UI in this build"), 404
            )(scope, receive, send)
            return
        await self.files(scope, receive, send)


def create_app(settings: config.Settings | None = None, **kwargs: Any) -> Starlette:
    """The ASGI app, configured from the environment (see :func:`gateway.__main__.main`)."""
    settings = settings or config.load()
    kwargs.setdefault(
        "extra_modules",
        extra_modules_from_env(os.environ.get("VISIONMESH_GATEWAY_EXTRA", "")),
    )
    cors = os.environ.get("VISIONMESH_GATEWAY_CORS_ORIGINS", "").strip()
    kwargs.setdefault("cors_origins", [o.strip() for o in cors.split(",") if o.strip()])
    return Gateway(settings, **kwargs).app
