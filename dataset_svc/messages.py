"""The one module that knows dataset_svc's protobuf types (with the servicers that use it).

Out: catalog rows and the domain modules' dataclasses -> response messages. In: the
request enums the domain takes as names (formats, tasks, on_conflict) and the
UploadImages stream's framing. Domain modules (datasets, images, snapshots, ...) import
no ``*_pb2``; a request's plain fields (strings, numbers, repeated files) go to them as
they are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

from google.api import httpbody_pb2
from google.protobuf import timestamp_pb2
from google.protobuf.message import Message

from dataset_svc import cache, names
from dataset_svc.catalog.models import Image, Snapshot, User
from dataset_svc.datasets import DatasetPage, Health, Summary
from dataset_svc.diff import Diff
from dataset_svc.exports import Export
from dataset_svc.images import ImagePage, ImageUrl
from dataset_svc.imports import Imported
from dataset_svc.integrity import IntegrityReport
from dataset_svc.uploads import FAIL, REPLACE, SKIP, Received, Rejected
from dataset_svc.validation import check_enums
from visionmesh import compat, formats
from visionmesh.errors import invalid_argument
from visionmesh.v1 import auth_pb2, common_pb2, compatibility_pb2, dataset_pb2

M = TypeVar("M", bound=Message)

# -- out: rows and dataclasses -> messages ----------------------------------------------------


def _of_fields(message_type: type[M], value: Any, **overrides: Any) -> M:
    """A message of a dataclass whose fields are named as the message's (``overrides``
    give the nested and computed ones)."""
    return message_type(**{**vars(value), **overrides})


def timestamp(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:  # SQLite returns naive datetimes; they are stored as UTC
        value = value.replace(tzinfo=UTC)
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def user(row: User) -> auth_pb2.User:
    return auth_pb2.User(
        name=names.user_name(row.username),
        username=row.username,
        create_time=timestamp(row.create_time),
    )


def category(entry: dict[str, Any]) -> common_pb2.Category:
    return common_pb2.Category(
        id=int(entry["id"]),
        name=str(entry.get("name", "")),
        supercategory=str(entry.get("supercategory") or ""),
        keypoints=[str(k) for k in entry.get("keypoints") or []],
        skeleton=[int(v) for pair in entry.get("skeleton") or [] for v in _flat(pair)],
    )


def _flat(value: Any) -> Iterable[Any]:
    return value if isinstance(value, list | tuple) else [value]


def class_count(entry: dict[str, Any]) -> common_pb2.ClassCount:
    return common_pb2.ClassCount(
        category_id=int(entry["category_id"]),
        category_name=str(entry.get("category_name", "")),
        split=str(entry.get("split", "")),
        image_count=int(entry.get("image_count", 0)),
        annotation_count=int(entry.get("annotation_count", 0)),
    )


def health(value: Health) -> dataset_pb2.DatasetHealth:
    return _of_fields(
        dataset_pb2.DatasetHealth,
        value,
        class_counts=[class_count(c) for c in value.class_counts],
    )


def dataset(
    row: Any, owner: str, summary: Summary, summary_of_health: Health | None = None
) -> dataset_pb2.Dataset:
    """A Dataset message of a dataset row (ORM or Core), its owner's username and summary."""
    return dataset_pb2.Dataset(
        name=names.dataset_name(row.id),
        display_name=row.display_name,
        description=row.description,
        visibility=row.visibility,
        owner=names.user_name(owner),
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
        image_count=summary.image_count,
        annotation_count=summary.annotation_count,
        labeled=row.labeled,
        categories=[category(c) for c in summary.categories],
        annotation_variant=row.annotation_variant,
        health=None if summary_of_health is None else health(summary_of_health),
        total_bytes=summary.total_bytes,
    )


def datasets(
    rows: Sequence[tuple[Any, str]],
    summaries: Callable[[Sequence[Any]], Mapping[str, Summary]],
    health_of: Callable[[Any], Health] | None = None,
    materialize: Callable[[Any], Any] | None = None,
) -> list[dataset_pb2.Dataset]:
    """Dataset messages of (row, owner username) pairs, with the health summary when
    ``health_of`` is given. Built messages are cached: every field comes from the row, its
    owner and its summaries, all of which change with ``update_time``; ``summaries`` and
    ``health_of`` (:func:`dataset_svc.datasets.summaries`, ``.health``) are asked for the
    rows not cached only, after ``materialize`` turned each from a row as stored into a
    processed one."""
    part = "message+health" if health_of is not None else "message"
    keys = [cache.stats.key(d.id, d.update_time, f"{part}:{owner}") for d, owner in rows]
    messages: list[dataset_pb2.Dataset | None] = [cache.stats.get(k) for k in keys]
    todo = [i for i, m in enumerate(messages) if m is None]
    if todo:
        built = {i: materialize(rows[i][0]) if materialize else rows[i][0] for i in todo}
        found = summaries(list(built.values()))
        for i in todo:
            d = built[i]
            message = dataset(
                d, rows[i][1], found[d.id], None if health_of is None else health_of(d)
            )
            cache.stats.put(keys[i], message)
            messages[i] = message
    return [m for m in messages if m is not None]


def list_datasets(
    page: DatasetPage, summaries: Callable[[Sequence[Any]], Mapping[str, Summary]]
) -> dataset_pb2.ListDatasetsResponse:
    return dataset_pb2.ListDatasetsResponse(
        datasets=datasets(
            [(d, d.owner_username) for d in page.rows], summaries, materialize=page.materialize
        ),
        next_page_token=page.next_page_token,
        total_size=page.total_size,
    )


def image(row: Image, annotation_count: int = 0) -> dataset_pb2.Image:
    return dataset_pb2.Image(
        name=names.image_name(row.dataset_id, row.id),
        path=row.path,
        sha256=row.sha256,
        width=row.width,
        height=row.height,
        size_bytes=row.size_bytes,
        content_type=row.content_type,
        split=row.split,
        create_time=timestamp(row.create_time),
        annotation_count=annotation_count,
    )


def list_images(page: ImagePage) -> dataset_pb2.ListImagesResponse:
    counts = page.annotation_counts
    return dataset_pb2.ListImagesResponse(
        images=[image(r, counts.get(r.id, 0)) for r in page.rows],
        next_page_token=page.next_page_token,
        total_size=page.total_size,
    )


def image_url(value: ImageUrl) -> dataset_pb2.GetImageUrlResponse:
    response = dataset_pb2.GetImageUrlResponse(url=value.url)
    if value.expire_time is not None:
        response.expire_time.FromDatetime(value.expire_time)
    return response


def rejected(value: Rejected) -> dataset_pb2.RejectedFile:
    return dataset_pb2.RejectedFile(path=value.path, reason=value.reason)


def upload_images(
    changed: Sequence[Image], received: Received, conflicts: Sequence[Rejected]
) -> dataset_pb2.UploadImagesResponse:
    return dataset_pb2.UploadImagesResponse(
        images=[image(row) for row in changed],
        deduplicated_count=received.deduplicated,
        skipped=[rejected(r) for r in (*received.skipped, *conflicts)],
        received_bytes=received.received_bytes,
    )


def issue(problem: formats.Problem) -> common_pb2.Issue:
    severity = (
        common_pb2.Issue.SEVERITY_ERROR
        if problem.severity == formats.ERROR
        else common_pb2.Issue.SEVERITY_WARNING
    )
    return common_pb2.Issue(severity=severity, path=problem.path, message=problem.message)


def import_annotations(result: Imported) -> dataset_pb2.ImportAnnotationsResponse:
    return _of_fields(
        dataset_pb2.ImportAnnotationsResponse,
        result,
        warnings=[issue(p) for p in result.warnings],
    )


def snapshot(row: Snapshot, creator: str) -> dataset_pb2.Snapshot:
    return dataset_pb2.Snapshot(
        name=names.snapshot_name(row.dataset_id, row.id),
        version_name=row.version_name or "",
        description=row.description,
        automatic=row.automatic,
        reason=row.reason,
        create_time=timestamp(row.create_time),
        creator=names.user_name(creator),
        image_count=row.image_count,
        annotation_count=row.annotation_count,
        categories=[category(c) for c in row.categories or []],
        class_counts=[class_count(c) for c in row.class_counts or []],
        manifest_key=row.manifest_key,
        manifest_sha256=row.manifest_sha256,
    )


def diff(value: Diff) -> dataset_pb2.DiffSnapshotsResponse:
    return _of_fields(
        dataset_pb2.DiffSnapshotsResponse,
        value,
        class_changes=[_of_fields(dataset_pb2.ClassCountChange, c) for c in value.class_changes],
    )


def integrity(report: IntegrityReport) -> dataset_pb2.CheckIntegrityResponse:
    return _of_fields(
        dataset_pb2.CheckIntegrityResponse,
        report,
        problems=[_of_fields(dataset_pb2.BlobProblem, p) for p in report.problems],
        ok=report.ok,
    )


def export(value: Export) -> dataset_pb2.ExportDatasetResponse:
    return _of_fields(dataset_pb2.ExportDatasetResponse, value)


def http_bodies(content_type: str, pieces: Iterable[bytes]) -> Iterator[httpbody_pb2.HttpBody]:
    """Bytes as HttpBody messages; the first carries the content type."""
    first = True
    for data in pieces:
        yield httpbody_pb2.HttpBody(content_type=content_type if first else "", data=data)
        first = False


KIND_ENUM = {
    formats.IMAGE_LABEL: compatibility_pb2.ANNOTATION_KIND_IMAGE_LABEL,
    formats.BOX: compatibility_pb2.ANNOTATION_KIND_BOX,
    formats.POLYGON: compatibility_pb2.ANNOTATION_KIND_POLYGON,
    formats.KEYPOINTS: compatibility_pb2.ANNOTATION_KIND_KEYPOINTS,
}
CONVERSION_ENUM = {
    compat.NATIVE: compatibility_pb2.CONVERSION_NATIVE,
    compat.POLYGON_TO_BBOX: compatibility_pb2.CONVERSION_POLYGON_TO_BBOX,
    compat.RASTERIZE: compatibility_pb2.CONVERSION_RASTERIZE,
    compat.DOMINANT_CLASS: compatibility_pb2.CONVERSION_DOMINANT_CLASS,
    compat.NONE: compatibility_pb2.CONVERSION_NONE,
}


def task_enum(task: str) -> int:
    return common_pb2.TaskType.Value(f"TASK_TYPE_{task.upper()}")


def conversion_matrix(
    rules: Iterable[compat.ConversionRule],
) -> compatibility_pb2.GetConversionMatrixResponse:
    return compatibility_pb2.GetConversionMatrixResponse(
        rules=[
            compatibility_pb2.ConversionRule(
                annotation_kind=KIND_ENUM[r.annotation_kind],
                task_type=task_enum(r.task),
                conversion=CONVERSION_ENUM[r.conversion],
                lossy=r.lossy,
                note=r.note,
            )
            for r in rules
        ]
    )


def compatibility_report(
    report: compat.CompatibilityReport,
) -> compatibility_pb2.CompatibilityReport:
    return compatibility_pb2.CompatibilityReport(
        compatible=report.compatible,
        task_type=task_enum(report.task),
        conversion=CONVERSION_ENUM.get(report.conversion, compatibility_pb2.CONVERSION_UNSPECIFIED),
        lossy=report.lossy,
        total_image_count=report.total_images,
        usable_image_count=report.usable_images,
        dropped_annotation_count=report.dropped_annotations,
        class_counts=[
            common_pb2.ClassCount(
                category_id=c.category_id,
                category_name=c.category_name,
                split=c.split,
                image_count=c.image_count,
                annotation_count=c.annotation_count,
            )
            for c in report.class_counts
        ],
        warnings=report.warnings,
        errors=report.errors,
        annotation_kinds=[KIND_ENUM[k] for k in report.annotation_kinds if k in KIND_ENUM],
        split_generated=report.split_generated,
        split_seed=report.split_seed,
    )


# -- in: request enums -> the names the domain takes --------------------------------------------

ANNOTATION_FORMATS = {
    common_pb2.ANNOTATION_FORMAT_DICE: "dice",
    common_pb2.ANNOTATION_FORMAT_COCO: "coco",
    common_pb2.ANNOTATION_FORMAT_YOLO: "yolo",
    common_pb2.ANNOTATION_FORMAT_IMAGEFOLDER: "imagefolder",
}
ON_CONFLICT = {
    dataset_pb2.UploadImagesHeader.OnConflict.ON_CONFLICT_SKIP: SKIP,
    dataset_pb2.UploadImagesHeader.OnConflict.ON_CONFLICT_FAIL: FAIL,
}


def import_format(value: int) -> str | None:
    """The format an import is read as (None: recognized from its files)."""
    return ANNOTATION_FORMATS.get(value)


def export_format(value: int) -> str:
    """The format of an export (unspecified: DICE)."""
    if value == common_pb2.ANNOTATION_FORMAT_UNSPECIFIED:
        return "dice"
    fmt = ANNOTATION_FORMATS.get(value)
    if fmt is None:
        raise invalid_argument(f"unknown format {value}", "format")
    return fmt


def export_task(task_type: int) -> str | None:
    """The task an export converts for (None when unspecified)."""
    if task_type == common_pb2.TASK_TYPE_UNSPECIFIED:
        return None
    try:
        return formats.normalize_task(common_pb2.TaskType.Name(task_type))
    except ValueError:
        raise invalid_argument(f"unknown task_type {task_type}", "task_type") from None


def task_types() -> list[int]:
    """Every TaskType value but UNSPECIFIED."""
    return [t for t in common_pb2.TaskType.values() if t != common_pb2.TASK_TYPE_UNSPECIFIED]


def required_task(task_type: int) -> str:
    """The task a compatibility check is for (INVALID_ARGUMENT when unspecified)."""
    if (
        task_type == common_pb2.TASK_TYPE_UNSPECIFIED
        or task_type not in common_pb2.TaskType.values()
    ):
        raise invalid_argument(
            "task_type is required: one of "
            + ", ".join(n for n in common_pb2.TaskType.keys() if not n.endswith("UNSPECIFIED")),
            "task_type",
        )
    return formats.normalize_task(common_pb2.TaskType.Name(task_type))


def on_conflict(value: int) -> str:
    """What an upload does with paths the dataset has (unspecified: replace)."""
    return ON_CONFLICT.get(value, REPLACE)


def upload_header(first: dataset_pb2.UploadImagesRequest) -> dataset_pb2.UploadImagesHeader:
    """The header of an UploadImages stream (its first message), enums checked."""
    if first.WhichOneof("payload") != "header":
        raise invalid_argument(
            "the first UploadImages message must be the header (parent, on_conflict, "
            "path_prefix); chunks come after it",
            "header",
        )
    header = first.header
    check_enums(header, "header.")
    return header


class UploadChunks:
    """The file chunks (``FileChunk`` messages, single or packed) of an UploadImages stream
    after its header, in order, up to its ``end`` message, whose ``file_count`` is then
    ``end_file_count`` (a :class:`dataset_svc.uploads.ChunkStream`)."""

    def __init__(self, requests: Iterator[dataset_pb2.UploadImagesRequest]) -> None:
        self.requests = requests
        self.end_file_count: int | None = None

    def __iter__(self) -> Iterator[dataset_pb2.FileChunk]:
        requests = self.requests
        for request in requests:
            kind = request.WhichOneof("payload")
            if kind == "chunk":
                yield request.chunk
            elif kind == "chunks":
                yield from request.chunks.chunks
            elif kind == "end":
                self.end_file_count = request.end.file_count
                for _ in requests:  # waits for the client to close its side
                    raise invalid_argument("nothing may follow the end message", "end")
                return
            else:
                raise invalid_argument(
                    "only the first UploadImages message may be a header", "header"
                )
