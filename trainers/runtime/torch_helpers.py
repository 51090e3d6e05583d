"""Torch helpers both torch-based adapters (timm, hf) use inside job child processes.

Imported only in job and predict children: the trainer server never imports torch.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch


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
    name = (name or "").strip()
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
