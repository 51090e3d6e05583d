"""transformers training and inference inside a job's child process.

Training is :class:`HFTrainer` on the torch kit's loop (trainers.runtime.torchkit.loop;
transformers' Trainer adds nothing here but indirection): the model computes its own loss
from ``labels``; this module keeps the model building, datasets per task, the batch ->
loss, the validation metrics per task and the per-step schedule. The checkpoint adds the
model config (JSON) and architecture to the loop's common fields, so both a resume and
Predict rebuild everything from it alone.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from PIL import Image

from trainers.hf import data, metrics, models
from trainers.hf.adapter import BEST_METRIC, MODELS
from trainers.runtime.adapter import (
    IMAGE_CLASSIFICATION,
    OBJECT_DETECTION,
    SEMANTIC_SEGMENTATION,
    JobContext,
    Prediction,
)
from trainers.runtime.torchkit import helpers
from trainers.runtime.torchkit.helpers import (
    cached_model,
    classification_evaluation,
    classification_metrics,
    resolve_device,
    top_classes,
)
from trainers.runtime.torchkit.loop import TorchTrainer

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
    return helpers.load_checkpoint(path, CHECKPOINT_FORMAT, "hf")


# --- training -----------------------------------------------------------------------------


class HFTrainer(TorchTrainer):
    """A transformers model built from its config; the model computes its own loss from
    ``labels`` (detection, segmentation); per-step transformers schedules."""

    framework = "hf"
    checkpoint_format = CHECKPOINT_FORMAT

    def check(self) -> None:
        spec = self.spec
        if spec.model not in MODELS:
            raise ValueError(f"unknown hf model {spec.model!r}; choose one of {', '.join(MODELS)}")
        task = MODELS[spec.model][0]
        if self.task != task:
            raise ValueError(f"hf model {spec.model!r} trains {task}, not {self.task}")
        if task == IMAGE_CLASSIFICATION and len(self.class_names) < 2:
            raise ValueError(f"classification needs at least 2 classes, got {self.class_names}")
        if not self.class_names:
            raise ValueError("the dataset has no classes")
        self.best_metric = BEST_METRIC[task]
        self.grad_clip = self.option("grad_clip", 0.1 if task == OBJECT_DETECTION else 1.0, float)
        self.label_smoothing = self.option("label_smoothing", 0.0, float)

    def build_model(self) -> torch.nn.Module:
        job, spec = self.job, self.spec
        if self.resume is not None:
            self.architecture = self.resume["architecture"]
            self.config_json = self.resume["config"]
            return models.rebuild(self.config_json, self.architecture)
        config, self.architecture = models.build_config(
            spec.model, self.class_names, self.image_size
        )
        model = models.instantiate(config, self.architecture)
        self.config_json = models.config_to_json(model.config)
        if spec.pretrained or job.pretrained_weights is not None:  # also init_from
            if job.pretrained_weights is None:
                raise FileNotFoundError(
                    f"pretrained weights for {spec.model!r} requested, but the object store has "
                    f"no models/pretrained/hf/{spec.model}.pt: upload them "
                    "there or train with pretrained=false"
                )
            models.load_pretrained(model, job.pretrained_weights, job.log)
        return model

    def build_datasets(self):
        hflip = self.option("hflip", 0.5, float)
        root, names, size = Path(self.job.dataset_dir), self.class_names, self.image_size
        if self.task == IMAGE_CLASSIFICATION:
            augmentation = self.option("augmentation", "light", str)
            self.collate_fn = data.collate_classification
            return (
                data.ImageFolderSplit(root / "train", names, size, True, hflip, augmentation),
                data.ImageFolderSplit(root / "val", names, size, False, 0.0),
            )
        train_split = data.CocoSplit.load(root, "train", names)
        self.val_split = data.CocoSplit.load(root, "val", names)
        if self.task == OBJECT_DETECTION:
            kind, self.collate_fn = data.CocoDetection, data.collate_detection
        else:
            kind, self.collate_fn = data.CocoSegmentation, data.collate_segmentation
        return kind(train_split, size, True, hflip), kind(self.val_split, size, False, 0.0)

    def build_optimizer(self) -> torch.optim.Optimizer:
        name = self.option("optimizer", "adamw", str).lower()
        lr = float(self.spec.learning_rate)
        weight_decay = self.option("weight_decay", 1e-4, float)
        params = self.model.parameters()
        if name == "adamw":
            return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
        if name == "adam":
            return torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
        if name == "sgd":
            return torch.optim.SGD(
                params, lr=lr, momentum=0.9, weight_decay=weight_decay, nesterov=True
            )
        raise ValueError(f"extra['optimizer'] must be adamw, adam or sgd, not {name!r}")

    def build_scheduler(self, steps_per_epoch: int):
        schedule = self.option("scheduler", "cosine", str).lower()
        warmup_steps = int(round(self.option("warmup_epochs", 0.0, float) * steps_per_epoch))
        kwargs: dict[str, Any] = {}
        if schedule == "cosine_with_min_lr":
            kwargs = {"scheduler_specific_kwargs": {"min_lr_rate": 0.01}}
        try:
            return transformers.get_scheduler(
                schedule,
                optimizer=self.optimizer,
                num_warmup_steps=warmup_steps,
                num_training_steps=steps_per_epoch * self.epochs,
                **kwargs,
            )
        except ValueError as err:
            raise ValueError(f"extra['scheduler'] = {schedule!r}: {err}") from None

    def after_step(self) -> None:
        self.scheduler.step()

    def train_step(self, batch):
        images = batch[0].to(self.device, non_blocking=True)
        if self.task == IMAGE_CLASSIFICATION:
            logits = self.model(pixel_values=images).logits
            labels = batch[1].to(self.device)
            loss = F.cross_entropy(logits.float(), labels, label_smoothing=self.label_smoothing)
            return loss, images.shape[0], {}
        if self.task == OBJECT_DETECTION:
            targets = [{k: v.to(self.device) for k, v in t.items()} for t in batch[1]]
            out = self.model(pixel_values=images, labels=targets)
            return out.loss, images.shape[0], _loss_parts(out)
        out = self.model(pixel_values=images, labels=batch[1].to(self.device))
        return out.loss, images.shape[0], {}

    def validate(self) -> dict[str, float]:
        model, loader, device, autocast = self.model, self.val_loader, self.device, self.autocast
        if self.task == IMAGE_CLASSIFICATION:
            return classification_metrics(_logits(model), loader, device, autocast)
        if self.task == OBJECT_DETECTION:
            return _evaluate_detection(model, loader, self.val_split, device, autocast)
        return _evaluate_segmentation(model, loader, device, autocast, len(self.class_names))

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"architecture": self.architecture, "config": self.config_json}

    def describe(self) -> str:
        return (
            f"transformers {transformers.__version__} {self.spec.model} ({self.architecture}): "
            f"{self.summary()}"
        )


def train(job: JobContext) -> None:
    HFTrainer(job).run()


def _logits(model):
    """``images -> logits`` of a transformers classifier."""
    return lambda images: model(pixel_values=images).logits


def _loss_parts(out: Any) -> dict[str, float]:
    parts: dict[str, float] = {}
    for key, value in (getattr(out, "loss_dict", None) or {}).items():
        name = LOSS_NAMES.get(key)
        if name is not None:
            parts[name] = parts.get(name, 0.0) + float(value.detach())
    return parts


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

_CACHE: dict = {}


def _predictor(checkpoint: Path):
    wrapped, meta = inference_model(checkpoint)
    return wrapped.model, meta


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
    model, meta = cached_model(_CACHE, checkpoint, dev, _predictor)
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
        result.classes = top_classes(probs, names, 5)
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
        return classification_evaluation(_logits(model), loader, device, len(class_names))
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
