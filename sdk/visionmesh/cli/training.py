"""vmesh compat, models, train, jobs list|get|watch|logs|cancel|stop|resume, weights, predict."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import grpc

from visionmesh.ask import task_of_model
from visionmesh.cli._common import (
    COMMON,
    INTERRUPTED,
    NOT_FOUND,
    REFUSED,
    UNREACHABLE,
    USAGE,
    CliError,
    enum_short,
    human_bytes,
    human_seconds,
    note,
    open_mesh,
    parse_task,
    print_json,
    table,
    task_label,
    to_dict,
    wants_json,
)
from visionmesh.client import Mesh
from visionmesh.v1 import common_pb2, compatibility_pb2, trainer_pb2

TERMINAL = {
    trainer_pb2.JOB_STATE_SUCCEEDED,
    trainer_pb2.JOB_STATE_FAILED,
    trainer_pb2.JOB_STATE_CANCELLED,
}
# The epoch table's columns per task, in order; a column shows when the trainer sends it.
METRIC_COLUMNS = {
    common_pb2.TASK_TYPE_OBJECT_DETECTION: (
        "train/loss",
        "val/precision",
        "val/recall",
        "val/map50",
        "val/map50_95",
    ),
    common_pb2.TASK_TYPE_INSTANCE_SEGMENTATION: (
        "train/loss",
        "val/map50",
        "val/mask_map50",
        "val/mask_map50_95",
    ),
    common_pb2.TASK_TYPE_POSE_ESTIMATION: ("train/loss", "val/map50", "val/pose_map50"),
    common_pb2.TASK_TYPE_IMAGE_CLASSIFICATION: ("train/loss", "val/loss", "val/top1", "val/top5"),
    common_pb2.TASK_TYPE_SEMANTIC_SEGMENTATION: (
        "train/loss",
        "val/loss",
        "val/miou",
        "val/pixel_accuracy",
    ),
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "compat",
        parents=[COMMON],
        help="what a dataset can train: every task x framework/model",
        description="One table of every task x framework: native, converted (lossy or not) "
        "or refused with the reason.",
    )
    p.add_argument("dataset", metavar="DATASET", help="display name, id or datasets/{id}")
    p.set_defaults(func=cmd_compat)

    p = sub.add_parser(
        "models", parents=[COMMON], help="every trainer's models and hyperparameters"
    )
    p.add_argument("--framework", help="only this trainer")
    p.set_defaults(func=cmd_models)

    p = sub.add_parser(
        "train",
        parents=[COMMON],
        help="start a training job (on the trainer that has the model)",
        description="Start a training job; --follow shows epochs as they finish.",
    )
    p.add_argument("dataset", metavar="DATASET", help="display name, id or datasets/{id}")
    add_spec_options(p)
    p.add_argument("--follow", "-f", action="store_true", help="follow the job live")
    p.add_argument("--request-id", help="makes a retried start return the same job")
    p.set_defaults(func=cmd_train)

    jobs = sub.add_parser("jobs", parents=[COMMON], help="list, watch and control training jobs")
    jobs.set_defaults(usage_parser=jobs)
    cmds = jobs.add_subparsers(dest="jobs_command", metavar="COMMAND")
    p = cmds.add_parser("list", parents=[COMMON], help="your jobs on every trainer, newest first")
    p.add_argument("--framework", help="only this trainer")
    p.add_argument("--state", help="e.g. running, succeeded, failed")
    p.add_argument("--dataset", help="jobs of this dataset")
    p.set_defaults(func=cmd_jobs_list)
    for name, helptext, func in (
        ("get", "one job: state, spec, best epoch, checkpoints, evaluation", cmd_jobs_get),
        ("watch", "follow a job's epochs live (Ctrl-C detaches)", cmd_jobs_watch),
        ("cancel", "cancel a job (its weights are discarded)", cmd_jobs_cancel),
        ("stop", "stop a job after this epoch, keeping its weights", cmd_jobs_stop),
        ("resume", "continue an interrupted job from its last checkpoint", cmd_jobs_resume),
    ):
        p = cmds.add_parser(name, parents=[COMMON], help=helptext, description=helptext)
        p.add_argument("job", metavar="JOB", help="trainers/{framework}/jobs/{id} or the id")
        p.set_defaults(func=func)
    p = cmds.add_parser("logs", parents=[COMMON], help="a job's log")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the job ends")
    p.set_defaults(func=cmd_jobs_logs)

    p = sub.add_parser("weights", parents=[COMMON], help="download a job's checkpoint")
    p.add_argument("job", metavar="JOB")
    p.add_argument("--checkpoint", default="best", help="best (default), last or epoch_N")
    p.add_argument("-o", "--output", type=Path, help="file to write (default JOBID-best.pt)")
    p.set_defaults(func=cmd_weights)

    p = sub.add_parser("predict", parents=[COMMON], help="run an image through a job's model")
    p.add_argument("job", metavar="JOB")
    p.add_argument("image", metavar="IMAGE", type=Path)
    p.add_argument("-o", "--output", type=Path, help="write the image with the result drawn")
    p.add_argument("--checkpoint", default="best", help="best (default), last or epoch_N")
    p.add_argument("--conf", type=float, default=0.0, help="minimum score (default 0.25)")
    p.add_argument("--max-detections", type=int, default=0)
    p.set_defaults(func=cmd_predict)


def add_spec_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", "-m", required=True, help="a model from `vmesh models`")
    p.add_argument("--task", "-t", help="detect, segment, classify, pose, semantic")
    p.add_argument("--framework", help="the trainer to use (default: the one with the model)")
    p.add_argument("--epochs", type=int, default=0)
    p.add_argument("--batch", type=int, default=0, dest="batch_size")
    p.add_argument("--imgsz", type=int, default=0, dest="image_size", help="image size")
    p.add_argument("--lr", type=float, default=0.0, dest="learning_rate")
    p.add_argument(
        "--device",
        default="",
        help="cpu, cuda, cuda:N, or GPUs for one job: 0,1 (default: CUDA if present)",
    )
    p.add_argument(
        "--devices",
        type=int,
        default=0,
        help="processes that train the job together (distributed data parallel): the first "
        "N GPUs with cuda, N gloo processes with cpu (default 1)",
    )
    p.add_argument("--patience", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split-seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.0)
    p.add_argument("--pretrained", action="store_true")
    p.add_argument("--max-duration", type=int, default=0, help="seconds before the job stops")
    p.add_argument(
        "--extra", action="append", default=[], metavar="KEY=VALUE", help="framework option"
    )


# -- shared ----------------------------------------------------------------------------------


def state_label(state: int) -> str:
    return enum_short(trainer_pb2.JobState.Name(state), "JOB_STATE_")


def choose_task(mesh: Mesh, framework: str, model: str, task: str | None) -> tuple[int, str]:
    """(TaskType, note) for a model: --task, else the model's name or only task."""
    info = mesh.model_info(framework, model)
    supported = list(info.task_types) if info else []
    note_text = ""
    if task:
        value = parse_task(task)
    else:
        implied, how = task_of_model(model)
        if len(supported) == 1:
            value = supported[0]
        elif implied:
            value = parse_task(implied)
            if how == "default":
                note_text = f"task {implied} (the default for {model}; --task picks another)"
        else:
            raise CliError(
                f"say which task {model} should train: --task "
                + " | ".join(task_label(t) for t in supported),
                USAGE,
            )
    if supported and value not in supported:
        raise CliError(
            f"{model} ({framework}) does not train {task_label(value)}; it trains "
            + ", ".join(task_label(t) for t in supported),
            REFUSED,
        )
    return value, note_text


def build_spec(mesh: Mesh, args: argparse.Namespace, dataset: str) -> tuple[str, Any, str]:
    """(framework, TrainingSpec, note) from the train options."""
    framework = mesh.framework_of_model(args.model, args.framework or "")
    task, note_text = choose_task(mesh, framework, args.model, args.task)
    extra = {}
    for item in args.extra:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise CliError(f"--extra {item!r} is not KEY=VALUE", USAGE)
        extra[key.strip()] = value.strip()
    spec = trainer_pb2.TrainingSpec(
        dataset=dataset,
        task_type=task,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        patience=args.patience,
        device=args.device,
        devices=args.devices,
        pretrained=args.pretrained,
        extra=extra,
        split_seed=args.split_seed,
        val_fraction=args.val_fraction,
        max_duration_seconds=args.max_duration,
    )
    return framework, spec, note_text


def start(mesh: Mesh, framework: str, spec: Any, request_id: str = "") -> trainer_pb2.Job:
    return (
        mesh.trainer(framework)
        .StartTraining(
            trainer_pb2.StartTrainingRequest(
                request_id=request_id or uuid.uuid4().hex,
                spec=spec,
                parent=f"trainers/{framework}",
            ),
            timeout=300,
        )
        .job
    )


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if abs(value) < 100 else f"{value:.1f}"


class _Ticker:
    """On a terminal: a status line under the table, redrawn twice a second (state, epoch
    in progress, time since the last epoch), polling GetJob every few seconds."""

    def __init__(self, stub: Any, job: trainer_pb2.Job) -> None:
        import threading

        self.stub = stub
        self.job = job
        self.enabled = sys.stderr.isatty() and sys.stdout.isatty()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.since = time.monotonic()
        self.epoch = job.current_epoch
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Ticker:
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        if self.enabled:
            self.thread.join(2)
            self.clear()

    def clear(self) -> None:
        if self.enabled:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()

    def epoch_done(self, epoch: int) -> None:
        self.epoch = epoch
        self.since = time.monotonic()

    def _run(self) -> None:
        polled = 0.0
        while not self.stopping.wait(0.5):
            if time.monotonic() - polled > 3:
                polled = time.monotonic()
                try:
                    self.job = self.stub.GetJob(
                        trainer_pb2.GetJobRequest(name=self.job.name), timeout=5
                    ).job
                except grpc.RpcError:
                    pass
            state = state_label(self.job.state)
            total = self.job.total_epochs or self.job.spec.epochs
            if self.job.state == trainer_pb2.JOB_STATE_RUNNING and total and self.epoch >= total:
                status = "finishing"
            elif self.job.state == trainer_pb2.JOB_STATE_RUNNING:
                status = f"epoch {self.epoch + 1}/{total} running"
            elif self.job.queue_position:
                status = f"{state}, queue position {self.job.queue_position}"
            else:
                status = state
            with self.lock:
                sys.stderr.write(
                    f"\r\x1b[K  {status} ... {human_seconds(time.monotonic() - self.since)}"
                )
                sys.stderr.flush()


def follow(mesh: Mesh, job: trainer_pb2.Job, as_json: bool = False) -> int:
    """Print the job's epochs as they finish until it ends; Ctrl-C detaches."""
    framework = job.name.split("/")[1]
    stub = mesh.trainer(framework)
    task = job.spec.task_type
    columns: list[str] | None = None
    widths: list[int] = []
    out = sys.stdout
    ticker = None
    try:  # from the first line on, Ctrl-C detaches with the hints below
        if not as_json:
            print(f"following {job.name} ({job.spec.model}, {task_label(task)}); Ctrl-C detaches")
            ticker = _Ticker(stub, job)
        with ticker or contextlib.nullcontext():
            for reply in stub.StreamMetrics(
                trainer_pb2.StreamMetricsRequest(name=job.name), timeout=None
            ):
                if not reply.HasField("metrics"):
                    continue
                m = reply.metrics
                if as_json:
                    print_json_line({"state": state_label(reply.state), "metrics": to_dict(m)})
                    continue
                lines = []
                if columns is None:
                    wanted = METRIC_COLUMNS.get(task, ())
                    columns = [c for c in wanted if c in m.values] or sorted(m.values)[:5]
                    header = ["epoch", *columns, "time", "eta", "best"]
                    widths = [7] + [max(len(h), 9) for h in header[1:]]
                    lines.append(
                        "  ".join(h.upper().ljust(w) for h, w in zip(header, widths, strict=True))
                    )
                row = [
                    f"{m.epoch}/{m.epochs or job.spec.epochs}",
                    *(_fmt(m.values.get(c)) for c in columns),
                    f"{m.epoch_seconds:.1f}s",
                    human_seconds(m.eta_seconds),
                    "*" if m.is_best else "",
                ]
                lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)))
                with ticker.lock if ticker else contextlib.nullcontext():
                    if ticker:
                        ticker.clear()
                        ticker.epoch_done(m.epoch)
                    out.write("".join(line.rstrip() + "\n" for line in lines))
                    out.flush()
    except KeyboardInterrupt:
        note(
            f"\ndetached; {job.name} keeps running on the {framework} trainer.\n"
            f"  re-attach: vmesh jobs watch {job.name}\n"
            f"  stop it:   vmesh jobs stop {job.name}"
        )
        return INTERRUPTED
    final = stub.GetJob(trainer_pb2.GetJobRequest(name=job.name), timeout=60).job
    if as_json:
        print_json_line({"job": to_dict(final)})
    else:
        print(f"{job.name}: {state_label(final.state)}", end="")
        if final.best_epoch:
            metric = final.best_metric_name
            value = final.best_metrics.get(metric)
            shown = f", {metric} {value:.4f}" if value is not None else ""
            print(f"; best epoch {final.best_epoch}{shown} (* in the table)")
        else:
            print()
        if final.error:
            print(f"  error: {final.error}")
        if final.state == trainer_pb2.JOB_STATE_SUCCEEDED:
            print(f"  weights: vmesh weights {final.name} -o best.pt")
            print(f"  predict: vmesh predict {final.name} IMAGE -o overlay.png")
    return 0 if final.state == trainer_pb2.JOB_STATE_SUCCEEDED else REFUSED


def print_json_line(data: Any) -> None:
    import json

    print(json.dumps(data, ensure_ascii=False), flush=True)


def _job_row(job: trainer_pb2.Job) -> list[Any]:
    metric = job.best_metric_name
    value = job.best_metrics.get(metric) if metric else None
    return [
        job.name,
        state_label(job.state),
        job.spec.model,
        task_label(job.spec.task_type),
        job.spec.dataset,
        f"{job.current_epoch}/{job.total_epochs or job.spec.epochs}",
        f"{metric.removeprefix('val/')} {value:.3f}" if value is not None else "-",
        job.create_time.ToDatetime().strftime("%Y-%m-%d %H:%M") if job.create_time.seconds else "",
    ]


JOB_HEADERS = ["job", "state", "model", "task", "dataset", "epoch", "best", "created"]


# -- commands --------------------------------------------------------------------------------


def cmd_models(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    caps = mesh.capabilities()
    if args.framework:
        if args.framework not in mesh.trainer_addrs:
            raise CliError(
                f"no trainer {args.framework!r}; configured: {', '.join(mesh.trainer_addrs)}",
                NOT_FOUND,
            )
        caps = {k: v for k, v in caps.items() if k == args.framework}
    if wants_json(args):
        print_json(
            {
                "trainers": {fw: to_dict(c) for fw, c in caps.items()},
                "unreachable": mesh.unreachable,
            }
        )
        return 0 if caps else UNREACHABLE
    for fw in mesh.unreachable:
        note(f"trainer {fw} ({mesh.trainer_addrs[fw]}) did not answer: its models are left out")
    if not caps:
        raise CliError("no trainer answered (start them with `make run`)", UNREACHABLE)
    rows = []
    for fw, c in sorted(caps.items()):
        for m in c.models:
            rows.append(
                [
                    fw,
                    m.name,
                    ", ".join(task_label(t) for t in m.task_types),
                    m.family,
                    "yes" if m.pretrained_available else "no",
                    m.description,
                ]
            )
    print(table(["framework", "model", "tasks", "family", "pretrained", "description"], rows))
    for fw, c in sorted(caps.items()):
        print(f"\n{fw} {c.framework_version} on {c.device}: hyperparameters")
        print(
            table(
                ["name", "type", "default", "allowed", "description"],
                [
                    [
                        (f"extra.{h.name}" if h.extra else h.name),
                        h.type,
                        h.default_value or "-",
                        ("|".join(h.choices) if h.choices else _range(h)) or "-",
                        h.description,
                    ]
                    for h in c.hyperparameters
                ],
            )
        )
    return 0


def _range(h: Any) -> str:
    if h.min_value or h.max_value:
        return f"{h.min_value or '..'}..{h.max_value or ''}"
    return ""


def _verdict(report: compatibility_pb2.CompatibilityReport) -> tuple[str, str]:
    conversion = compatibility_pb2.Conversion.Name(report.conversion).removeprefix("CONVERSION_")
    if not report.compatible:
        return "refused", "; ".join(report.errors) or "no usable annotations"
    usable = f"{report.usable_image_count}/{report.total_image_count} images usable"
    dropped = (
        f", {report.dropped_annotation_count} annotations dropped"
        if report.dropped_annotation_count
        else ""
    )
    if conversion in ("NATIVE", "UNSPECIFIED"):
        return "native", usable + dropped
    words = conversion.lower().replace("_", " ")
    return ("lossy: " if report.lossy else "converted: ") + words, usable + dropped


def compat_reports(mesh: Mesh, dataset: str) -> list[compatibility_pb2.CompatibilityReport]:
    return list(
        mesh.compat.SummarizeCompatibility(
            compatibility_pb2.SummarizeCompatibilityRequest(dataset=dataset),
            timeout=max(mesh.timeout, 300),
        ).reports
    )


def cmd_compat(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    ds = mesh.resolve_dataset(args.dataset)
    reports = compat_reports(mesh, ds.name)
    caps = mesh.capabilities()
    rows = []
    data = []
    for report in reports:
        verdict, why = _verdict(report)
        trainers = [
            (fw, [m.name for m in c.models if report.task_type in m.task_types])
            for fw, c in sorted(caps.items())
        ]
        trainers = [(fw, models) for fw, models in trainers if models]
        if not trainers:
            trainers = [("-", [])]
        for fw, models in trainers:
            shown_verdict = verdict if fw != "-" else f"{verdict} (no trainer)"
            rows.append(
                [
                    task_label(report.task_type),
                    fw,
                    ", ".join(models)
                    if len(models) <= 4
                    else f"{', '.join(models[:3])} +{len(models) - 3}",
                    shown_verdict,
                    why,
                ]
            )
            data.append(
                {
                    "task": task_label(report.task_type),
                    "framework": fw if fw != "-" else "",
                    "models": models,
                    "verdict": verdict,
                    "reason": why,
                    "report": to_dict(report),
                }
            )
    if wants_json(args):
        print_json({"dataset": ds.name, "rows": data, "unreachable": mesh.unreachable})
        return 0
    for fw in mesh.unreachable:
        note(f"trainer {fw} ({mesh.trainer_addrs[fw]}) did not answer: its models are left out")
    print(
        f"{ds.display_name} ({ds.name}): {ds.image_count} images, {ds.annotation_count} annotations"
    )
    print(table(["task", "framework", "models", "verdict", "details"], rows))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    ds = mesh.resolve_dataset(args.dataset)
    framework, spec, note_text = build_spec(mesh, args, ds.name)
    if note_text and not wants_json(args):
        note(note_text)
    job = start(mesh, framework, spec, args.request_id or "")
    if wants_json(args) and not args.follow:
        print_json(to_dict(job))
        return 0
    if not wants_json(args):
        print(
            f"started {job.name}: {spec.model} for {task_label(spec.task_type)} on "
            f"{ds.display_name} ({state_label(job.state)}"
            + (f", queue position {job.queue_position}" if job.queue_position else "")
            + ")"
        )
        if not args.follow:
            print(f"  follow: vmesh jobs watch {job.name}")
            return 0
    return follow(mesh, job, wants_json(args))


def cmd_jobs_list(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    frameworks = [args.framework] if args.framework else list(mesh.trainer_addrs)
    terms = []
    if args.state:
        terms.append(f"state={args.state.upper().removeprefix('JOB_STATE_')}")
    if args.dataset:
        terms.append(f'dataset="{mesh.resolve_dataset(args.dataset).name}"')
    jobs: list[trainer_pb2.Job] = []
    unreachable = {}
    for fw in frameworks:
        try:
            jobs.extend(mesh.list_jobs(fw, " ".join(terms)))
        except grpc.RpcError as err:
            if err.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            unreachable[fw] = err.details()
    jobs.sort(key=lambda j: (j.create_time.seconds, j.create_time.nanos), reverse=True)
    if wants_json(args):
        print_json({"jobs": [to_dict(j) for j in jobs], "unreachable": unreachable})
        return 0
    for fw in unreachable:
        note(f"trainer {fw} ({mesh.trainer_addrs[fw]}) did not answer: its jobs are left out")
    if not jobs:
        print("no jobs yet: `vmesh train DATASET --model MODEL`")
    else:
        print(table(JOB_HEADERS, [_job_row(j) for j in jobs]))
    return 0


def _print_job(job: trainer_pb2.Job) -> None:
    s = job.spec
    pairs = [
        ("job", job.name),
        (
            "state",
            state_label(job.state)
            + (f" (queue position {job.queue_position})" if job.queue_position else ""),
        ),
        ("model", f"{s.model} ({job.framework})"),
        ("task", task_label(s.task_type)),
        ("dataset", s.dataset),
        ("snapshot", job.snapshot),
        ("conversion", job.conversion or "-"),
        ("epochs", f"{job.current_epoch}/{job.total_epochs or s.epochs}"),
        (
            "hyperparameters",
            f"batch {s.batch_size}, image size {s.image_size}, lr {s.learning_rate:g}, "
            f"device {s.device or 'auto'}" + (f" x {s.devices} processes" if s.devices > 1 else ""),
        ),
        ("split seed", f"{job.split_seed}" + (" (generated split)" if job.split_generated else "")),
    ]
    if job.best_epoch:
        metrics = ", ".join(
            f"{k} {v:.4f}" for k, v in sorted(job.best_metrics.items()) if k.startswith("val/")
        )
        pairs.append(("best epoch", f"{job.best_epoch} by {job.best_metric_name}: {metrics}"))
    if job.replica:
        pairs.append(("replica", job.replica))
    if job.resume_count:
        pairs.append(("resumed", str(job.resume_count)))
    if job.error:
        pairs.append(("error", job.error))
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        print(f"{key.ljust(width)}  {value}")
    if job.checkpoints:
        print()
        print(
            table(
                ["checkpoint", "epoch", "size"],
                [[c.filename, c.epoch, human_bytes(c.size_bytes)] for c in job.checkpoints],
            )
        )


# Per-class value columns of `vmesh jobs get`, in this order; other keys follow by name.
CLASS_VALUE_COLUMNS = ("ap50", "ap50_95", "precision", "recall", "accuracy", "iou")


def _evaluation(mesh: Mesh, job: trainer_pb2.Job) -> trainer_pb2.Evaluation | None:
    """The job's evaluation once it has ended (None when it has none)."""
    if job.state not in TERMINAL:
        return None
    try:
        return (
            mesh.trainer(job.framework or mesh.job_name(job.name)[0])
            .GetEvaluation(
                trainer_pb2.GetEvaluationRequest(name=f"{job.name}/evaluation"),
                timeout=mesh.timeout,
            )
            .evaluation
        )
    except grpc.RpcError as err:
        if err.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNIMPLEMENTED):
            return None
        raise


def _evaluation_dict(evaluation: trainer_pb2.Evaluation) -> dict[str, Any]:
    """The evaluation as JSON; pictures are named with their size, not their bytes."""
    out = to_dict(evaluation)
    out["pictures"] = [
        {"filename": p.filename, "content_type": p.content_type, "size_bytes": len(p.data)}
        for p in evaluation.pictures
    ]
    return out


# A confusion matrix with more classes than this (after leaving out the empty ones) is not
# printed: --json has it, the web UI draws it.
CONFUSION_MAX_PRINTED = 20


def _print_evaluation(evaluation: trainer_pb2.Evaluation) -> None:
    print()
    print(f"evaluation of {evaluation.checkpoint or 'best.pt'} on the val split")
    if evaluation.metrics:
        print("  " + ", ".join(f"{k} {v:.4f}" for k, v in sorted(evaluation.metrics.items())))
    if evaluation.classes:
        present = {k for c in evaluation.classes for k in c.values}
        keys = [k for k in CLASS_VALUE_COLUMNS if k in present]
        keys += sorted(present - set(keys))
        # a class with no instance in val and nothing but zeros says nothing: left out
        shown = [
            c for c in evaluation.classes if c.instance_count or any(c.values.values())
        ] or list(evaluation.classes)
        rows = [
            [c.category_name or c.category_id]
            + [f"{c.values[k]:.4f}" if k in c.values else "-" for k in keys]
            + [c.instance_count]
            for c in shown
        ]
        print()
        print(table(["class", *keys, "instances"], rows))
        left = len(evaluation.classes) - len(shown)
        if left:
            print(
                f"({left} classes with no instance in val and only zeros left out; --json has them)"
            )
    labels = list(evaluation.confusion_matrix.labels)
    counts = [list(r.counts) for r in evaluation.confusion_matrix.rows]
    if labels and len(counts) == len(labels):
        keep = [
            i
            for i in range(len(labels))
            if any(counts[i]) or any(r[i] for r in counts if i < len(r))
        ] or list(range(len(labels)))
        print()
        if len(keep) > CONFUSION_MAX_PRINTED:
            print(
                f"confusion matrix: {len(labels)} x {len(labels)}, too wide to print "
                "(--json has it; the web UI draws it)"
            )
        else:
            left = len(labels) - len(keep)
            print(
                "confusion matrix (rows true, columns predicted"
                + (f"; {left} classes neither true nor predicted left out" if left else "")
                + ")"
            )
            print(
                table(
                    ["true \\ predicted", *(labels[j] for j in keep)],
                    [[labels[i]] + [f"{counts[i][j]:g}" for j in keep] for i in keep],
                )
            )
    if evaluation.pictures:
        names = ", ".join(p.filename for p in evaluation.pictures)
        print(f"\npictures: {names} (the web UI shows them)")


def cmd_jobs_get(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    job = mesh.get_job(args.job)
    evaluation = _evaluation(mesh, job)
    if wants_json(args):
        out = to_dict(job)
        if evaluation is not None:
            out["evaluation"] = _evaluation_dict(evaluation)
        print_json(out)
    else:
        _print_job(job)
        if evaluation is not None:
            _print_evaluation(evaluation)
    return 0


def cmd_jobs_watch(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    return follow(mesh, mesh.get_job(args.job), wants_json(args))


def cmd_jobs_logs(args: argparse.Namespace) -> int:
    mesh = open_mesh(args)
    framework, name = mesh.job_name(args.job)
    lines = []
    try:
        for reply in mesh.trainer(framework).StreamLogs(
            trainer_pb2.StreamLogsRequest(name=name, follow=args.follow), timeout=None
        ):
            if wants_json(args):
                lines.extend(reply.lines)
            else:
                for line in reply.lines:
                    print(line, flush=True)
    except KeyboardInterrupt:
        return INTERRUPTED
    if wants_json(args):
        print_json({"job": name, "lines": lines})
    return 0


def _control(args: argparse.Namespace, what: str) -> int:
    mesh = open_mesh(args)
    framework, name = mesh.job_name(args.job)
    stub = mesh.trainer(framework)
    if what == "resume":
        job = stub.ResumeJob(trainer_pb2.ResumeJobRequest(name=name), timeout=60).job
        message = f"resumed {name} ({state_label(job.state)}); follow: vmesh jobs watch {name}"
    else:
        job = stub.CancelJob(
            trainer_pb2.CancelJobRequest(name=name, stop_early=what == "stop"), timeout=60
        ).job
        message = (
            f"{name} stops after this epoch, keeping its weights ({state_label(job.state)})"
            if what == "stop"
            else f"cancelled {name} ({state_label(job.state)})"
        )
    if wants_json(args):
        print_json(to_dict(job))
    else:
        print(message)
    return 0


def cmd_jobs_cancel(args: argparse.Namespace) -> int:
    return _control(args, "cancel")


def cmd_jobs_stop(args: argparse.Namespace) -> int:
    return _control(args, "stop")


def cmd_jobs_resume(args: argparse.Namespace) -> int:
    return _control(args, "resume")


def _checkpoint_file(text: str) -> str:
    name = text.strip()
    name = name if name.endswith(".pt") else f"{name}.pt"
    stem = name.removesuffix(".pt")
    if stem not in ("best", "last") and not (stem.startswith("epoch_") and stem[6:].isdigit()):
        raise CliError(f"--checkpoint {text!r}: use best, last or epoch_N", USAGE)
    return name


def cmd_weights(args: argparse.Namespace) -> int:
    from visionmesh.cli.datasets import _download

    filename = _checkpoint_file(args.checkpoint)
    mesh = open_mesh(args)
    framework, name = mesh.job_name(args.job)
    job = mesh.trainer(framework).GetJob(trainer_pb2.GetJobRequest(name=name), timeout=60).job
    size = next((c.size_bytes for c in job.checkpoints if c.filename == filename), 0)
    output = args.output or Path(f"{name.rsplit('/', 1)[-1]}-{filename}")
    written = _download(
        mesh.trainer(framework).DownloadCheckpoint(
            trainer_pb2.DownloadCheckpointRequest(name=f"{name}/checkpoints/{filename}"),
            timeout=3600,
        ),
        output,
        "download",
        size,
    )
    if wants_json(args):
        print_json({"job": name, "checkpoint": filename, "output": str(output), "bytes": written})
    else:
        print(f"wrote {output} ({human_bytes(written)}, {filename} of {name})")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    if not args.image.is_file():
        raise CliError(f"{args.image} is not a file", NOT_FOUND)
    image = args.image.read_bytes()
    mesh = open_mesh(args)
    framework, name = mesh.job_name(args.job)
    reply = mesh.trainer(framework).Predict(
        trainer_pb2.PredictRequest(
            name=name,
            image=image,
            checkpoint=args.checkpoint.removesuffix(".pt"),
            confidence_threshold=args.conf,
            max_detections=args.max_detections,
        ),
        timeout=300,
    )
    if args.output:
        from visionmesh.overlay import draw_prediction

        draw_prediction(image, reply).save(args.output)
    if wants_json(args):
        data = to_dict(reply)
        if args.output:
            data["overlay"] = str(args.output)
        print_json(data)
        return 0
    print(
        f"{task_label(reply.task_type)} by {name} ({reply.checkpoint_key}), "
        f"{reply.image_width}x{reply.image_height}, {reply.inference_ms:.0f} ms"
    )
    if reply.classes:
        print(
            table(["class", "score"], [[c.category_name, f"{c.score:.3f}"] for c in reply.classes])
        )
    if reply.detections:
        print(
            table(
                ["class", "score", "box (x, y, w, h)", "polygons", "keypoints"],
                [
                    [
                        d.category_name or d.category_id,
                        f"{d.score:.3f}",
                        f"{d.box.x:.0f}, {d.box.y:.0f}, {d.box.width:.0f}, {d.box.height:.0f}",
                        len(d.polygons),
                        len(d.keypoints),
                    ]
                    for d in reply.detections
                ],
            )
        )
    elif not reply.classes:
        print("nothing found above the confidence threshold")
    if args.output:
        print(f"overlay written to {args.output}")
    return 0
