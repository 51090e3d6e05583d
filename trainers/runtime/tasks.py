"""One-shot child processes for work after training: ``python -m trainers.runtime.tasks CFG``.

The trainer server never imports torch or a framework, so exporting a checkpoint and
checking uploaded weights run here, in a child of their own (own process group, dies with
the server). ``CFG`` is a JSON file: ``{"kind": "export" | "check_weights", "adapter",
"store_url", "result", "parent_pid", ...}``; the child writes its answer as JSON to
``result`` (``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``); stdout/stderr are
its log. :func:`run_task` (server side) starts one and waits for it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainers.runtime import records

EXTENSIONS = {"onnx": "onnx", "torchscript": "torchscript"}


class TaskError(RuntimeError):
    pass


def run_task(
    cfg: dict[str, Any],
    work_dir: Path,
    *,
    log: Callable[[str], None] | None = None,
    timeout: float = 1800.0,
) -> dict[str, Any]:
    """Run ``cfg`` in a child; its result (``ok`` true) or TaskError with its error."""
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    result = work_dir / "result.json"
    result.unlink(missing_ok=True)
    cfg = {**cfg, "result": str(result.resolve()), "parent_pid": os.getpid()}
    cfg_file = work_dir / "task.json"
    cfg_file.write_text(json.dumps(cfg))
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    proc = subprocess.Popen(
        [sys.executable, "-m", "trainers.runtime.tasks", str(cfg_file.resolve())],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        cwd=str(work_dir),
        start_new_session=True,
    )
    tail: list[str] = []
    deadline = time.monotonic() + timeout

    def read() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            line = line.split("\r")[-1]
            if not line:
                continue
            tail.append(line)
            del tail[:-20]
            if log is not None:
                log(line)

    import threading

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None:
        if time.monotonic() > deadline:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise TaskError(f"{cfg['kind']} took longer than {timeout:.0f}s and was stopped")
        time.sleep(0.1)
    reader.join(timeout=5)
    try:
        answer = json.loads(result.read_text())
    except (OSError, ValueError):
        last = " | ".join(tail[-3:])
        raise TaskError(f"{cfg['kind']} ended with exit code {proc.returncode}: {last}") from None
    if not answer.get("ok"):
        raise TaskError(str(answer.get("error") or f"{cfg['kind']} failed"))
    return answer


# -- child side -------------------------------------------------------------------------------


def _export(cfg: dict[str, Any], adapter: Any, store: Any) -> dict[str, Any]:
    fmt = cfg["format"]
    source = cfg["source"]  # "best" | "last"
    job_id = cfg["job_id"]
    work = Path(cfg["work_dir"]).resolve()
    local = work / f"{source}.pt"
    store.download(records.checkpoint_key(job_id, f"{source}.pt"), local)
    started = time.monotonic()
    out = adapter.export(local, fmt, image_size=int(cfg["image_size"]), out_dir=work, device="cpu")
    seconds = time.monotonic() - started
    filename = f"{source}.{EXTENSIONS[fmt]}"
    key = records.checkpoint_key(job_id, filename)
    store.put_file(key, Path(out), content_type="application/octet-stream")
    size = Path(out).stat().st_size
    print(f"exported {filename} ({size} bytes) in {seconds:.1f}s", flush=True)
    return {"filename": filename, "key": key, "size_bytes": size, "seconds": seconds}


def _check_weights(cfg: dict[str, Any], adapter: Any, store: Any) -> dict[str, Any]:
    description = adapter.check_weights(Path(cfg["path"]), cfg["model"], cfg["task_type"])
    return {"description": description}


def main(argv: list[str]) -> int:
    from trainers.runtime.worker import die_with_parent, load_adapter
    from visionmesh.store import open_store

    cfg = json.loads(Path(argv[0]).read_text())
    die_with_parent(int(cfg.get("parent_pid", 0)))
    result = Path(cfg["result"])
    try:
        adapter = load_adapter(cfg["adapter"])
        store = open_store(cfg["store_url"])
        kinds = {"export": _export, "check_weights": _check_weights}
        answer = {"ok": True, **kinds[cfg["kind"]](cfg, adapter, store)}
        code = 0
    except Exception as exc:
        traceback.print_exc()
        message = str(exc).strip() or type(exc).__name__
        answer = {"ok": False, "error": f"{type(exc).__name__}: {message}"[:2000]}
        code = 1
    result.write_text(json.dumps(answer))
    return code


if __name__ == "__main__":
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    code = main(sys.argv[1:])
    sys.stdout.flush()
    os._exit(code)
