"""timm training and inference, run inside a job's child process (imports torch and timm).

One checkpoint file per epoch carries everything a resume or a Predict needs: the model
name and its timm data config, class names, image size, model / optimizer / scheduler /
grad-scaler state, the epoch, and the early-stopping state.
"""

from __future__ import annotations

import contextlib
import difflib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import timm.data
import timm.optim
import timm.scheduler
import torch
import torch.nn.functional as F
from PIL import Image

from trainers.runtime import torch_helpers
from trainers.runtime.adapter import IMAGE_CLASSIFICATION, JobContext, Prediction
from trainers.runtime.epochs import EpochBook
from trainers.runtime.imagefolder import imagefolder_samples
from trainers.runtime.torch_helpers import autocast_for, resolve_device, seed_everything
from trainers.runtime.torch_helpers import extra_value as _extra

CHECKPOINT_FORMAT = "visionmesh.timm/1"
BEST_METRIC = "val/top1"


# --- small helpers ------------------------------------------------------------------------


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch_helpers.load_checkpoint(path, CHECKPOINT_FORMAT, "timm")


def check_model_name(name: str) -> None:
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=5, cutoff=0.6)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise ValueError(f"timm has no model named {name!r}{hint}")


def create_model(name: str, num_classes: int, image_size: int, **kwargs: Any) -> torch.nn.Module:
    check_model_name(name)
    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is not None and getattr(cfg, "fixed_input_size", False):
        # ViT-style models fix their position grid at creation: build it for our size.
        kwargs.setdefault("img_size", image_size)
    return timm.create_model(name, num_classes=num_classes, **kwargs)


def _weights_file(path: Path) -> Path:
    if path.is_file():
        return path
    for candidate in ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth"):
        if (path / candidate).is_file():
            return path / candidate
    found = sorted(
        p for p in path.rglob("*") if p.suffix in (".safetensors", ".pt", ".pth", ".bin")
    )
    if not found:
        raise FileNotFoundError(f"no weights file (.safetensors/.pt/.pth/.bin) in {path}")
    return found[0]


def data_config(model: torch.nn.Module, image_size: int) -> dict[str, Any]:
    config = timm.data.resolve_data_config({}, model=model)
    config["input_size"] = (3, image_size, image_size)
    return {
        "input_size": tuple(config["input_size"]),
        "interpolation": str(config.get("interpolation", "bilinear")),
        "mean": tuple(float(v) for v in config["mean"]),
        "std": tuple(float(v) for v in config["std"]),
        "crop_pct": float(config.get("crop_pct", 0.875)),
        "crop_mode": str(config.get("crop_mode", "center")),
    }


def build_transforms(config: Mapping[str, Any], augmentation: str):
    """timm's transforms for the data config; ``augmentation`` picks the training recipe."""
    common = {
        "input_size": tuple(config["input_size"]),
        "interpolation": config["interpolation"],
        "mean": tuple(config["mean"]),
        "std": tuple(config["std"]),
    }
    if augmentation == "timm":
        train = timm.data.create_transform(is_training=True, **common)
        val = timm.data.create_transform(
            is_training=False, crop_pct=config["crop_pct"], crop_mode=config["crop_mode"], **common
        )
    elif augmentation == "light":
        train = timm.data.create_transform(
            is_training=True, scale=(0.5, 1.0), ratio=(3 / 4, 4 / 3), color_jitter=0.0, **common
        )
        val = eval_transform(config)
    elif augmentation == "flip":
        from torchvision import transforms

        val = eval_transform(config)
        train = transforms.Compose([transforms.RandomHorizontalFlip(), *val.transforms])
    elif augmentation == "none":
        train = eval_transform(config)
        val = train
    else:
        raise ValueError(
            f"extra['augmentation'] must be light, flip, timm or none, not {augmentation!r}"
        )
    return train, val


def eval_transform(config: Mapping[str, Any]):
    """Resize the whole image to the input size (no crop), as training with light/none saw it."""
    return timm.data.create_transform(
        input_size=tuple(config["input_size"]),
        is_training=False,
        interpolation=config["interpolation"],
        mean=tuple(config["mean"]),
        std=tuple(config["std"]),
        crop_pct=1.0,
        crop_mode="squash",
    )


class ImageFolderSplit(torch.utils.data.Dataset):
    """``<root>/<split>/<class name>/<file>`` with labels from the job's class order."""

    def __init__(self, root: Path, class_names: list[str], transform) -> None:
        self.transform = transform
        self.samples = imagefolder_samples(root, class_names)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        with Image.open(path) as im:
            image = im.convert("RGB")
        return self.transform(image), label


# --- training -----------------------------------------------------------------------------


def train(job: JobContext) -> None:
    spec = job.spec
    if spec.task_type != IMAGE_CLASSIFICATION:
        raise ValueError(
            f"the timm trainer trains {IMAGE_CLASSIFICATION} only, not {spec.task_type}"
        )
    if len(job.class_names) < 2:
        raise ValueError(f"classification needs at least 2 classes, got {job.class_names}")
    extra = dict(spec.extra or {})
    device = resolve_device(spec.device)
    seed_everything(int(spec.seed))
    num_classes = len(job.class_names)

    resume = load_checkpoint(Path(job.resume_from)) if job.resume_from else None
    if resume is not None:
        if resume["model_name"] != spec.model or list(resume["class_names"]) != list(
            job.class_names
        ):
            raise ValueError(
                "the resume checkpoint was trained for another model or class list "
                f"({resume['model_name']}, {resume['class_names']})"
            )
        image_size = int(resume["image_size"])
    else:
        image_size = int(spec.image_size)

    drop_rate = _extra(extra, "drop_rate", 0.0, float)
    kwargs: dict[str, Any] = {"drop_rate": drop_rate} if drop_rate else {}
    init = None  # init_from: a visionmesh timm checkpoint (a finished job's best.pt)
    if job.pretrained_weights is not None and resume is None:
        with contextlib.suppress(Exception):
            candidate = torch.load(job.pretrained_weights, map_location="cpu", weights_only=False)
            if isinstance(candidate, dict) and candidate.get("format") == CHECKPOINT_FORMAT:
                init = candidate
    if init is None and (spec.pretrained or job.pretrained_weights) and resume is None:
        if job.pretrained_weights is None:
            raise FileNotFoundError(
                f"pretrained weights for {spec.model!r} requested, but the object store has "
                f"no models/pretrained/timm/{spec.model}.pt: upload them there "
                "or train with pretrained=false"
            )
        weights = _weights_file(Path(job.pretrained_weights))
        job.log(f"loading pretrained weights from {weights.name}")
        kwargs["pretrained"] = True
        kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
    model = create_model(spec.model, num_classes, image_size, **kwargs)
    if init is not None:
        load_init(model, init, job)
    model.to(device)
    config = dict(resume["data_config"]) if resume else data_config(model, image_size)
    augmentation = _extra(extra, "augmentation", "light", str)
    train_tf, val_tf = build_transforms(config, augmentation)

    train_set = ImageFolderSplit(Path(job.dataset_dir) / "train", job.class_names, train_tf)
    val_set = ImageFolderSplit(Path(job.dataset_dir) / "val", job.class_names, val_tf)
    if len(train_set) == 0:
        raise ValueError(f"no training images under {Path(job.dataset_dir) / 'train'}")
    workers = _extra(extra, "workers", 0, int) or (
        0 if device.type == "cpu" else min(8, os.cpu_count() or 2)
    )
    generator = torch.Generator().manual_seed(int(spec.seed))
    batch_size = max(1, min(int(spec.batch_size), len(train_set)))
    train_loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(train_set) > batch_size,
        num_workers=workers,
        generator=generator,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_size=batch_size, shuffle=False, num_workers=workers
    )

    optimizer_name = _extra(extra, "optimizer", "adamw", str).lower()
    if optimizer_name not in timm.optim.list_optimizers():
        close = difflib.get_close_matches(optimizer_name, timm.optim.list_optimizers(), n=5)
        raise ValueError(f"extra['optimizer']: timm has no optimizer {optimizer_name!r} ({close})")
    opt_kwargs: dict[str, Any] = {}
    if optimizer_name in ("sgd", "momentum", "rmsprop", "nesterov"):
        opt_kwargs["momentum"] = _extra(extra, "momentum", 0.9, float)
    optimizer = timm.optim.create_optimizer_v2(
        model,
        opt=optimizer_name,
        lr=float(spec.learning_rate),
        weight_decay=_extra(extra, "weight_decay", 0.05, float),
        **opt_kwargs,
    )
    sched_name = _extra(extra, "scheduler", "cosine", str).lower()
    warmup = _extra(extra, "warmup_epochs", 0, int)
    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer,
        sched=sched_name,
        num_epochs=int(spec.epochs),
        warmup_epochs=warmup,
        warmup_lr=float(spec.learning_rate) * 0.1,
        min_lr=_extra(extra, "min_lr", 0.0, float),
        plateau_mode="max",
    )
    autocast, scaler = autocast_for(device, _extra(extra, "amp", True, bool))
    criterion = torch.nn.CrossEntropyLoss(
        label_smoothing=_extra(extra, "label_smoothing", 0.1, float)
    )

    start_epoch = 1
    book = EpochBook(job, Path(job.work_dir) / "timm_checkpoints", BEST_METRIC, spec.patience)
    if resume is not None:
        torch_helpers.load_training_state(resume, model, optimizer, scheduler, scaler)
        start_epoch = book.restore(resume)
        # Different epochs' shuffles even after a resume.
        generator.manual_seed(int(spec.seed) + start_epoch)
        job.log(f"resuming {spec.model} at epoch {start_epoch}/{spec.epochs}")
    else:
        if scheduler is not None:
            scheduler.step(0)
    params = sum(p.numel() for p in model.parameters())
    job.log(
        f"timm {timm.__version__} {spec.model}: {params / 1e6:.2f}M parameters, {num_classes} "
        f"classes, {image_size}px, {len(train_set)} train / {len(val_set)} val images, "
        f"device {device}, optimizer {optimizer_name}, scheduler {sched_name}"
    )

    for epoch in range(start_epoch, int(spec.epochs) + 1):
        lr = optimizer.param_groups[0]["lr"]
        model.train()
        total_loss, seen, steps = 0.0, 0, 0
        for images, labels in train_loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            with autocast():
                loss = criterion(model(images), labels)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch}: lower learning_rate"
                )
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            total_loss += float(loss.detach()) * labels.shape[0]
            seen += labels.shape[0]
            steps += 1
        values: dict[str, float] = {"train/loss": total_loss / max(seen, 1), "lr": float(lr)}
        if len(val_set):
            values.update(evaluate(model, val_loader, device, autocast, num_classes))

        book.update(epoch, values)
        if scheduler is not None:
            scheduler.step(epoch, values.get(BEST_METRIC))
        if book.finish(
            epoch,
            values,
            {
                "format": CHECKPOINT_FORMAT,
                "framework": "timm",
                "task_type": IMAGE_CLASSIFICATION,
                "model_name": spec.model,
                "class_names": list(job.class_names),
                "image_size": image_size,
                "data_config": config,
                "epoch": epoch,
                "epochs": int(spec.epochs),
                "metrics": values,
                **book.state(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
            images_seen=seen,
        ):
            return


@torch.no_grad()
def evaluate(model, loader, device, autocast, num_classes: int) -> dict[str, float]:
    model.eval()
    k = min(5, num_classes)
    loss_sum, top1, topk, n = 0.0, 0, 0, 0
    for images, labels in loader:
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        with autocast():
            logits = model(images)
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        best = logits.topk(k, dim=1).indices
        hits = best == labels[:, None]
        top1 += int(hits[:, 0].sum())
        topk += int(hits.any(dim=1).sum())
        n += labels.shape[0]
    return {"val/loss": loss_sum / n, "val/top1": top1 / n, "val/top5": topk / n}


# --- inference ----------------------------------------------------------------------------

_CACHE: dict[tuple[str, float, str], tuple[torch.nn.Module, Any, list[str]]] = {}


def _load_for_inference(checkpoint: Path, device: torch.device):
    key = (str(checkpoint.resolve()), checkpoint.stat().st_mtime, str(device))
    if key not in _CACHE:
        ckpt = load_checkpoint(checkpoint)
        model = create_model(ckpt["model_name"], len(ckpt["class_names"]), int(ckpt["image_size"]))
        model.load_state_dict(ckpt["model"])
        model.to(device).eval()
        _CACHE.clear()
        _CACHE[key] = (model, eval_transform(ckpt["data_config"]), list(ckpt["class_names"]))
    return _CACHE[key]


@torch.no_grad()
def predict(
    checkpoint: Path,
    image: bytes,
    *,
    class_names: list[str],
    device: str,
    top_k: int = 5,
    **_unused: Any,  # the rest of FrameworkAdapter.predict's options (confidence, ...)
) -> Prediction:
    dev = resolve_device(device)
    model, transform, names = _load_for_inference(checkpoint, dev)
    names = list(class_names) or names
    with Image.open(io.BytesIO(image)) as im:
        rgb = im.convert("RGB")
    x = transform(rgb).unsqueeze(0).to(dev)
    probs = model(x).float().softmax(dim=1)[0]
    scores, indices = probs.topk(min(top_k, probs.numel()))
    classes = [
        {"category_id": int(i), "category_name": names[int(i)], "score": float(s)}
        for s, i in zip(scores.tolist(), indices.tolist(), strict=True)
    ]
    return Prediction(
        task_type=IMAGE_CLASSIFICATION,
        image_width=rgb.width,
        image_height=rgb.height,
        classes=classes,
    )


# --- after training: init_from, export, evaluation, weights check ---------------------------


def load_init(model: torch.nn.Module, ckpt: Mapping[str, Any], job: JobContext) -> None:
    """Start from another job's weights; a classifier of another class count starts afresh."""
    if ckpt["model_name"] != job.spec.model:
        raise ValueError(
            f"init_from weights are a {ckpt['model_name']}, this job builds {job.spec.model}"
        )
    own = model.state_dict()
    state = {k: v for k, v in ckpt["model"].items() if k in own and own[k].shape == v.shape}
    skipped = sorted(k for k in ckpt["model"] if k not in state)
    model.load_state_dict(state, strict=False)
    if skipped:
        job.log(
            f"init_from: {len(ckpt['class_names'])} classes there, {len(job.class_names)} here: "
            f"classification head re-initialised ({', '.join(skipped)})"
        )
    else:
        job.log(f"init_from: all {len(state)} tensors loaded (head kept)")


def _inference_model(checkpoint: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    ckpt = load_checkpoint(checkpoint)
    model = create_model(ckpt["model_name"], len(ckpt["class_names"]), int(ckpt["image_size"]))
    model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def export(checkpoint: Path, fmt: str, *, image_size: int, out_dir: Path, device: str) -> Path:
    """The model's logits for normalized input (timm's mean/std) as ONNX or TorchScript."""
    from trainers.runtime.torch_export import export_module

    model, ckpt = _inference_model(checkpoint)
    if image_size != int(ckpt["image_size"]) and getattr(model, "pos_embed", None) is not None:
        image_size = int(ckpt["image_size"])  # a ViT's position grid is fixed at creation
    example = torch.randn(1, 3, image_size, image_size)
    suffix = "onnx" if fmt == "onnx" else "torchscript"
    return export_module(
        model, example, fmt, Path(out_dir) / f"model.{suffix}", output_names=["logits"]
    )


@torch.no_grad()
def evaluate_job(job: JobContext, checkpoint: Path) -> dict[str, Any]:
    """Per-class precision / recall / accuracy, confusion matrix and PR curves on val."""
    import numpy as np

    from trainers.runtime import evaluation

    model, ckpt = _inference_model(checkpoint)
    device = resolve_device(job.spec.device)
    model.to(device)
    val_set = ImageFolderSplit(
        Path(job.dataset_dir) / "val", job.class_names, eval_transform(ckpt["data_config"])
    )
    loader = torch.utils.data.DataLoader(val_set, batch_size=max(1, job.spec.batch_size))
    probs, labels = [], []
    for images, target in loader:
        probs.append(model(images.to(device)).float().softmax(1).cpu().numpy())
        labels.append(target.numpy())
    n = len(job.class_names)
    return evaluation.classification_report(
        np.concatenate(probs) if probs else np.zeros((0, n)),
        np.concatenate(labels) if labels else np.zeros(0),
        n,
    )


def check_weights(path: Path, model_name: str, task_type: str) -> str:
    """The file must load into ``model_name`` (the classifier may have any class count)."""
    if task_type != IMAGE_CLASSIFICATION:
        raise ValueError(f"timm trains {IMAGE_CLASSIFICATION}, not {task_type}")
    check_model_name(model_name)
    path = _weights_file(Path(path))
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=False)
        for key in ("model", "state_dict", "model_state_dict"):
            if isinstance(state, dict) and isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("no state dict of tensors in the file")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = timm.create_model(model_name, num_classes=0)
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        shown = ", ".join(result.missing_keys[:5])
        raise ValueError(
            f"{len(result.missing_keys)} of {model_name}'s tensors are missing (e.g. {shown})"
        )
    params = sum(v.numel() for v in state.values())
    extra = len(result.unexpected_keys)
    return f"{model_name}: {len(state)} tensors, {params / 1e6:.2f}M values, {extra} head tensors"
