"""vmesh datasets create|list|get|update|delete|upload|import|export|snapshot|snapshots|diff|check."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path
from typing import Any

from google.protobuf import field_mask_pb2

from visionmesh.cli._common import (
    COMMON,
    NOT_FOUND,
    REFUSED,
    USAGE,
    CliError,
    Progress,
    enum_short,
    human_bytes,
    note,
    open_mesh,
    parse_task,
    print_json,
    table,
    to_dict,
    wants_json,
)
from visionmesh.client import Mesh
from visionmesh.uploads import IMAGE_SUFFIXES, upload_requests
from visionmesh.v1 import common_pb2, dataset_pb2

FORMATS = {
    "dice": common_pb2.ANNOTATION_FORMAT_DICE,
    "coco": common_pb2.ANNOTATION_FORMAT_COCO,
    "yolo": common_pb2.ANNOTATION_FORMAT_YOLO,
    "imagefolder": common_pb2.ANNOTATION_FORMAT_IMAGEFOLDER,
}
ANNOTATION_SUFFIXES = (".json", ".txt", ".yaml", ".yml")
# One UploadImages call commits at most this much, so an interrupted upload keeps the
# batches before it and a re-run sends only the rest.
BATCH_BYTES = 64 * 1024 * 1024
BATCH_FILES = 1000
SHOW_SKIPPED = 20


def register(sub: argparse._SubParsersAction) -> None:
    group = sub.add_parser(
        "datasets", parents=[COMMON], help="create, list, upload, import, export, snapshot"
    )
    group.set_defaults(usage_parser=group)
    cmds = group.add_subparsers(dest="datasets_command", metavar="COMMAND")

    def add(name: str, helptext: str, func: Any) -> argparse.ArgumentParser:
        p = cmds.add_parser(name, parents=[COMMON], help=helptext, description=helptext)
        p.set_defaults(func=func)
        return p

    p = add("create", "create a dataset", cmd_create)
    p.add_argument("display_name", metavar="NAME")
    p.add_argument("--description", default="")
    p.add_argument("--public", action="store_true", help="visible to every signed-in user")

    p = add("list", "datasets you can see", cmd_list)
    p.add_argument("--filter", default="", help='e.g. display_name:"cat" owner=alice')
    p.add_argument("--mine", action="store_true", help="only datasets you own")

    p = add("get", "one dataset with its classes and split counts", cmd_get)
    p.add_argument("dataset", metavar="DATASET", help="display name, id or datasets/{id}")

    p = add("update", "rename, describe, or change visibility", cmd_update)
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--name", dest="display_name", help="new display name")
    p.add_argument("--description")
    vis = p.add_mutually_exclusive_group()
    vis.add_argument("--public", action="store_true")
    vis.add_argument("--private", action="store_true")

    p = add("delete", "delete a dataset (its snapshots and exports too)", cmd_delete)
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = add("upload", "upload a folder of images (structure kept; re-run resumes)", cmd_upload)
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("folder", metavar="FOLDER", type=Path)
    p.add_argument("--prefix", default="", help="put every path under this folder")

    p = add("import", "import annotations (DICE, COCO, YOLO, ImageFolder)", cmd_import)
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("path", metavar="FILE_OR_FOLDER", type=Path)
    p.add_argument("--format", choices=sorted(FORMATS), help="default: detected")
    p.add_argument("--allow-warnings", action="store_true", help="import despite warnings")
    p.add_argument("--replace", action="store_true", help="replace existing annotations")
    p.add_argument("--classes", default="", help="class names, comma separated (YOLO)")

    p = add("export", "export as a zip and download it", cmd_export)
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--format", choices=sorted(FORMATS), default="dice")
    p.add_argument("--task", help="labels for this task (COCO/YOLO)")
    p.add_argument("--snapshot", help="export this snapshot (id or version) instead of the head")
    p.add_argument("--annotations-only", action="store_true")
    p.add_argument("-o", "--output", type=Path, help="file to write (default NAME.FORMAT.zip)")

    p = add("snapshot", "freeze the annotations as a snapshot", cmd_snapshot)
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--version", default="", help="a version name such as v1")
    p.add_argument("--description", default="")

    p = add("snapshots", "a dataset's snapshots", cmd_snapshots)
    p.add_argument("dataset", metavar="DATASET")

    p = add("diff", "what changed between two snapshots (or a snapshot and the head)", cmd_diff)
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("base", metavar="BASE", help="snapshot id, version or full name")
    p.add_argument("target", metavar="TARGET", nargs="?", help="default: the head")

    p = add("check", "find missing or corrupt image blobs", cmd_check)
    p.add_argument("dataset", metavar="DATASET")
    p.add_argument("--verify-hashes", action="store_true", help="read every blob and hash it")


# -- helpers ---------------------------------------------------------------------------------


def _row(ds: dataset_pb2.Dataset) -> list[Any]:
    return [
        ds.name,
        ds.display_name,
        enum_short(common_pb2.Visibility.Name(ds.visibility), "VISIBILITY_"),
        ds.owner.removeprefix("users/"),
        ds.image_count,
        ds.annotation_count,
        "yes" if ds.labeled else "no",
        human_bytes(ds.total_bytes),
    ]


HEADERS = [
    "name",
    "display name",
    "visibility",
    "owner",
    "images",
    "annotations",
    "labeled",
    "size",
]


def _snapshot_name(mesh: Mesh, dataset: dataset_pb2.Dataset, ref: str) -> str:
    if ref.startswith("datasets/"):
        return ref
    token = ""
    while True:
        page = mesh.datasets.ListSnapshots(
            dataset_pb2.ListSnapshotsRequest(parent=dataset.name, page_size=200, page_token=token),
            timeout=mesh.timeout,
        )
        for snap in page.snapshots:
            if snap.name.rsplit("/", 1)[-1] == ref or (
                snap.version_name and snap.version_name == ref
            ):
                return snap.name
        token = page.next_page_token
        if not token:
            break
    raise CliError(
        f"no snapshot {ref!r} in {dataset.display_name}; `vmesh datasets snapshots "
        f"{dataset.display_name}` lists them",
        NOT_FOUND,
    )


def _print_dataset(ds: dataset_pb2.Dataset) -> None:
    print(table(HEADERS, [_row(ds)]))
    if ds.description:
        print(f"\ndescription: {ds.description}")
    if ds.categories:
        print("\nclasses: " + ", ".join(f"{c.id}:{c.name}" for c in ds.categories))
    health = ds.health
    if health.images_per_split:
        splits = ", ".join(
            f"{k or '(none)'}={v}" for k, v in sorted(health.images_per_split.items())
        )
        print(f"splits: {splits}")
    if health.class_counts:
        print()
        print(
            table(
                ["class", "split", "images", "annotations"],
                [
                    [c.category_name, c.split or "-", c.image_count, c.annotation_count]
                    for c in health.class_counts
                ],
            )
        )


# -- commands --------------------------------------------------------------------------------


def cmd_create(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    visibility = common_pb2.VISIBILITY_PUBLIC if args.public else common_pb2.VISIBILITY_PRIVATE
    ds = mesh.datasets.CreateDataset(
        dataset_pb2.CreateDatasetRequest(
            dataset=dataset_pb2.Dataset(
                display_name=args.display_name, description=args.description, visibility=visibility
            )
        ),
        timeout=mesh.timeout,
    ).dataset
    if wants_json(args):
        print_json(to_dict(ds))
    else:
        print(f"created {ds.name} ({ds.display_name}, {_row(ds)[2]})")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    text = args.filter
    if args.mine:
        from visionmesh.client import load_token

        stored = load_token()
        me = stored.username if stored and stored.username else ""
        if not me:
            from visionmesh.v1 import auth_pb2

            me = mesh.auth.WhoAmI(auth_pb2.WhoAmIRequest(), timeout=mesh.timeout).user.username
        text = f"{text} owner={me}".strip()
    found = list(mesh.list_datasets(filter=text))
    if wants_json(args):
        print_json({"datasets": [to_dict(d) for d in found]})
    elif not found:
        print("no datasets yet: `vmesh datasets create NAME`")
    else:
        print(table(HEADERS, [_row(d) for d in found]))
    return 0


def cmd_get(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    ds = mesh.resolve_dataset(args.dataset)
    ds = mesh.datasets.GetDataset(
        dataset_pb2.GetDatasetRequest(name=ds.name), timeout=mesh.timeout
    ).dataset
    if wants_json(args):
        print_json(to_dict(ds))
    else:
        _print_dataset(ds)
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    ds = mesh.resolve_dataset(args.dataset)
    change = dataset_pb2.Dataset(name=ds.name)
    paths = []
    if args.display_name is not None:
        change.display_name = args.display_name
        paths.append("display_name")
    if args.description is not None:
        change.description = args.description
        paths.append("description")
    if args.public or args.private:
        change.visibility = (
            common_pb2.VISIBILITY_PUBLIC if args.public else common_pb2.VISIBILITY_PRIVATE
        )
        paths.append("visibility")
    if not paths:
        raise CliError(
            "nothing to change: give --name, --description, --public or --private", USAGE
        )
    ds = mesh.datasets.UpdateDataset(
        dataset_pb2.UpdateDatasetRequest(
            dataset=change, update_mask=field_mask_pb2.FieldMask(paths=paths)
        ),
        timeout=mesh.timeout,
    ).dataset
    if wants_json(args):
        print_json(to_dict(ds))
    else:
        print(f"updated {ds.name}: {', '.join(paths)}")
        print(table(HEADERS, [_row(ds)]))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    ds = mesh.resolve_dataset(args.dataset)
    if not args.yes:
        if not sys.stdin.isatty():
            raise CliError(f"add --yes to delete {ds.name} ({ds.display_name})", USAGE)
        answer = input(f"delete {ds.display_name} ({ds.name}, {ds.image_count} images)? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("kept")
            return REFUSED
    mesh.datasets.DeleteDataset(
        dataset_pb2.DeleteDatasetRequest(name=ds.name), timeout=mesh.timeout
    )
    if wants_json(args):
        print_json({"deleted": ds.name})
    else:
        print(f"deleted {ds.name} ({ds.display_name})")
    return 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def cmd_upload(args: argparse.Namespace) -> int:
    folder: Path = args.folder
    if not folder.is_dir():
        raise CliError(f"{folder} is not a folder", NOT_FOUND)
    mesh = open_mesh(args)
    ds = mesh.resolve_dataset(args.dataset)
    prefix = args.prefix.strip("/")
    local_skipped: list[tuple[str, str]] = []
    images: list[tuple[str, Path, int]] = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(folder).as_posix()
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            reason = "not an image"
            if path.suffix.lower() in ANNOTATION_SUFFIXES:
                reason += " (annotations: `vmesh datasets import`)"
            local_skipped.append((rel, reason))
            continue
        images.append((rel, path, path.stat().st_size))
    existing = {img.path: img.sha256 for img in mesh.list_images(ds.name)}
    todo: list[tuple[str, Path, int]] = []
    already = 0
    for rel, path, size in images:
        stored_path = f"{prefix}/{rel}" if prefix else rel
        if existing.get(stored_path) == _sha256(path):
            already += 1
        else:
            todo.append((rel, path, size))
    total = sum(size for _, _, size in todo)
    if not wants_json(args):
        note(
            f"{ds.display_name}: {len(images)} images in {folder}, {already} already uploaded, "
            f"{len(todo)} to send ({human_bytes(total)})"
        )
    progress = Progress("upload", total, len(todo))
    uploaded, deduplicated, received = 0, 0, 0
    server_skipped: list[tuple[str, str]] = []
    batch: list[tuple[str, Path, int]] = []

    def send(batch: list[tuple[str, Path, int]]) -> None:
        nonlocal uploaded, deduplicated, received

        def counted() -> Any:
            for request in upload_requests(
                ds.name, [(rel, path) for rel, path, _ in batch], path_prefix=prefix
            ):
                kind = request.WhichOneof("payload")
                if kind == "chunk":
                    progress.update(len(request.chunk.data), 1 if request.chunk.path else 0)
                elif kind == "chunks":
                    progress.update(
                        sum(len(c.data) for c in request.chunks.chunks), len(request.chunks.chunks)
                    )
                yield request

        reply = mesh.datasets.UploadImages(counted(), timeout=max(600, len(batch) * 2))
        uploaded += len(reply.images)
        deduplicated += reply.deduplicated_count
        received += reply.received_bytes
        server_skipped.extend((s.path, s.reason) for s in reply.skipped)

    size = 0
    for item in todo:
        if batch and (size + item[2] > BATCH_BYTES or len(batch) >= BATCH_FILES):
            send(batch)
            batch, size = [], 0
        batch.append(item)
        size += item[2]
    if batch:
        send(batch)
    if todo:
        progress.done()
    skipped = local_skipped + server_skipped
    if wants_json(args):
        print_json(
            {
                "dataset": ds.name,
                "uploaded": uploaded,
                "already_uploaded": already,
                "deduplicated": deduplicated,
                "bytes": received,
                "skipped": [{"path": p, "reason": r} for p, r in skipped],
            }
        )
    else:
        print(
            f"uploaded {uploaded} images ({human_bytes(total)}, {deduplicated} already stored "
            f"by content) to {ds.name}; {already} were already there; {len(skipped)} skipped"
        )
        for path, reason in skipped[:SHOW_SKIPPED]:
            print(f"  skipped {path}: {reason}")
        if len(skipped) > SHOW_SKIPPED:
            print(f"  ... and {len(skipped) - SHOW_SKIPPED} more (--json lists all)")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    path: Path = args.path
    if path.is_file():
        files = [dataset_pb2.AnnotationFile(path=path.name, content=path.read_bytes())]
    elif path.is_dir():
        files = [
            dataset_pb2.AnnotationFile(path=p.relative_to(path).as_posix(), content=p.read_bytes())
            for p in sorted(path.rglob("*"))
            if p.is_file() and p.suffix.lower() in ANNOTATION_SUFFIXES
        ]
        if not files and args.format != "imagefolder":
            raise CliError(f"no annotation files (.json, .txt, .yaml) under {path}", NOT_FOUND)
    else:
        raise CliError(f"{path} does not exist", NOT_FOUND)
    mesh = open_mesh(args)
    ds = mesh.resolve_dataset(args.dataset)
    reply = mesh.datasets.ImportAnnotations(
        dataset_pb2.ImportAnnotationsRequest(
            parent=ds.name,
            files=files,
            format=FORMATS.get(args.format or "", 0),
            allow_warnings=args.allow_warnings,
            replace_existing=args.replace,
            class_names=[c.strip() for c in args.classes.split(",") if c.strip()],
        ),
        timeout=max(mesh.timeout, 300),
    )
    if wants_json(args):
        print_json(to_dict(reply))
        return 0
    print(
        f"imported {reply.variant}: {reply.image_count} images, {reply.annotation_count} "
        f"annotations, {reply.category_count} classes into {ds.name}"
    )
    for issue in reply.warnings:
        print(f"  warning {issue.path}: {issue.message}")
    return 0


def _download(stream: Any, output: Path, label: str, total: int = 0) -> int:
    """Write a stream of google.api.HttpBody pieces to ``output`` (via a temp file)."""
    tmp = output.with_name(output.name + ".part")
    progress = Progress(label, total)
    written = 0
    try:
        with open(tmp, "wb") as f:
            for piece in stream:
                f.write(piece.data)
                written += len(piece.data)
                progress.update(len(piece.data))
        os.replace(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    progress.total_bytes = written
    progress.done()
    return written


def cmd_export(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    ds = mesh.resolve_dataset(args.dataset)
    name = _snapshot_name(mesh, ds, args.snapshot) if args.snapshot else ds.name
    reply = mesh.datasets.ExportDataset(
        dataset_pb2.ExportDatasetRequest(
            name=name,
            format=FORMATS[args.format],
            task_type=parse_task(args.task) if args.task else 0,
            annotations_only=args.annotations_only,
        ),
        timeout=max(mesh.timeout, 600),
    )
    output = args.output or Path(f"{ds.display_name}.{args.format}.zip")
    written = _download(
        mesh.datasets.DownloadExport(
            dataset_pb2.DownloadExportRequest(name=reply.export), timeout=3600
        ),
        output,
        "download",
        reply.size_bytes,
    )
    if wants_json(args):
        print_json({**to_dict(reply), "output": str(output), "written_bytes": written})
    else:
        print(
            f"exported {reply.image_count} images, {reply.annotation_count} annotations as "
            f"{args.format} to {output} ({human_bytes(written)}, sha256 {reply.sha256[:12]})"
        )
    return 0


def cmd_snapshot(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    ds = mesh.resolve_dataset(args.dataset)
    snap = mesh.datasets.CreateSnapshot(
        dataset_pb2.CreateSnapshotRequest(
            parent=ds.name,
            snapshot=dataset_pb2.Snapshot(version_name=args.version, description=args.description),
        ),
        timeout=mesh.timeout,
    ).snapshot
    if wants_json(args):
        print_json(to_dict(snap))
    else:
        version = f" ({snap.version_name})" if snap.version_name else ""
        print(
            f"snapshot {snap.name}{version}: {snap.image_count} images, "
            f"{snap.annotation_count} annotations"
        )
    return 0


def cmd_snapshots(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    ds = mesh.resolve_dataset(args.dataset)
    snaps = []
    token = ""
    while True:
        page = mesh.datasets.ListSnapshots(
            dataset_pb2.ListSnapshotsRequest(parent=ds.name, page_size=200, page_token=token),
            timeout=mesh.timeout,
        )
        snaps.extend(page.snapshots)
        token = page.next_page_token
        if not token:
            break
    if wants_json(args):
        print_json({"snapshots": [to_dict(s) for s in snaps]})
    elif not snaps:
        print(f"no snapshots of {ds.display_name} yet: `vmesh datasets snapshot {ds.display_name}`")
    else:
        print(
            table(
                ["snapshot", "version", "images", "annotations", "created", "reason"],
                [
                    [
                        s.name.rsplit("/", 1)[-1],
                        s.version_name or "-",
                        s.image_count,
                        s.annotation_count,
                        s.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
                        s.reason or ("automatic" if s.automatic else "-"),
                    ]
                    for s in snaps
                ],
            )
        )
    return 0


def cmd_diff(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    ds = mesh.resolve_dataset(args.dataset)
    base = _snapshot_name(mesh, ds, args.base)
    target = _snapshot_name(mesh, ds, args.target) if args.target else ds.name
    reply = mesh.datasets.DiffSnapshots(
        dataset_pb2.DiffSnapshotsRequest(base=base, target=target), timeout=mesh.timeout
    )
    if wants_json(args):
        print_json({"base": base, "target": target, **to_dict(reply)})
        return 0
    print(f"{base} -> {target if args.target else target + ' (head)'}")
    print(
        f"images: +{len(reply.added_images)} -{len(reply.removed_images)} "
        f"~{len(reply.changed_images)}; annotations: +{reply.added_annotation_count} "
        f"-{reply.removed_annotation_count} ~{reply.changed_annotation_count}"
    )
    for sign, paths in (
        ("+", reply.added_images),
        ("-", reply.removed_images),
        ("~", reply.changed_images),
    ):
        for path in paths[:SHOW_SKIPPED]:
            print(f"  {sign} {path}")
        if len(paths) > SHOW_SKIPPED:
            print(f"  {sign} ... {len(paths) - SHOW_SKIPPED} more")
    if reply.class_changes:
        print()
        print(
            table(
                ["class", "base", "target", "change"],
                [
                    [
                        c.category_name,
                        c.base_count,
                        c.target_count,
                        f"{c.target_count - c.base_count:+d}",
                    ]
                    for c in reply.class_changes
                ],
            )
        )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    ds = mesh.resolve_dataset(args.dataset)
    reply = mesh.datasets.CheckIntegrity(
        dataset_pb2.CheckIntegrityRequest(name=ds.name, verify_hashes=args.verify_hashes),
        timeout=max(mesh.timeout, 600),
    )
    if wants_json(args):
        print_json({"dataset": ds.name, **to_dict(reply), "ok": reply.ok})
    elif reply.ok:
        how = "hashes verified" if args.verify_hashes else "presence checked"
        print(f"ok: {reply.checked_blob_count} blobs of {ds.display_name} ({how})")
    else:
        print(f"{len(reply.problems)} problems in {ds.display_name}:")
        print(
            table(
                ["blob", "problem", "paths", "snapshots affected"],
                [
                    [
                        p.sha256[:12],
                        p.kind,
                        ", ".join(p.paths[:3]) + (" ..." if len(p.paths) > 3 else ""),
                        ", ".join(s.rsplit("/", 1)[-1] for s in p.affected_snapshots) or "-",
                    ]
                    for p in reply.problems
                ],
            )
        )
    return 0 if reply.ok else REFUSED
