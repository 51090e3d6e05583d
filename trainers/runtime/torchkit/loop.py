"""The training loop of the torch engines (timm, hf), with hooks for each framework.

Like ultralytics' BaseTrainer: :meth:`TorchTrainer.run` checks the spec, picks the device,
seeds, reads a resume checkpoint, builds the model, data loaders, optimizer, scheduler and
AMP through hooks, then for each epoch trains, validates, reports, checkpoints and stops
(early, or on request) through :class:`EpochBook`. An engine subclasses it and keeps only
its framework's specifics: model building (pretrained / init_from weights), datasets, a
batch -> loss, validation metrics, optimizer and schedule, its checkpoint fields.

One checkpoint file per epoch carries everything a resume or a Predict needs: the common
fields written here (format, framework, task, model name, class names, image size, epoch,
metrics, early-stopping state, model / optimizer / scheduler / grad-scaler state) plus the
engine's :meth:`TorchTrainer.checkpoint_fields`.

Distributed data parallel (``spec.devices`` > 1, or a GPU list) is done here once for
every engine (:mod:`.distributed`): ``world_size`` processes, each with its shard of the
training set (DistributedSampler, ``batch_size`` split among them) and the model wrapped
in DistributedDataParallel while :meth:`TorchTrainer.train_step` runs (``self.model`` is
the bare module everywhere else). Rank 0 validates, checkpoints, reports and logs; the
epoch's training losses are averaged over all ranks and every rank runs
:meth:`TorchTrainer.after_epoch` with rank 0's values, so schedules stay in step.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import torch

from trainers.runtime.adapter import JobContext
from trainers.runtime.torchkit import helpers
from trainers.runtime.torchkit.distributed import Team, launched
from trainers.runtime.torchkit.epochs import EpochBook


class TorchTrainer:
    """One training run of a job; subclasses fill in the hooks below ``run``."""

    framework = ""  #: "timm", "hf": the checkpoint's ``framework`` and error messages
    checkpoint_format = ""  #: the checkpoint's ``format`` (e.g. "visionmesh.timm/1")
    best_metric = "val/loss"  #: the metric EpochBook picks the best epoch and patience by
    collate_fn: Any = None  #: DataLoader collate function (None: torch's default)
    grad_clip = 0.0  #: max gradient norm; 0 = off
    #: DistributedDataParallel's find_unused_parameters (models whose loss skips parameters)
    find_unused_parameters = False
    team = Team()  #: the processes training this job (one unless distributed)
    train_sampler: Any = None  #: this rank's DistributedSampler (None: one process)

    def __init__(self, job: JobContext) -> None:
        self.job = job
        self.spec = job.spec
        self.task = job.spec.task_type
        self.extra = dict(job.spec.extra or {})
        self.class_names = list(job.class_names)
        self.seed = int(job.spec.seed)
        self.epochs = int(job.spec.epochs)
        self.image_size = int(job.spec.image_size)
        self.resume: dict[str, Any] | None = None
        self.device = torch.device("cpu")
        self.model: torch.nn.Module
        self.autocast = helpers.autocast_for(self.device, False)[0]
        self.scaler = None

    def option(self, key: str, default: Any, kind: type) -> Any:
        """``spec.extra[key]`` as ``kind``, or ``default`` when absent or empty."""
        return helpers.extra_value(self.extra, key, default, kind)

    def load_checkpoint(self, path: Path) -> dict[str, Any]:
        return helpers.load_checkpoint(path, self.checkpoint_format, self.framework)

    # --- the loop ------------------------------------------------------------------------

    def run(self) -> None:
        placement = self.spec.placement()
        if placement.world_size <= 1:
            self.train_loop()
            return
        with launched(type(self), self.job, placement) as team:
            self.team = team
            self.train_loop()

    def train_loop(self) -> None:
        """Train every epoch in this process (rank ``self.team.rank`` of a distributed job)."""
        job, spec, team = self.job, self.spec, self.team
        self.check()
        if team.size > 1:
            self.device = torch.device(spec.placement().rank_device(team.rank))
        else:
            self.device = helpers.resolve_device(spec.device)
        helpers.seed_everything(self.seed)
        if job.resume_from:
            self.resume = self.load_checkpoint(Path(job.resume_from))
            if self.resume["model_name"] != spec.model or (
                list(self.resume["class_names"]) != self.class_names
            ):
                raise ValueError(
                    "the resume checkpoint was trained for another model or class list "
                    f"({self.resume['model_name']}, {self.resume['class_names']})"
                )
            self.image_size = int(self.resume["image_size"])
        self.model = self.build_model()
        self.model.to(self.device)
        if team.rank:  # the same initial weights everywhere, other augmentations per rank
            helpers.seed_everything(self.rank_seed(self.seed))
        self.train_set, self.val_set = self.build_datasets()
        if len(self.train_set) == 0:
            raise ValueError(f"no training images in the prepared dataset {job.dataset_dir}")
        train_loader, self.val_loader = self.build_loaders()
        self.optimizer = self.build_optimizer()
        self.scheduler = self.build_scheduler(len(train_loader))
        self.autocast, self.scaler = helpers.autocast_for(
            self.device, self.option("amp", True, bool)
        )
        folder = Path(job.work_dir) / f"{self.framework}_checkpoints"
        book = EpochBook(job, folder, self.best_metric, spec.patience)
        start_epoch = 1
        if self.resume is not None:
            helpers.load_training_state(
                self.resume, self.model, self.optimizer, self.scheduler, self.scaler
            )
            start_epoch = book.restore(self.resume)
            # Different epochs' shuffles and augmentations even after a resume.
            self.generator.manual_seed(self.rank_seed(self.seed + start_epoch))
            random.seed(self.rank_seed(self.seed + start_epoch))
            job.log(f"resuming {spec.model} at epoch {start_epoch}/{spec.epochs}")
        else:
            self.start_schedule()
        job.log(self.describe())

        bare, trained = self.model, self.model
        if team.size > 1:
            trained = torch.nn.parallel.DistributedDataParallel(
                bare,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self.find_unused_parameters,
            )
        per_rank: list[int] = [0] * team.size
        for epoch in range(start_epoch, self.epochs + 1):
            if self.train_sampler is not None:
                self.train_sampler.set_epoch(epoch)
            self.model = trained  # train_step's forward syncs gradients across ranks
            try:
                values, seen = self.train_epoch(train_loader, epoch)
            finally:
                self.model = bare
            values, seen = self.combine(values, seen, per_rank)
            if len(self.val_set) and team.leader:
                self.model.eval()
                with torch.no_grad():
                    values.update(self.validate())
            values = team.share(values)
            book.update(epoch, values)
            self.after_epoch(epoch, values)
            stop = team.leader and book.finish(
                epoch, values, self.checkpoint(epoch, values, book), images_seen=seen
            )
            if team.share(stop):
                break
        if team.size > 1:
            job.log(
                f"distributed: {team.size} {team.backend} processes trained "
                + ", ".join(f"rank {r}: {n} images" for r, n in enumerate(per_rank))
                + " (all epochs)"
            )

    def rank_seed(self, seed: int) -> int:
        """``seed`` on rank 0 (as a single process), a different one on each other rank."""
        return seed + 100_003 * self.team.rank

    def combine(
        self, values: dict[str, float], seen: int, per_rank: list[int]
    ) -> tuple[dict[str, float], int]:
        """The epoch's training values over all ranks (losses weighted by images seen; rank
        0's ``lr``) and the images all ranks saw; ``per_rank`` adds up each rank's images."""
        if self.team.size == 1:
            per_rank[0] += seen
            return values, seen
        parts = self.team.gather((values, seen))
        total = sum(n for _, n in parts)
        for rank, (_, n) in enumerate(parts):
            per_rank[rank] += n
        merged = {
            name: sum(v.get(name, 0.0) * n for v, n in parts) / max(total, 1)
            for name in values
            if name != "lr"
        }
        merged["lr"] = values["lr"]
        return merged, total

    def build_loaders(self):
        """(train loader: shuffled with a seeded generator, val loader). Distributed: each
        rank reads its shard (DistributedSampler, seeded by the job's seed and the epoch)
        with ``batch_size / world_size`` images per step."""
        size = self.team.size
        workers = self.option("workers", 0, int) or (
            0 if self.device.type == "cpu" else min(8, max((os.cpu_count() or 2) // size, 1))
        )
        self.generator = torch.Generator().manual_seed(self.rank_seed(self.seed))
        batch_size = max(1, min(int(self.spec.batch_size), len(self.train_set)))
        shard = len(self.train_set)
        if size > 1:
            self.train_sampler = torch.utils.data.DistributedSampler(
                self.train_set, num_replicas=size, rank=self.team.rank, shuffle=True, seed=self.seed
            )
            batch_size = max(1, min(int(self.spec.batch_size) // size, len(self.train_sampler)))
            shard = len(self.train_sampler)
        loader_args: dict[str, Any] = dict(
            collate_fn=self.collate_fn,
            num_workers=workers,
            worker_init_fn=helpers.seed_worker,
            pin_memory=self.device.type == "cuda",
            persistent_workers=workers > 0,
        )
        train_loader = torch.utils.data.DataLoader(
            self.train_set,
            batch_size=batch_size,
            shuffle=self.train_sampler is None,
            sampler=self.train_sampler,
            drop_last=shard > batch_size,
            generator=self.generator,
            **loader_args,
        )
        val_loader = torch.utils.data.DataLoader(
            self.val_set, batch_size=batch_size, shuffle=False, **loader_args
        )
        return train_loader, val_loader

    def train_epoch(self, loader, epoch: int) -> tuple[dict[str, float], int]:
        """One pass over ``loader``: (mean losses + ``lr`` of the last step, images seen)."""
        model, optimizer, scaler = self.model, self.optimizer, self.scaler
        model.train()
        sums: dict[str, float] = {}
        seen, last_lr = 0, float(optimizer.param_groups[0]["lr"])
        for batch in loader:
            with self.autocast():
                loss, n, parts = self.train_step(batch)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch}: lower learning_rate"
                )
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if self.grad_clip > 0:
                    scaler.unscale_(optimizer)
            else:
                loss.backward()
            if self.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), self.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            last_lr = float(optimizer.param_groups[0]["lr"])
            self.after_step()
            seen += n
            sums["train/loss"] = sums.get("train/loss", 0.0) + float(loss.detach()) * n
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value * n
        values = {name: total / max(seen, 1) for name, total in sums.items()}
        values["lr"] = last_lr
        return values, seen

    def checkpoint(self, epoch: int, values: dict[str, float], book: EpochBook) -> dict[str, Any]:
        return {
            "format": self.checkpoint_format,
            "framework": self.framework,
            "task_type": self.task,
            "model_name": self.spec.model,
            "class_names": self.class_names,
            "image_size": self.image_size,
            **self.checkpoint_fields(),
            "epoch": epoch,
            "epochs": self.epochs,
            "metrics": values,
            **book.state(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
        }

    # --- hooks ---------------------------------------------------------------------------

    def check(self) -> None:
        """Refuse a spec this engine cannot train (task, model, classes)."""

    def build_model(self) -> torch.nn.Module:
        """The model: rebuilt from ``self.resume`` when resuming, else fresh (with pretrained
        or init_from weights from ``job.pretrained_weights``)."""
        raise NotImplementedError

    def build_datasets(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        """(train, val) datasets of the prepared layout under ``job.dataset_dir``."""
        raise NotImplementedError

    def build_optimizer(self) -> torch.optim.Optimizer:
        raise NotImplementedError

    def build_scheduler(self, steps_per_epoch: int) -> Any:
        """The learning-rate schedule (None: constant)."""
        return None

    def start_schedule(self) -> None:
        """Before the first epoch of a run that does not resume."""

    def train_step(self, batch) -> tuple[torch.Tensor, int, dict[str, float]]:
        """(loss, images in the batch, named loss parts) of one batch, run under autocast."""
        raise NotImplementedError

    def after_step(self) -> None:
        """After each optimizer step (a per-step schedule steps here)."""

    def validate(self) -> dict[str, float]:
        """Validation metrics (``val/...``) of the model in eval mode, under no_grad."""
        return {}

    def after_epoch(self, epoch: int, values: dict[str, float]) -> None:
        """After the epoch is counted, before its checkpoint (a per-epoch schedule)."""

    def checkpoint_fields(self) -> dict[str, Any]:
        """The engine's own checkpoint fields (what rebuilds its model and transforms)."""
        return {}

    def describe(self) -> str:
        """The job log line before the first epoch (the framework and model, then
        :meth:`summary`)."""
        return f"{self.spec.model}: {self.summary()}"

    def summary(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        where = f"device {self.device}"
        if self.team.size > 1:
            where += f" and {self.team.size - 1} more process(es) ({self.team.backend})"
        return (
            f"{params / 1e6:.2f}M parameters, {len(self.class_names)} classes, "
            f"{self.image_size}px, {len(self.train_set)} train / {len(self.val_set)} val "
            f"images, {where}"
        )
