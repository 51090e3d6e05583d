"""Which blobs the snapshots of a dataset keep alive: recorded when images leave the head.

A snapshot's blobs are the head's blobs at the moment it is taken, and the head's image
rows keep those alive. So taking a snapshot pins nothing (it costs the manifest only);
an image that leaves the head, deleted or replaced by other bytes, while a snapshot may
hold it, has its blob recorded in ``retained_blobs`` for its dataset first. The garbage
collector keeps every blob an image row or a retained row names; retained rows go with
their dataset.

"May hold it": the image's id is at most the ``image_watermark`` of the dataset's newest
snapshot (the highest image id when it was taken; ids only grow). An image added after
every snapshot leaves nothing behind. Snapshots and departures both hold the blob guard,
so they never interleave.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_, exists, func, insert, select
from sqlalchemy.orm import Session

from dataset_svc.catalog.db import lock_blob_references
from dataset_svc.catalog.models import Image, RetainedBlob, Snapshot

_BATCH = 500


def retain_departing(session: Session, dataset_id: str, image_ids: Iterable[int]) -> None:
    """Retain the blobs of these head images, about to be deleted or given other bytes,
    where a snapshot of their dataset may reference them. Call before changing the rows."""
    lock_blob_references(session)
    watermark = session.scalar(
        select(func.max(Snapshot.image_watermark)).where(Snapshot.dataset_id == dataset_id)
    )
    if not watermark:
        return
    ids = sorted(set(image_ids))
    already = exists().where(
        and_(RetainedBlob.dataset_id == Image.dataset_id, RetainedBlob.sha256 == Image.sha256)
    )
    for start in range(0, len(ids), _BATCH):
        departing = (
            select(Image.dataset_id, Image.sha256)
            .where(
                Image.dataset_id == dataset_id,
                Image.id.in_(ids[start : start + _BATCH]),
                Image.id <= watermark,
                ~already,
            )
            .distinct()
        )
        session.execute(insert(RetainedBlob).from_select(["dataset_id", "sha256"], departing))


def watermark(session: Session) -> int:
    """The highest image id so far (a new snapshot's ``image_watermark``)."""
    return session.scalar(select(func.max(Image.id))) or 0
