"""The timm adapter: image classification with any model ``timm.create_model`` knows.

Framework mapping only; the runtime owns jobs, storage and streaming. This module is
imported by the server process, so it must not import torch or timm: ``train`` and
``predict`` run in the job's child process and import :mod:`trainers.timm.engine` there.

Metric conventions: ``val/top1`` and ``val/top5`` are fractions in [0, 1] (top5 is top-k
with k = min(5, number of classes)); ``train/loss`` is the mean training loss of the epoch
(label smoothing included), ``val/loss`` the plain cross-entropy on the val split, ``lr``
the learning rate the epoch ran with. The best epoch is the one with the highest
``val/top1`` (:meth:`TimmAdapter.best_metric`).
"""

from __future__ import annotations

import re

from trainers.runtime.adapter import (
    HUB_OFFLINE_ENV,
    IMAGE_CLASSIFICATION,
    EngineAdapter,
    Hyperparameter,
    ModelSpec,
    SpecError,
    TrainSpec,
)

#: Environment that keeps timm and huggingface_hub off the network.
OFFLINE_ENV = HUB_OFFLINE_ENV

# (name, family, description): architectures known to train at small image sizes. The
# ``test_*`` models are timm's own tiny test networks (well under 1M parameters), sized
# for CPU runs; train() accepts any other name timm.list_models() knows as well.
_MODELS: tuple[tuple[str, str, str], ...] = (
    ("resnet18", "resnet", "ResNet-18, 11.7M parameters"),
    ("resnet34", "resnet", "ResNet-34, 21.8M parameters"),
    ("resnet50", "resnet", "ResNet-50, 25.6M parameters"),
    ("efficientnet_b0", "efficientnet", "EfficientNet-B0, 5.3M parameters"),
    ("mobilenetv3_small_100", "mobilenetv3", "MobileNetV3-Small 1.0, 2.5M parameters"),
    ("mobilenetv3_large_100", "mobilenetv3", "MobileNetV3-Large 1.0, 5.5M parameters"),
    ("convnext_atto", "convnext", "ConvNeXt-Atto, 3.7M parameters"),
    ("convnext_nano", "convnext", "ConvNeXt-Nano, 15.6M parameters"),
    ("convnext_tiny", "convnext", "ConvNeXt-Tiny, 28.6M parameters"),
    ("vit_tiny_patch16_224", "vit", "ViT-Ti/16, 5.7M parameters (image size sets the grid)"),
    ("vit_small_patch16_224", "vit", "ViT-S/16, 22M parameters (image size sets the grid)"),
    ("deit_tiny_patch16_224", "deit", "DeiT-Ti/16, 5.7M parameters"),
    ("regnety_002", "regnet", "RegNetY-200MF, 3.2M parameters"),
    ("test_resnet", "resnet", "timm test network, tiny ResNet (CPU tests)"),
    ("test_convnext", "convnext", "timm test network, tiny ConvNeXt (CPU tests)"),
    ("test_efficientnet", "efficientnet", "timm test network, tiny EfficientNet (CPU tests)"),
    ("test_vit", "vit", "timm test network, tiny ViT (CPU tests)"),
)

OPTIMIZERS = ("adamw", "adam", "sgd", "momentum", "nadamw", "lamb", "lion", "rmsprop", "adan")
SCHEDULERS = ("cosine", "tanh", "step", "multistep", "plateau", "poly", "constant")
AUGMENTATIONS = ("light", "flip", "timm", "none")


MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class TimmAdapter(EngineAdapter):
    framework = "timm"
    engine_module = "trainers.timm.engine"
    child_env = OFFLINE_ENV
    distributed_devices = ("cpu", "cuda")  # torch.distributed in the torch loop

    def models(self) -> list[ModelSpec]:
        return [
            ModelSpec(name=name, task_types=(IMAGE_CLASSIFICATION,), family=family, description=d)
            for name, family, d in _MODELS
        ]

    def hyperparameters(self) -> list[Hyperparameter]:
        h = Hyperparameter
        return [
            h("epochs", "int", "20", "Training epochs", min_value="1", max_value="10000"),
            h("batch_size", "int", "32", "Images per step", min_value="1", max_value="4096"),
            h("image_size", "int", "224", "Square input size in pixels", min_value="16"),
            h("learning_rate", "float", "0.001", "Peak learning rate", min_value="0"),
            h("seed", "int", "0", "Random seed (weights init, shuffling, augmentation)"),
            h("patience", "int", "0", "Epochs without val/top1 gain before stopping; 0 = off"),
            h("pretrained", "bool", "false", "Start from models/pretrained/timm/<model>"),
            h(
                "optimizer",
                "string",
                "adamw",
                "timm optimizer name (timm.optim.create_optimizer_v2)",
                choices=OPTIMIZERS,
                extra=True,
            ),
            h(
                "scheduler",
                "string",
                "cosine",
                "timm scheduler name (timm.scheduler.create_scheduler_v2)",
                choices=SCHEDULERS,
                extra=True,
            ),
            h("weight_decay", "float", "0.05", "Decoupled weight decay", min_value="0", extra=True),
            h("momentum", "float", "0.9", "Momentum (sgd/momentum/rmsprop)", extra=True),
            h("warmup_epochs", "int", "0", "Linear warm-up epochs", min_value="0", extra=True),
            h("min_lr", "float", "0", "Floor of the schedule", min_value="0", extra=True),
            h(
                "label_smoothing",
                "float",
                "0.1",
                "Label smoothing of the training loss",
                min_value="0",
                max_value="1",
                extra=True,
            ),
            h(
                "augmentation",
                "string",
                "light",
                "light: random resized crop (scale 0.5-1) + flip; flip: resize + flip (for "
                "small objects a crop could cut out); timm: timm's ImageNet recipe (scale "
                "0.08-1, colour jitter, centre crop at eval); none: resize only",
                choices=AUGMENTATIONS,
                extra=True,
            ),
            h(
                "drop_rate",
                "float",
                "0",
                "Dropout before the classifier",
                min_value="0",
                extra=True,
            ),
            h("amp", "bool", "true", "Mixed precision on CUDA (ignored on CPU)", extra=True),
            h("workers", "int", "0", "Data loader workers; 0 = auto", min_value="0", extra=True),
        ]

    def dataset_format(self, task_type: str) -> str:
        if task_type != IMAGE_CLASSIFICATION:
            raise ValueError(
                f"the timm trainer trains {IMAGE_CLASSIFICATION} only, not {task_type}"
            )
        return "imagefolder"

    def check_spec(self, spec: TrainSpec) -> None:
        """Server side, without importing timm: the task, the name's shape, the extras.

        Any name timm can create is accepted (not only the curated list); the job's child
        checks it against ``timm.list_models()`` and fails with close matches.
        """
        if spec.task_type != IMAGE_CLASSIFICATION:
            raise SpecError(
                "spec.task_type",
                f"the timm trainer trains {IMAGE_CLASSIFICATION} only, not {spec.task_type}",
            )
        if not MODEL_NAME.match(spec.model or ""):
            raise SpecError(
                "spec.model",
                f"{spec.model!r} is not a timm model name (e.g. "
                f"{', '.join(name for name, _, _ in _MODELS[:4])})",
            )
        self.check_extra(dict(spec.extra or {}))

    def best_metric(self, task_type: str) -> str:
        """The metric (higher is better) that picks best.pt and drives patience."""
        return "val/top1"
