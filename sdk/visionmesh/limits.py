"""Open streams per caller, and a server sized so that idle streams never starve anyone.

A synchronous grpcio server runs each call on a thread of its pool, and a streaming call
(StreamMetrics, StreamLogs, UploadImages, health Watch, reflection) keeps its thread for as
long as it is open, even while it only waits. :class:`StreamLimits` sizes the pool so that
streams can never take the threads unary calls (health Check, GetCapabilities, GetDataset)
need: ``max_streams`` threads for open streams plus ``rpc_threads`` more that only unary
calls can use, since :class:`StreamLimitInterceptor` refuses a stream beyond
``max_streams`` at once.

The interceptor also bounds what one caller may hold open: ``streams_per_user``
server-streaming calls and ``uploads_per_user`` client-streaming calls (uploads). The caller
is the token's user (it runs inside :class:`visionmesh.auth.AuthInterceptor`, so
:func:`visionmesh.auth.current_identity` answers), or the peer's address for calls without
a token. A refused call ends at once with RESOURCE_EXHAUSTED, a message that says which
limit and what to do, and a ``google.rpc.QuotaFailure`` detail. An accepted stream gets its
response headers straight away, so a client knows it is open before any message flows.

Environment (per server process):

- ``VISIONMESH_MAX_STREAMS`` (default 4096): streaming calls open at once, all callers.
- ``VISIONMESH_MAX_STREAMS_PER_USER`` (default 64): server streams one caller holds open.
- ``VISIONMESH_MAX_UPLOADS_PER_USER`` (default 8): client streams (uploads) one caller holds.
- ``VISIONMESH_RPC_THREADS`` (default 32): threads kept for unary calls.

Threads are started only when calls need them, and a thread waiting on an idle stream uses
no CPU.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

log = logging.getLogger("visionmesh.limits")

STREAMS = "stream"
UPLOADS = "upload"

_ENV = {
    "max_streams": ("VISIONMESH_MAX_STREAMS", 4096, 1),
    "streams_per_user": ("VISIONMESH_MAX_STREAMS_PER_USER", 64, 1),
    "uploads_per_user": ("VISIONMESH_MAX_UPLOADS_PER_USER", 8, 1),
    "rpc_threads": ("VISIONMESH_RPC_THREADS", 32, 4),
}


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a whole number") from None
    if value < minimum:
        raise ValueError(f"{name}={value} is below its minimum of {minimum}")
    return value


@dataclass(frozen=True)
class StreamLimits:
    """How many streaming calls a server holds open, in all and per caller."""

    max_streams: int = 4096
    streams_per_user: int = 64
    uploads_per_user: int = 8
    rpc_threads: int = 32

    @classmethod
    def from_env(cls) -> StreamLimits:
        """Limits from the ``VISIONMESH_*`` variables above; ValueError names a bad one."""
        return cls(**{field: _env_int(*spec) for field, spec in _ENV.items()})

    @property
    def worker_threads(self) -> int:
        """Pool size: a thread for every stream allowed, plus the unary calls' own."""
        return self.max_streams + self.rpc_threads

    @property
    def max_concurrent_rpcs(self) -> int:
        """grpc's own cap (calls running or waiting for a thread); beyond it, RESOURCE_EXHAUSTED.

        Twice the pool: a burst of unary calls waits briefly for a thread rather than being
        refused, while a flood cannot queue without bound.
        """
        return 2 * self.worker_threads


def peer_address(peer: str) -> str:
    """The address part of grpc's ``context.peer()`` (``ipv4:10.0.0.7:5123`` -> ``10.0.0.7``)."""
    kind, _, rest = (peer or "").partition(":")
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    if kind == "ipv6":
        host = rest.rpartition(":")[0] or rest
        return host.strip("[]")
    return peer or "unknown"


def caller_key(context: grpc.ServicerContext) -> tuple[str, str]:
    """(key, words) of the caller: ``user alice``, or ``address 10.0.0.7`` without a token."""
    from visionmesh.auth import current_identity

    identity = current_identity()
    if identity is not None:
        return f"user:{identity.username}", f"user {identity.username!r}"
    address = peer_address(context.peer())
    return f"address:{address}", f"address {address} (no token)"


class _Lease:
    """One open stream's place in the counts; released exactly once."""

    __slots__ = ("_limiter", "_keys", "_released", "_lock")

    def __init__(self, limiter: StreamLimitInterceptor, keys: tuple[tuple[str, str], ...]) -> None:
        self._limiter = limiter
        self._keys = keys
        self._released = False
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self._limiter._release(self._keys)


class _LeasedIterator:
    """A response iterator that gives its lease back when it ends, fails or is closed."""

    def __init__(self, iterator: Iterator[Any], lease: _Lease) -> None:
        self._iterator = iter(iterator)
        self._lease = lease

    def __iter__(self) -> _LeasedIterator:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._iterator)
        except BaseException:
            self._lease.release()
            raise

    def close(self) -> None:
        try:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()
        finally:
            self._lease.release()


_FACTORIES = {
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


class StreamLimitInterceptor(grpc.ServerInterceptor):
    """Counts open streaming calls per caller and in all; refuses those over a limit.

    Install it after (inside) the AuthInterceptor so the caller's identity is known;
    :class:`visionmesh.server.Server` does. Unary calls pass untouched.
    """

    def __init__(self, limits: StreamLimits, *, clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self._lock = threading.Lock()
        self._open: dict[tuple[str, str], int] = {}
        self._total = 0
        self._clock = clock
        self._last_warning: dict[tuple[str, str], float] = {}

    # -- counts ---------------------------------------------------------------------------
    def open_streams(self, key: str | None = None, kind: str = STREAMS) -> int:
        """Streams open now: of one caller key (``user:alice``) and kind, or all of them."""
        with self._lock:
            if key is None:
                return self._total
            return self._open.get((kind, key), 0)

    def _refusal(self, kind: str, key: str, words: str, method: str) -> str | None:
        """The reason a new ``kind`` stream of ``key`` is refused, or None (lock held)."""
        if self._total >= self.limits.max_streams:
            return (
                f"this server has {self._total} streaming calls open, its limit "
                f"(VISIONMESH_MAX_STREAMS={self.limits.max_streams}); {method} was refused: "
                "retry in a little while"
            )
        count = self._open.get((kind, key), 0)
        if kind == UPLOADS and count >= self.limits.uploads_per_user:
            return (
                f"too many uploads in progress for {words}: {count} open, at most "
                f"{self.limits.uploads_per_user} at once (VISIONMESH_MAX_UPLOADS_PER_USER); "
                "wait for one to finish, or end an abandoned one, then retry"
            )
        if kind == STREAMS and count >= self.limits.streams_per_user:
            return (
                f"too many open streams for {words}: {count} open, at most "
                f"{self.limits.streams_per_user} at once (VISIONMESH_MAX_STREAMS_PER_USER); "
                "close streams you no longer read (browser tabs or `vmesh ... --follow` "
                "watching jobs) and retry"
            )
        return None

    def _acquire(self, kind: str, method: str, context: grpc.ServicerContext) -> _Lease:
        key, words = caller_key(context)
        with self._lock:
            reason = self._refusal(kind, key, words, method)
            if reason is None:
                self._open[(kind, key)] = self._open.get((kind, key), 0) + 1
                self._total += 1
        if reason is not None:
            self._warn(kind, key, reason)
            detail = error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(subject=key, description=reason)
                ]
            )
            status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=reason)
            status.details.add().Pack(detail)
            context.abort_with_status(rpc_status.to_status(status))
            raise AssertionError("not reached: abort raises")
        lease = _Lease(self, ((kind, key),))
        # The call's end (done, failed, cancelled by the client, deadline) gives the place
        # back even when the handler is never resumed; a call already over releases now.
        if not context.add_callback(lease.release):
            lease.release()
        # Headers now: the client knows the stream is open before any message flows.
        try:
            context.send_initial_metadata(())
        except Exception:  # already sent, or the call ended meanwhile
            log.debug("could not send initial metadata for %s", method, exc_info=True)
        return lease

    def _release(self, keys: tuple[tuple[str, str], ...]) -> None:
        with self._lock:
            for item in keys:
                left = self._open.get(item, 0) - 1
                if left > 0:
                    self._open[item] = left
                else:
                    self._open.pop(item, None)
                self._total -= 1

    def _warn(self, kind: str, key: str, reason: str) -> None:
        now = self._clock()
        with self._lock:
            if now - self._last_warning.get((kind, key), -1e9) < 60:
                return
            self._last_warning[(kind, key)] = now
        log.warning("refused a %s of %s: %s", kind, key, reason)

    # -- interception ---------------------------------------------------------------------
    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or not (handler.request_streaming or handler.response_streaming):
            return handler
        return self._wrap(handler, handler_call_details.method)

    def _wrap(self, handler: grpc.RpcMethodHandler, method: str) -> grpc.RpcMethodHandler:
        attr, factory = _FACTORIES[(handler.request_streaming, handler.response_streaming)]
        inner = getattr(handler, attr)
        kind = UPLOADS if handler.request_streaming and not handler.response_streaming else STREAMS
        short = method.rsplit("/", 1)[-1]

        if handler.response_streaming:

            def behavior(request: Any, context: grpc.ServicerContext) -> Any:
                lease = self._acquire(kind, short, context)
                try:
                    return _LeasedIterator(inner(request, context), lease)
                except BaseException:
                    lease.release()
                    raise

        else:

            def behavior(request: Any, context: grpc.ServicerContext) -> Any:
                lease = self._acquire(kind, short, context)
                try:
                    return inner(request, context)
                finally:
                    lease.release()

        return factory(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
