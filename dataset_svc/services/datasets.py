"""DatasetService: thin adapter from requests to the dataset_svc modules.

Every handler resolves the caller (:mod:`dataset_svc.identity`) and the dataset through
:mod:`dataset_svc.permissions` first. Reading (get, list, images, annotations, snapshots,
diff, integrity check, export) needs visibility; changing (update, delete, upload, delete
images, import, snapshot) needs ownership. Handlers parse the request, call the domain
modules (which answer rows and dataclasses, and do the store's I/O) and build the response
with :mod:`dataset_svc.messages`.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.orm import Session

from dataset_svc import (
    content,
    datasets,
    diff,
    documents,
    exports,
    identity,
    images,
    imports,
    integrity,
    messages,
    names,
    pagination,
    snapshots,
    uploads,
)
from dataset_svc.app import App
from dataset_svc.catalog.models import Dataset, User, utcnow
from dataset_svc.permissions import readable_dataset, readable_row, writable_dataset
from dataset_svc.validation import check_enums
from visionmesh.errors import grpc_errors, invalid_argument, not_found
from visionmesh.v1 import dataset_pb2, dataset_pb2_grpc

log = logging.getLogger("dataset_svc")


def head_info(dataset: Dataset) -> dict[str, object]:
    return {
        "dataset": names.dataset_name(dataset.id),
        "snapshot": "",
        "display_name": dataset.display_name,
        "format": "dice-standard",
        "annotation_variant": dataset.annotation_variant,
    }


def load_document_bytes(
    session: Session, app: App, user: User, name: str, field: str
) -> tuple[Dataset, bytes]:
    """(dataset, DICE document as JSON bytes) of ``datasets/{id}`` (head) or a snapshot."""
    ref = names.parse_dataset_or_snapshot(name, field)
    dataset = readable_dataset(session, user, ref.dataset_id)
    if ref.snapshot_id is None:
        return dataset, documents.head_json(session, dataset.id, head_info(dataset)).data
    row = snapshots.get(session, dataset.id, ref.snapshot_id)
    return dataset, snapshots.read_manifest_bytes(app.store, row)


def load_document(
    session: Session, app: App, user: User, name: str, field: str
) -> tuple[Dataset, dict[str, Any]]:
    """(dataset, DICE document) of ``datasets/{id}`` (head) or a snapshot."""
    dataset, data = load_document_bytes(session, app, user, name, field)
    return dataset, json.loads(data)


def dataset_messages(
    db: Session | Connection, rows: Sequence[tuple[Any, str]], *, with_health: bool = False
) -> list[dataset_pb2.Dataset]:
    """Dataset messages of (row, owner username) pairs, summaries read through ``db``."""
    return messages.datasets(
        rows,
        functools.partial(datasets.summaries, db),
        functools.partial(datasets.health, db) if with_health else None,
    )


@grpc_errors(check_request=check_enums)
class DatasetService(dataset_pb2_grpc.DatasetServiceServicer):
    def __init__(self, app: App) -> None:
        self.app = app

    # -- datasets ----------------------------------------------------------------------------

    def CreateDataset(self, request, context):  # type: ignore[no-untyped-def]
        with self.app.catalog.session() as session:
            user = identity.caller(session)
            row = datasets.create(session, user, request.dataset)
            message = dataset_messages(session, [(row, user.username)])[0]
        return dataset_pb2.CreateDatasetResponse(dataset=message)

    def GetDataset(self, request, context):  # type: ignore[no-untyped-def]
        dataset_id = names.parse_dataset(request.name)
        with self.app.catalog.reader() as db:  # read-only: Core queries, cached summaries
            user = identity.caller(db)
            row = readable_row(db, user, dataset_id)
            message = dataset_messages(db, [(row, row.owner_username)], with_health=True)[0]
        return dataset_pb2.GetDatasetResponse(dataset=message)

    def ListDatasets(self, request, context):  # type: ignore[no-untyped-def]
        with self.app.catalog.reader() as db:
            page = datasets.list_visible(
                db,
                identity.caller(db),
                filter_text=request.filter,
                order_by=request.order_by,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return messages.list_datasets(page, functools.partial(datasets.summaries, db))

    def UpdateDataset(self, request, context):  # type: ignore[no-untyped-def]
        dataset_id = names.parse_dataset(request.dataset.name, "dataset.name")
        with self.app.catalog.session() as session:
            user = identity.caller(session)
            row = writable_dataset(session, user, dataset_id, "update")
            datasets.update(session, row, request.dataset, list(request.update_mask.paths))
            message = dataset_messages(session, [(row, user.username)])[0]
        return dataset_pb2.UpdateDatasetResponse(dataset=message)

    def DeleteDataset(self, request, context):  # type: ignore[no-untyped-def]
        dataset_id = names.parse_dataset(request.name)
        with self.app.catalog.session() as session:
            user = identity.caller(session)
            writable_dataset(session, user, dataset_id, "delete")
            datasets.delete_dataset(session, dataset_id)
        datasets.delete_objects(self.app.store, dataset_id)  # once the rows are gone
        return dataset_pb2.DeleteDatasetResponse()

    # -- images ------------------------------------------------------------------------------

    def UploadImages(self, request_iterator: Iterator[dataset_pb2.UploadImagesRequest], context):  # type: ignore[no-untyped-def]
        first = next(request_iterator, None)
        if first is None:
            raise invalid_argument("empty UploadImages stream: send a header first", "header")
        header = messages.upload_header(first)
        uploads.check_path_prefix(header.path_prefix)
        on_conflict = messages.on_conflict(header.on_conflict)
        dataset_id = names.parse_dataset(header.parent, "header.parent")
        with self.app.catalog.session() as session:
            writable_dataset(session, identity.caller(session), dataset_id, "upload images to")
            existing = uploads.existing_paths(session, dataset_id, on_conflict)
        started = utcnow()
        receiver = uploads.Receiver(
            self.app.settings,
            self.app.store,
            header.path_prefix,
            on_conflict=on_conflict,
            existing=existing,
        )
        with uploads.unused_blobs_taken_back(self.app.catalog, self.app.store, receiver) as kept:
            received = uploads.run(receiver, messages.UploadChunks(request_iterator), context)
            with self.app.catalog.session() as session:
                user = identity.caller(session)
                dataset = writable_dataset(session, user, dataset_id, "upload images to")
                changed, conflicts = uploads.commit(
                    session, dataset_id, received, on_conflict, started, self.app.store
                )
                if changed:
                    datasets.touch(dataset)
                response = messages.upload_images(changed, received, conflicts)
            kept.update(row.sha256 for row in changed)  # committed: these blobs stay
        return response

    def ListImages(self, request, context):  # type: ignore[no-untyped-def]
        dataset_id = names.parse_dataset(request.parent, "parent")
        with self.app.catalog.session() as session:
            readable_dataset(session, identity.caller(session), dataset_id)
            page = images.list_page(
                session,
                dataset_id,
                parent=request.parent,
                filter_text=request.filter,
                page_size=request.page_size,
                page_token=request.page_token,
            )
            return messages.list_images(page)

    def DeleteImages(self, request, context):  # type: ignore[no-untyped-def]
        dataset_id = names.parse_dataset(request.parent, "parent")
        if not request.images:
            raise invalid_argument("images is empty: name the images to delete", "images")
        with self.app.catalog.session() as session:
            dataset = writable_dataset(
                session, identity.caller(session), dataset_id, "delete images of"
            )
            ids = images.resolve(session, dataset_id, list(request.images))
            deleted, deleted_annotations = images.delete_images(session, dataset_id, ids)
            datasets.touch(dataset)
        return dataset_pb2.DeleteImagesResponse(
            deleted_count=deleted, deleted_annotation_count=deleted_annotations
        )

    def GetImageUrl(self, request, context):  # type: ignore[no-untyped-def]
        dataset_id, image_id = names.parse_image(request.name)
        with self.app.catalog.session() as session:
            readable_dataset(session, identity.caller(session), dataset_id)
            row = images.get(session, dataset_id, image_id)
        return messages.image_url(images.url(self.app.store, row, request.expire_seconds))

    # -- annotations -------------------------------------------------------------------------

    def ImportAnnotations(self, request, context):  # type: ignore[no-untyped-def]
        dataset_id = names.parse_dataset(request.parent, "parent")
        with self.app.catalog.session() as session:
            dataset = writable_dataset(
                session, identity.caller(session), dataset_id, "import annotations into"
            )
            result = imports.import_annotations(
                session,
                dataset,
                request.files,
                fmt=messages.import_format(request.format),
                class_names=request.class_names,
                replace_existing=request.replace_existing,
                allow_warnings=request.allow_warnings,
            )
            datasets.touch(dataset)
        return messages.import_annotations(result)

    def GetAnnotations(self, request, context):  # type: ignore[no-untyped-def]
        with self.app.catalog.session() as session:
            user = identity.caller(session)
            _, data = load_document_bytes(session, self.app, user, request.parent, "parent")
        return dataset_pb2.GetAnnotationsResponse(document=data.decode())

    # -- snapshots ---------------------------------------------------------------------------

    def CreateSnapshot(self, request, context):  # type: ignore[no-untyped-def]
        dataset_id = names.parse_dataset(request.parent, "parent")
        store = self.app.store
        with (
            snapshots.manifests_removed_unless_committed(store) as written,
            self.app.catalog.session() as session,
        ):
            user = identity.caller(session)
            dataset = writable_dataset(session, user, dataset_id, "snapshot")
            row = snapshots.create(session, store, dataset, user, request.snapshot, written)
            message = messages.snapshot(row, user.username)
        return dataset_pb2.CreateSnapshotResponse(snapshot=message)

    def ListSnapshots(self, request, context):  # type: ignore[no-untyped-def]
        dataset_id = names.parse_dataset(request.parent, "parent")
        page = pagination.page(request.page_size, request.page_token, request.parent)
        with self.app.catalog.session() as session:
            readable_dataset(session, identity.caller(session), dataset_id)
            rows, total = snapshots.list_page(session, dataset_id, page.offset, page.size)
            creators = snapshots.creator_names(session, rows)
        return dataset_pb2.ListSnapshotsResponse(
            snapshots=[messages.snapshot(r, creators.get(r.creator_id, "")) for r in rows],
            next_page_token=page.next_token(len(rows), total),
        )

    def GetSnapshot(self, request, context):  # type: ignore[no-untyped-def]
        dataset_id, snapshot_id = names.parse_snapshot(request.name)
        with self.app.catalog.session() as session:
            readable_dataset(session, identity.caller(session), dataset_id)
            row = snapshots.get(session, dataset_id, snapshot_id)
            creators = snapshots.creator_names(session, [row])
        return dataset_pb2.GetSnapshotResponse(
            snapshot=messages.snapshot(row, creators.get(row.creator_id, ""))
        )

    def DiffSnapshots(self, request, context):  # type: ignore[no-untyped-def]
        base_dataset, _ = names.parse_snapshot(request.base, "base")
        target_name = request.target or names.dataset_name(base_dataset)  # default: the head
        target = names.parse_dataset_or_snapshot(target_name, "target")
        if target.dataset_id != base_dataset:
            raise invalid_argument(
                f"target {target_name} is not of the base's dataset datasets/{base_dataset}: "
                "diff snapshots of one dataset (or its head)",
                "target",
            )
        with self.app.catalog.session() as session:
            user = identity.caller(session)
            _, base_doc = load_document(session, self.app, user, request.base, "base")
            _, target_doc = load_document(session, self.app, user, target_name, "target")
        return messages.diff(diff.diff(base_doc, target_doc))

    def CheckIntegrity(self, request, context):  # type: ignore[no-untyped-def]
        dataset_id = names.parse_dataset(request.name)
        with self.app.catalog.session() as session:
            readable_dataset(session, identity.caller(session), dataset_id)
            report = integrity.check(session, self.app.store, dataset_id, request.verify_hashes)
        return messages.integrity(report)

    def ExportDataset(self, request, context):  # type: ignore[no-untyped-def]
        with self.app.catalog.session() as session:
            user = identity.caller(session)
            dataset, document = load_document(session, self.app, user, request.name, "name")
        fmt = messages.export_format(request.format)
        task = messages.export_task(request.task_type)
        result = exports.export(
            self.app, user, dataset, document, request.name, fmt, task, request.annotations_only
        )
        return messages.export(result)

    # -- bytes out ---------------------------------------------------------------------------

    def GetImageContent(self, request, context):  # type: ignore[no-untyped-def]
        dataset_id, image_id = names.parse_image(request.name)
        content.check_thumbnail_size(request.thumbnail_size)
        with self.app.catalog.session() as session:
            readable_dataset(session, identity.caller(session), dataset_id)
            row = images.get(session, dataset_id, image_id)
            sha256, content_type = row.sha256, row.content_type
        yield from messages.http_bodies(
            *content.image_content(
                self.app.store, sha256, content_type, request.thumbnail_size, request.name
            )
        )

    def DownloadExport(self, request, context):  # type: ignore[no-untyped-def]
        dataset_id, export_id = names.parse_export(request.name)
        with self.app.catalog.session() as session:
            user = identity.caller(session)
            readable_dataset(session, user, dataset_id)
            if exports.export_id_owner(export_id) != f"u{user.id}":
                raise not_found(f"export {request.name} not found: run ExportDataset first")
        yield from messages.http_bodies(
            *content.export_content(
                self.app.store, exports.export_key(dataset_id, export_id), request.name
            )
        )
