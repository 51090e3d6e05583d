"""Torch helpers of the torch kit: options, checkpoints, device, seeds, AMP, and the
classification pieces timm and hf share (validation metrics, evaluation, top-k classes).

Imported only in job and predict children: the trainer server never imports torch.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainers.runtime.adapter import single_device


def extra_value(spec_extra: Mapping[str, str], key: str, default: Any, kind: type) -> Any:
    raw = spec_extra.get(key, "")
    if raw is None or str(raw).strip() == "":
        return default
    raw = str(raw).strip()
    try:
        if kind is bool:
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        return kind(raw)
    except ValueError:
        raise ValueError(f"extra[{key!r}] = {raw!r} is not a valid {kind.__name__}") from None


def load_checkpoint(path: Path, fmt: str, trainer: str) -> dict[str, Any]:
    """A checkpoint file an engine wrote: a dict whose ``format`` is ``fmt``."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or ckpt.get("format") != fmt:
        raise ValueError(f"{path.name} is not a checkpoint written by the {trainer} trainer")
    return ckpt


def load_training_state(ckpt: Mapping[str, Any], model, optimizer, scheduler, scaler) -> None:
    """Model, optimizer, scheduler and grad-scaler state of a resume checkpoint.

    The scheduler and scaler may be None (and their saved state missing).
    """
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    if scheduler is not None and ckpt.get("scheduler") is not None:
        scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])


def resolve_device(name: str) -> torch.device:
    """The torch device of ``TrainingSpec.device`` for one process (a GPU list: its first)."""
    name = single_device((name or "").strip())
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available here")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def autocast_for(device: torch.device, enabled: bool):
    """(autocast context factory, GradScaler or None): AMP only on CUDA."""
    if device.type != "cuda" or not enabled:
        return (lambda: torch.autocast(device.type, enabled=False)), None
    if torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    scaler = torch.amp.GradScaler("cuda")
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), scaler


def seed_worker(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: python's and numpy's RNG from the worker's torch seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


@torch.no_grad()
def classification_metrics(forward, loader, device, autocast) -> dict[str, float]:
    """``val/loss``, ``val/top1`` and ``val/top5`` (fractions) of ``forward(images) ->
    logits`` over ``(images, labels)`` batches."""
    loss_sum, top1, topk, n = 0.0, 0, 0, 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with autocast():
            logits = forward(images)
        logits = logits.float()
        loss_sum += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
        top1 += int(hits[:, 0].sum())
        topk += int(hits.any(dim=1).sum())
        n += labels.shape[0]
    return {"val/loss": loss_sum / n, "val/top1": top1 / n, "val/top5": topk / n}


@torch.no_grad()
def classification_evaluation(forward, loader, device, num_classes: int) -> dict[str, Any]:
    """:func:`trainers.runtime.evaluation.classification_report` of ``forward``'s softmax
    over ``(images, labels)`` batches."""
    from trainers.runtime import evaluation

    probs, labels = [], []
    for images, target in loader:
        probs.append(forward(images.to(device)).float().softmax(-1).cpu().numpy())
        labels.append(target.numpy())
    return evaluation.classification_report(
        np.concatenate(probs) if probs else np.zeros((0, num_classes)),
        np.concatenate(labels) if labels else np.zeros(0),
        num_classes,
    )


def top_classes(probs: torch.Tensor, names: list[str], k: int) -> list[dict[str, Any]]:
    """The ``k`` most likely classes of one image's probabilities, as Prediction.classes."""
    scores, indices = probs.topk(min(k, probs.numel()))
    return [
        {"category_id": int(i), "category_name": names[int(i)], "score": float(s)}
        for s, i in zip(scores.tolist(), indices.tolist(), strict=True)
    ]


def cached_model(cache: dict, checkpoint: Path, device: torch.device, load):
    """``load(checkpoint)`` moved to ``device`` in eval mode, kept while the file is unchanged
    (one model at a time: predict children serve one checkpoint)."""
    key = (str(checkpoint.resolve()), checkpoint.stat().st_mtime, str(device))
    if key not in cache:
        model, meta = load(checkpoint)
        model.to(device).eval()
        cache.clear()
        cache[key] = (model, meta)
    return cache[key]
