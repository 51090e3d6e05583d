"""trainers.runtime.torchkit.epochs.EpochBook: best / stale tracking, patience, checkpoint files."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from tests._job_context import RecordingJob, spec
from trainers.runtime.adapter import IMAGE_CLASSIFICATION
from trainers.runtime.torchkit.epochs import EpochBook


def new_book(tmp_path: Path, patience: int = 0, stop_after: int | None = None):
    job = RecordingJob(
        spec(IMAGE_CLASSIFICATION, "m", patience=patience),
        tmp_path / "data",
        ["a", "b"],
        tmp_path / "work",
        stop_after=stop_after,
    )
    return job, EpochBook(job, job.work_dir / "ckpts", "val/top1", patience)


def run_epoch(book: EpochBook, epoch: int, values: dict[str, float]) -> bool:
    book.update(epoch, values)
    return book.finish(
        epoch, values, {"epoch": epoch, "metrics": values, **book.state()}, images_seen=8
    )


def test_reports_each_epoch_and_keeps_the_last_two_files(tmp_path):
    job, book = new_book(tmp_path)
    assert book.folder.is_dir()
    for epoch in range(1, 5):
        assert not run_epoch(book, epoch, {"train/loss": 1.0, "val/top1": 0.1 * epoch})
        names = sorted(p.name for p in book.folder.iterdir())
        assert names == [f"epoch_{n}.pt" for n in range(max(1, epoch - 1), epoch + 1)]
    assert [(e.epoch, e.images_seen) for e in job.epochs] == [(n, 8) for n in range(1, 5)]
    saved = torch.load(job.last_checkpoint, weights_only=True)
    assert saved == {
        "epoch": 4,
        "metrics": {"train/loss": 1.0, "val/top1": 0.4},
        "best_value": 0.4,
        "best_epoch": 4,
        "stale": 0,
    }
    assert job.lines == []


def test_patience_stops_after_epochs_without_gain(tmp_path):
    job, book = new_book(tmp_path, patience=2)
    tops = [0.5, 0.7, 0.6, 0.7]
    stops = [run_epoch(book, n, {"train/loss": 1.0, "val/top1": t}) for n, t in enumerate(tops, 1)]
    assert stops == [False, False, False, True]
    assert (book.best_value, book.best_epoch, book.stale) == (0.7, 2, 2)
    assert job.lines == [
        "early stop: val/top1 has not improved for 2 epochs (best 0.7000 at epoch 2)"
    ]


def test_no_patience_never_stops_early(tmp_path):
    job, book = new_book(tmp_path, patience=0)
    for epoch in range(1, 6):
        assert not run_epoch(book, epoch, {"train/loss": 1.0, "val/top1": 0.5})
    assert book.stale == 4 and book.best_epoch == 1


def test_a_stop_request_ends_after_the_epoch(tmp_path):
    job, book = new_book(tmp_path, patience=1, stop_after=1)
    assert run_epoch(book, 1, {"train/loss": 1.0, "val/top1": 0.5})
    assert job.lines == ["stopping after epoch 1 as requested"]


def test_score_falls_back_to_minus_the_loss(tmp_path):
    _, book = new_book(tmp_path)
    assert book.score({"train/loss": 2.0, "val/loss": 1.5, "val/top1": 0.25}) == 0.25
    assert book.score({"train/loss": 2.0, "val/loss": 1.5}) == -1.5
    assert book.score({"train/loss": 2.0}) == -2.0
    assert book.best_value == -math.inf
    assert book.update(1, {"train/loss": 2.0}) and not book.update(2, {"train/loss": 3.0})
    assert (book.best_epoch, book.stale) == (1, 1)


def test_restore_continues_from_a_checkpoint(tmp_path):
    job, book = new_book(tmp_path, patience=3)
    run_epoch(book, 1, {"train/loss": 1.0, "val/top1": 0.6})
    run_epoch(book, 2, {"train/loss": 1.0, "val/top1": 0.4})
    resumed_job, resumed = new_book(tmp_path / "again", patience=3)
    assert resumed.restore(torch.load(job.last_checkpoint, weights_only=True)) == 3
    assert (resumed.best_value, resumed.best_epoch, resumed.stale) == (0.6, 1, 1)
    assert not run_epoch(resumed, 3, {"train/loss": 1.0, "val/top1": 0.5})
    assert run_epoch(resumed, 4, {"train/loss": 1.0, "val/top1": 0.5})
    assert resumed_job.lines[-1].startswith("early stop: val/top1 has not improved for 3 epochs")
