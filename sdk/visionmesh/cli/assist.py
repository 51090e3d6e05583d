"""vmesh ask "SENTENCE": a sentence -> a training request, shown for confirmation, then run."""

from __future__ import annotations

import argparse
import sys

from visionmesh.cli._common import (
    COMMON,
    REFUSED,
    CliError,
    note,
    open_mesh,
    print_json,
    task_label,
    to_dict,
    wants_json,
)
from visionmesh.cli.training import follow, start, state_label
from visionmesh.v1 import assistant_pb2


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "ask",
        parents=[COMMON],
        help='train from a sentence: vmesh ask "train yolo11n on shapes for 30 epochs"',
        description="Parse a Korean or English sentence into a training request (the same "
        "deterministic parser as the web UI's chat box), show it, and start it once confirmed.",
    )
    p.add_argument("text", metavar="SENTENCE", nargs="+")
    p.add_argument("--yes", "-y", action="store_true", help="start without asking")
    p.add_argument("--dry-run", action="store_true", help="only show what was understood")
    p.add_argument("--follow", "-f", action="store_true", help="follow the job once started")
    p.add_argument("--framework", help="the trainer to use (default: the one with the model)")
    p.set_defaults(func=cmd_ask)


def _show(reply: assistant_pb2.ParseTrainingCommandResponse, framework: str) -> None:
    spec = reply.spec
    rows = [
        (
            "dataset",
            f'{spec.dataset or "?"} ("{reply.dataset_phrase}")' if reply.dataset_phrase else "?",
        ),
        ("model", f"{spec.model} ({framework})" if spec.model and framework else spec.model or "?"),
        ("task", task_label(spec.task_type) if spec.task_type else "?"),
    ]
    for label, value in (
        ("epochs", spec.epochs),
        ("batch size", spec.batch_size),
        ("image size", spec.image_size),
        ("learning rate", spec.learning_rate),
        ("patience", spec.patience),
        ("seed", spec.seed),
        ("device", spec.device),
    ):
        if value:
            rows.append((label, f"{value:g}" if isinstance(value, float) else str(value)))
    print("understood:")
    for label, value in rows:
        print(f"  {label:<13} {value}")
    if reply.unparsed:
        print("not understood (ignored): " + ", ".join(repr(w) for w in reply.unparsed))
    for text in reply.notes:
        print(f"note: {text}")


def cmd_ask(args: argparse.Namespace) -> int:
    text = " ".join(args.text)
    mesh = open_mesh(args)
    reply = mesh.assistant.ParseTrainingCommand(
        assistant_pb2.ParseTrainingCommandRequest(text=text), timeout=mesh.timeout
    )
    spec = reply.spec
    framework = ""
    framework_error = ""
    if spec.model:
        try:
            framework = mesh.framework_of_model(spec.model, args.framework or "")
        except Exception as err:  # said below, with the rest
            framework_error = getattr(err, "message", str(err))
    if wants_json(args):
        data = {"parsed": to_dict(reply), "framework": framework}
        if framework_error:
            data["error"] = framework_error
    else:
        _show(reply, framework)
    if not reply.complete or framework_error:
        missing = []
        if not spec.dataset:
            missing.append("a dataset you can see" if reply.dataset_phrase else "a dataset")
        if not spec.model:
            missing.append("a model")
        reason = framework_error or "the sentence needs " + " and ".join(missing)
        if wants_json(args):
            print_json({**data, "started": False})
        raise CliError(f"cannot start: {reason}", REFUSED)
    if args.dry_run:
        if wants_json(args):
            print_json({**data, "started": False})
        return 0
    if not args.yes:
        if not sys.stdin.isatty():
            if wants_json(args):
                print_json({**data, "started": False})
            raise CliError("not started: confirm with --yes (no terminal to ask)", REFUSED)
        answer = input("start this training? [y/N] ")
        if answer.strip().lower() not in ("y", "yes", "네", "예", "응"):
            print("not started")
            return REFUSED
    job = start(mesh, framework, spec)
    if wants_json(args):
        print_json({**data, "started": True, "job": to_dict(job)})
        if args.follow:
            return follow(mesh, job, True)
        return 0
    print(f"started {job.name} ({state_label(job.state)})")
    if args.follow:
        return follow(mesh, job)
    note(f"  follow: vmesh jobs watch {job.name}")
    return 0
