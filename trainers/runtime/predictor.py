"""Predict in a child process, so the trainer server never loads a framework.

``python -m trainers.runtime.predictor ADAPTER`` reads one JSON request per line on stdin and
answers one JSON line on the pipe named by ``VISIONMESH_EVENTS_FD`` (framework output on
stdout/stderr stays out of the protocol). :class:`PredictPool` (server side) starts it on the
first Predict, keeps it warm (models stay loaded) and stops it after an idle period; a crash
fails that request and the next one starts a fresh child.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

log = logging.getLogger("visionmesh.trainer.predict")

IDLE_SECONDS = float(os.environ.get("VISIONMESH_PREDICT_IDLE_SECONDS", "600"))
REQUEST_TIMEOUT = 300.0


class PredictError(RuntimeError):
    pass


class PredictPool:
    def __init__(self, adapter_path: str, *, log_path: Path | None = None) -> None:
        self.adapter_path = adapter_path
        self.log_path = log_path
        self._lock = threading.Lock()
        self._proc: subprocess.Popen | None = None
        self._responses: Any = None
        self._last_used = 0.0
        self._closed = False
        threading.Thread(target=self._idle_watch, daemon=True, name="predict-idle").start()

    def _start(self) -> None:
        read_fd, write_fd = os.pipe()
        env = dict(os.environ)
        env["VISIONMESH_EVENTS_FD"] = str(write_fd)
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "trainers.runtime.predictor",
                    self.adapter_path,
                    str(os.getpid()),
                ],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(write_fd,),
                env=env,
                start_new_session=True,
            )
        finally:
            os.close(write_fd)
            if out is not subprocess.DEVNULL:
                out.close()
        self._responses = os.fdopen(read_fd, "rb")

    def _stop(self) -> None:
        proc, self._proc = self._proc, None
        if self._responses is not None:
            with contextlib.suppress(OSError):
                self._responses.close()
            self._responses = None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.stdin.close()  # type: ignore[union-attr]
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._stop()

    def _idle_watch(self) -> None:
        while not self._closed:
            time.sleep(5)
            with self._lock:
                if self._proc is not None and time.monotonic() - self._last_used > IDLE_SECONDS:
                    self._stop()

    def predict(self, request: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if self._closed:
                raise PredictError("the trainer is shutting down")
            if self._proc is None or self._proc.poll() is not None:
                self._stop()
                self._start()
            self._last_used = time.monotonic()
            assert self._proc is not None and self._proc.stdin is not None
            line = json.dumps(request).encode() + b"\n"
            try:
                self._proc.stdin.write(line)
                self._proc.stdin.flush()
                reply = self._read_reply()
            except (OSError, PredictError) as exc:
                code = self._proc.poll() if self._proc else None
                self._stop()
                raise PredictError(
                    f"the prediction process failed ({exc}; exit code {code})"
                ) from None
            finally:
                self._last_used = time.monotonic()
        if not reply.get("ok"):
            raise PredictError(reply.get("error") or "prediction failed")
        return reply

    def _read_reply(self) -> dict[str, Any]:
        result: dict[str, Any] = {}

        def read() -> None:
            raw = self._responses.readline()
            if raw:
                result["reply"] = json.loads(raw)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(REQUEST_TIMEOUT)
        if "reply" not in result:
            raise PredictError("no answer" if not reader.is_alive() else "timed out")
        return result["reply"]


def main(argv: list[str]) -> int:
    from trainers.runtime.worker import die_with_parent, load_adapter

    adapter_path = argv[0]
    die_with_parent(int(argv[1]) if len(argv) > 1 else 0)
    adapter = load_adapter(adapter_path)
    out = os.fdopen(int(os.environ["VISIONMESH_EVENTS_FD"]), "w", buffering=1)
    for line in sys.stdin:
        if not line.strip():
            continue
        started = time.perf_counter()
        try:
            req = json.loads(line)
            from trainers.runtime.worker import resolve_device

            prediction = adapter.predict(
                Path(req["checkpoint"]),
                base64.b64decode(req["image"]),
                task_type=req["task_type"],
                class_names=list(req["class_names"]),
                confidence=float(req["confidence"]),
                max_detections=int(req["max_detections"]),
                device=resolve_device(req.get("device", "")),
            )
            reply = {
                "ok": True,
                "prediction": dataclasses.asdict(prediction),
                "inference_ms": (time.perf_counter() - started) * 1000,
            }
        except Exception as exc:  # report, keep serving
            import traceback

            traceback.print_exc()
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
