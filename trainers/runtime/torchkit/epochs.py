"""Per-epoch bookkeeping of the torch loop (:mod:`trainers.runtime.torchkit.loop`).

An engine writes one resumable checkpoint file per epoch. :class:`EpochBook` keeps the
early-stopping state those files carry (``best_value``, ``best_epoch``, ``stale``: epochs
without gain), saves each file as ``<folder>/epoch_<n>.pt``, reports the epoch to the
runtime, keeps only the last two files, and says when training ends (stop requested, or
``patience`` epochs without gain). Which epoch is best follows the metric's direction
(:func:`trainers.runtime.records.score`), the same rule the runtime uses for best.pt.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trainers.runtime import records
from trainers.runtime.adapter import JobContext


class EpochBook:
    """Best / stale tracking, epoch checkpoint files and reporting for one training run.

    ``metric`` is the normalized metric that picks the best epoch; without it in an
    epoch's values, ``val/loss`` (else ``train/loss``) does. Scores are oriented so that
    higher is better (:func:`records.score`: a loss is negated). ``patience`` 0 never
    stops early.
    """

    def __init__(self, job: JobContext, folder: Path, metric: str, patience: int = 0) -> None:
        self.job = job
        self.folder = Path(folder)
        self.metric = metric
        self.patience = int(patience or 0)
        self.best_value = -math.inf
        self.best_epoch = 0
        self.stale = 0
        self.folder.mkdir(parents=True, exist_ok=True)

    def restore(self, checkpoint: Mapping[str, Any]) -> int:
        """Take the early-stopping state from a checkpoint this book's :meth:`state` filled
        (with its ``epoch``); returns the epoch to continue with."""
        self.best_value = float(checkpoint["best_value"])
        self.best_epoch = int(checkpoint["best_epoch"])
        self.stale = int(checkpoint["stale"])
        return int(checkpoint["epoch"]) + 1

    def state(self) -> dict[str, Any]:
        """``best_value``, ``best_epoch`` and ``stale``, for the epoch's checkpoint dict."""
        return {"best_value": self.best_value, "best_epoch": self.best_epoch, "stale": self.stale}

    def score(self, values: Mapping[str, float]) -> float:
        for name in (self.metric, "val/loss", "train/loss"):
            if name in values:
                return records.score(name, values[name])
        raise KeyError(f"none of {self.metric}, val/loss, train/loss in the epoch's values")

    def update(self, epoch: int, values: Mapping[str, float]) -> bool:
        """Count a finished epoch; True when it is the best so far."""
        score = self.score(values)
        if score > self.best_value:
            self.best_value, self.best_epoch, self.stale = score, epoch, 0
            return True
        self.stale += 1
        return False

    def path(self, epoch: int) -> Path:
        return self.folder / f"epoch_{epoch}.pt"

    def finish(
        self,
        epoch: int,
        values: Mapping[str, float],
        checkpoint: dict[str, Any],
        *,
        images_seen: int,
    ) -> bool:
        """Save ``checkpoint`` for ``epoch``, report the epoch, drop the file of two epochs
        ago; True (with a log line saying why) when training should end after this epoch."""
        path = self.path(epoch)
        torch.save(checkpoint, path)
        stop = self.job.report_epoch(epoch, values, checkpoint=path, images_seen=images_seen)
        # Keep this epoch's and the previous file, in case the runtime copies lazily.
        self.path(epoch - 2).unlink(missing_ok=True)
        if stop or self.job.should_stop():
            self.job.log(f"stopping after epoch {epoch} as requested")
            return True
        if self.patience and self.stale >= self.patience:
            self.job.log(
                f"early stop: {self.metric} has not improved for {self.stale} epochs "
                f"(best {self.best_value:.4f} at epoch {self.best_epoch})"
            )
            return True
        return False
