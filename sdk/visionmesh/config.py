"""Process configuration from environment variables, with working defaults.

Every address, path and secret comes from here so that one place documents them:

- ``VISIONMESH_HOME`` (default ``./var``): local state (SQLite catalog, object store, keys).
- ``VISIONMESH_DATABASE_URL`` (default ``sqlite:///$VISIONMESH_HOME/catalog.db``).
- ``VISIONMESH_STORE_URL`` (default ``file://$VISIONMESH_HOME/store``; or ``s3://bucket/prefix``
  with the usual ``AWS_*`` variables and ``AWS_ENDPOINT_URL`` for R2/MinIO).
- ``VISIONMESH_DATASET_ADDR`` (default ``127.0.0.1:50050``).
- ``VISIONMESH_TRAINERS`` (default ``timm=127.0.0.1:50051,ultralytics=127.0.0.1:50052,hf=127.0.0.1:50053``).
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


def parse_trainers(spec: str) -> dict[str, str]:
    """Parse ``ultralytics=host:port,timm=host:port`` into a dict; raise ValueError if malformed."""
    result: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        framework, sep, addr = part.partition("=")
        if not sep or not framework.strip() or not addr.strip():
            raise ValueError(f"VISIONMESH_TRAINERS entry {part!r} is not framework=host:port")
        result[framework.strip()] = addr.strip()
    return result


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
