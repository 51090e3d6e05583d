"""TrainerService RPCs for after training: exports, evaluation, pretrained weights, init_from.

Mixed into :class:`trainers.runtime.server.TrainerServicer` (it supplies ``adapter``,
``_manager()``, ``_job()``, ``_job_by_id()``). Nothing here imports torch: exports and the
load check of uploaded weights run in :mod:`trainers.runtime.tasks` children.

- ExportModel starts a background export (one per job and format; asking again while one
  runs returns it, asking after it ended replaces it); its progress lives in
  ``JobRecord.exports`` (GetJob's ``exports``, GetModelExport). The file is stored as
  ``checkpoints/<job>/<best|last>.<onnx|torchscript>`` and downloads with
  DownloadCheckpoint. An export a previous server process left RUNNING reads FAILED.
- GetEvaluation returns ``runs/<job>/evaluation.json`` with its pictures inline.
- UploadWeights streams into a private temp file, checks the size, loads it for the model
  and task in a child, then keeps it at ``models/pretrained/<framework>/<model>.<ext>``
  (one file per model: an upload replaces any other extension) with its metadata in
  ``models/pretrained-meta/<framework>/<model>.json``.
- ``TrainingSpec.init_from`` (and ``pretrained``) resolve at StartTraining to the object
  store key the job starts from (``JobRecord.init_key``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from trainers.runtime import evaluation as evaluation_mod
from trainers.runtime import lifecycle, records
from trainers.runtime.adapter import SpecError, TrainSpec
from trainers.runtime.jobs import Job
from trainers.runtime.tasks import TaskError, run_task
from visionmesh.errors import ServiceError, grpc_errors
from visionmesh.store import KeyNotFound
from visionmesh.v1 import trainer_pb2

WEIGHT_EXTENSIONS = (".pt", ".pth", ".safetensors", ".bin")
MAX_WEIGHTS_BYTES = 4 * 1024**3
EXPORT_TIMEOUT = 1800.0
META_PREFIX = "models/pretrained-meta"


def _identity() -> tuple[str, str]:
    from trainers.runtime.server import _identity as identity

    return identity()


def _format_name(value: int) -> str:
    if value == trainer_pb2.MODEL_FORMAT_UNSPECIFIED or value not in (
        trainer_pb2.ModelFormat.values()
    ):
        raise ServiceError("INVALID_ARGUMENT", "format must be ONNX or TORCHSCRIPT", "format")
    return trainer_pb2.ModelFormat.Name(value).removeprefix("MODEL_FORMAT_").lower()


@grpc_errors
class ModelsIOMixin:
    """ExportModel, GetModelExport, GetEvaluation, Upload/List/DeleteWeights, init_from."""

    adapter: Any

    # -- shared state (created on first use: the servicer's __init__ is not ours) -----------
    @property
    def _exports_running(self) -> set[tuple[str, str]]:
        running = self.__dict__.get("_exports_running_set")
        if running is None:
            running = self.__dict__.setdefault("_exports_running_set", set())
        return running

    def _adapter_path(self) -> str:
        return f"{type(self.adapter).__module__}:{type(self.adapter).__name__}"

    # -- exports ----------------------------------------------------------------------------
    def _reconcile_exports(self, job: Job) -> None:
        """Exports recorded RUNNING whose replica no longer runs them: FAILED. This replica's
        own when no thread of this process runs it (restarted); another replica's when that
        replica's heartbeat stopped (it runs its exports itself while it lives)."""
        manager = self._manager()  # type: ignore[attr-defined]
        running = [e for e in job.record.exports if e["state"] == "RUNNING"]
        others = {e.get("replica", "") for e in running} - {manager.replica}
        live = manager.db.live_replicas() if others else set()
        with manager.lock:
            changed = False
            for export in job.record.exports:
                if export["state"] != "RUNNING":
                    continue
                owner = export.get("replica", "") or manager.replica
                if owner == manager.replica:
                    if (job.record.job_id, export["format"]) in self._exports_running:
                        continue
                elif owner in live:
                    continue
                export["state"] = "FAILED"
                export["error"] = "the trainer restarted while exporting; export again"
                export["update_time"] = time.time()
                changed = True
            if changed:
                manager._persist(job)

    def ExportModel(self, request, context):
        return self._export_model(request)

    def _export_model(self, request):
        job = self._job(request.name)  # type: ignore[attr-defined]
        manager = self._manager()  # type: ignore[attr-defined]
        fmt = _format_name(request.format)
        source = (request.checkpoint or "best").removesuffix(".pt")
        if source not in ("best", "last"):
            raise ServiceError("INVALID_ARGUMENT", "checkpoint must be best or last", "checkpoint")
        record = job.record
        image_size = request.image_size or int(record.spec.get("imageSize", 0)) or 640
        if not 32 <= image_size <= 8192:
            raise ServiceError("INVALID_ARGUMENT", "image_size must be 32..8192", "image_size")
        key = records.checkpoint_key(record.job_id, f"{source}.pt")
        if not manager.store.exists(key):
            raise ServiceError(
                "FAILED_PRECONDITION",
                f"{record.name} has no {source}.pt yet ({key}): wait for an epoch to finish",
                "checkpoint",
            )
        self._reconcile_exports(job)
        with manager.lock:
            current = next((e for e in record.exports if e["format"] == fmt), None)
            if current is not None and current["state"] == "RUNNING":
                return trainer_pb2.ExportModelResponse(
                    export=records.export_to_proto(record, current)
                )
            now = time.time()
            export = {
                "format": fmt,
                "state": "RUNNING",
                "error": "",
                "source": f"{source}.pt",
                "image_size": image_size,
                "replica": manager.replica,
                "create_time": now,
                "update_time": now,
            }
            record.exports = [e for e in record.exports if e["format"] != fmt] + [export]
            self._exports_running.add((record.job_id, fmt))
            manager._append_log(
                job, f"[visionmesh] export {fmt} of {source}.pt at {image_size}px started"
            )
            manager._persist(job)
            reply = trainer_pb2.ExportModelResponse(export=records.export_to_proto(record, export))
        threading.Thread(
            target=self._run_export,
            args=(job, export, source),
            daemon=True,
            name=f"export-{record.job_id}-{fmt}",
        ).start()
        return reply

    def _run_export(self, job: Job, export: dict[str, Any], source: str) -> None:
        manager = self._manager()  # type: ignore[attr-defined]
        record = job.record
        fmt = export["format"]
        work = manager.work_root / record.job_id / "exports" / f"{fmt}-{uuid.uuid4().hex[:8]}"
        cfg = {
            "kind": "export",
            "adapter": self._adapter_path(),
            "store_url": manager.store_url,
            "job_id": record.job_id,
            "format": fmt,
            "source": source,
            "image_size": export["image_size"],
            "work_dir": str(work.resolve()),
        }
        try:
            answer = run_task(
                cfg,
                work,
                log=lambda line: manager._append_log(job, f"[export {fmt}] {line}"),
                timeout=EXPORT_TIMEOUT,
            )
            update = {
                "state": "SUCCEEDED",
                "filename": answer["filename"],
                "key": answer["key"],
                "size_bytes": int(answer["size_bytes"]),
                "seconds": float(answer.get("seconds", 0.0)),
            }
            message = (
                f"[visionmesh] export {fmt} SUCCEEDED: {answer['filename']} "
                f"({answer['size_bytes']} bytes, {float(answer.get('seconds', 0)):.1f}s)"
            )
        except (TaskError, OSError) as exc:
            update = {"state": "FAILED", "error": str(exc)}
            message = f"[visionmesh] export {fmt} FAILED: {exc}"
        finally:
            shutil.rmtree(work, ignore_errors=True)
        with manager.lock:
            export.update(update, update_time=time.time())
            # the job's record may have been read again from the database meanwhile (any
            # replica answers for the job): put the result in its entry for this format
            job.record.exports = [e for e in job.record.exports if e["format"] != fmt] + [export]
            self._exports_running.discard((record.job_id, fmt))
            manager._append_log(job, message)
            manager._persist(job)
            manager.cond.notify_all()

    def GetModelExport(self, request, context):
        owner, _ = _identity()
        match = records.EXPORT_NAME_RE.match(request.name or "")
        if not match:
            raise ServiceError(
                "INVALID_ARGUMENT",
                f"name {request.name!r} is not trainers/{{framework}}/jobs/{{job_id}}/"
                "exports/{onnx|torchscript}",
                "name",
            )
        framework, job_id, fmt = match.groups()
        job = self._job_by_id(  # type: ignore[attr-defined]
            framework, job_id, owner, records.job_name(framework, job_id)
        )
        self._reconcile_exports(job)
        export = next((e for e in job.record.exports if e["format"] == fmt), None)
        if export is None:
            raise ServiceError(
                "NOT_FOUND",
                f"{request.name} not found: {job.record.name} was never exported to "
                f"{fmt} (call ExportModel)",
                "name",
            )
        return trainer_pb2.GetModelExportResponse(
            export=records.export_to_proto(job.record, export)
        )

    # -- evaluation -------------------------------------------------------------------------
    def GetEvaluation(self, request, context):
        owner, _ = _identity()
        match = records.EVALUATION_NAME_RE.match(request.name or "")
        if not match:
            raise ServiceError(
                "INVALID_ARGUMENT",
                f"name {request.name!r} is not trainers/{{framework}}/jobs/{{job_id}}/evaluation",
                "name",
            )
        framework, job_id = match.groups()
        job = self._job_by_id(  # type: ignore[attr-defined]
            framework, job_id, owner, records.job_name(framework, job_id)
        )
        store = self._manager().store  # type: ignore[attr-defined]
        try:
            data = json.loads(store.get_bytes(evaluation_mod.evaluation_key(job_id)))
        except KeyNotFound:
            state = job.record.state
            why = (
                "it is written when the job ends"
                if state not in lifecycle.TERMINAL
                else "the job ended without one (see its log)"
            )
            raise ServiceError(
                "NOT_FOUND", f"{job.record.name} has no evaluation ({state}): {why}", "name"
            ) from None
        pictures = {}
        for filename in data.get("pictures", []):
            with contextlib.suppress(KeyNotFound):
                pictures[filename] = store.get_bytes(evaluation_mod.picture_key(job_id, filename))
        return trainer_pb2.GetEvaluationResponse(evaluation=evaluation_mod.to_proto(data, pictures))

    # -- pretrained weights -------------------------------------------------------------------
    def _weights_prefix(self) -> str:
        return f"models/pretrained/{self.adapter.framework}/"

    def _weights_keys(self, weights_id: str) -> list[str]:
        store = self._manager().store  # type: ignore[attr-defined]
        prefix = self._weights_prefix()
        return [
            k
            for k in store.list(prefix + weights_id + ".")
            if k[len(prefix) :].rsplit(".", 1)[0] == weights_id
            and "." + k.rsplit(".", 1)[-1] in WEIGHT_EXTENSIONS
        ]

    def _meta(self, weights_id: str) -> dict[str, Any]:
        store = self._manager().store  # type: ignore[attr-defined]
        try:
            return json.loads(
                store.get_bytes(f"{META_PREFIX}/{self.adapter.framework}/{weights_id}.json")
            )
        except (KeyNotFound, ValueError):
            return {}

    def _weights_proto(self, key: str) -> trainer_pb2.Weights:
        store = self._manager().store  # type: ignore[attr-defined]
        prefix = self._weights_prefix()
        weights_id = key[len(prefix) :].rsplit(".", 1)[0]
        meta = self._meta(weights_id)
        msg = trainer_pb2.Weights(
            name=f"trainers/{self.adapter.framework}/weights/{weights_id}",
            model=meta.get("model", weights_id),
            key=key,
            size_bytes=int(meta.get("size_bytes") or store.size(key)),
            sha256=meta.get("sha256", ""),
            uploader=meta.get("uploader", ""),
        )
        if meta.get("task_type"):
            msg.task_type = records.task_enum(meta["task_type"])
        ts = records._ts(meta.get("create_time"))
        if ts is not None:
            msg.create_time.CopyFrom(ts)
        return msg

    def UploadWeights(self, request_iterator, context):
        return self._upload_weights(request_iterator)

    def _upload_weights(self, request_iterator):
        owner, _ = _identity()
        manager = self._manager()  # type: ignore[attr-defined]
        framework = self.adapter.framework
        header = None
        work = manager.work_root / "uploads" / uuid.uuid4().hex
        work.mkdir(parents=True, exist_ok=True)
        try:
            digest = hashlib.sha256()
            size = 0
            end = None
            out = None
            for message in request_iterator:
                part = message.WhichOneof("part")
                if part == "header":
                    if header is not None:
                        raise ServiceError("INVALID_ARGUMENT", "a second header", "header")
                    header = message.header
                    ext = Path(header.filename).suffix.lower()
                    self._check_weights_header(header, ext)
                    out = open(work / f"upload{ext}", "wb")  # noqa: SIM115
                elif part == "chunk":
                    if header is None or out is None:
                        raise ServiceError("INVALID_ARGUMENT", "chunk before the header", "header")
                    if end is not None:
                        raise ServiceError("INVALID_ARGUMENT", "chunk after end", "chunk")
                    size += len(message.chunk)
                    if size > MAX_WEIGHTS_BYTES:
                        raise ServiceError(
                            "INVALID_ARGUMENT",
                            f"weights larger than {MAX_WEIGHTS_BYTES} bytes",
                            "chunk",
                        )
                    digest.update(message.chunk)
                    out.write(message.chunk)
                elif part == "end":
                    end = message.end
            if out is not None:
                out.close()
            if header is None:
                raise ServiceError("INVALID_ARGUMENT", "the stream had no header", "header")
            if end is None:
                raise ServiceError(
                    "INVALID_ARGUMENT", "the stream ended without end: nothing kept", "end"
                )
            if end.size_bytes != size:
                raise ServiceError(
                    "INVALID_ARGUMENT",
                    f"end says {end.size_bytes} bytes but {size} arrived: nothing kept",
                    "end.size_bytes",
                )
            if size == 0:
                raise ServiceError("INVALID_ARGUMENT", "the weights file is empty", "chunk")
            task = records.task_name(header.task_type)
            model = self.adapter.resolve_model(header.model, task)
            ext = Path(header.filename).suffix.lower()
            local = work / f"upload{ext}"
            try:
                answer = run_task(
                    {
                        "kind": "check_weights",
                        "adapter": self._adapter_path(),
                        "store_url": manager.store_url,
                        "path": str(local.resolve()),
                        "model": header.model,
                        "task_type": task,
                    },
                    work / "check",
                    timeout=600,
                )
            except TaskError as exc:
                raise ServiceError(
                    "INVALID_ARGUMENT",
                    f"{header.filename} does not load as {model} for {task}: {exc}",
                    "header.filename",
                ) from None
            key = f"{self._weights_prefix()}{model}{ext}"
            for old in self._weights_keys(model):
                if old != key:
                    with contextlib.suppress(KeyNotFound):
                        manager.store.delete(old)
            manager.store.put_file(key, local, content_type="application/octet-stream")
            meta = {
                "model": model,
                "task_type": task,
                "size_bytes": size,
                "sha256": digest.hexdigest(),
                "uploader": owner,
                "create_time": time.time(),
                "filename": header.filename,
                "description": answer.get("description", ""),
            }
            manager.store.put_bytes(
                f"{META_PREFIX}/{framework}/{model}.json",
                json.dumps(meta).encode(),
                content_type="application/json",
            )
            self.__dict__["_pretrained"] = (0.0, set())  # GetCapabilities looks again
            return trainer_pb2.UploadWeightsResponse(weights=self._weights_proto(key))
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _check_weights_header(self, header: Any, ext: str) -> None:
        self._check_parent(header.parent, allow_all=False)  # type: ignore[attr-defined]
        if ext not in WEIGHT_EXTENSIONS:
            raise ServiceError(
                "INVALID_ARGUMENT",
                f"filename {header.filename!r} must end in {', '.join(WEIGHT_EXTENSIONS)}",
                "header.filename",
            )
        if header.task_type == 0:
            raise ServiceError(
                "INVALID_ARGUMENT", "header.task_type is required", "header.task_type"
            )
        task = records.task_name(header.task_type)
        spec = TrainSpec(
            task_type=task,
            model=header.model,
            epochs=1,
            batch_size=1,
            image_size=64,
            learning_rate=0.01,
            seed=0,
            patience=0,
            device="",
            pretrained=False,
        )
        try:
            self.adapter.check_spec(spec)
        except SpecError as exc:
            raise ServiceError("INVALID_ARGUMENT", exc.message, "header.model") from None

    def ListWeights(self, request, context):
        _identity()
        self._check_parent(request.parent, allow_all=False)  # type: ignore[attr-defined]
        store = self._manager().store  # type: ignore[attr-defined]
        keys = sorted(
            k
            for k in store.list(self._weights_prefix())
            if "/" not in k[len(self._weights_prefix()) :]
            and "." + k.rsplit(".", 1)[-1] in WEIGHT_EXTENSIONS
        )
        size = min(request.page_size if request.page_size > 0 else 100, 1000)
        try:
            start = int(request.page_token or 0)
        except ValueError:
            raise ServiceError("INVALID_ARGUMENT", "bad page_token", "page_token") from None
        page = keys[start : start + size]
        token = str(start + size) if start + size < len(keys) else ""
        return trainer_pb2.ListWeightsResponse(
            weights=[self._weights_proto(k) for k in page], next_page_token=token
        )

    def DeleteWeights(self, request, context):
        owner, _ = _identity()
        framework, weights_id = self._parse_weights_name(request.name, "name")
        keys = self._weights_keys(weights_id)
        if not keys:
            raise ServiceError("NOT_FOUND", f"{request.name} not found", "name")
        meta = self._meta(weights_id)
        if meta.get("uploader") and meta["uploader"] != owner:
            raise ServiceError(
                "PERMISSION_DENIED",
                f"{request.name} was uploaded by {meta['uploader']}; only they may delete it",
            )
        store = self._manager().store  # type: ignore[attr-defined]
        for key in keys:
            with contextlib.suppress(KeyNotFound):
                store.delete(key)
        with contextlib.suppress(KeyNotFound):
            store.delete(f"{META_PREFIX}/{framework}/{weights_id}.json")
        self.__dict__["_pretrained"] = (0.0, set())
        return trainer_pb2.DeleteWeightsResponse()

    def _parse_weights_name(self, name: str, field: str) -> tuple[str, str]:
        match = records.WEIGHTS_NAME_RE.match(name or "")
        if not match:
            raise ServiceError(
                "INVALID_ARGUMENT",
                f"{field} {name!r} is not trainers/{{framework}}/weights/{{id}}",
                field,
            )
        framework, weights_id = match.groups()
        if framework != self.adapter.framework:
            raise ServiceError(
                "INVALID_ARGUMENT" if field != "name" else "NOT_FOUND",
                f"{name} belongs to trainers/{framework}; this trainer is "
                f"trainers/{self.adapter.framework}",
                field,
            )
        return framework, weights_id

    # -- StartTraining: the weights a job starts from --------------------------------------------
    def start_weights(self, spec: trainer_pb2.TrainingSpec, task: str, owner: str) -> str:
        """The object store key a new job starts from ("" for random init); ServiceError if bad."""
        manager = self._manager()  # type: ignore[attr-defined]
        model = self.adapter.resolve_model(spec.model, task)
        if spec.init_from and spec.pretrained:
            raise ServiceError(
                "INVALID_ARGUMENT",
                "set init_from or pretrained, not both (init_from names the weights)",
                "spec.init_from",
            )
        if spec.pretrained:
            key = self.adapter.pretrained_key(spec.model, task)
            if manager.store.exists(key):
                return key
            found = self._weights_keys(model)
            if found:
                return found[0]
            raise ServiceError(
                "FAILED_PRECONDITION",
                f"no pretrained weights for {spec.model!r}: {key} is not in the object "
                "store (upload it, or train with pretrained=false)",
                "spec.pretrained",
            )
        if not spec.init_from:
            return ""
        source = spec.init_from
        if records.WEIGHTS_NAME_RE.match(source):
            _, weights_id = self._parse_weights_name(source, "spec.init_from")
            keys = self._weights_keys(weights_id)
            if not keys:
                raise ServiceError(
                    "NOT_FOUND",
                    f"spec.init_from: {source} not found (ListWeights)",
                    "spec.init_from",
                )
            meta = self._meta(weights_id)
            if weights_id != model:
                raise ServiceError(
                    "FAILED_PRECONDITION",
                    f"spec.init_from: {source} holds weights for {meta.get('model', weights_id)}, "
                    f"but this job builds {model}: the architectures differ",
                    "spec.init_from",
                )
            return keys[0]
        match = records.JOB_NAME_RE.match(source)
        if not match:
            raise ServiceError(
                "INVALID_ARGUMENT",
                f"spec.init_from {source!r} is neither trainers/{{framework}}/jobs/{{job}} nor "
                "trainers/{framework}/weights/{weights}",
                "spec.init_from",
            )
        framework, job_id = match.groups()
        if framework != self.adapter.framework:
            raise ServiceError(
                "INVALID_ARGUMENT",
                f"spec.init_from: {source} was trained by trainers/{framework}; a "
                f"trainers/{self.adapter.framework} job cannot start from it",
                "spec.init_from",
            )
        try:
            other = manager.get(job_id, owner).record
        except ServiceError:
            raise ServiceError(
                "NOT_FOUND", f"spec.init_from: job {source} not found", "spec.init_from"
            ) from None
        if other.task_type != task:
            raise ServiceError(
                "FAILED_PRECONDITION",
                f"spec.init_from: {source} trained {other.task_type}; this job is {task}",
                "spec.init_from",
            )
        other_model = self.adapter.resolve_model(other.model, other.task_type)
        if other_model != model:
            raise ServiceError(
                "FAILED_PRECONDITION",
                f"spec.init_from: {source} trained {other_model}, but this job builds {model}: "
                "the architectures differ (use the same model)",
                "spec.init_from",
            )
        key = records.checkpoint_key(job_id, "best.pt")
        if not manager.store.exists(key):
            raise ServiceError(
                "FAILED_PRECONDITION",
                f"spec.init_from: {source} has no best.pt ({other.state})",
                "spec.init_from",
            )
        return key
