"""CheckIntegrity: every blob a dataset (head and snapshots) relies on exists and is intact.

Without ``verify_hashes`` each blob is checked to exist with the recorded size (cheap:
a stat or a HEAD request); with it, every blob is re-hashed (reads all bytes). A problem
lists the image paths that use the blob and the snapshots that reference it.
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import select
from sqlalchemy.orm import Session

from dataset_svc import names, snapshots
from dataset_svc.catalog.models import Blob, Image, Snapshot, SnapshotBlob
from dataset_svc.errors import ServiceError
from visionmesh.store import KeyNotFound, ObjectStore, blob_key
from visionmesh.v1 import dataset_pb2

WORKERS = 8


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
) -> dataset_pb2.CheckIntegrityResponse:
    paths: dict[str, list[str]] = defaultdict(list)
    sizes: dict[str, int | None] = {}
    for sha256, path, size in session.execute(
        select(Image.sha256, Image.path, Image.size_bytes).where(Image.dataset_id == dataset_id)
    ):
        paths[sha256].append(path)
        sizes[sha256] = size
    affected: dict[str, list[str]] = defaultdict(list)
    for sha256, snapshot_id, size in session.execute(
        select(SnapshotBlob.sha256, SnapshotBlob.snapshot_id, Blob.size_bytes)
        .join(Snapshot, Snapshot.id == SnapshotBlob.snapshot_id)
        .outerjoin(Blob, Blob.sha256 == SnapshotBlob.sha256)
        .where(Snapshot.dataset_id == dataset_id)
    ):
        affected[sha256].append(names.snapshot_name(dataset_id, snapshot_id))
        sizes.setdefault(sha256, size)
    digests = sorted(sizes)
    with ThreadPoolExecutor(WORKERS) as pool:
        verdicts = list(pool.map(lambda d: _check_blob(store, d, sizes[d], verify_hashes), digests))
    response = dataset_pb2.CheckIntegrityResponse(checked_blob_count=len(digests))
    bad = {d: v for d, v in zip(digests, verdicts, strict=True) if v}
    snapshot_paths = _paths_in_snapshots(session, store, dataset_id, bad, paths)
    for digest, kind in bad.items():
        response.problems.add(
            sha256=digest,
            kind=kind,
            paths=sorted(set(paths.get(digest, [])) | snapshot_paths.get(digest, set())),
            affected_snapshots=sorted(affected.get(digest, [])),
        )
    response.ok = not bad
    return response


def _paths_in_snapshots(
    session: Session,
    store: ObjectStore,
    dataset_id: str,
    bad: dict[str, str],
    head_paths: dict[str, list[str]],
) -> dict[str, set[str]]:
    """Paths of bad blobs that are no longer in the head, read from the snapshots' manifests."""
    wanted = {d for d in bad if d not in head_paths}
    found: dict[str, set[str]] = defaultdict(set)
    if not wanted:
        return found
    rows = session.scalars(
        select(Snapshot)
        .join(SnapshotBlob, SnapshotBlob.snapshot_id == Snapshot.id)
        .where(Snapshot.dataset_id == dataset_id, SnapshotBlob.sha256.in_(wanted))
        .distinct()
    )
    for row in rows:
        try:
            manifest = snapshots.read_manifest(store, row)
        except ServiceError:
            continue
        for image in manifest["images"]:
            if image.get("sha256") in wanted:
                found[image["sha256"]].add(image["file_name"])
    return found
