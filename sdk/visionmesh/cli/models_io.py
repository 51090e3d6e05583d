"""vmesh pretrained upload|list|delete, vmesh export JOB, vmesh eval JOB (after training).

``vmesh weights JOB`` (another module) downloads a job's checkpoint, so pretrained weights
in the model store are managed under ``vmesh pretrained``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import grpc

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
from visionmesh.v1 import common_pb2, trainer_pb2

CHUNK = 1024 * 1024
FORMATS = {
    "onnx": trainer_pb2.MODEL_FORMAT_ONNX,
    "torchscript": trainer_pb2.MODEL_FORMAT_TORCHSCRIPT,
}


def register(sub: argparse._SubParsersAction) -> None:
    pre = sub.add_parser(
        "pretrained", parents=[COMMON], help="pretrained weights in the model store"
    )
    pre.set_defaults(usage_parser=pre)
    cmds = pre.add_subparsers(dest="pretrained_command", metavar="COMMAND")
    p = cmds.add_parser(
        "upload",
        parents=[COMMON],
        help="upload weights for a model (checked to load before they are kept)",
    )
    p.add_argument("file", type=Path, metavar="FILE", help=".pt, .pth, .safetensors or .bin")
    p.add_argument("--model", required=True, help="a model name from `vmesh models`")
    p.add_argument("--task", required=True, help="detect, segment, classify, pose, semantic")
    p.add_argument("--framework", default="", help="the trainer (default: the model's)")
    p.set_defaults(func=cmd_upload)
    p = cmds.add_parser("list", parents=[COMMON], help="uploaded weights on every trainer")
    p.add_argument("--framework", default="", help="only this trainer")
    p.set_defaults(func=cmd_list)
    p = cmds.add_parser("delete", parents=[COMMON], help="delete uploaded weights")
    p.add_argument("name", metavar="NAME", help="trainers/{framework}/weights/{id}")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser(
        "export", parents=[COMMON], help="export a job's model to ONNX or TorchScript"
    )
    p.add_argument("job", metavar="JOB")
    p.add_argument("--format", required=True, choices=sorted(FORMATS))
    p.add_argument("--checkpoint", default="best", choices=["best", "last"])
    p.add_argument("--image-size", type=int, default=0, help="input size (default: the job's)")
    p.add_argument("-o", "--output", type=Path, help="file to write (default JOBID-best.onnx)")
    p.add_argument("--no-download", action="store_true", help="export only; do not download")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "eval", parents=[COMMON], help="a finished job's evaluation: per-class metrics"
    )
    p.add_argument("job", metavar="JOB")
    p.add_argument("--pictures", type=Path, metavar="DIR", help="write the PNG pictures here")
    p.set_defaults(func=cmd_eval)


# -- pretrained ---------------------------------------------------------------------------------


def cmd_upload(args: argparse.Namespace) -> int:
    if not args.file.is_file():
        raise CliError(f"{args.file} is not a file", NOT_FOUND)
    task = parse_task(args.task)
    mesh = open_mesh(args)
    framework = mesh.framework_of_model(args.model, args.framework)
    size = args.file.stat().st_size
    progress = Progress("upload", size)

    def requests():
        yield trainer_pb2.UploadWeightsRequest(
            header=trainer_pb2.UploadWeightsHeader(
                parent=f"trainers/{framework}",
                model=args.model,
                task_type=task,
                filename=args.file.name,
            )
        )
        sent = 0
        with open(args.file, "rb") as f:
            while chunk := f.read(CHUNK):
                sent += len(chunk)
                progress.update(len(chunk))
                yield trainer_pb2.UploadWeightsRequest(chunk=chunk)
        progress.done()
        note("checking that the weights load ...")
        yield trainer_pb2.UploadWeightsRequest(end=trainer_pb2.UploadWeightsEnd(size_bytes=sent))

    weights = mesh.trainer(framework).UploadWeights(requests(), timeout=3600).weights
    if wants_json(args):
        print_json(to_dict(weights))
    else:
        print(
            f"uploaded {weights.name} ({human_bytes(weights.size_bytes)}) as {weights.key}; "
            f"train with --pretrained or init_from={weights.name}"
        )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    frameworks = [args.framework] if args.framework else sorted(mesh.trainer_addrs)
    found = []
    for framework in frameworks:
        token = ""
        try:
            while True:
                reply = mesh.trainer(framework).ListWeights(
                    trainer_pb2.ListWeightsRequest(
                        parent=f"trainers/{framework}", page_token=token
                    ),
                    timeout=30,
                )
                found.extend(reply.weights)
                token = reply.next_page_token
                if not token:
                    break
        except grpc.RpcError as err:  # one trainer down: list the others
            if args.framework:
                raise
            note(f"trainers/{framework}: {err.code().name}: {err.details()}")
    if wants_json(args):
        print_json({"weights": [to_dict(w) for w in found]})
        return 0
    if not found:
        print("no uploaded weights (vmesh pretrained upload FILE --model M --task T)")
        return 0
    print(
        table(
            ["name", "model", "task", "size", "uploader", "sha256"],
            [
                [
                    w.name,
                    w.model,
                    enum_short(common_pb2.TaskType.Name(w.task_type), "TASK_TYPE_")
                    if w.task_type
                    else "",
                    human_bytes(w.size_bytes),
                    w.uploader.removeprefix("users/"),
                    w.sha256[:12],
                ]
                for w in found
            ],
        )
    )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    parts = args.name.strip("/").split("/")
    if len(parts) != 4 or parts[0] != "trainers" or parts[2] != "weights":
        raise CliError(f"{args.name!r} is not trainers/{{framework}}/weights/{{id}}", USAGE)
    mesh = open_mesh(args)
    mesh.trainer(parts[1]).DeleteWeights(
        trainer_pb2.DeleteWeightsRequest(name=args.name.strip("/")), timeout=60
    )
    if wants_json(args):
        print_json({"deleted": args.name})
    else:
        print(f"deleted {args.name}")
    return 0


# -- export ---------------------------------------------------------------------------------------


def cmd_export(args: argparse.Namespace) -> int:
    from visionmesh.cli.datasets import _download

    mesh = open_mesh(args)
    framework, name = mesh.job_name(args.job)
    stub = mesh.trainer(framework)
    export = stub.ExportModel(
        trainer_pb2.ExportModelRequest(
            name=name,
            format=FORMATS[args.format],
            checkpoint=args.checkpoint,
            image_size=args.image_size,
        ),
        timeout=60,
    ).export
    started = time.monotonic()
    shown = 0.0
    while export.state == trainer_pb2.EXPORT_STATE_RUNNING:
        now = time.monotonic()
        if not wants_json(args) and now - shown >= (0.5 if sys.stderr.isatty() else 10):
            shown = now
            text = f"exporting {args.format} of {name} ({export.source}) ... {now - started:.0f}s"
            if sys.stderr.isatty():
                sys.stderr.write("\r\x1b[K" + text)
                sys.stderr.flush()
            else:
                note(text)
        time.sleep(0.5)
        export = stub.GetModelExport(
            trainer_pb2.GetModelExportRequest(name=export.name), timeout=30
        ).export
    if sys.stderr.isatty() and not wants_json(args):
        sys.stderr.write("\r\x1b[K")
    if export.state != trainer_pb2.EXPORT_STATE_SUCCEEDED:
        raise CliError(f"export {export.name} failed: {export.error}", REFUSED)
    output = None
    written = 0
    if not args.no_download:
        output = args.output or Path(f"{name.rsplit('/', 1)[-1]}-{export.file.filename}")
        written = _download(
            stub.DownloadCheckpoint(
                trainer_pb2.DownloadCheckpointRequest(name=export.file.name), timeout=3600
            ),
            output,
            "download",
            export.file.size_bytes,
        )
    if wants_json(args):
        data = to_dict(export)
        if output is not None:
            data["output"] = str(output)
            data["bytes"] = written
        print_json(data)
    else:
        where = f"; wrote {output} ({human_bytes(written)})" if output else ""
        print(
            f"exported {export.file.name} ({args.format}, {export.image_size}px, from "
            f"{export.source}) in {time.monotonic() - started:.1f}s{where}"
        )
    return 0


# -- eval ------------------------------------------------------------------------------------------


def cmd_eval(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    framework, name = mesh.job_name(args.job)
    ev = (
        mesh.trainer(framework)
        .GetEvaluation(trainer_pb2.GetEvaluationRequest(name=f"{name}/evaluation"), timeout=60)
        .evaluation
    )
    written = []
    if args.pictures:
        args.pictures.mkdir(parents=True, exist_ok=True)
        for picture in ev.pictures:
            path = args.pictures / picture.filename
            path.write_bytes(picture.data)
            written.append(str(path))
    if wants_json(args):
        data = to_dict(ev)
        for picture in data.get("pictures", []):
            picture.pop("data", None)  # bytes: use --pictures DIR
        if written:
            data["written"] = written
        print_json(data)
        return 0
    print(f"evaluation of {ev.checkpoint} of {name} on its val split")
    print("  " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(ev.metrics.items())))
    keys = []
    for c in ev.classes:
        keys.extend(k for k in c.values if k not in keys)
    order = ["ap50", "ap50_95", "precision", "recall", "accuracy", "iou"]
    keys = [k for k in order if k in keys] + [k for k in keys if k not in order]
    print(
        table(
            ["class", "id", "instances", *keys],
            [
                [c.category_name, c.category_id, c.instance_count]
                + [f"{c.values[k]:.3f}" if k in c.values else "" for k in keys]
                for c in ev.classes
            ],
        )
    )
    cm = ev.confusion_matrix
    if cm.rows and len(cm.labels) <= 12:
        print("confusion matrix (rows: true, columns: predicted)")
        print(
            table(
                ["true \\ pred", *cm.labels],
                [
                    [label, *(f"{v:g}" for v in row.counts)]
                    for label, row in zip(cm.labels, cm.rows, strict=False)
                ],
            )
        )
    pics = ", ".join(p.filename for p in ev.pictures)
    if written:
        print(f"pictures: {', '.join(written)}")
    elif pics:
        print(f"pictures: {pics} (write them with --pictures DIR)")
    return 0
