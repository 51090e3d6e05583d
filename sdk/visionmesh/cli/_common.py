"""What every client command shares: options, the mesh, output, errors and exit codes.

grpc, protobuf and the client are imported where they are used, not here: the offline
commands (``vmesh convert``, ``validate``, ``shapes``) import this module too and never
touch the network.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import grpc

    from visionmesh.client import ClientError, Mesh

# Exit codes (also in `vmesh --help`).
OK = 0
REFUSED = 1  # the server (or the job) said no
USAGE = 2  # argparse's own code for bad usage
NOT_SIGNED_IN = 3
NOT_FOUND = 4
UNREACHABLE = 5
INTERRUPTED = 130

EXIT_CODES_HELP = """exit codes:
  0  ok
  1  the server said no (invalid input, not allowed, incompatible dataset, job failed)
  2  usage error (bad or missing arguments)
  3  not signed in, or the token expired or was refused (run `vmesh login`)
  4  not found (dataset, job, model, snapshot, file)
  5  a server is unreachable (start the mesh with `make run`, or check the addresses)
  130 interrupted (Ctrl-C; a followed job keeps running)

environment:
  VISIONMESH_DATASET_ADDR  dataset_svc address (default 127.0.0.1:50050)
  VISIONMESH_TRAINERS      framework=host:port,... (default timm :50051, ultralytics :50052,
                           hf :50053)
  VISIONMESH_TOKEN         a token to use instead of the one `vmesh login` stored
  XDG_CONFIG_HOME          where the token is stored (visionmesh/token.json, mode 0600)
"""

# grpc.StatusCode names -> exit codes.
_CODE_EXIT = {
    "UNAUTHENTICATED": NOT_SIGNED_IN,
    "NOT_FOUND": NOT_FOUND,
    "UNAVAILABLE": UNREACHABLE,
    "DEADLINE_EXCEEDED": UNREACHABLE,
}


class CliError(Exception):
    def __init__(self, message: str, exit_code: int = REFUSED) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def common_options() -> argparse.ArgumentParser:
    """Options every client command takes, before or after the command words."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="print JSON for scripts"
    )
    parent.add_argument(
        "--dataset-addr",
        default=argparse.SUPPRESS,
        metavar="HOST:PORT",
        help="dataset_svc address (default: $VISIONMESH_DATASET_ADDR or 127.0.0.1:50050)",
    )
    parent.add_argument(
        "--trainers",
        default=argparse.SUPPRESS,
        metavar="FW=HOST:PORT,...",
        help="trainer addresses (default: $VISIONMESH_TRAINERS)",
    )
    return parent


COMMON = common_options()


def wants_json(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def open_mesh(args: argparse.Namespace, *, signed_in: bool = True) -> Mesh:
    from visionmesh.client import Mesh

    try:
        mesh = Mesh.from_env(
            dataset_addr=getattr(args, "dataset_addr", None),
            trainers=getattr(args, "trainers", None),
        )
    except ValueError as err:
        raise CliError(str(err), USAGE) from None
    if signed_in and not mesh.token:
        raise CliError("not signed in: run `vmesh login` (or set VISIONMESH_TOKEN)", NOT_SIGNED_IN)
    return mesh


# -- output ----------------------------------------------------------------------------------


def to_dict(message: Any) -> dict[str, Any]:
    from google.protobuf import json_format

    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    rows = [["" if v is None else str(v) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, value in enumerate(row):
            widths[i] = max(widths[i], len(value))
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True))]
    for row in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(line.rstrip() for line in lines)


def enum_short(value: str, prefix: str) -> str:
    """TASK_TYPE_OBJECT_DETECTION -> object_detection."""
    return value.removeprefix(prefix).lower()


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def human_seconds(s: float) -> str:
    if s is None or math.isnan(s) or s < 0:
        return "?"
    s = int(round(s))
    return (
        f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
    )


def note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class Progress:
    """A progress line on stderr: bytes and files with rate and ETA.

    On a terminal it redraws in place; otherwise it prints a line every few seconds and
    the last one, so logs stay short.
    """

    def __init__(
        self, label: str, total_bytes: int, total_files: int = 0, *, stream: Any = None
    ) -> None:
        self.label = label
        self.total_bytes = total_bytes
        self.total_files = total_files
        self.bytes = 0
        self.files = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.start = time.monotonic()
        self._last = self.start if not self.tty else 0.0

    def update(self, nbytes: int = 0, nfiles: int = 0) -> None:
        self.bytes += nbytes
        self.files += nfiles
        now = time.monotonic()
        if now - self._last >= (0.1 if self.tty else 5.0):
            self._last = now
            self._draw(final=False)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.start, 1e-6)
        rate = self.bytes / elapsed
        frac = self.bytes / self.total_bytes if self.total_bytes else 1.0
        bar = "#" * int(24 * min(frac, 1.0))
        eta = (self.total_bytes - self.bytes) / rate if rate > 0 else float("nan")
        files = f"  {self.files}/{self.total_files} files" if self.total_files else ""
        return (
            f"{self.label} [{bar:<24}] {frac * 100:3.0f}%  "
            f"{human_bytes(self.bytes)}/{human_bytes(self.total_bytes)}{files}  "
            f"{human_bytes(rate)}/s  ETA {human_seconds(eta)}"
        )

    def _draw(self, final: bool) -> None:
        text = self.line()
        if self.tty:
            self.stream.write("\r\x1b[K" + text + ("\n" if final else ""))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def done(self) -> None:
        self._draw(final=True)


# -- errors ----------------------------------------------------------------------------------


def _details(err: grpc.RpcError) -> list[str]:
    """google.rpc.BadRequest field violations of an error, as 'field: description'."""
    try:
        from visionmesh.errors import bad_request_fields

        fields = bad_request_fields(err)
    except Exception:
        return []
    return [f"{field}: {description}" for field, description in fields.items()]


def rpc_failure(err: grpc.RpcError, args: argparse.Namespace | None = None) -> int:
    code = err.code()
    exit_code = _CODE_EXIT.get(code.name, REFUSED)
    message = err.details() or code.name
    if code.name == "UNAUTHENTICATED":
        message += "\n  run `vmesh login` (or set VISIONMESH_TOKEN)"
    if code.name == "UNAVAILABLE":
        message = f"server unreachable: {message}\n  start the mesh with `make run`, or check the addresses (vmesh --help)"
    fields = _details(err)
    if args is not None and wants_json(args):
        print_json({"error": {"code": code.name, "message": err.details(), "fields": fields}})
    print(f"error ({code.name}): {message}", file=sys.stderr)
    for line in fields:
        print(f"  {line}", file=sys.stderr)
    return exit_code


def client_failure(err: ClientError, args: argparse.Namespace | None = None) -> int:
    exit_code = _CODE_EXIT.get(err.code.name, REFUSED)
    if args is not None and wants_json(args):
        print_json({"error": {"code": err.code.name, "message": err.message}})
    print(f"error: {err.message}", file=sys.stderr)
    return exit_code


def run_command(func: Callable[[argparse.Namespace], int | None], args: argparse.Namespace) -> int:
    """Run a command, turning errors into a message and an exit code."""
    try:
        return int(func(args) or 0)
    except CliError as err:
        if wants_json(args):
            print_json({"error": {"message": err.message, "exit_code": err.exit_code}})
        print(f"error: {err.message}", file=sys.stderr)
        return err.exit_code
    except Exception as err:
        # A client or gRPC error can only come from a command that imported them.
        client, grpc_module = sys.modules.get("visionmesh.client"), sys.modules.get("grpc")
        if client is not None and isinstance(err, client.ClientError):
            return client_failure(err, args)
        if grpc_module is not None and isinstance(err, grpc_module.RpcError):
            return rpc_failure(err, args)
        raise


# -- tasks -----------------------------------------------------------------------------------


def parse_task(text: str) -> int:
    """A TaskType value from detect / segment / classify / pose / semantic, a task key
    (object_detection) or an enum name (TASK_TYPE_OBJECT_DETECTION)."""
    from visionmesh.ask import TASK_ENUMS, TASK_WORDS
    from visionmesh.v1 import common_pb2

    low = text.strip().lower().replace("-", "_")
    key = TASK_WORDS.get((low,)) or (low if low in TASK_ENUMS else "")
    if not key and low.upper().removeprefix("TASK_TYPE_").lower() in TASK_ENUMS:
        key = low.upper().removeprefix("TASK_TYPE_").lower()
    if not key:
        raise CliError(
            f"unknown task {text!r}: use detect, segment, classify, pose, semantic "
            f"(or {', '.join(TASK_ENUMS)})",
            USAGE,
        )
    return common_pb2.TaskType.Value(TASK_ENUMS[key])


def task_label(value: int) -> str:
    from visionmesh.v1 import common_pb2

    return enum_short(common_pb2.TaskType.Name(value), "TASK_TYPE_")
