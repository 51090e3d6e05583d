"""Resource names (AIP-122): parse and format, with INVALID_ARGUMENT naming the field.

- ``users/{username}``
- ``datasets/{dataset_id}``
- ``datasets/{dataset_id}/images/{image_id}``
- ``datasets/{dataset_id}/snapshots/{snapshot_id}``
- ``datasets/{dataset_id}/exports/{export_id}`` (an export zip, readable by its exporter)
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass

from visionmesh.errors import invalid_argument

_ID = r"[a-z0-9][a-z0-9-]{0,63}"
_DATASET = re.compile(rf"^datasets/({_ID})$")
_IMAGE = re.compile(rf"^datasets/({_ID})/images/([0-9]{{1,19}})$")
_SNAPSHOT = re.compile(rf"^datasets/({_ID})/snapshots/({_ID})$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"
MAX_ID = 2**63 - 1  # catalog ids are 64-bit


def new_id(length: int = 12) -> str:
    """A random resource id: lowercase letters and digits, starting with a letter."""
    return secrets.choice(_ALPHABET[:26]) + "".join(
        secrets.choice(_ALPHABET) for _ in range(length - 1)
    )


def user_name(username: str) -> str:
    return f"users/{username}"


def dataset_name(dataset_id: str) -> str:
    return f"datasets/{dataset_id}"


def image_name(dataset_id: str, image_id: int) -> str:
    return f"datasets/{dataset_id}/images/{image_id}"


def snapshot_name(dataset_id: str, snapshot_id: str) -> str:
    return f"datasets/{dataset_id}/snapshots/{snapshot_id}"


def _missing(field: str, pattern: str) -> Exception:
    return invalid_argument(f"{field} is required: {pattern}", field)


def parse_dataset(name: str, field: str = "name") -> str:
    """The dataset id of ``datasets/{id}``."""
    if not name:
        raise _missing(field, "datasets/{dataset_id}")
    match = _DATASET.match(name)
    if not match:
        raise invalid_argument(
            f"{field} {name!r} is not a dataset name: expected datasets/{{dataset_id}}", field
        )
    return match.group(1)


def parse_image(name: str, field: str = "name") -> tuple[str, int]:
    if not name:
        raise _missing(field, "datasets/{dataset_id}/images/{image_id}")
    match = _IMAGE.match(name)
    if not match:
        raise invalid_argument(
            f"{field} {name!r} is not an image name: expected "
            "datasets/{dataset_id}/images/{image_id}",
            field,
        )
    image_id = int(match.group(2))
    if image_id > MAX_ID:
        raise invalid_argument(
            f"{field} {name!r}: image id {image_id} is out of range (at most {MAX_ID})", field
        )
    return match.group(1), image_id


def parse_snapshot(name: str, field: str = "name") -> tuple[str, str]:
    if not name:
        raise _missing(field, "datasets/{dataset_id}/snapshots/{snapshot_id}")
    match = _SNAPSHOT.match(name)
    if not match:
        raise invalid_argument(
            f"{field} {name!r} is not a snapshot name: expected "
            "datasets/{dataset_id}/snapshots/{snapshot_id}",
            field,
        )
    return match.group(1), match.group(2)


@dataclass(frozen=True)
class DatasetOrSnapshot:
    """``datasets/{id}`` (the head) or ``datasets/{id}/snapshots/{sid}``."""

    dataset_id: str
    snapshot_id: str | None


def parse_dataset_or_snapshot(name: str, field: str = "name") -> DatasetOrSnapshot:
    if not name:
        raise _missing(field, "datasets/{dataset_id} or datasets/{dataset_id}/snapshots/{sid}")
    if match := _DATASET.match(name):
        return DatasetOrSnapshot(match.group(1), None)
    if match := _SNAPSHOT.match(name):
        return DatasetOrSnapshot(match.group(1), match.group(2))
    raise invalid_argument(
        f"{field} {name!r} is neither datasets/{{dataset_id}} nor "
        "datasets/{dataset_id}/snapshots/{snapshot_id}",
        field,
    )


_EXPORT = re.compile(rf"^datasets/({_ID})/exports/([A-Za-z0-9][A-Za-z0-9._-]{{0,159}})$")


def export_name(dataset_id: str, export_id: str) -> str:
    return f"datasets/{dataset_id}/exports/{export_id}"


def parse_export(name: str, field: str = "name") -> tuple[str, str]:
    """(dataset id, export id) of ``datasets/{dataset_id}/exports/{export_id}``."""
    if not name:
        raise _missing(field, "datasets/{dataset_id}/exports/{export_id}")
    match = _EXPORT.match(name)
    if not match:
        raise invalid_argument(
            f"{field} {name!r} is not an export name: expected "
            "datasets/{dataset_id}/exports/{export_id} (ExportDatasetResponse.export)",
            field,
        )
    return match.group(1), match.group(2)
