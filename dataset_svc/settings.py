"""dataset_svc's own knobs, from environment variables with working defaults.

The shared ones (home, database URL, store URL, key paths) come from
:func:`visionmesh.config.load`; these add the service's limits:

- ``VISIONMESH_MAX_IMAGE_BYTES`` (default 50 MiB): a bigger file is skipped with a reason.
- ``VISIONMESH_MAX_IMAGE_PIXELS`` (default 100,000,000): a bigger image (decompression
  bomb) is skipped with a reason; it is never decoded.
- ``VISIONMESH_MAX_UPLOAD_BYTES`` (default 20 GiB): one UploadImages stream receiving more
  fails with RESOURCE_EXHAUSTED and commits nothing.
- ``VISIONMESH_MAX_UPLOAD_FILES`` (default 200,000): files per UploadImages stream.
- ``VISIONMESH_TOKEN_TTL_SECONDS`` (default 12 h): lifetime of the tokens Login issues.
- ``VISIONMESH_LOGIN_MAX_FAILURES`` (default 5) and ``VISIONMESH_LOGIN_CLIENT_MAX_FAILURES``
  (default 20): failed sign-ins in a row for one account / from one client address after
  which attempts wait 1 s, 2 s, 4 s, ... (see :class:`dataset_svc.users.LoginThrottle`).
- ``VISIONMESH_TRUSTED_PROXIES`` (default none): comma-separated addresses or CIDR ranges
  (the gateway's; pod ranges on Kubernetes) whose ``x-forwarded-for`` names the client a sign-in is counted against.
- ``VISIONMESH_GC_INTERVAL_SECONDS`` (default 3600; 0 disables): how often the server
  removes blobs nothing references (see :mod:`dataset_svc.gc`).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from visionmesh import config

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not an integer") from None


@dataclass(frozen=True)
class ServiceSettings:
    base: config.Settings
    max_image_bytes: int
    max_image_pixels: int
    max_upload_bytes: int
    max_upload_files: int
    upload_spool_bytes: int  # an uploaded file bigger than this waits in a temp file
    token_ttl_seconds: int
    gc_interval_seconds: int
    login_max_failures: int = 5
    login_client_max_failures: int = 20
    # the gateway's addresses or ranges (pods on Kubernetes): VISIONMESH_TRUSTED_PROXIES
    trusted_proxies: tuple[IPNetwork, ...] = ()

    @property
    def upload_tmp_dir(self) -> Path:
        return self.base.home / "tmp" / "uploads"

    @property
    def export_tmp_dir(self) -> Path:
        return self.base.home / "tmp" / "exports"


def load() -> ServiceSettings:
    return ServiceSettings(
        base=config.load(),
        max_image_bytes=_int("VISIONMESH_MAX_IMAGE_BYTES", 50 * 1024 * 1024),
        max_image_pixels=_int("VISIONMESH_MAX_IMAGE_PIXELS", 100_000_000),
        max_upload_bytes=_int("VISIONMESH_MAX_UPLOAD_BYTES", 20 * 1024**3),
        max_upload_files=_int("VISIONMESH_MAX_UPLOAD_FILES", 200_000),
        upload_spool_bytes=_int("VISIONMESH_UPLOAD_SPOOL_BYTES", 8 * 1024 * 1024),
        token_ttl_seconds=_int("VISIONMESH_TOKEN_TTL_SECONDS", 12 * 3600),
        gc_interval_seconds=_int("VISIONMESH_GC_INTERVAL_SECONDS", 3600),
        login_max_failures=_int("VISIONMESH_LOGIN_MAX_FAILURES", 5),
        login_client_max_failures=_int("VISIONMESH_LOGIN_CLIENT_MAX_FAILURES", 20),
        trusted_proxies=parse_networks(
            "VISIONMESH_TRUSTED_PROXIES", os.environ.get("VISIONMESH_TRUSTED_PROXIES", "")
        ),
    )


def parse_networks(name: str, raw: str) -> tuple[IPNetwork, ...]:
    """Comma-separated addresses or CIDR ranges (``10.0.0.0/8,127.0.0.1``); ValueError naming
    ``name`` and the entry for anything else."""
    networks = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(
                f"{name}: {entry!r} is neither an IP address nor a CIDR range (e.g. 10.0.0.0/8)"
            ) from None
    return tuple(networks)
