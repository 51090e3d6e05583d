"""AuthService over real gRPC: register, login, WhoAmI, and the tokens every RPC refuses."""

from __future__ import annotations

import time

import grpc
import pytest

from tests._dataset import BACKENDS, dataset_server_fixture
from visionmesh.auth import TokenIssuer, generate_keypair, with_token
from visionmesh.errors import bad_request_fields
from visionmesh.v1 import auth_pb2, auth_pb2_grpc, dataset_pb2, dataset_pb2_grpc

server = dataset_server_fixture(BACKENDS)


def test_register_login_whoami(server):
    auth, _ = server.anonymous()
    user = auth.Register(auth_pb2.RegisterRequest(username="carol.x", password="s3cret-pass"))
    assert user.user.name == "users/carol.x"
    assert user.user.create_time.seconds > 0
    login = auth.Login(auth_pb2.LoginRequest(username="carol.x", password="s3cret-pass"))
    assert login.token_type == "Bearer"
    assert login.expire_time.seconds > time.time()
    assert login.user.username == "carol.x"
    me = auth_pb2_grpc.AuthServiceStub(with_token(server.channel(), login.access_token))
    assert me.WhoAmI(auth_pb2.WhoAmIRequest()).user.name == "users/carol.x"


def test_register_refuses_taken_and_bad_input(server):
    auth, _ = server.anonymous()
    auth.Register(auth_pb2.RegisterRequest(username="dave", password="vermilion-otter-17"))
    with pytest.raises(grpc.RpcError) as err:
        auth.Register(auth_pb2.RegisterRequest(username="dave", password="teal-heron-2024"))
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as err:
        auth.Register(auth_pb2.RegisterRequest(username="x", password="short"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad_request_fields(err.value)) == {"username", "password"}


def test_login_refuses_wrong_password_and_unknown_user(server):
    auth, _ = server.anonymous()
    auth.Register(auth_pb2.RegisterRequest(username="erin", password="vermilion-otter-17"))
    for username, password in [("erin", "password2"), ("nobody", "password1")]:
        with pytest.raises(grpc.RpcError) as err:
            auth.Login(auth_pb2.LoginRequest(username=username, password=password))
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert err.value.details() == "wrong username or password"


def _calls(stub_channel):
    auth = auth_pb2_grpc.AuthServiceStub(stub_channel)
    datasets = dataset_pb2_grpc.DatasetServiceStub(stub_channel)
    yield lambda: auth.WhoAmI(auth_pb2.WhoAmIRequest(), timeout=10)
    yield lambda: datasets.ListDatasets(dataset_pb2.ListDatasetsRequest(), timeout=10)
    yield lambda: datasets.CreateDataset(
        dataset_pb2.CreateDatasetRequest(dataset=dataset_pb2.Dataset(display_name="x")), timeout=10
    )
    yield lambda: datasets.UploadImages(
        iter(
            [
                dataset_pb2.UploadImagesRequest(
                    header=dataset_pb2.UploadImagesHeader(parent="datasets/abc")
                )
            ]
        ),
        timeout=10,
    )


def _expect_unauthenticated(channel, needle):
    for call in _calls(channel):
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert needle in err.value.details()


def test_missing_token_is_refused(server):
    _expect_unauthenticated(server.channel(), "authorization")


def test_expired_token_is_refused(server):
    user = server.user("frank")
    private_pem = (server.home / "keys" / "jwt_ed25519.pem").read_bytes()
    old = TokenIssuer(private_pem, clock=lambda: time.time() - 7200)
    token, _ = old.issue(user.username, ttl_seconds=60)
    _expect_unauthenticated(with_token(server.channel(), token), "expired")


def test_forged_token_is_refused(server):
    user = server.user("grace")
    forged, _ = TokenIssuer(generate_keypair()[0]).issue(user.username)
    _expect_unauthenticated(with_token(server.channel(), forged), "signature")
    garbage = user.token[:-4] + ("AAAA" if not user.token.endswith("AAAA") else "BBBB")
    _expect_unauthenticated(with_token(server.channel(), garbage), "")


def test_public_key_lives_under_home_and_verifies_tokens(server):
    from visionmesh.auth import TokenVerifier

    user = server.user("heidi")
    public = (server.home / "keys" / "jwt_ed25519.pub.pem").read_bytes()
    assert TokenVerifier(public).verify(user.token).username == user.username
