"""Nothing a server writes under VISIONMESH_HOME is readable by other users of the machine.

Real use first, through the real servers: sign-up (catalog.db holds password hashes), an
upload and an annotation import (blobs), a snapshot (its manifest), an export, and a tiny
ultralytics training job (trainer cache of prepared images, work folder, checkpoints in the
store) followed by a prediction (the predictor's checkpoint cache). Then every folder under
the home must be 0700-or-less and every file 0600-or-less: no group or world bits at all.

The one file allowed to be world-readable is the JWT *public* key (it is public by design,
and its folder ``keys/`` is 0700 anyway).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests._dataset import DEFAULT_BACKEND, dataset_server_fixture
from tests._trainers import collect_metrics, shapes_dataset, spec, start_job, start_trainer
from tests._trainers import upload_dataset as upload_annotated
from visionmesh.v1 import dataset_pb2, trainer_pb2

pytestmark = pytest.mark.timeout(900)

S = trainer_pb2
dataset_server = dataset_server_fixture([DEFAULT_BACKEND])


def exposed(home: Path, allowed: set[Path]) -> list[str]:
    """Every folder and file under ``home`` (itself included) with a group or world bit."""
    found = []
    for root, _dirs, files in os.walk(home):
        for path in [Path(root), *(Path(root) / name for name in files)]:
            mode = path.lstat().st_mode
            if stat.S_ISLNK(mode) or path in allowed:
                continue
            if mode & 0o077:
                found.append(f"{oct(stat.S_IMODE(mode))} {path.relative_to(home)}")
    return sorted(found)


def test_nothing_under_the_home_is_readable_by_others(dataset_server, tmp_path):
    home = dataset_server.home
    alice = dataset_server.user("alice")
    files, doc = shapes_dataset(8, size=64)
    dataset = upload_annotated(alice, files, doc)
    snapshot = alice.datasets.CreateSnapshot(
        dataset_pb2.CreateSnapshotRequest(
            parent=dataset.name, snapshot=dataset_pb2.Snapshot(reason="file modes")
        ),
        timeout=60,
    ).snapshot
    alice.datasets.ExportDataset(dataset_pb2.ExportDatasetRequest(name=snapshot.name), timeout=120)

    trainer = start_trainer("ultralytics", dataset_server, guard_dir=tmp_path)
    try:
        stub = trainer.stub(alice.token)
        job = start_job(
            stub, spec(snapshot.name, "detect", "yolo11n", epochs=1, batch_size=4, image_size=64)
        )
        _, state = collect_metrics(stub, job.name, timeout=600)
        final = stub.GetJob(S.GetJobRequest(name=job.name), timeout=30).job
        assert state == S.JOB_STATE_SUCCEEDED, final.error
        reply = stub.Predict(
            S.PredictRequest(name=job.name, image=files[doc["images"][0]["file_name"]]),
            timeout=300,
        )
        assert reply.image_width == 64

        # what this test means to cover is really there
        written = {p.relative_to(home).parts[0] for p in home.rglob("*")}
        assert {"catalog.db", "store", "keys", "trainer-cache", "trainer-work"} <= written
        store = home / "store"
        assert any((store / "blobs").rglob("*")) and any((store / "checkpoints").rglob("*.pt"))
        assert any(store.rglob("manifest.json")) and any((store / "exports").rglob("*.zip"))
        public_key = Path(dataset_server.env.get("VISIONMESH_JWT_PUBLIC_KEY", ""))
        if not public_key.name:
            public_key = next((home / "keys").glob("*pub*"))
        # checked while the servers run, so SQLite's -wal / -shm files are there too
        assert exposed(home, {public_key}) == []
    finally:
        trainer.stop()
