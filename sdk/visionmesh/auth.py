"""JWT identity shared by every visionmesh server and client.

dataset_svc signs access tokens with an Ed25519 private key (:class:`TokenIssuer`); every
other process verifies them with the public key only (:class:`TokenVerifier`), so no trainer
or gateway can mint tokens. Tokens carry ``iss="visionmesh"``, ``sub`` (the username),
``iat``, ``exp`` and ``jti``.

Servers install :class:`AuthInterceptor`; handlers then read :func:`current_identity` and
:func:`current_token` (a trainer forwards the caller's token to dataset_svc, e.g. through
``with_token(channel, current_token)``). Clients attach a token with :func:`with_token` or
:func:`bearer_metadata`.

Typical wiring::

    settings = config.load()
    issuer = load_issuer(settings)        # dataset_svc only: creates the key pair if absent
    verifier = load_verifier(settings)    # every server
    server = grpc.server(pool, interceptors=[AuthInterceptor(verifier, PUBLIC_METHODS)])
"""

from __future__ import annotations

import collections
import contextlib
import contextvars
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

if TYPE_CHECKING:
    from visionmesh.config import Settings

log = logging.getLogger(__name__)

ISSUER = "visionmesh"
DEFAULT_TTL_SECONDS = 12 * 3600
DEFAULT_LEEWAY_SECONDS = 30
AUTHORIZATION = "authorization"
# Always callable without a token, whatever a server's public_methods says.
ALWAYS_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")
REQUIRED_CLAIMS = ("iss", "sub", "iat", "exp", "jti")
SIGN_IN_HINT = "sign in again (AuthService/Login, or `vmesh login`)"


# -- identity and errors ------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """Who is calling: the token's subject and its expiry (timezone-aware UTC)."""

    username: str
    expires_at: datetime
    issued_at: datetime | None = None
    token_id: str = ""


class AuthError(Exception):
    """A request's credentials were refused; ``str(err)`` is a message a person can act on.

    Servers answer every AuthError with gRPC status UNAUTHENTICATED.
    """

    grpc_code = grpc.StatusCode.UNAUTHENTICATED

    @property
    def message(self) -> str:
        return str(self)


class MissingTokenError(AuthError):
    """No token was sent."""


class MalformedTokenError(AuthError):
    """The token is not a well-formed visionmesh JWT (or the header is not 'Bearer <jwt>')."""


class ExpiredTokenError(AuthError):
    """The token was valid but its ``exp`` has passed."""


class InvalidSignatureError(AuthError):
    """The signature does not verify with this deployment's public key: forged, or key changed."""


ForgedTokenError = InvalidSignatureError


# -- keys ---------------------------------------------------------------------------------


def generate_keypair() -> tuple[bytes, bytes]:
    """A new Ed25519 key pair as (PKCS#8 private PEM, SubjectPublicKeyInfo public PEM)."""
    key = ed25519.Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return private_pem, public_pem_from_private(private_pem)


def _load_private(pem: bytes | str) -> Any:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}: use Ed25519 or RSA")
    return key


def _load_public(pem: bytes | str) -> Any:
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM public key: {exc}") from None
    if not isinstance(key, ed25519.Ed25519PublicKey | rsa.RSAPublicKey):
        raise ValueError(f"unsupported public key type {type(key).__name__}: use Ed25519 or RSA")
    return key


def _algorithm(key: Any) -> str:
    if isinstance(key, ed25519.Ed25519PrivateKey | ed25519.Ed25519PublicKey):
        return "EdDSA"
    return "RS256"


def _public_pem(public_key: Any) -> bytes:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_pem_from_private(private_pem: bytes | str) -> bytes:
    return _public_pem(_load_private(private_pem).public_key())


def key_id(public_pem: bytes | str) -> str:
    """A short fingerprint of a public key (the JWT ``kid`` header), stable across formats."""
    der = _load_public(public_pem).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()[:16]


def _write_atomic(path: Path, data: bytes, mode: int, *, exclusive: bool) -> bool:
    """Write ``data`` to ``path`` via a temp file with ``mode``.

    exclusive: publish with a hard link, so an existing file is never replaced (returns False
    when another process got there first); otherwise os.replace.
    """
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if not exclusive:
            os.replace(tmp, path)
            return True
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:  # a filesystem without hard links
            try:
                out = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            except FileExistsError:
                return False
            with os.fdopen(out, "wb") as f:
                f.write(data)
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def ensure_keypair(
    private_path: str | os.PathLike[str], public_path: str | os.PathLike[str]
) -> tuple[bytes, bytes]:
    """Create the signing key pair when absent; return (private PEM, public PEM).

    The private key file is created with mode 0600 (its folder 0700 when created here); the
    public key is (re)written from the private key when missing or different, so the two
    always match. Safe when several processes call it at once: exactly one key pair wins.
    """
    private_path, public_path = Path(private_path), Path(public_path)
    if not private_path.exists():
        if public_path.exists():
            raise FileNotFoundError(
                f"JWT public key {public_path} exists but its private key {private_path} does "
                "not: restore the private key (VISIONMESH_JWT_PRIVATE_KEY), or delete the "
                "public key to create a new pair (every issued token then becomes invalid)"
            )
        private_pem, _ = generate_keypair()
        if _write_atomic(private_path, private_pem, 0o600, exclusive=True):
            log.info("created JWT signing key %s", private_path)
    private_pem = private_path.read_bytes()
    mode = private_path.stat().st_mode & 0o777
    if mode & 0o077:
        log.warning(
            "JWT private key %s is readable by others (mode %o): chmod 600", private_path, mode
        )
    public_pem = public_pem_from_private(private_pem)
    try:
        current = public_path.read_bytes()
    except FileNotFoundError:
        current = None
    if current != public_pem:
        if current is not None:
            log.warning("JWT public key %s did not match the private key: rewritten", public_path)
        _write_atomic(public_path, public_pem, 0o644, exclusive=False)
    return private_pem, public_pem


def load_issuer(settings: Settings | None = None, **kwargs: Any) -> TokenIssuer:
    """The issuer for ``settings`` (default ``config.load()``), creating the key pair if absent."""
    if settings is None:
        from visionmesh import config

        settings = config.load()
    private_pem, _ = ensure_keypair(settings.jwt_private_key, settings.jwt_public_key)
    return TokenIssuer(private_pem, **kwargs)


def load_verifier(
    settings: Settings | None = None, *, wait_seconds: float = 0, **kwargs: Any
) -> TokenVerifier:
    """The verifier for ``settings`` (default ``config.load()``): reads the public key only.

    ``wait_seconds``: how long to wait for the key file to appear (a server started together
    with dataset_svc, which creates the pair on its first start).
    """
    if settings is None:
        from visionmesh import config

        settings = config.load()
    path = Path(settings.jwt_public_key)
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            pem = path.read_bytes()
            break
        except FileNotFoundError:
            if time.monotonic() >= deadline:
                raise FileNotFoundError(
                    f"JWT public key not found at {path}: start dataset_svc once with the same "
                    "VISIONMESH_HOME (it creates the key pair), or point "
                    "VISIONMESH_JWT_PUBLIC_KEY at dataset_svc's public key"
                ) from None
            time.sleep(0.1)
    return TokenVerifier(pem, **kwargs)


# -- tokens -------------------------------------------------------------------------------


class TokenIssuer:
    """Signs access tokens (dataset_svc only: it holds the private key)."""

    def __init__(
        self,
        private_key_pem: bytes | str,
        *,
        issuer: str = ISSUER,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = _load_private(private_key_pem)
        self.algorithm = _algorithm(self._key)
        self.public_key_pem = _public_pem(self._key.public_key())
        self.key_id = key_id(self.public_key_pem)
        self.issuer = issuer
        self._clock = clock

    def issue(self, username: str, ttl_seconds: int = DEFAULT_TTL_SECONDS) -> tuple[str, datetime]:
        """A signed token for ``username`` and its expiry time (timezone-aware UTC)."""
        if not isinstance(username, str) or not username.strip():
            raise ValueError("username must be a non-empty string")
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, got {ttl_seconds}")
        now = int(self._clock())
        exp = now + int(ttl_seconds)
        claims = {
            "iss": self.issuer,
            "sub": username,
            "iat": now,
            "exp": exp,
            "jti": uuid.uuid4().hex,
        }
        token = jwt.encode(
            claims, self._key, algorithm=self.algorithm, headers={"kid": self.key_id}
        )
        return token, datetime.fromtimestamp(exp, UTC)


def _utc(timestamp: Any) -> datetime | None:
    try:
        return datetime.fromtimestamp(float(timestamp), UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


class TokenVerifier:
    """Verifies access tokens with the public key; :meth:`verify` raises AuthError subclasses."""

    def __init__(
        self,
        public_key_pem: bytes | str,
        *,
        issuer: str = ISSUER,
        leeway_seconds: float = DEFAULT_LEEWAY_SECONDS,
    ) -> None:
        self._key = _load_public(public_key_pem)
        self.algorithm = _algorithm(self._key)
        self.issuer = issuer
        self.leeway_seconds = leeway_seconds

    def verify(self, token: str | bytes | None) -> Identity:
        if isinstance(token, bytes):
            token = token.decode("utf-8", "replace")
        if token is None or not token.strip():
            raise MissingTokenError(
                "no access token: send 'authorization: Bearer <token>' metadata; "
                "get a token from AuthService/Login (or `vmesh login`)"
            )
        token = token.strip()
        if token.count(".") != 2:
            raise MalformedTokenError(
                f"malformed access token: a JWT has 3 dot-separated parts; {SIGN_IN_HINT}"
            )
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise MalformedTokenError(f"malformed access token ({exc}); {SIGN_IN_HINT}") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or not alg:
            raise MalformedTokenError(f"malformed access token (no 'alg' header); {SIGN_IN_HINT}")
        if alg != self.algorithm:
            raise InvalidSignatureError(
                f"access token refused: signed with {alg!r}, but this deployment only accepts "
                f"{self.algorithm} tokens from its own AuthService; {SIGN_IN_HINT}"
            )
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=[self.algorithm],
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": list(REQUIRED_CLAIMS)},
            )
        except jwt.InvalidSignatureError:
            raise InvalidSignatureError(
                "access token signature is invalid: it was not issued by this visionmesh "
                f"deployment (or the signing key changed); {SIGN_IN_HINT}"
            ) from None
        except jwt.ExpiredSignatureError:
            # The signature was checked before expiry, so these claims are genuine.
            claims = jwt.decode(token, options={"verify_signature": False})
            expired = _utc(claims.get("exp"))
            when = expired.isoformat().replace("+00:00", "Z") if expired else "an unknown time"
            raise ExpiredTokenError(f"access token expired at {when}; {SIGN_IN_HINT}") from None
        except jwt.InvalidIssuerError:
            raise MalformedTokenError(
                f"access token was not issued by {self.issuer!r}; {SIGN_IN_HINT}"
            ) from None
        except jwt.ImmatureSignatureError:
            raise MalformedTokenError(
                "access token is not valid yet (issued in the future: check the clocks of "
                f"client and servers); {SIGN_IN_HINT}"
            ) from None
        except jwt.PyJWTError as exc:
            raise MalformedTokenError(f"malformed access token ({exc}); {SIGN_IN_HINT}") from None
        username = claims.get("sub")
        expires_at = _utc(claims.get("exp"))
        if not isinstance(username, str) or not username or expires_at is None:
            raise MalformedTokenError(f"malformed access token (bad sub or exp); {SIGN_IN_HINT}")
        return Identity(
            username=username,
            expires_at=expires_at,
            issued_at=_utc(claims.get("iat")),
            token_id=str(claims.get("jti", "")),
        )


def token_from_metadata(metadata: Iterable[tuple[str, Any]] | None) -> str:
    """The token in ``authorization: Bearer <token>`` metadata; AuthError when absent or bad."""
    value = None
    for key, item in metadata or ():
        if key.lower() == AUTHORIZATION:
            value = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
            break
    if value is None or not value.strip():
        raise MissingTokenError(
            "missing credentials: send 'authorization: Bearer <token>' metadata; get a token "
            "from AuthService/Login (or `vmesh login`)"
        )
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise MalformedTokenError(
            f"authorization metadata must be 'Bearer <token>', got a {scheme!r} value; "
            f"{SIGN_IN_HINT}"
        )
    return token.strip()


# -- per-call identity ---------------------------------------------------------------------

_identity_var: contextvars.ContextVar[Identity | None] = contextvars.ContextVar(
    "visionmesh_identity", default=None
)
_token_var: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "visionmesh_token", default=None
)


def current_identity() -> Identity | None:
    """The caller of the RPC being handled (None outside an authenticated call)."""
    return _identity_var.get()


def current_token() -> str | None:
    """The caller's raw token, to forward to another service (None outside a call)."""
    return _token_var.get()


def require_identity() -> Identity:
    identity = _identity_var.get()
    if identity is None:
        raise MissingTokenError("this operation needs a signed-in caller")
    return identity


@contextlib.contextmanager
def acting_as(identity: Identity | None, token: str | None) -> Iterator[None]:
    """Run a block as ``identity`` (e.g. a background job acting for the user who started it)."""
    identity_reset = _identity_var.set(identity)
    token_reset = _token_var.set(token)
    try:
        yield
    finally:
        _token_var.reset(token_reset)
        _identity_var.reset(identity_reset)


# -- server interceptor ----------------------------------------------------------------------


class _ContextIterator:
    """Runs every step of a response iterator inside one contextvars.Context."""

    def __init__(self, ctx: contextvars.Context, iterator: Iterator[Any]) -> None:
        self._ctx = ctx
        self._iterator = iter(iterator)

    def __iter__(self) -> _ContextIterator:
        return self

    def __next__(self) -> Any:
        return self._ctx.run(next, self._iterator)

    def close(self) -> None:
        close = getattr(self._iterator, "close", None)
        if close is not None:
            self._ctx.run(close)


_HANDLER_FACTORIES = {
    (False, False): ("unary_unary", grpc.unary_unary_rpc_method_handler),
    (False, True): ("unary_stream", grpc.unary_stream_rpc_method_handler),
    (True, False): ("stream_unary", grpc.stream_unary_rpc_method_handler),
    (True, True): ("stream_stream", grpc.stream_stream_rpc_method_handler),
}


class AuthInterceptor(grpc.ServerInterceptor):
    """Requires ``authorization: Bearer <jwt>`` on every method not in ``public_methods``.

    ``public_methods`` holds full method names (``/visionmesh.v1.AuthService/Login``); an
    entry ending in ``*`` matches by prefix (``/visionmesh.v1.AuthService/*``). Health and
    reflection methods are always public. A refused call ends with UNAUTHENTICATED and the
    AuthError's message. An accepted call runs its handler (unary or streaming, every step of
    a response stream included) in a context where :func:`current_identity` and
    :func:`current_token` answer for the caller; nothing leaks into the thread pool.
    """

    def __init__(self, verifier: TokenVerifier, public_methods: Iterable[str] = ()) -> None:
        self.verifier = verifier
        methods = list(public_methods)
        self._exact = frozenset(m for m in methods if not m.endswith("*"))
        self._prefixes = ALWAYS_PUBLIC_PREFIXES + tuple(m[:-1] for m in methods if m.endswith("*"))

    def is_public(self, method: str) -> bool:
        return method in self._exact or method.startswith(self._prefixes)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        if handler is None or self.is_public(handler_call_details.method):
            return handler
        return self._wrap(handler)

    def _authenticate(self, context: grpc.ServicerContext) -> contextvars.Context:
        """Verify the call's token (aborting with UNAUTHENTICATED) and build its context."""
        try:
            token = token_from_metadata(context.invocation_metadata())
            identity = self.verifier.verify(token)
        except AuthError as exc:
            context.abort(exc.grpc_code, str(exc))
            raise  # not reached: abort raises
        ctx = contextvars.copy_context()
        ctx.run(_identity_var.set, identity)
        ctx.run(_token_var.set, token)
        return ctx

    def _wrap(self, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        attr, factory = _HANDLER_FACTORIES[(handler.request_streaming, handler.response_streaming)]
        inner = getattr(handler, attr)

        if handler.response_streaming:

            def behavior(request: Any, context: grpc.ServicerContext) -> Any:
                ctx = self._authenticate(context)
                return _ContextIterator(ctx, ctx.run(inner, request, context))

        else:

            def behavior(request: Any, context: grpc.ServicerContext) -> Any:
                ctx = self._authenticate(context)
                return ctx.run(inner, request, context)

        return factory(
            behavior,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


# -- client side ----------------------------------------------------------------------------


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying ``token``: ``stub.Method(req, metadata=bearer_metadata(t))``."""
    if not token:
        raise MissingTokenError("no access token to send: sign in first (`vmesh login`)")
    return ((AUTHORIZATION, f"Bearer {token}"),)


class _CallDetails(
    collections.namedtuple(  # grpc's documented idiom
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,
):
    pass


class BearerTokenInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds ``authorization: Bearer <token>`` to every call that does not carry one already.

    ``token`` is a string, or a callable evaluated at each call (e.g. :func:`current_token`
    to forward the current caller's token; a refreshed login); None/empty sends nothing.
    """

    def __init__(self, token: str | Callable[[], str | None]) -> None:
        self._token = token

    def _details(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        token = self._token() if callable(self._token) else self._token
        metadata = list(details.metadata or ())
        if not token or any(key.lower() == AUTHORIZATION for key, _ in metadata):
            return details
        metadata.extend(bearer_metadata(token))
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_unary_stream(self, continuation, client_call_details, request):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request)

    def intercept_stream_unary(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation, client_call_details, request_iterator):  # type: ignore[no-untyped-def]
        return continuation(self._details(client_call_details), request_iterator)


def with_token(channel: grpc.Channel, token: str | Callable[[], str | None]) -> grpc.Channel:
    """``channel`` with ``token`` attached to every call (see :class:`BearerTokenInterceptor`)."""
    return grpc.intercept_channel(channel, BearerTokenInterceptor(token))
