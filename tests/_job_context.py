"""An in-process JobContext for adapter tests, and tiny prepared datasets to train on.

``RecordingJob`` satisfies ``trainers.runtime.adapter.JobContext``: it records every
``report_epoch`` call, keeps a copy of each reported checkpoint (as the runtime would store
last.pt), and can ask the adapter to stop after a given epoch. The ``make_*`` functions
write small ``visionmesh.shapes`` pictures (circle, square, triangle on noise) in the
prepared layouts the runtime hands adapters ("imagefolder" and "coco").
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from trainers.runtime.adapter import TrainSpec
from visionmesh import shapes


@dataclass
class Epoch:
    epoch: int
    values: dict[str, float]
    checkpoint: Path | None
    images_seen: int


@dataclass
class RecordingJob:
    spec: TrainSpec
    dataset_dir: Path
    class_names: list[str]
    work_dir: Path
    resume_from: Path | None = None
    pretrained_weights: Path | None = None
    category_ids: list[int] = field(default_factory=list)
    images_per_epoch: int = 0
    stop_after: int | None = None  # report_epoch returns True from this epoch on
    epochs: list[Epoch] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.kept = self.work_dir.parent / f"{self.work_dir.name}-kept"
        self.kept.mkdir(exist_ok=True)
        if not self.category_ids:
            self.category_ids = list(range(len(self.class_names)))

    def report_epoch(
        self,
        epoch: int,
        values: Mapping[str, float],
        *,
        checkpoint: Path | None = None,
        images_seen: int = 0,
        is_best: bool | None = None,
    ) -> bool:
        assert all(isinstance(v, float) for v in values.values()), values
        kept = None
        if checkpoint is not None:
            kept = self.kept / f"epoch_{epoch}.pt"
            shutil.copyfile(checkpoint, kept)
        if all(e.epoch != epoch for e in self.epochs):
            self.epochs.append(Epoch(epoch, dict(values), kept, images_seen))
        return self.should_stop()

    def should_stop(self) -> bool:
        return (
            self.stop_after is not None
            and bool(self.epochs)
            and (self.epochs[-1].epoch >= self.stop_after)
        )

    def log(self, line: str) -> None:
        self.lines.append(line)

    @property
    def last_checkpoint(self) -> Path:
        assert self.epochs and self.epochs[-1].checkpoint is not None
        return self.epochs[-1].checkpoint


def spec(task_type: str, model: str, **overrides) -> TrainSpec:
    values = dict(
        task_type=task_type,
        model=model,
        epochs=2,
        batch_size=8,
        image_size=64,
        learning_rate=1e-3,
        seed=0,
        patience=0,
        device="cpu",
        pretrained=False,
        extra={},
    )
    values.update(overrides)
    return TrainSpec(**values)


# --- synthetic shapes (visionmesh.shapes) in the prepared layouts -------------------------


def shape_png(size: int, kinds: list[str], *, seed: int = 0, class_colours: bool = False) -> bytes:
    """PNG bytes of one ``visionmesh.shapes`` picture with the given shapes (a Predict input)."""
    picture, _ = shapes.make_image(
        1, size, np.random.default_rng(seed), 1, kinds=kinds, class_colours=class_colours
    )
    return png_bytes(picture)


def make_imagefolder(
    root: Path, n_train: int, n_val: int, size: int = 64, seed: int = 0
) -> list[str]:
    """``{train,val}/<shape>/<split>_<n>.png``, one shape per image, the classes taking
    turns; returns class names (sorted, as the folders are)."""
    dataset, pictures = shapes.sample(
        n_train + n_val, size=size, seed=seed, max_shapes=1, cycle_classes=True
    )
    for i, (annotation, picture) in enumerate(zip(dataset.annotations, pictures, strict=True)):
        split, n = ("train", i) if i < n_train else ("val", i - n_train)
        folder = root / split / shapes.CLASSES[annotation.category_id - 1]
        folder.mkdir(parents=True, exist_ok=True)
        picture.save(folder / f"{split}_{n:04d}.png")
    return sorted(shapes.CLASSES)


def make_coco(
    root: Path,
    n_train: int,
    n_val: int,
    size: int = 64,
    seed: int = 0,
    max_shapes: int = 2,
    category_ids: tuple[int, ...] = (3, 7, 11),
) -> list[str]:
    """The "coco" layout: ``annotations_{train,val}.json`` + ``images/<split>/<n>.png`` of
    ``visionmesh.shapes`` pictures, each class in its own colour.

    Category ids are deliberately not contiguous. Returns class names in category id order.
    """
    from visionmesh.formats import to_coco_dict

    dataset, pictures = shapes.sample(
        n_train + n_val,
        size=size,
        seed=seed,
        max_shapes=max_shapes,
        class_colours=True,
        cycle_classes=True,
    )
    new_id = dict(zip((c.id for c in dataset.categories), category_ids, strict=True))
    for category in dataset.categories:
        category.id = new_id[category.id]
    for annotation in dataset.annotations:
        annotation.category_id = new_id[annotation.category_id]
    for i, (image, picture) in enumerate(zip(dataset.images, pictures, strict=True)):
        image.split, n = ("train", i) if i < n_train else ("val", i - n_train)
        image.path = f"{image.split}/{n:04d}.png"
        (root / "images" / image.split).mkdir(parents=True, exist_ok=True)
        picture.save(root / "images" / image.path)
    for split in ("train", "val"):
        members = [im for im in dataset.images if im.split == split]
        document = to_coco_dict(dataset, members)
        (root / f"annotations_{split}.json").write_text(json.dumps(document))
    return [c.name for c in sorted(dataset.categories, key=lambda c: c.id)]


def shapes_snapshot(
    source: Path, *, images: int, size: int, max_shapes: int, seed: int = 0
) -> tuple[dict[str, Any], dict[str, Path]]:
    """``visionmesh.shapes`` written under ``source``: (its DICE document with each image's
    sha256, as a snapshot manifest has them; the image files by sha256)."""
    shapes.generate(source, images=images, size=size, seed=seed, max_shapes=max_shapes)
    document = json.loads((source / "annotations.json").read_text())
    files = {}
    for image in document["images"]:
        path = source / image["file_name"]
        image["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        files[image["sha256"]] = path
    return document, files


def lay_out(
    document: dict[str, Any],
    files: dict[str, Path],
    out: Path,
    *,
    task_type: str,
    layout: str,
    split_seed: int = 0,
) -> dict[str, Any]:
    """``trainers.runtime.layouts.write_layout`` of a manifest into the new folder ``out``."""
    from trainers.runtime.layouts import write_layout

    out.mkdir(parents=True)
    return write_layout(
        json.dumps(document).encode(),
        task_type=task_type,
        layout=layout,
        split_seed=split_seed,
        val_fraction=0.2,
        out_dir=out,
        final_dir=out,
        image_file=files.__getitem__,
    )


def prepared_shapes(
    folder: Path, task_type: str, layout: str, *, images: int, size: int, max_shapes: int
) -> tuple[Path, list[str]]:
    """``visionmesh.shapes`` images laid out by the runtime's own layout writer, as a job
    gets them; returns (prepared folder, class names)."""
    document, files = shapes_snapshot(
        folder / "source", images=images, size=size, max_shapes=max_shapes
    )
    info = lay_out(document, files, folder / "prepared", task_type=task_type, layout=layout)
    return folder / "prepared", list(info["class_names"])


def png_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# --- through the real servers (tests/test_timm_trainer.py, tests/test_hf_trainer.py) -----------


def server_mesh(framework: str, dataset_server, tmp_path_factory, n_images: int = 12, size=64):
    """Generator for a module fixture: (trainer, token, dataset name, files, document).

    Uses the real dataset_svc; falls back to the in-process stand-in only while dataset_svc
    cannot import annotations yet (UNIMPLEMENTED), as tests/test_ultralytics.py does.
    """
    import warnings

    import grpc

    from tests._trainers import FakeDatasetService, shapes_dataset, start_trainer, upload_dataset

    files, doc = shapes_dataset(n_images, size=size)
    fake = None
    try:
        alice = dataset_server.user("alice")
        dataset = upload_dataset(alice, files, doc)
        service, token, name = dataset_server, alice.token, dataset.name
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.UNIMPLEMENTED:
            raise
        warnings.warn(
            f"dataset_svc cannot import annotations yet ({exc.details()}): using the "
            "in-process stand-in for dataset_svc",
            stacklevel=1,
        )
        fake = service = FakeDatasetService(tmp_path_factory.mktemp("fake-home"))
        name, token = fake.add_dataset(files, doc, "alice"), fake.token("alice")
    trainer = start_trainer(framework, service, guard_dir=tmp_path_factory.mktemp("guard"))
    try:
        yield trainer, token, name, files, doc
        assert trainer.network_attempts() == [], trainer.network_attempts()
    finally:
        if trainer.process.proc.poll() is None:
            assert trainer.stop() == 0
        if fake is not None:
            fake.stop()


def train_and_predict(mesh, task_type: int, model: str, metrics: set[str], **fields):
    """Start a 2-epoch job, check every epoch is streamed, then Predict from best.pt."""
    from tests._trainers import collect_metrics, start_job, state_name
    from tests._trainers import spec as job_spec
    from visionmesh.v1 import trainer_pb2 as S

    trainer, token, dataset, files, doc = mesh
    stub = trainer.stub(token)
    job = start_job(stub, job_spec(dataset, task_type, model, epochs=2, seed=1, **fields))
    epochs, state = collect_metrics(stub, job.name, timeout=600)
    final = stub.GetJob(S.GetJobRequest(name=job.name), timeout=10).job
    assert state == S.JOB_STATE_SUCCEEDED, f"{state_name(state)}: {final.error}"
    assert [e.epoch for e in epochs] == [1, 2]
    for e in epochs:
        assert e.epochs == 2 and metrics <= set(e.values), sorted(e.values)
        assert e.epoch_seconds > 0 and e.images_per_second > 0
    assert final.current_epoch == 2 and final.best_epoch in (1, 2)
    assert final.best_metric_name in final.best_metrics
    checkpoints = {c.filename: c for c in final.checkpoints}
    assert {"best.pt", "last.pt"} <= set(checkpoints)
    image = files[doc["images"][0]["file_name"]]
    reply = stub.Predict(
        S.PredictRequest(name=job.name, image=image, confidence_threshold=0.0001), timeout=300
    )
    assert reply.task_type == task_type
    assert reply.checkpoint_key == checkpoints["best.pt"].key
    return final, reply


def check_retried_start_creates_one_job(stub, training) -> None:
    """StartTraining with one request_id, three at once and once more: a single job."""
    import threading

    from tests._trainers import collect_metrics, start_job
    from visionmesh.v1 import trainer_pb2 as S

    replies = []

    def call() -> None:
        replies.append(start_job(stub, training, request_id=f"retry-{training.model}"))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    replies.append(start_job(stub, training, request_id=f"retry-{training.model}"))
    assert len(replies) == 4 and len({j.name for j in replies}) == 1
    jobs = stub.ListJobs(S.ListJobsRequest(page_size=1000), timeout=10).jobs
    assert [j.request_id for j in jobs].count(f"retry-{training.model}") == 1
    _, state = collect_metrics(stub, replies[0].name, timeout=600)
    assert state == S.JOB_STATE_SUCCEEDED


def check_kill_and_resume(
    framework: str,
    task: str,
    model: str,
    tmp_path: Path,
    *,
    resume_line: str | None = None,
    **fields,
) -> set[int]:
    """SIGKILL the trainer during epoch 2 of 4; after a restart the job resumes from its
    last checkpoint and every epoch is streamed and recorded exactly once.

    ``resume_line`` is what the job log must show on resuming (default: the timm/hf engines'
    ``resuming <model> at epoch``). Returns the job states seen while waiting for the resume.
    """
    import json as _json
    import time

    from tests._trainers import (
        FakeDatasetService,
        collect_metrics,
        job_log,
        shapes_dataset,
        start_job,
        start_trainer,
        state_name,
    )
    from tests._trainers import spec as job_spec
    from visionmesh.store import open_store
    from visionmesh.v1 import trainer_pb2 as S

    fake = FakeDatasetService(tmp_path / "home")
    files, doc = shapes_dataset(32, size=fields.get("image_size", 96), seed=3)
    name = fake.add_dataset(files, doc, "carol")
    token = fake.token("carol")
    server = start_trainer(framework, fake, guard_dir=tmp_path / "guard")
    try:
        stub = server.stub(token)
        job = start_job(stub, job_spec(name, task, model, epochs=4, **fields))
        stream = stub.StreamMetrics(S.StreamMetricsRequest(name=job.name), timeout=300)
        assert next(iter(stream)).metrics.epoch == 1
        server.kill()  # SIGKILL during epoch 2; its worker dies with it
        server.restart()
        stub = server.stub(token)
        seen = set()
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            state = stub.GetJob(S.GetJobRequest(name=job.name), timeout=10).job.state
            seen.add(state)
            if state in (S.JOB_STATE_RUNNING, S.JOB_STATE_SUCCEEDED):
                break
            time.sleep(0.02)
        assert S.JOB_STATE_INTERRUPTED in seen, [state_name(s) for s in seen]
        epochs, state = collect_metrics(stub, job.name, timeout=600)
        final = stub.GetJob(S.GetJobRequest(name=job.name), timeout=10).job
        assert state == S.JOB_STATE_SUCCEEDED, final.error
        assert [e.epoch for e in epochs] == [1, 2, 3, 4]
        assert final.resume_count == 1 and final.current_epoch == 4
        store = open_store(fake.env["VISIONMESH_STORE_URL"])
        job_id = job.name.rsplit("/", 1)[1]
        lines = store.get_bytes(f"runs/{job_id}/metrics.jsonl").decode().splitlines()
        assert [_json.loads(line)["epoch"] for line in lines] == [1, 2, 3, 4]
        log = job_log(stub, job.name)
        resume_line = resume_line or f"resuming {model} at epoch"
        assert "INTERRUPTED" in log and resume_line in log, log[-3000:]
        assert server.network_attempts() == []
        return seen
    finally:
        if server.process.proc.poll() is None:
            server.stop()
        fake.stop()
