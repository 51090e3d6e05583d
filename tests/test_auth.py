"""JWT identity: tokens, key files, and the gRPC interceptors on a real server."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
import threading
import time
from concurrent import futures
from datetime import UTC, datetime, timedelta

import grpc
import jwt
import pytest

from visionmesh.auth import (
    AuthError,
    AuthInterceptor,
    ExpiredTokenError,
    Identity,
    InvalidSignatureError,
    MalformedTokenError,
    MissingTokenError,
    TokenIssuer,
    TokenVerifier,
    bearer_metadata,
    current_identity,
    current_token,
    ensure_keypair,
    generate_keypair,
    load_issuer,
    load_verifier,
    token_from_metadata,
    with_token,
)


@pytest.fixture(scope="module")
def keys():
    return generate_keypair()


@pytest.fixture(scope="module")
def issuer(keys):
    return TokenIssuer(keys[0])


@pytest.fixture(scope="module")
def verifier(keys):
    return TokenVerifier(keys[1])


def b64(obj) -> str:
    raw = json.dumps(obj).encode() if not isinstance(obj, bytes) else obj
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


# -- tokens -------------------------------------------------------------------------------


def test_token_round_trip(issuer, verifier):
    before = datetime.now(UTC)
    token, expires = issuer.issue("alice", ttl_seconds=600)
    identity = verifier.verify(token)
    assert isinstance(identity, Identity)
    assert identity.username == "alice"
    assert identity.expires_at == expires
    assert expires.tzinfo is not None
    assert timedelta(seconds=598) <= expires - before <= timedelta(seconds=601)

    claims = jwt.decode(token, options={"verify_signature": False})
    assert set(claims) == {"iss", "sub", "iat", "exp", "jti"}
    assert claims["iss"] == "visionmesh" and claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 600
    assert identity.token_id == claims["jti"]
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    assert issuer.issue("alice")[0] != token, "jti makes every token unique"

    for bad in ["", "   "]:
        with pytest.raises(ValueError, match="username"):
            issuer.issue(bad)
    with pytest.raises(ValueError, match="ttl_seconds"):
        issuer.issue("alice", ttl_seconds=0)


def test_missing_token(verifier):
    for token in [None, "", "  "]:
        with pytest.raises(MissingTokenError, match="no access token"):
            verifier.verify(token)


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "a.b",
        "a.b.c",
        "Zm9v.YmFy.YmF6",
        b64({"typ": "JWT"}) + "." + b64({"sub": "a"}) + "." + b64(b"sig"),
        "Bearer x.y.z",
    ],
)
def test_malformed_token(verifier, token):
    with pytest.raises(MalformedTokenError, match="malformed access token"):
        verifier.verify(token)


def test_token_missing_claims_or_wrong_issuer_is_malformed(keys, verifier):
    now = int(time.time())
    key = TokenIssuer(keys[0])._key
    no_jti = jwt.encode(
        {"iss": "visionmesh", "sub": "a", "iat": now, "exp": now + 60}, key, "EdDSA"
    )
    with pytest.raises(MalformedTokenError, match='"jti"'):
        verifier.verify(no_jti)

    other_issuer, _ = TokenIssuer(keys[0], issuer="someone-else").issue("alice")
    with pytest.raises(MalformedTokenError, match="not issued by 'visionmesh'"):
        verifier.verify(other_issuer)

    future, _ = TokenIssuer(keys[0], clock=lambda: time.time() + 3600).issue("alice")
    with pytest.raises(MalformedTokenError, match="not valid yet"):
        verifier.verify(future)


def test_expired_token(keys, verifier):
    an_hour_ago = TokenIssuer(keys[0], clock=lambda: time.time() - 3600)
    token, expires = an_hour_ago.issue("alice", ttl_seconds=60)
    with pytest.raises(ExpiredTokenError) as info:
        verifier.verify(token)
    message = str(info.value)
    assert "expired at " + expires.isoformat().replace("+00:00", "Z") in message
    assert "sign in again" in message

    # Within the leeway (30 s by default) a token that just expired is still accepted.
    just_expired, _ = TokenIssuer(keys[0], clock=lambda: time.time() - 70).issue("bob", 60)
    assert verifier.verify(just_expired).username == "bob"
    with pytest.raises(ExpiredTokenError):
        TokenVerifier(keys[1], leeway_seconds=0).verify(just_expired)


def test_forged_tokens(keys, verifier):
    other_private, _ = generate_keypair()
    forged, _ = TokenIssuer(other_private).issue("alice")
    with pytest.raises(InvalidSignatureError, match="signature is invalid"):
        verifier.verify(forged)

    # A genuine token with its payload edited (sub: alice -> admin).
    token, _ = TokenIssuer(keys[0]).issue("alice")
    header, payload, signature = token.split(".")
    claims = jwt.decode(token, options={"verify_signature": False})
    claims["sub"] = "admin"
    with pytest.raises(InvalidSignatureError, match="signature is invalid"):
        verifier.verify(f"{header}.{b64(claims)}.{signature}")

    # Expired and forged: the forgery is what gets reported.
    old_forged, _ = TokenIssuer(other_private, clock=lambda: time.time() - 3600).issue("a", 60)
    with pytest.raises(InvalidSignatureError):
        verifier.verify(old_forged)

    # alg=none and HS256-with-the-public-key (the classic confusion attack).
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims)}."
    with pytest.raises(InvalidSignatureError, match="signed with 'none'"):
        verifier.verify(unsigned)
    signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims)}"
    mac = hmac.new(keys[1], signing_input.encode(), hashlib.sha256).digest()
    with pytest.raises(InvalidSignatureError, match="signed with 'HS256'"):
        verifier.verify(f"{signing_input}.{b64(mac)}")


def test_error_messages_are_distinct(keys, verifier):
    other_private, _ = generate_keypair()
    cases = {
        MissingTokenError: None,
        MalformedTokenError: "not-a-jwt",
        ExpiredTokenError: TokenIssuer(keys[0], clock=lambda: time.time() - 3600).issue("a", 60)[0],
        InvalidSignatureError: TokenIssuer(other_private).issue("a")[0],
    }
    messages = set()
    for expected, token in cases.items():
        with pytest.raises(AuthError) as info:
            verifier.verify(token)
        assert type(info.value) is expected
        assert info.value.grpc_code == grpc.StatusCode.UNAUTHENTICATED
        messages.add(str(info.value).split(":")[0].split("(")[0])
    assert len(messages) == 4, messages


def test_token_from_metadata():
    assert token_from_metadata([("authorization", "Bearer abc.def.ghi")]) == "abc.def.ghi"
    assert token_from_metadata((("x-other", "1"), ("authorization", "bearer  t "))) == "t"
    assert token_from_metadata(bearer_metadata("tok")) == "tok"
    for metadata in [None, [], [("x-other", "1")], [("authorization", " ")]]:
        with pytest.raises(MissingTokenError, match="missing credentials"):
            token_from_metadata(metadata)
    for value in ["Basic dXNlcjpwYXNz", "Bearer", "abc.def.ghi"]:
        with pytest.raises(MalformedTokenError, match="must be 'Bearer <token>'"):
            token_from_metadata([("authorization", value)])
    with pytest.raises(MissingTokenError):
        bearer_metadata("")


# -- key files ----------------------------------------------------------------------------


def test_ensure_keypair_creates_and_reuses(tmp_path):
    private_path = tmp_path / "keys" / "jwt.pem"
    public_path = tmp_path / "keys" / "jwt.pub.pem"
    private_pem, public_pem = ensure_keypair(private_path, public_path)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert private_pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public_path.read_bytes() == public_pem
    assert sorted(p.name for p in private_path.parent.iterdir()) == ["jwt.pem", "jwt.pub.pem"]

    assert ensure_keypair(private_path, public_path) == (private_pem, public_pem)
    token, _ = TokenIssuer(private_path.read_bytes()).issue("carol")
    assert TokenVerifier(public_path.read_bytes()).verify(token).username == "carol"

    public_path.unlink()  # a lost public key is derived again from the private key
    assert ensure_keypair(private_path, public_path) == (private_pem, public_pem)
    public_path.write_bytes(generate_keypair()[1])  # a mismatched one is repaired
    assert ensure_keypair(private_path, public_path)[1] == public_pem
    assert public_path.read_bytes() == public_pem

    private_path.unlink()
    with pytest.raises(FileNotFoundError, match="exists but its private key"):
        ensure_keypair(private_path, public_path)


def test_ensure_keypair_concurrent_callers_agree(tmp_path):
    results = []
    paths = (tmp_path / "k.pem", tmp_path / "k.pub.pem")
    threads = [
        threading.Thread(target=lambda: results.append(ensure_keypair(*paths))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and len(set(results)) == 1
    assert results[0][0] == paths[0].read_bytes()


def test_load_issuer_and_verifier_from_config(tmp_path, monkeypatch):
    monkeypatch.setenv("VISIONMESH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("VISIONMESH_JWT_PRIVATE_KEY", raising=False)
    monkeypatch.delenv("VISIONMESH_JWT_PUBLIC_KEY", raising=False)
    with pytest.raises(FileNotFoundError, match="start dataset_svc once"):
        load_verifier()
    started = time.monotonic()
    with pytest.raises(FileNotFoundError):
        load_verifier(wait_seconds=0.3)
    assert time.monotonic() - started >= 0.3
    token, _ = load_issuer().issue("dave")
    assert (tmp_path / "home" / "keys" / "jwt_ed25519.pem").exists()
    assert load_verifier().verify(token).username == "dave"


# -- a real gRPC server ---------------------------------------------------------------------

SERVICE = "test.Echo"
PUBLIC = [f"/{SERVICE}/Login"]


def _who() -> bytes:
    identity = current_identity()
    return identity.username.encode() if identity else b"anonymous"


class EchoServer:
    """Raw-bytes methods behind AuthInterceptor (no protobuf needed)."""

    def __init__(self, verifier: TokenVerifier) -> None:
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=4),
            interceptors=[AuthInterceptor(verifier, PUBLIC)],
        )
        handlers = {
            "Whoami": grpc.unary_unary_rpc_method_handler(self.whoami),
            "Count": grpc.unary_stream_rpc_method_handler(self.count),
            "Sum": grpc.stream_unary_rpc_method_handler(self.sum),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
            "Relay": grpc.unary_unary_rpc_method_handler(self.relay),
            "Login": grpc.unary_unary_rpc_method_handler(lambda request, context: _who()),
        }
        health = {"Check": grpc.unary_unary_rpc_method_handler(lambda r, c: b"SERVING")}
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler(SERVICE, handlers),
                grpc.method_handlers_generic_handler("grpc.health.v1.Health", health),
            )
        )
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.addr = f"127.0.0.1:{self.port}"

    def whoami(self, request: bytes, context) -> bytes:
        return _who() + b"|" + (current_token() or "").encode()

    def count(self, request: bytes, context):
        for i in range(int(request or b"3")):
            time.sleep(0.001)
            yield _who() + b":" + str(i).encode()

    def sum(self, request_iterator, context) -> bytes:
        total = sum(len(chunk) for chunk in request_iterator)
        return _who() + b"=" + str(total).encode()

    def chat(self, request_iterator, context):
        for message in request_iterator:
            yield _who() + b">" + message

    def relay(self, request: bytes, context) -> bytes:
        """Calls Whoami on this same server with the caller's token (as a trainer does)."""
        with grpc.insecure_channel(self.addr) as channel:
            forwarded = with_token(channel, current_token)
            return b"relayed:" + forwarded.unary_unary(f"/{SERVICE}/Whoami")(b"", timeout=5)


@pytest.fixture(scope="module")
def echo(verifier):
    server = EchoServer(verifier)
    server.server.start()
    yield server
    server.server.stop(grace=None)


@pytest.fixture
def channel(echo):
    with grpc.insecure_channel(echo.addr) as ch:
        yield ch


def call(channel, method, request=b"", **kwargs):
    return channel.unary_unary(f"/{SERVICE}/{method}")(request, timeout=5, **kwargs)


def stream(channel, method, request=b"3", **kwargs):
    return list(channel.unary_stream(f"/{SERVICE}/{method}")(request, timeout=5, **kwargs))


def assert_unauthenticated(fn, message: str) -> None:
    with pytest.raises(grpc.RpcError) as info:
        fn()
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, info.value
    assert message in info.value.details(), info.value.details()


def test_grpc_calls_without_or_with_bad_tokens_are_refused(channel, keys):
    forged, _ = TokenIssuer(generate_keypair()[0]).issue("alice")
    expired, _ = TokenIssuer(keys[0], clock=lambda: time.time() - 3600).issue("alice", 60)
    cases = [
        ((), "missing credentials"),
        ((("authorization", "Basic dXNlcjpwYXNz"),), "must be 'Bearer <token>'"),
        (bearer_metadata("not-a-jwt"), "malformed access token"),
        (bearer_metadata(forged), "signature is invalid"),
        (bearer_metadata(expired), "access token expired at"),
    ]
    for metadata, message in cases:
        assert_unauthenticated(lambda m=metadata: call(channel, "Whoami", metadata=m), message)
        assert_unauthenticated(lambda m=metadata: stream(channel, "Count", metadata=m), message)
        assert_unauthenticated(
            lambda m=metadata: channel.stream_unary(f"/{SERVICE}/Sum")(
                iter([b"ab"]), timeout=5, metadata=m
            ),
            message,
        )
        assert_unauthenticated(
            lambda m=metadata: list(
                channel.stream_stream(f"/{SERVICE}/Chat")(iter([b"hi"]), timeout=5, metadata=m)
            ),
            message,
        )


def test_grpc_good_token_exposes_identity_to_handlers(channel, issuer):
    token, _ = issuer.issue("alice")
    metadata = bearer_metadata(token)
    assert call(channel, "Whoami", metadata=metadata) == b"alice|" + token.encode()
    assert stream(channel, "Count", metadata=metadata) == [b"alice:0", b"alice:1", b"alice:2"]
    sum_call = channel.stream_unary(f"/{SERVICE}/Sum")
    assert sum_call(iter([b"ab", b"cde"]), timeout=5, metadata=metadata) == b"alice=5"
    chat = channel.stream_stream(f"/{SERVICE}/Chat")
    assert list(chat(iter([b"a", b"b"]), timeout=5, metadata=metadata)) == [b"alice>a", b"alice>b"]


def test_grpc_with_token_client_interceptor(channel, issuer):
    alice, _ = issuer.issue("alice")
    bob, _ = issuer.issue("bob")
    authed = with_token(channel, alice)
    assert call(authed, "Whoami").startswith(b"alice|")
    assert stream(authed, "Count", b"2") == [b"alice:0", b"alice:1"]
    assert authed.stream_unary(f"/{SERVICE}/Sum")(iter([b"xyz"]), timeout=5) == b"alice=3"
    assert list(authed.stream_stream(f"/{SERVICE}/Chat")(iter([b"q"]), timeout=5)) == [b"alice>q"]
    # An explicit authorization header on a call wins over the channel's token.
    assert call(authed, "Whoami", metadata=bearer_metadata(bob)).startswith(b"bob|")
    # A callable is evaluated per call; None sends nothing.
    current = {"token": bob}
    dynamic = with_token(channel, lambda: current["token"])
    assert call(dynamic, "Whoami").startswith(b"bob|")
    current["token"] = None
    assert_unauthenticated(lambda: call(dynamic, "Whoami"), "missing credentials")


def test_grpc_handler_forwards_the_callers_token(channel, issuer):
    token, _ = issuer.issue("erin")
    assert call(channel, "Relay", metadata=bearer_metadata(token)) == (
        b"relayed:erin|" + token.encode()
    )


def test_grpc_public_methods_need_no_token_and_see_no_identity(channel, issuer):
    health = channel.unary_unary("/grpc.health.v1.Health/Check")
    assert health(b"", timeout=5) == b"SERVING"
    assert call(channel, "Login") == b"anonymous"
    token, _ = issuer.issue("alice")
    for _ in range(5):  # identities never leak into the pool threads that run public calls
        assert call(channel, "Whoami", metadata=bearer_metadata(token)).startswith(b"alice|")
        assert stream(channel, "Count", b"1", metadata=bearer_metadata(token)) == [b"alice:0"]
        assert call(channel, "Login") == b"anonymous"
    assert current_identity() is None and current_token() is None


def test_grpc_concurrent_streams_keep_their_own_identity(echo, issuer):
    tokens = {name: issuer.issue(name)[0] for name in ("ann", "ben", "cyd")}
    results: dict[str, list[bytes]] = {}

    def run(name: str) -> None:
        with grpc.insecure_channel(echo.addr) as ch:
            results[name] = stream(ch, "Count", b"20", metadata=bearer_metadata(tokens[name]))

    threads = [threading.Thread(target=run, args=(name,)) for name in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in tokens:
        assert results[name] == [f"{name}:{i}".encode() for i in range(20)]


def test_interceptor_public_method_patterns(verifier):
    interceptor = AuthInterceptor(verifier, ["/visionmesh.v1.AuthService/Login", "/x.Y/*"])
    assert interceptor.is_public("/visionmesh.v1.AuthService/Login")
    assert not interceptor.is_public("/visionmesh.v1.AuthService/WhoAmI")
    assert interceptor.is_public("/x.Y/Anything")
    assert interceptor.is_public("/grpc.health.v1.Health/Watch")
    assert interceptor.is_public("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert interceptor.is_public("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo")
    assert not interceptor.is_public("/grpc.health.v1.HealthX/Check")
