"""transformers training and inference inside a job's child process.

A plain PyTorch loop (transformers' Trainer adds nothing here but indirection): the
model computes its own loss from ``labels``; we evaluate, checkpoint and report each
epoch. One checkpoint file carries the model config (JSON) and architecture, class names,
image size, model / optimizer / scheduler / scaler state, the epoch and the
early-stopping state, so both a resume and Predict rebuild everything from it alone.
"""

from __future__ import annotations

import io
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image

from trainers.hf import data, metrics, models
from trainers.hf.adapter import BEST_METRIC, MODELS
from trainers.runtime import torch_helpers
from trainers.runtime.adapter import (
    IMAGE_CLASSIFICATION,
    OBJECT_DETECTION,
    SEMANTIC_SEGMENTATION,
    JobContext,
    Prediction,
)
from trainers.runtime.epochs import EpochBook
from trainers.runtime.torch_helpers import autocast_for, resolve_device, seed_everything
from trainers.runtime.torch_helpers import extra_value as _extra

CHECKPOINT_FORMAT = "visionmesh.hf/1"
LOSS_NAMES = {
    "loss_ce": "train/cls_loss",
    "loss_vfl": "train/cls_loss",
    "loss_focal": "train/cls_loss",
    "loss_bbox": "train/box_loss",
    "loss_giou": "train/giou_loss",
}

transformers.logging.set_verbosity_error()


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch_helpers.load_checkpoint(path, CHECKPOINT_FORMAT, "hf")


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


# --- training -----------------------------------------------------------------------------


def train(job: JobContext) -> None:
    spec = job.spec
    if spec.model not in MODELS:
        raise ValueError(f"unknown hf model {spec.model!r}; choose one of {', '.join(MODELS)}")
    task = MODELS[spec.model][0]
    if spec.task_type != task:
        raise ValueError(f"hf model {spec.model!r} trains {task}, not {spec.task_type}")
    class_names = list(job.class_names)
    if task == IMAGE_CLASSIFICATION and len(class_names) < 2:
        raise ValueError(f"classification needs at least 2 classes, got {class_names}")
    if not class_names:
        raise ValueError("the dataset has no classes")
    extra = dict(spec.extra or {})
    device = resolve_device(spec.device)
    seed_everything(int(spec.seed))

    resume = load_checkpoint(Path(job.resume_from)) if job.resume_from else None
    if resume is not None:
        if resume["model_name"] != spec.model or list(resume["class_names"]) != class_names:
            raise ValueError(
                "the resume checkpoint was trained for another model or class list "
                f"({resume['model_name']}, {resume['class_names']})"
            )
        image_size = int(resume["image_size"])
        architecture = resume["architecture"]
        model = models.rebuild(resume["config"], architecture)
        config_json = resume["config"]
    else:
        image_size = int(spec.image_size)
        config, architecture = models.build_config(spec.model, class_names, image_size)
        model = models.instantiate(config, architecture)
        config_json = models.config_to_json(model.config)
        if spec.pretrained or job.pretrained_weights is not None:  # also init_from
            if job.pretrained_weights is None:
                raise FileNotFoundError(
                    f"pretrained weights for {spec.model!r} requested, but the object store has "
                    f"no models/pretrained/hf/{spec.model}.pt: upload them "
                    "there or train with pretrained=false"
                )
            models.load_pretrained(model, job.pretrained_weights, job.log)
    model.to(device)

    hflip = _extra(extra, "hflip", 0.5, float)
    root = Path(job.dataset_dir)
    val_split: data.CocoSplit | None = None
    if task == IMAGE_CLASSIFICATION:
        augmentation = _extra(extra, "augmentation", "light", str)
        train_set = data.ImageFolderSplit(
            root / "train", class_names, image_size, True, hflip, augmentation
        )
        val_set = data.ImageFolderSplit(root / "val", class_names, image_size, False, 0.0)
        collate = data.collate_classification
    else:
        train_split = data.CocoSplit.load(root, "train", class_names)
        val_split = data.CocoSplit.load(root, "val", class_names)
        kind = data.CocoDetection if task == OBJECT_DETECTION else data.CocoSegmentation
        train_set = kind(train_split, image_size, True, hflip)
        val_set = kind(val_split, image_size, False, 0.0)
        collate = data.collate_detection if task == OBJECT_DETECTION else data.collate_segmentation
    if len(train_set) == 0:
        raise ValueError(f"no training images in the prepared dataset {root}")

    workers = _extra(extra, "workers", 0, int) or (
        0 if device.type == "cpu" else min(8, os.cpu_count() or 2)
    )
    generator = torch.Generator().manual_seed(int(spec.seed))
    batch_size = max(1, min(int(spec.batch_size), len(train_set)))
    loader_args = dict(
        collate_fn=collate,
        num_workers=workers,
        worker_init_fn=_seed_worker,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
    )
    train_loader = torch.utils.data.DataLoader(
        train_set,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(train_set) > batch_size,
        generator=generator,
        **loader_args,
    )
    val_loader = torch.utils.data.DataLoader(
        val_set, batch_size=batch_size, shuffle=False, **loader_args
    )

    optimizer_name = _extra(extra, "optimizer", "adamw", str).lower()
    lr = float(spec.learning_rate)
    weight_decay = _extra(extra, "weight_decay", 1e-4, float)
    if optimizer_name == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    elif optimizer_name == "adam":
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    elif optimizer_name == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True
        )
    else:
        raise ValueError(f"extra['optimizer'] must be adamw, adam or sgd, not {optimizer_name!r}")
    steps_per_epoch = len(train_loader)
    schedule = _extra(extra, "scheduler", "cosine", str).lower()
    warmup_steps = int(round(_extra(extra, "warmup_epochs", 0.0, float) * steps_per_epoch))
    scheduler_kwargs: dict[str, Any] = {}
    if schedule == "cosine_with_min_lr":
        scheduler_kwargs = {"scheduler_specific_kwargs": {"min_lr_rate": 0.01}}
    try:
        scheduler = transformers.get_scheduler(
            schedule,
            optimizer=optimizer,
            num_warmup_steps=warmup_steps,
            num_training_steps=steps_per_epoch * int(spec.epochs),
            **scheduler_kwargs,
        )
    except ValueError as err:
        raise ValueError(f"extra['scheduler'] = {schedule!r}: {err}") from None
    autocast, scaler = autocast_for(device, _extra(extra, "amp", True, bool))
    grad_clip = _extra(extra, "grad_clip", 0.1 if task == OBJECT_DETECTION else 1.0, float)
    label_smoothing = _extra(extra, "label_smoothing", 0.0, float)
    best_name = BEST_METRIC[task]

    start_epoch = 1
    book = EpochBook(job, Path(job.work_dir) / "hf_checkpoints", best_name, spec.patience)
    if resume is not None:
        torch_helpers.load_training_state(resume, model, optimizer, scheduler, scaler)
        start_epoch = book.restore(resume)
        generator.manual_seed(int(spec.seed) + start_epoch)
        random.seed(int(spec.seed) + start_epoch)
        job.log(f"resuming {spec.model} at epoch {start_epoch}/{spec.epochs}")
    params = sum(p.numel() for p in model.parameters())
    job.log(
        f"transformers {transformers.__version__} {spec.model} ({architecture}): "
        f"{params / 1e6:.2f}M parameters, {len(class_names)} classes, {image_size}px, "
        f"{len(train_set)} train / {len(val_set)} val images, device {device}"
    )

    for epoch in range(start_epoch, int(spec.epochs) + 1):
        model.train()
        sums: dict[str, float] = {}
        seen, last_lr = 0, float(optimizer.param_groups[0]["lr"])
        for batch in train_loader:
            images = batch[0].to(device, non_blocking=True)
            with autocast():
                if task == IMAGE_CLASSIFICATION:
                    labels = batch[1].to(device)
                    logits = model(pixel_values=images).logits
                    loss = F.cross_entropy(logits.float(), labels, label_smoothing=label_smoothing)
                    parts = {}
                elif task == OBJECT_DETECTION:
                    targets = [{k: v.to(device) for k, v in t.items()} for t in batch[1]]
                    out = model(pixel_values=images, labels=targets)
                    loss = out.loss
                    parts = _loss_parts(out)
                else:
                    out = model(pixel_values=images, labels=batch[1].to(device))
                    loss = out.loss
                    parts = {}
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"training loss became {loss.item()} at epoch {epoch}: lower learning_rate"
                )
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            last_lr = float(optimizer.param_groups[0]["lr"])
            scheduler.step()
            n = images.shape[0]
            seen += n
            sums["train/loss"] = sums.get("train/loss", 0.0) + float(loss.detach()) * n
            for name, value in parts.items():
                sums[name] = sums.get(name, 0.0) + value * n
        values = {name: total / max(seen, 1) for name, total in sums.items()}
        values["lr"] = last_lr
        if len(val_set):
            if task == IMAGE_CLASSIFICATION:
                values.update(_evaluate_classification(model, val_loader, device, autocast))
            elif task == OBJECT_DETECTION:
                assert val_split is not None
                values.update(_evaluate_detection(model, val_loader, val_split, device, autocast))
            else:
                values.update(
                    _evaluate_segmentation(model, val_loader, device, autocast, len(class_names))
                )

        book.update(epoch, values)
        if book.finish(
            epoch,
            values,
            {
                "format": CHECKPOINT_FORMAT,
                "framework": "hf",
                "task_type": task,
                "model_name": spec.model,
                "architecture": architecture,
                "config": config_json,
                "class_names": class_names,
                "image_size": image_size,
                "epoch": epoch,
                "epochs": int(spec.epochs),
                "metrics": values,
                **book.state(),
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler is not None else None,
            },
            images_seen=seen,
        ):
            return


def _loss_parts(out: Any) -> dict[str, float]:
    parts: dict[str, float] = {}
    for key, value in (getattr(out, "loss_dict", None) or {}).items():
        name = LOSS_NAMES.get(key)
        if name is not None:
            parts[name] = parts.get(name, 0.0) + float(value.detach())
    return parts


@torch.no_grad()
def _evaluate_classification(model, loader, device, autocast) -> dict[str, float]:
    model.eval()
    loss_sum, top1, topk, n = 0.0, 0, 0, 0
    for images, labels in loader:
        images, labels = images.to(device), labels.to(device)
        with autocast():
            logits = model(pixel_values=images).logits
        logits = logits.float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        hits = logits.topk(min(5, logits.shape[1]), dim=1).indices == labels[:, None]
        top1 += int(hits[:, 0].sum())
        topk += int(hits.any(dim=1).sum())
        n += labels.shape[0]
    return {"val/loss": loss_sum / n, "val/top1": top1 / n, "val/top5": topk / n}


@torch.no_grad()
def _evaluate_detection(model, loader, split: data.CocoSplit, device, autocast):
    model.eval()
    sigmoid = model.config.model_type in models.SIGMOID_DETECTORS
    index_to_cat = {i: c for c, i in split.cat_to_index.items()}
    sizes = {int(im["id"]): (float(im["width"]), float(im["height"])) for im in split.images}
    detections: list[dict[str, Any]] = []
    loss_sum, n = 0.0, 0
    for images, targets, ids in loader:
        images = images.to(device)
        targets = [{k: v.to(device) for k, v in t.items()} for t in targets]
        with autocast():
            out = model(pixel_values=images, labels=targets)
        loss_sum += float(out.loss) * images.shape[0]
        n += images.shape[0]
        decoded = metrics.decode_detections(out.logits, out.pred_boxes, sigmoid, 100)
        for image_id, (scores, labels, boxes) in zip(ids, decoded, strict=True):
            width, height = sizes[image_id]
            xywh = metrics.box_cxcywh_to_xywh(boxes, width, height)
            for score, label, box in zip(
                scores.tolist(), labels.tolist(), xywh.tolist(), strict=True
            ):
                detections.append(
                    {
                        "image_id": image_id,
                        "category_id": index_to_cat[int(label)],
                        "bbox": [round(v, 2) for v in box],
                        "score": float(score),
                    }
                )
    values = {"val/loss": loss_sum / max(n, 1)}
    values.update(metrics.coco_map(split.coco_ground_truth(), detections))
    return values


@torch.no_grad()
def _evaluate_segmentation(model, loader, device, autocast, num_classes: int):
    model.eval()
    matrix = torch.zeros(num_classes + 1, num_classes + 1, dtype=torch.long)
    loss_sum, n = 0.0, 0
    for images, masks in loader:
        images, masks = images.to(device), masks.to(device)
        with autocast():
            out = model(pixel_values=images, labels=masks)
        loss_sum += float(out.loss) * images.shape[0]
        n += images.shape[0]
        logits = F.interpolate(
            out.logits.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False
        )
        matrix += metrics.confusion(logits.argmax(1).cpu(), masks.cpu(), num_classes + 1)
    values = {"val/loss": loss_sum / max(n, 1)}
    values.update(metrics.segmentation_scores(matrix))
    return values


# --- inference ----------------------------------------------------------------------------

_CACHE: dict[tuple[str, float, str], tuple[torch.nn.Module, dict[str, Any]]] = {}


def _load_for_inference(checkpoint: Path, device: torch.device):
    key = (str(checkpoint.resolve()), checkpoint.stat().st_mtime, str(device))
    if key not in _CACHE:
        ckpt = load_checkpoint(checkpoint)
        model = models.rebuild(ckpt["config"], ckpt["architecture"])
        model.load_state_dict(ckpt["model"])
        model.to(device).eval()
        meta = {k: ckpt[k] for k in ("task_type", "class_names", "image_size")}
        _CACHE.clear()
        _CACHE[key] = (model, meta)
    return _CACHE[key]


@torch.no_grad()
def predict(
    checkpoint: Path,
    image: bytes,
    *,
    class_names: list[str],
    confidence: float,
    max_detections: int,
    device: str,
    **_unused: Any,  # task_type: the checkpoint says which task it was trained for
) -> Prediction:
    dev = resolve_device(device)
    model, meta = _load_for_inference(checkpoint, dev)
    names = list(class_names) or list(meta["class_names"])
    task = meta["task_type"]
    with Image.open(io.BytesIO(image)) as im:
        rgb = im.convert("RGB")
    width, height = rgb.size
    pixels = data.to_tensor(rgb, int(meta["image_size"])).unsqueeze(0).to(dev)
    result = Prediction(task_type=task, image_width=width, image_height=height)
    max_detections = max_detections or 100
    if task == IMAGE_CLASSIFICATION:
        probs = model(pixel_values=pixels).logits.float().softmax(-1)[0]
        scores, indices = probs.topk(min(5, probs.numel()))
        result.classes = [
            {"category_id": int(i), "category_name": names[int(i)], "score": float(s)}
            for s, i in zip(scores.tolist(), indices.tolist(), strict=True)
        ]
    elif task == OBJECT_DETECTION:
        out = model(pixel_values=pixels)
        sigmoid = model.config.model_type in models.SIGMOID_DETECTORS
        scores, labels, boxes = metrics.decode_detections(
            out.logits, out.pred_boxes, sigmoid, max_detections
        )[0]
        xywh = metrics.box_cxcywh_to_xywh(boxes, width, height)
        for score, label, box in zip(scores.tolist(), labels.tolist(), xywh.tolist(), strict=True):
            if score < confidence:
                continue
            result.detections.append(
                {
                    "category_id": int(label),
                    "category_name": names[int(label)],
                    "score": float(score),
                    "box": tuple(round(v, 2) for v in box),
                    "polygons": [],
                    "keypoints": [],
                }
            )
    elif task == SEMANTIC_SEGMENTATION:
        logits = model(pixel_values=pixels).logits.float()
        probs = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
        probs = probs.softmax(1)[0].cpu()
        label_map = probs.argmax(0).numpy()
        min_pixels = max(4, int(0.0005 * width * height))
        for value in np.unique(label_map):
            if value == 0:
                continue
            region = label_map == value
            score = float(probs[value].numpy()[region].mean())
            if score < confidence:
                continue
            polygons = metrics.region_polygons(region, min_pixels=min_pixels)
            if not polygons:
                continue
            ys, xs = np.nonzero(region)
            x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
            result.detections.append(
                {
                    "category_id": int(value) - 1,
                    "category_name": names[int(value) - 1],
                    "score": score,
                    "box": (float(x0), float(y0), float(x1 - x0), float(y1 - y0)),
                    "polygons": polygons,
                    "keypoints": [],
                }
            )
        result.detections.sort(key=lambda d: -d["score"])
        del result.detections[max_detections:]
    else:  # pragma: no cover - checkpoints only carry the tasks above
        raise ValueError(f"the hf trainer cannot predict {task}")
    return result


# --- after training: export, evaluation, weights check --------------------------------------


class _Outputs(torch.nn.Module):
    """Plain tensors out of a transformers model: logits (+ pred_boxes for detection)."""

    def __init__(self, model: torch.nn.Module, task: str) -> None:
        super().__init__()
        self.model = model
        self.task = task

    def forward(self, pixel_values: torch.Tensor):
        out = self.model(pixel_values=pixel_values)
        if self.task == OBJECT_DETECTION:
            return out.logits, out.pred_boxes
        return out.logits


def output_names(task: str) -> list[str]:
    return ["logits", "pred_boxes"] if task == OBJECT_DETECTION else ["logits"]


def inference_model(checkpoint: Path) -> tuple[torch.nn.Module, dict[str, Any]]:
    """(model returning plain tensors, checkpoint metadata) of a job's checkpoint."""
    ckpt = load_checkpoint(checkpoint)
    model = models.rebuild(ckpt["config"], ckpt["architecture"])
    model.load_state_dict(ckpt["model"])
    model.eval()
    meta = {k: ckpt[k] for k in ("task_type", "class_names", "image_size", "model_name")}
    return _Outputs(model, ckpt["task_type"]).eval(), meta


def export(checkpoint: Path, fmt: str, *, image_size: int, out_dir: Path, device: str) -> Path:
    """The model's raw outputs for ``data.to_tensor`` input as ONNX or TorchScript."""
    from trainers.runtime.torch_export import export_module

    model, meta = inference_model(checkpoint)
    size = int(meta["image_size"])  # position embeddings are built for the training size
    example = torch.randn(1, 3, size, size)
    suffix = "onnx" if fmt == "onnx" else "torchscript"
    return export_module(
        model,
        example,
        fmt,
        Path(out_dir) / f"model.{suffix}",
        output_names=output_names(meta["task_type"]),
    )


@torch.no_grad()
def evaluate_job(job: JobContext, checkpoint: Path) -> dict[str, Any]:
    """Classification: per-class P/R/accuracy; detection: pycocotools per class; semantic
    segmentation: per-class IoU. Confusion matrix for all, PR curves where scores exist."""
    from trainers.runtime import evaluation

    wrapped, meta = inference_model(checkpoint)
    model = wrapped.model
    device = resolve_device(job.spec.device)
    model.to(device)
    task = meta["task_type"]
    class_names = list(job.class_names)
    image_size = int(meta["image_size"])
    root = Path(job.dataset_dir)
    batch = max(1, job.spec.batch_size)
    if task == IMAGE_CLASSIFICATION:
        val_set = data.ImageFolderSplit(root / "val", class_names, image_size, False, 0.0)
        loader = torch.utils.data.DataLoader(
            val_set, batch_size=batch, collate_fn=data.collate_classification
        )
        probs, labels = [], []
        for images, target in loader:
            logits = model(pixel_values=images.to(device)).logits.float()
            probs.append(logits.softmax(-1).cpu().numpy())
            labels.append(target.numpy())
        n = len(class_names)
        return evaluation.classification_report(
            np.concatenate(probs) if probs else np.zeros((0, n)),
            np.concatenate(labels) if labels else np.zeros(0),
            n,
        )
    split = data.CocoSplit.load(root, "val", class_names)
    if task == OBJECT_DETECTION:
        val_set = data.CocoDetection(split, image_size, False, 0.0)
        loader = torch.utils.data.DataLoader(
            val_set, batch_size=batch, collate_fn=data.collate_detection
        )
        detections = detect_split(model, loader, split, device)
        index_to_cat = {i: c for c, i in split.cat_to_index.items()}
        category_ids = [index_to_cat[i] for i in range(len(class_names))]
        return evaluation.coco_detection_report(split.coco_ground_truth(), detections, category_ids)
    val_set = data.CocoSegmentation(split, image_size, False, 0.0)
    loader = torch.utils.data.DataLoader(
        val_set, batch_size=batch, collate_fn=data.collate_segmentation
    )
    matrix = torch.zeros(len(class_names) + 1, len(class_names) + 1, dtype=torch.long)
    for images, masks in loader:
        logits = model(pixel_values=images.to(device)).logits.float()
        logits = F.interpolate(logits, size=masks.shape[-2:], mode="bilinear", align_corners=False)
        matrix += metrics.confusion(logits.argmax(1).cpu(), masks, len(class_names) + 1)
    report = evaluation.segmentation_report(matrix.numpy(), class_names)
    report["metrics"] = metrics.segmentation_scores(matrix)
    return report


def detect_split(model, loader, split: data.CocoSplit, device) -> list[dict[str, Any]]:
    """COCO detections (dataset category ids, pixel xywh) of every val image, 100 each."""
    sigmoid = model.config.model_type in models.SIGMOID_DETECTORS
    index_to_cat = {i: c for c, i in split.cat_to_index.items()}
    sizes = {int(im["id"]): (float(im["width"]), float(im["height"])) for im in split.images}
    out: list[dict[str, Any]] = []
    for images, _targets, ids in loader:
        result = model(pixel_values=images.to(device))
        decoded = metrics.decode_detections(result.logits, result.pred_boxes, sigmoid, 100)
        for image_id, (scores, labels, boxes) in zip(ids, decoded, strict=True):
            width, height = sizes[image_id]
            xywh = metrics.box_cxcywh_to_xywh(boxes, width, height)
            for score, label, box in zip(
                scores.tolist(), labels.tolist(), xywh.tolist(), strict=True
            ):
                out.append(
                    {
                        "image_id": image_id,
                        "category_id": index_to_cat[int(label)],
                        "bbox": [round(v, 2) for v in box],
                        "score": float(score),
                    }
                )
    return out


def check_weights(path: Path, model_name: str, task_type: str) -> str:
    """Most of the model's tensors must load from the file (a head may differ)."""
    if model_name not in MODELS:
        raise ValueError(f"unknown hf model {model_name!r}")
    if MODELS[model_name][0] != task_type:
        raise ValueError(f"hf model {model_name!r} trains {MODELS[model_name][0]}")
    config, architecture = models.build_config(model_name, ["a", "b"], 224)
    model = models.instantiate(config, architecture)
    lines: list[str] = []
    models.load_pretrained(model, path, lines.append)
    own = len(model.state_dict())
    loaded = int(lines[-1].split("loaded ")[1].split(" ")[0]) if lines else 0
    if loaded < own // 2:
        raise ValueError(f"only {loaded} of {model_name}'s {own} tensors match the file")
    return lines[-1] if lines else model_name
