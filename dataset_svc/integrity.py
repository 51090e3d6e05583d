"""CheckIntegrity: every blob a dataset (head and snapshots) relies on exists and is intact.

Without ``verify_hashes`` each blob is checked to exist with the recorded size (cheap:
a stat or a HEAD request); with it, every blob is re-hashed (reads all bytes). A problem
lists the image paths that use the blob and the snapshots that reference it.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataset_svc import names, snapshots
from dataset_svc.catalog.models import Blob, Image, RetainedBlob, Snapshot
from visionmesh.errors import ServiceError
from visionmesh.store import KeyNotFound, ObjectStore, blob_key

WORKERS = 8


@dataclass
class BlobProblem:
    sha256: str
    kind: str  # "missing" or "corrupt"
    paths: list[str]  # the image paths using the blob (head and snapshots)
    affected_snapshots: list[str]  # snapshot resource names


@dataclass
class IntegrityReport:
    checked_blob_count: int
    problems: list[BlobProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _check_blob(store: ObjectStore, sha256: str, size: int | None, verify: bool) -> str | None:
    """None when fine, else "missing" or "corrupt"."""
    key = blob_key(sha256)
    try:
        actual = store.size(key)
        if size is not None and actual != size:
            return "corrupt"
        if verify and store.object_sha256(key) != sha256:
            return "corrupt"
    except KeyNotFound:
        return "missing"
    return None


def check(
    session: Session, store: ObjectStore, dataset_id: str, verify_hashes: bool
) -> IntegrityReport:
    paths: dict[str, list[str]] = defaultdict(list)
    sizes: dict[str, int | None] = {}
    for sha256, path, size in session.execute(
        select(Image.sha256, Image.path, Image.size_bytes).where(Image.dataset_id == dataset_id)
    ):
        paths[sha256].append(path)
        sizes[sha256] = size
    # Blobs that left the head but that snapshots may still use (dataset_svc.retention).
    for sha256, size in session.execute(
        select(RetainedBlob.sha256, Blob.size_bytes)
        .outerjoin(Blob, Blob.sha256 == RetainedBlob.sha256)
        .where(RetainedBlob.dataset_id == dataset_id)
    ):
        sizes.setdefault(sha256, size)
    digests = sorted(sizes)
    with ThreadPoolExecutor(WORKERS) as pool:
        verdicts = list(pool.map(lambda d: _check_blob(store, d, sizes[d], verify_hashes), digests))
    report = IntegrityReport(checked_blob_count=len(digests))
    bad = {d: v for d, v in zip(digests, verdicts, strict=True) if v}
    in_snapshots = _uses_in_snapshots(session, store, dataset_id, set(bad))
    for digest, kind in bad.items():
        snapshot_paths, affected = in_snapshots.get(digest, (set(), set()))
        report.problems.append(
            BlobProblem(
                sha256=digest,
                kind=kind,
                paths=sorted(set(paths.get(digest, [])) | snapshot_paths),
                affected_snapshots=sorted(affected),
            )
        )
    return report


def _uses_in_snapshots(
    session: Session, store: ObjectStore, dataset_id: str, wanted: set[str]
) -> dict[str, tuple[set[str], set[str]]]:
    """For each wanted blob: the paths it has and the snapshots that use it, from the
    manifests (read only when some blob is bad)."""
    found: dict[str, tuple[set[str], set[str]]] = {}
    if not wanted:
        return found
    for row in session.scalars(select(Snapshot).where(Snapshot.dataset_id == dataset_id)):
        try:
            manifest = snapshots.read_manifest(store, row)
        except ServiceError:
            continue
        name = names.snapshot_name(dataset_id, row.id)
        for image in manifest["images"]:
            if image.get("sha256") in wanted:
                paths, affected = found.setdefault(image["sha256"], (set(), set()))
                paths.add(image["file_name"])
                affected.add(name)
    return found
