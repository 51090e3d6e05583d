"""Process configuration from environment variables, with working defaults.

Every address, path and secret comes from here so that one place documents them:

- ``VISIONMESH_HOME`` (default ``./var``): local state (SQLite catalog, object store, keys).
- ``VISIONMESH_DATABASE_URL`` (default ``sqlite:///$VISIONMESH_HOME/catalog.db``).
- ``VISIONMESH_STORE_URL`` (default ``file://$VISIONMESH_HOME/store``; or ``s3://bucket/prefix``
  with the usual ``AWS_*`` variables and ``AWS_ENDPOINT_URL`` for R2/MinIO).
- ``VISIONMESH_DATASET_ADDR`` (default ``127.0.0.1:50050``).
- ``VISIONMESH_TRAINERS`` (default ``timm=127.0.0.1:50051,ultralytics=127.0.0.1:50052,hf=127.0.0.1:50053``).
  A framework with several replicas lists each address:
  ``ultralytics=10.0.0.5:50052,10.0.0.6:50052,timm=...`` (becomes the gRPC target
  ``ipv4:10.0.0.5:50052,10.0.0.6:50052``), or names any gRPC target, such as
  ``ultralytics=dns:///trainer-ultralytics:50052`` (a Kubernetes headless Service); clients
  spread calls over the addresses with gRPC's client-side ``round_robin``
  (:data:`CHANNEL_LB_OPTIONS`).
- ``VISIONMESH_GATEWAY_ADDR`` (default ``127.0.0.1:8000``): where ``python -m gateway`` listens.
- ``VISIONMESH_JWT_PRIVATE_KEY`` / ``VISIONMESH_JWT_PUBLIC_KEY``: PEM file paths (default under
  ``$VISIONMESH_HOME/keys/``); only dataset_svc reads the private key.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_ADDRESSES = {
    "dataset": "127.0.0.1:50050",
    "timm": "127.0.0.1:50051",
    "ultralytics": "127.0.0.1:50052",
    "hf": "127.0.0.1:50053",
    "gateway": "127.0.0.1:8000",
}


def _env(name: str, default: str) -> str:
    value = os.environ.get(name, "").strip()
    return value or default


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    store_url: str
    dataset_addr: str
    trainers: dict[str, str]
    jwt_private_key: Path
    jwt_public_key: Path
    gateway_addr: str = DEFAULT_ADDRESSES["gateway"]


# gRPC channel options for a trainer address: calls go round-robin over every address the
# target resolves to (several replicas); with one address it is that address.
CHANNEL_LB_OPTIONS = [("grpc.lb_policy_name", "round_robin")]


def grpc_target(addresses: list[str]) -> str:
    """One gRPC target for one or several ``host:port`` addresses: several IPv4 (or
    ``[IPv6]``) literals become ``ipv4:a:p,b:p`` (``ipv6:...``); one address (or a target
    with a scheme, such as ``dns:///name:port``) stays as it is."""
    if len(addresses) == 1:
        return addresses[0]
    if all(a.startswith("[") for a in addresses):
        return "ipv6:" + ",".join(addresses)
    for addr in addresses:
        host = addr.rsplit(":", 1)[0]
        parts = host.split(".")
        if ":" not in addr or len(parts) != 4 or not all(p.isdigit() for p in parts):
            raise ValueError(
                f"{addr!r}: several addresses for one trainer must be IP literals "
                "(host names: one dns:///name:port target that resolves to every replica)"
            )
    return "ipv4:" + ",".join(addresses)


def parse_trainers(spec: str) -> dict[str, str]:
    """Parse ``ultralytics=host:port,timm=host:port`` into framework -> gRPC target; an entry
    without ``=`` is one more address of the framework before it (a replica). ValueError if
    malformed."""
    listed: dict[str, list[str]] = {}
    last = ""
    for part in filter(None, (p.strip() for p in spec.split(","))):
        framework, sep, addr = part.partition("=")
        if not sep and last:
            listed[last].append(part)
            continue
        if not sep or not framework.strip() or not addr.strip():
            raise ValueError(f"VISIONMESH_TRAINERS entry {part!r} is not framework=host:port")
        last = framework.strip()
        addr = addr.strip()
        for scheme in ("ipv4:", "ipv6:"):  # a target given in gRPC's own syntax
            addr = addr.removeprefix(scheme)
        listed[last] = [addr]
    return {framework: grpc_target(addrs) for framework, addrs in listed.items()}


def load() -> Settings:
    home = Path(_env("VISIONMESH_HOME", "./var")).resolve()
    default_trainers = ",".join(
        f"{k}={DEFAULT_ADDRESSES[k]}" for k in ("timm", "ultralytics", "hf")
    )
    return Settings(
        home=home,
        database_url=_env("VISIONMESH_DATABASE_URL", f"sqlite:///{home / 'catalog.db'}"),
        store_url=_env("VISIONMESH_STORE_URL", f"file://{home / 'store'}"),
        dataset_addr=_env("VISIONMESH_DATASET_ADDR", DEFAULT_ADDRESSES["dataset"]),
        trainers=parse_trainers(_env("VISIONMESH_TRAINERS", default_trainers)),
        jwt_private_key=Path(
            _env("VISIONMESH_JWT_PRIVATE_KEY", str(home / "keys" / "jwt_ed25519.pem"))
        ),
        jwt_public_key=Path(
            _env("VISIONMESH_JWT_PUBLIC_KEY", str(home / "keys" / "jwt_ed25519.pub.pem"))
        ),
        gateway_addr=_env("VISIONMESH_GATEWAY_ADDR", DEFAULT_ADDRESSES["gateway"]),
    )
