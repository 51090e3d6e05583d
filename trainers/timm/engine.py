"""timm training and inference, run inside a job's child process (imports torch and timm).

Training is :class:`TimmTrainer` on the torch kit's loop (trainers.runtime.torchkit.loop);
this module keeps timm's specifics: the model (pretrained / init_from weights), its data
config and transforms, timm's optimizers and per-epoch schedulers. The checkpoint adds
the timm data config to the loop's common fields.
"""

from __future__ import annotations

import contextlib
import difflib
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import timm.data
import timm.optim
import timm.scheduler
import torch
from PIL import Image

from trainers.runtime.adapter import IMAGE_CLASSIFICATION, JobContext, Prediction
from trainers.runtime.torchkit import helpers
from trainers.runtime.torchkit.helpers import (
    cached_model,
    classification_evaluation,
    classification_metrics,
    resolve_device,
    top_classes,
)
from trainers.runtime.torchkit.imagefolder import imagefolder_samples
from trainers.runtime.torchkit.loop import TorchTrainer

CHECKPOINT_FORMAT = "visionmesh.timm/1"
BEST_METRIC = "val/top1"


# --- small helpers ------------------------------------------------------------------------


def load_checkpoint(path: Path) -> dict[str, Any]:
    return helpers.load_checkpoint(path, CHECKPOINT_FORMAT, "timm")


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


class TimmTrainer(TorchTrainer):
    """timm's model, transforms, optimizer and scheduler (per epoch) on the torch loop."""

    framework = "timm"
    checkpoint_format = CHECKPOINT_FORMAT
    best_metric = BEST_METRIC

    def __init__(self, job: JobContext) -> None:
        super().__init__(job)
        self.criterion = torch.nn.CrossEntropyLoss(
            label_smoothing=self.option("label_smoothing", 0.1, float)
        )

    def check(self) -> None:
        if self.task != IMAGE_CLASSIFICATION:
            raise ValueError(
                f"the timm trainer trains {IMAGE_CLASSIFICATION} only, not {self.task}"
            )
        if len(self.class_names) < 2:
            raise ValueError(f"classification needs at least 2 classes, got {self.class_names}")

    def build_model(self) -> torch.nn.Module:
        job, spec = self.job, self.spec
        drop_rate = self.option("drop_rate", 0.0, float)
        kwargs: dict[str, Any] = {"drop_rate": drop_rate} if drop_rate else {}
        fresh = self.resume is None
        init = None  # init_from: a visionmesh timm checkpoint (a finished job's best.pt)
        if job.pretrained_weights is not None and fresh:
            with contextlib.suppress(Exception):
                candidate = torch.load(
                    job.pretrained_weights, map_location="cpu", weights_only=False
                )
                if isinstance(candidate, dict) and candidate.get("format") == CHECKPOINT_FORMAT:
                    init = candidate
        if init is None and (spec.pretrained or job.pretrained_weights) and fresh:
            if job.pretrained_weights is None:
                raise FileNotFoundError(
                    f"pretrained weights for {spec.model!r} requested, but the object store "
                    f"has no models/pretrained/timm/{spec.model}.pt: upload them there "
                    "or train with pretrained=false"
                )
            weights = _weights_file(Path(job.pretrained_weights))
            job.log(f"loading pretrained weights from {weights.name}")
            kwargs["pretrained"] = True
            kwargs["pretrained_cfg_overlay"] = {"file": str(weights)}
        model = create_model(spec.model, len(self.class_names), self.image_size, **kwargs)
        if init is not None:
            load_init(model, init, job)
        resume = self.resume
        self.config = dict(resume["data_config"]) if resume else data_config(model, self.image_size)
        return model

    def build_datasets(self):
        augmentation = self.option("augmentation", "light", str)
        train_tf, val_tf = build_transforms(self.config, augmentation)
        root = Path(self.job.dataset_dir)
        return (
            ImageFolderSplit(root / "train", self.class_names, train_tf),
            ImageFolderSplit(root / "val", self.class_names, val_tf),
        )

    def build_optimizer(self) -> torch.optim.Optimizer:
        name = self.optimizer_name = self.option("optimizer", "adamw", str).lower()
        if name not in timm.optim.list_optimizers():
            close = difflib.get_close_matches(name, timm.optim.list_optimizers(), n=5)
            raise ValueError(f"extra['optimizer']: timm has no optimizer {name!r} ({close})")
        opt_kwargs: dict[str, Any] = {}
        if name in ("sgd", "momentum", "rmsprop", "nesterov"):
            opt_kwargs["momentum"] = self.option("momentum", 0.9, float)
        return timm.optim.create_optimizer_v2(
            self.model,
            opt=name,
            lr=float(self.spec.learning_rate),
            weight_decay=self.option("weight_decay", 0.05, float),
            **opt_kwargs,
        )

    def build_scheduler(self, steps_per_epoch: int):
        self.sched_name = self.option("scheduler", "cosine", str).lower()
        scheduler, _ = timm.scheduler.create_scheduler_v2(
            self.optimizer,
            sched=self.sched_name,
            num_epochs=self.epochs,
            warmup_epochs=self.option("warmup_epochs", 0, int),
            warmup_lr=float(self.spec.learning_rate) * 0.1,
            min_lr=self.option("min_lr", 0.0, float),
            plateau_mode="max",
        )
        return scheduler

    def start_schedule(self) -> None:
        if self.scheduler is not None:
            self.scheduler.step(0)

    def train_step(self, batch):
        images, labels = (t.to(self.device, non_blocking=True) for t in batch)
        return self.criterion(self.model(images), labels), labels.shape[0], {}

    def validate(self) -> dict[str, float]:
        return classification_metrics(self.model, self.val_loader, self.device, self.autocast)

    def after_epoch(self, epoch: int, values: dict[str, float]) -> None:
        if self.scheduler is not None:
            self.scheduler.step(epoch, values.get(BEST_METRIC))

    def checkpoint_fields(self) -> dict[str, Any]:
        return {"data_config": self.config}

    def describe(self) -> str:
        return (
            f"timm {timm.__version__} {self.spec.model}: {self.summary()}, "
            f"optimizer {self.optimizer_name}, scheduler {self.sched_name}"
        )


def train(job: JobContext) -> None:
    TimmTrainer(job).run()


# --- inference ----------------------------------------------------------------------------

_CACHE: dict = {}


def _predictor(checkpoint: Path):
    model, ckpt = _inference_model(checkpoint)
    return model, (eval_transform(ckpt["data_config"]), list(ckpt["class_names"]))


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
    model, (transform, names) = cached_model(_CACHE, checkpoint, dev, _predictor)
    names = list(class_names) or names
    with Image.open(io.BytesIO(image)) as im:
        rgb = im.convert("RGB")
    x = transform(rgb).unsqueeze(0).to(dev)
    probs = model(x).float().softmax(dim=1)[0]
    return Prediction(
        task_type=IMAGE_CLASSIFICATION,
        image_width=rgb.width,
        image_height=rgb.height,
        classes=top_classes(probs, names, top_k),
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
    model, ckpt = _inference_model(checkpoint)
    device = resolve_device(job.spec.device)
    model.to(device)
    val_set = ImageFolderSplit(
        Path(job.dataset_dir) / "val", job.class_names, eval_transform(ckpt["data_config"])
    )
    loader = torch.utils.data.DataLoader(val_set, batch_size=max(1, job.spec.batch_size))
    return classification_evaluation(model, loader, device, len(job.class_names))


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
