"""Failed sign-ins through the gateway are counted per browser, not per gateway.

The gateway appends the caller's address to ``x-forwarded-for``; dataset_svc trusts it from
the gateway (VISIONMESH_TRUSTED_PROXIES). Without that, one client's failures would lock
every other browser out, since every sign-in would come from the gateway's address. Clients
here bind distinct loopback addresses (127.0.0.2, 127.0.0.3).
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests._dataset import start_dataset_server
from tests._gateway import sign_in, start_gateway


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    dataset, cleanup = start_dataset_server(
        "sqlite+local",
        tmp_path_factory.mktemp("signin-home"),
        extra_env={
            "VISIONMESH_TRUSTED_PROXIES": "127.0.0.1",
            "VISIONMESH_LOGIN_CLIENT_MAX_FAILURES": "3",
            "VISIONMESH_LOGIN_MAX_FAILURES": "100",
        },
    )
    try:
        gw = start_gateway(dataset.addr, {})
        yield gw
        assert gw.stop() == 0
    finally:
        cleanup()


def client_at(gw, address: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=address)
    return httpx.Client(base_url=gw.url, transport=transport, timeout=60)


def test_one_clients_failures_do_not_lock_out_another(gateway):
    name = f"carol{uuid.uuid4().hex[:6]}"
    with client_at(gateway, "127.0.0.3") as good:
        sign_in(good, name)
    with client_at(gateway, "127.0.0.2") as attacker:
        codes = [
            attacker.post(
                "/v1/auth:login",
                json={"username": f"nobody{i}", "password": "wrong-password-1"},
            ).status_code
            for i in range(4)
        ]
        assert codes[:3] == [401, 401, 401] and codes[3] == 429, codes
        # the attacker's address waits now, even with the right password
        blocked = attacker.post(
            "/v1/auth:login", json={"username": name, "password": "correct horse battery"}
        )
        assert blocked.status_code == 429 and "retry after" in blocked.json()["message"]
    with client_at(gateway, "127.0.0.3") as good:
        reply = good.post(
            "/v1/auth:login", json={"username": name, "password": "correct horse battery"}
        )
        assert reply.status_code == 200, reply.text
