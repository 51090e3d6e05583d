"""The one "best epoch" rule (trainers.runtime.records): maximise accuracy / mAP / mIoU,
minimise losses; the torch loop's EpochBook and the runtime's report_epoch both follow it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests._job_context import RecordingJob, spec
from trainers.runtime import records
from trainers.runtime.adapter import IMAGE_CLASSIFICATION
from trainers.runtime.torchkit.epochs import EpochBook
from trainers.runtime.worker import RuntimeJob
from trainers.runtime.worker_protocol import WorkerConfig

MAXIMISED = ("val/top1", "val/top5", "val/map50", "val/map50_95", "val/miou", "metrics/mAP50")
MINIMISED = ("val/loss", "train/loss", "train/box_loss", "val/cls_loss")


@pytest.mark.parametrize("metric", MAXIMISED)
def test_accuracy_and_map_are_maximised(metric):
    assert not records.lower_is_better(metric)
    assert records.score(metric, 0.7) == 0.7
    assert records.is_better(metric, 0.7, 0.6)
    assert not records.is_better(metric, 0.5, 0.6)
    assert not records.is_better(metric, 0.6, 0.6)  # a tie keeps the earlier epoch
    assert records.is_better(metric, 0.0, None)


@pytest.mark.parametrize("metric", MINIMISED)
def test_losses_are_minimised(metric):
    assert records.lower_is_better(metric)
    assert records.score(metric, 0.7) == -0.7
    assert records.is_better(metric, 0.5, 0.6)
    assert not records.is_better(metric, 0.7, 0.6)
    assert not records.is_better(metric, 0.6, 0.6)
    assert records.is_better(metric, 9.0, None)


SERIES = {
    "val/top1": [0.2, 0.5, 0.4, 0.5, 0.7, 0.6],  # best: epoch 5 (0.7)
    "val/loss": [2.0, 1.2, 1.5, 0.9, 1.1, 0.95],  # best: epoch 4 (0.9)
}
EXPECTED_BEST = {"val/top1": 5, "val/loss": 4}


class _Store:
    def put_bytes(self, key: str, data: bytes) -> None:
        pass


class _Events:
    def send(self, event) -> None:
        pass


def _runtime_job(tmp_path: Path, metric: str) -> RuntimeJob:
    cfg = WorkerConfig(
        job_id="j1",
        train_spec=spec(IMAGE_CLASSIFICATION, "m", epochs=len(SERIES[metric])),
        work_dir=str(tmp_path / "work"),
        best_metric=metric,
    )
    return RuntimeJob(cfg, _Store(), _Events(), adapter=None)


@pytest.mark.parametrize("metric", sorted(SERIES))
def test_epoch_book_and_runtime_pick_the_same_best_epoch(tmp_path, metric):
    job = RecordingJob(
        spec(IMAGE_CLASSIFICATION, "m"), tmp_path / "data", ["a", "b"], tmp_path / "book"
    )
    book = EpochBook(job, tmp_path / "ckpts", metric)
    runtime = _runtime_job(tmp_path, metric)
    for epoch, value in enumerate(SERIES[metric], 1):
        values = {"train/loss": 1.0, metric: value}
        book.update(epoch, values)
        runtime.report_epoch(epoch, values)
    assert book.best_epoch == EXPECTED_BEST[metric]
    best = [r["epoch"] for r in runtime.records if r["is_best"]]
    assert best[-1] == EXPECTED_BEST[metric]
    # The book keeps the oriented score: a loss negated.
    assert book.best_value == records.score(metric, SERIES[metric][EXPECTED_BEST[metric] - 1])


def test_epoch_book_without_its_metric_minimises_the_val_loss(tmp_path):
    job = RecordingJob(
        spec(IMAGE_CLASSIFICATION, "m"), tmp_path / "data", ["a", "b"], tmp_path / "book"
    )
    book = EpochBook(job, tmp_path / "ckpts", "val/top1")
    gains = [book.update(n, {"train/loss": 1.0, "val/loss": v}) for n, v in enumerate([2, 1, 3], 1)]
    assert gains == [True, True, False] and book.best_epoch == 2
