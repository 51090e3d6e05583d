"""ExportDataset: a zip of the head or a snapshot in DICE (annotations.json + meta.json),
COCO or YOLO (or ImageFolder), written to ``exports/<dataset_id>/<export_id>.zip``.

The export is the resource ``datasets/{dataset_id}/exports/{export_id}``, where export_id is
``<snapshot_id|head>.<format>[-<task>][-labels].u<user id>``: each caller's exports are
their own objects (a reader of a public dataset never overwrites its owner's export), and
DownloadExport serves one to the caller who made it only.

Annotation files come from the formats library's writers; images are streamed from their
blobs into the zip (never held whole in memory) at the path the format wants (DICE and
COCO keep the original relative paths). For YOLO and COCO, ``task_type`` converts the
annotations first (compatibility rules; FAILED_PRECONDITION when impossible).

``url``: a presigned GET URL for S3; for the local-folder store, the gateway path of
DownloadExport, ``/v1/datasets/{dataset_id}/exports/{export_id}:download``.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dataset_svc import names
from dataset_svc.app import App
from dataset_svc.catalog.models import Dataset, User
from visionmesh import compat, formats
from visionmesh.errors import failed_precondition, invalid_argument
from visionmesh.store import LocalStore, blob_key

COMPRESSED = {".jpg", ".jpeg", ".png", ".webp", ".gif"}


@dataclass
class Export:
    export_key: str
    export: str  # the resource name datasets/{id}/exports/{export_id}
    url: str
    size_bytes: int
    sha256: str
    image_count: int
    annotation_count: int


def export_id_owner(export_id: str) -> str:
    """The ``u<user id>`` an export id ends with."""
    return export_id.rsplit(".", 1)[-1]


def export_key(dataset_id: str, export_id: str) -> str:
    return f"exports/{dataset_id}/{export_id}.zip"


def _prepare(document: dict[str, Any], fmt: str, task: str | None) -> formats.Dataset:
    read = formats.from_dice_dict(document)
    dataset = read.dataset
    if task is None or fmt == "dice":
        return dataset
    report = compat.check(dataset, task)
    if not report.compatible:
        raise failed_precondition(
            f"cannot export for {task}: " + "; ".join(report.errors or ["incompatible"])
        )
    return compat.convert(dataset, task)


def export(
    app: App,
    user: User,
    dataset: Dataset,
    document: dict[str, Any],
    name: str,
    fmt: str,
    task: str | None,
    annotations_only: bool,
) -> Export:
    """Export ``document`` (of the head or snapshot ``name``) as ``fmt`` ("dice", "coco",
    "yolo" or "imagefolder"), converted for ``task`` (a formats task name) when given."""
    if fmt == "imagefolder":
        if annotations_only:
            raise invalid_argument(
                "an ImageFolder export is its images in class folders: annotations_only "
                "does not apply",
                "annotations_only",
            )
        # class folders need one label per image: dominant class for boxes and polygons
        task = "image_classification"
    ref = names.parse_dataset_or_snapshot(name)
    model = _prepare(document, fmt, task)
    sha_of = {im["file_name"]: im.get("sha256", "") for im in document["images"]}
    suffix = f"{fmt}-{task}" if task and fmt != "dice" else fmt
    if annotations_only:
        suffix += "-labels"
    export_id = f"{ref.snapshot_id or 'head'}.{suffix}.u{user.id}"
    key = export_key(dataset.id, export_id)
    app.settings.export_tmp_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(dir=app.settings.export_tmp_dir))
    try:
        try:
            written = formats.write(model, fmt, work / "out", task=task, images="none")
        except ValueError as exc:
            raise failed_precondition(f"cannot export as {fmt}: {exc}") from None
        archive = work / "export.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
            for rel in written.files:
                zf.write(work / "out" / rel, rel)
            if not annotations_only:
                for src_path, dest in written.images:
                    _add_blob(app, zf, sha_of[src_path], dest)
        digest = hashlib.sha256()
        with archive.open("rb") as f:
            for chunk in iter(lambda: f.read(1024 * 1024), b""):
                digest.update(chunk)
        size = archive.stat().st_size
        app.store.put_file(key, archive, content_type="application/zip")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    export_name = names.export_name(dataset.id, export_id)
    if isinstance(app.store, LocalStore):
        url = f"/v1/{export_name}:download"
    else:
        url = app.store.presigned_url(key, 3600) or ""
    image_count = len(model.images) if annotations_only else len(written.images)
    return Export(
        export_key=key,
        export=export_name,
        url=url,
        size_bytes=size,
        sha256=digest.hexdigest(),
        image_count=image_count,
        annotation_count=len(model.annotations),
    )


def _add_blob(app: App, zf: zipfile.ZipFile, sha256: str, dest: str) -> None:
    compress = (
        zipfile.ZIP_STORED if Path(dest).suffix.lower() in COMPRESSED else zipfile.ZIP_DEFLATED
    )
    info = zipfile.ZipInfo(dest)
    info.compress_type = compress
    with app.store.open_read(blob_key(sha256)) as src, zf.open(info, "w", force_zip64=True) as dst:
        shutil.copyfileobj(src, dst, 1024 * 1024)
