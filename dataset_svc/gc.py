"""Garbage collection: remove blobs (and orphan manifests/exports) nothing references.

``python -m dataset_svc.gc`` runs one pass against the configured catalog and store; the
server also runs one every ``VISIONMESH_GC_INTERVAL_SECONDS``.

A blob is garbage when no head image names it and no dataset retains it for its
snapshots (see :mod:`dataset_svc.retention`). Candidates are
processed in batches; each batch holds the blob guard (see
:func:`dataset_svc.catalog.db.lock_blob_references`), re-checks the references inside that
transaction, deletes the objects and stamps ``last_gc_time``. An upload that began before
a batch re-checks its blobs at commit under the same guard, so no committed row ever
references a deleted blob.
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import delete, select, update

from dataset_svc.catalog import Catalog, lock_blob_references, open_catalog
from dataset_svc.catalog.models import (
    Blob,
    BlobGuard,
    Dataset,
    Image,
    RetainedBlob,
    Snapshot,
    utcnow,
)
from visionmesh.store import BLOB_PREFIX, KeyNotFound, ObjectStore, open_store, sha256_from_blob_key

log = logging.getLogger("dataset_svc.gc")
BATCH = 1000
# Staged blobs of an upload whose server died; a live batch touches its folder per file.
STALE_STAGING_SECONDS = 3600
_SNAPSHOT_KEY = re.compile(r"^datasets/([^/]+)/snapshots/([^/]+)/")
_DATASET_KEY = re.compile(r"^(?:datasets|exports)/([^/]+)/")


@dataclass
class GcReport:
    blobs_seen: int = 0
    blobs_deleted: int = 0
    objects_deleted: int = 0
    staging_removed: int = 0


def _batches(items: Iterator[str], size: int) -> Iterator[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stamp(session) -> None:  # type: ignore[no-untyped-def]
    lock_blob_references(session)
    session.execute(update(BlobGuard).where(BlobGuard.id == 1).values(last_gc_time=utcnow()))


def _delete(store: ObjectStore, key: str) -> bool:
    try:
        store.delete(key)
        return True
    except KeyNotFound:
        return False


def collect(
    catalog: Catalog,
    store: ObjectStore,
    batch_size: int = BATCH,
    stale_staging_seconds: float = STALE_STAGING_SECONDS,
) -> GcReport:
    report = GcReport()
    report.staging_removed = store.remove_stale_staging(stale_staging_seconds)
    digests = (d for d in map(sha256_from_blob_key, store.list(BLOB_PREFIX)) if d)
    for batch in _batches(digests, batch_size):
        report.blobs_seen += len(batch)
        with catalog.session() as session:
            _stamp(session)
            used = set(session.scalars(select(Image.sha256).where(Image.sha256.in_(batch))))
            used.update(
                session.scalars(select(RetainedBlob.sha256).where(RetainedBlob.sha256.in_(batch)))
            )
            garbage = [d for d in batch if d not in used]
            for digest in garbage:
                if _delete(store, f"{BLOB_PREFIX}{digest[:2]}/{digest}"):
                    report.blobs_deleted += 1
            if garbage:
                session.execute(delete(Blob).where(Blob.sha256.in_(garbage)))
    for prefix in ("datasets/", "exports/"):
        for batch in _batches(store.list(prefix), batch_size):
            with catalog.session() as session:
                _stamp(session)
                report.objects_deleted += _orphans(session, store, batch)
    log.info(
        "gc: %d blobs seen, %d deleted; %d orphan objects deleted; %d stale staging removed",
        report.blobs_seen,
        report.blobs_deleted,
        report.objects_deleted,
        report.staging_removed,
    )
    return report


def take_back(catalog: Catalog, store: ObjectStore, digests: Iterable[str]) -> int:
    """Delete the blobs among ``digests`` that no image or snapshot uses; how many went.

    For what a refused or failed upload wrote (nothing refused may stay in the store).
    Under the blob guard like a GC batch; ``last_gc_time`` is stamped after the deletes,
    so an upload that found one of these blobs stored (and so did not write it) re-checks
    its blobs at commit and answers ABORTED instead of committing a dangling row.
    """
    present = [d for d in sorted(set(digests)) if store.has_blob(d)]
    if not present:
        return 0
    deleted = 0
    with catalog.session() as session:
        lock_blob_references(session)
        used = set(session.scalars(select(Image.sha256).where(Image.sha256.in_(present))))
        used.update(
            session.scalars(select(RetainedBlob.sha256).where(RetainedBlob.sha256.in_(present)))
        )
        garbage = [d for d in present if d not in used]
        for digest in garbage:
            if _delete(store, f"{BLOB_PREFIX}{digest[:2]}/{digest}"):
                deleted += 1
        if garbage:
            session.execute(delete(Blob).where(Blob.sha256.in_(garbage)))
            session.execute(
                update(BlobGuard).where(BlobGuard.id == 1).values(last_gc_time=utcnow())
            )
    return deleted


def _orphans(session, store: ObjectStore, keys: list[str]) -> int:  # type: ignore[no-untyped-def]
    """Delete manifests of snapshots and objects of datasets the catalog no longer has."""
    dataset_ids = {m.group(1) for k in keys if (m := _DATASET_KEY.match(k))}
    snapshot_ids = {m.group(2) for k in keys if (m := _SNAPSHOT_KEY.match(k))}
    live_datasets = set(session.scalars(select(Dataset.id).where(Dataset.id.in_(dataset_ids))))
    live_snapshots = set(session.scalars(select(Snapshot.id).where(Snapshot.id.in_(snapshot_ids))))
    deleted = 0
    for key in keys:
        dataset = _DATASET_KEY.match(key)
        snapshot = _SNAPSHOT_KEY.match(key)
        orphan = (dataset is not None and dataset.group(1) not in live_datasets) or (
            snapshot is not None and snapshot.group(2) not in live_snapshots
        )
        if orphan and _delete(store, key):
            deleted += 1
    return deleted


def main(argv: Sequence[str] | None = None) -> int:
    from visionmesh import config

    parser = argparse.ArgumentParser(
        prog="python -m dataset_svc.gc", description="remove blobs nothing references"
    )
    parser.add_argument(
        "--stale-staging-seconds",
        type=float,
        default=STALE_STAGING_SECONDS,
        help="remove upload staging untouched this long (default %(default)s; a live upload "
        "touches its staging with every file)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = config.load()
    catalog = open_catalog(settings.database_url)
    with open_store(settings.store_url) as store:
        report = collect(catalog, store, stale_staging_seconds=args.stale_staging_seconds)
    catalog.close()
    print(
        f"gc: {report.blobs_seen} blobs seen, {report.blobs_deleted} deleted, "
        f"{report.objects_deleted} orphan objects deleted, "
        f"{report.staging_removed} stale staging folders removed"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
