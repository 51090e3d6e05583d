"""The HuggingFace transformers adapter: classification, detection, semantic segmentation.

Framework mapping only; the runtime owns jobs, storage and streaming. This module is
imported by the server process, so it must not import torch or transformers: ``train`` and
``predict`` run in the job's child process and import :mod:`trainers.hf.engine` there.

:data:`CATALOGUE` is the one table of models (task, family, description, config sizes);
every model is built from its ``*Config`` with random weights (nothing is fetched from a
hub; DETR-family backbones are transformers' own ``ResNetConfig``), or loaded from local
weights the runtime fetched from ``models/pretrained/hf/<model>``. Names ending in
``-micro`` are reduced configurations for CPU runs and tests; the others follow the
published architecture sizes.

Metrics: ``train/loss`` (+ ``train/cls_loss``, ``train/box_loss``, ``train/giou_loss`` for
detection), ``val/loss``, ``lr`` (learning rate of the epoch's last step), and per task
``val/top1`` + ``val/top5`` (fractions in [0, 1]); ``val/map50`` + ``val/map50_95`` (COCO
mAP from pycocotools' COCOeval, fractions); ``val/miou`` (mean IoU over the foreground
classes present in the ground truth or the prediction) + ``val/pixel_accuracy`` (all pixels,
background included), both computed on masks at the training image size.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from trainers.runtime.adapter import (
    HUB_OFFLINE_ENV,
    IMAGE_CLASSIFICATION,
    OBJECT_DETECTION,
    SEMANTIC_SEGMENTATION,
    EngineAdapter,
    Hyperparameter,
    ModelSpec,
    SpecError,
    TrainSpec,
)

OFFLINE_ENV = {**HUB_OFFLINE_ENV, "HF_HUB_DISABLE_PROGRESS_BARS": "1"}


@dataclass(frozen=True)
class HFModel:
    """One catalogued model: its task, family (which ``*Config`` and architecture class
    :mod:`trainers.hf.models` builds), description, and the config's keyword arguments for
    this size (``backbone``: the keyword arguments of a DETR family's ResNet backbone)."""

    task: str
    family: str
    description: str
    dims: Mapping[str, Any] = field(default_factory=dict)


def _vit(hidden: int, layers: int, heads: int, mlp: int, patch: int) -> dict[str, Any]:
    return dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=mlp,
        patch_size=patch,
    )


def _swin(embed: int, depths: list[int], heads: list[int], window: int) -> dict[str, Any]:
    return dict(embed_dim=embed, depths=depths, num_heads=heads, window=window)


_TINY_RESNET = dict(
    embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic"
)
_MICRO_DETR = dict(
    d_model=64,
    encoder_layers=2,
    decoder_layers=2,
    encoder_ffn_dim=128,
    decoder_ffn_dim=128,
    encoder_attention_heads=4,
    decoder_attention_heads=4,
    num_queries=20,
    auxiliary_loss=True,
)
_DETR_MICRO = dict(backbone={**_TINY_RESNET, "out_features": ["stage4"]}, **_MICRO_DETR)
_DETR_R50 = dict(backbone={"out_features": ["stage4"]}, auxiliary_loss=True)
_RT_DETR_STAGES = ["stage2", "stage3", "stage4"]
_SEGFORMER_HEADS = [1, 2, 5, 8]

# The one hf model table: name -> HFModel. Names ending in -micro are reduced configs for
# CPU runs and tests; the others follow the published architecture sizes.
CATALOGUE: dict[str, HFModel] = {
    # image classification
    "vit-micro": HFModel(
        IMAGE_CLASSIFICATION,
        "vit",
        "ViT, 2 layers, hidden 64, patch 8 (CPU/tests)",
        _vit(64, 2, 4, 128, 8),
    ),
    "vit-tiny": HFModel(
        IMAGE_CLASSIFICATION,
        "vit",
        "ViT-Ti/16: 12 layers, hidden 192, 3 heads",
        _vit(192, 12, 3, 768, 16),
    ),
    "vit-small": HFModel(
        IMAGE_CLASSIFICATION,
        "vit",
        "ViT-S/16: 12 layers, hidden 384, 6 heads",
        _vit(384, 12, 6, 1536, 16),
    ),
    "vit-base": HFModel(
        IMAGE_CLASSIFICATION,
        "vit",
        "ViT-B/16: 12 layers, hidden 768, 12 heads",
        _vit(768, 12, 12, 3072, 16),
    ),
    "deit-micro": HFModel(
        IMAGE_CLASSIFICATION,
        "deit",
        "DeiT, 2 layers, hidden 64, patch 8 (CPU/tests)",
        _vit(64, 2, 4, 128, 8),
    ),
    "deit-tiny": HFModel(
        IMAGE_CLASSIFICATION,
        "deit",
        "DeiT-Ti/16: 12 layers, hidden 192, 3 heads",
        _vit(192, 12, 3, 768, 16),
    ),
    "deit-small": HFModel(
        IMAGE_CLASSIFICATION,
        "deit",
        "DeiT-S/16: 12 layers, hidden 384, 6 heads",
        _vit(384, 12, 6, 1536, 16),
    ),
    "convnext-micro": HFModel(
        IMAGE_CLASSIFICATION,
        "convnext",
        "ConvNeXt, depths 1-1-1-1, widths 16-128 (CPU/tests)",
        dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1]),
    ),
    "convnext-tiny": HFModel(
        IMAGE_CLASSIFICATION,
        "convnext",
        "ConvNeXt-T: depths 3-3-9-3, widths 96-768",
        dict(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 9, 3]),
    ),
    "convnext-small": HFModel(
        IMAGE_CLASSIFICATION,
        "convnext",
        "ConvNeXt-S: depths 3-3-27-3, widths 96-768",
        dict(hidden_sizes=[96, 192, 384, 768], depths=[3, 3, 27, 3]),
    ),
    "swin-micro": HFModel(
        IMAGE_CLASSIFICATION,
        "swin",
        "Swin, depths 1-1-1-1, embed 16 (CPU/tests)",
        _swin(16, [1, 1, 1, 1], [1, 2, 4, 8], 4),
    ),
    "swin-tiny": HFModel(
        IMAGE_CLASSIFICATION,
        "swin",
        "Swin-T: depths 2-2-6-2, embed 96, window 7",
        _swin(96, [2, 2, 6, 2], [3, 6, 12, 24], 7),
    ),
    "swin-small": HFModel(
        IMAGE_CLASSIFICATION,
        "swin",
        "Swin-S: depths 2-2-18-2, embed 96, window 7",
        _swin(96, [2, 2, 18, 2], [3, 6, 12, 24], 7),
    ),
    # object detection
    "detr-micro": HFModel(
        OBJECT_DETECTION,
        "detr",
        "DETR, tiny ResNet backbone, d_model 64, 2+2 layers, 20 queries (CPU/tests)",
        _DETR_MICRO,
    ),
    "detr-resnet50": HFModel(
        OBJECT_DETECTION, "detr", "DETR with a ResNet-50 backbone (random init)", _DETR_R50
    ),
    "conditional-detr-micro": HFModel(
        OBJECT_DETECTION,
        "conditional_detr",
        "Conditional DETR, tiny ResNet backbone, d_model 64, 2+2 layers, 20 queries (CPU/tests)",
        _DETR_MICRO,
    ),
    "conditional-detr-resnet50": HFModel(
        OBJECT_DETECTION,
        "conditional_detr",
        "Conditional DETR with a ResNet-50 backbone (random init); converges faster than DETR",
        _DETR_R50,
    ),
    "rt-detr-micro": HFModel(
        OBJECT_DETECTION,
        "rt_detr",
        "RT-DETR, tiny ResNet backbone, d_model 64, 2 decoder layers, 30 queries (CPU/tests)",
        dict(
            backbone={**_TINY_RESNET, "out_features": _RT_DETR_STAGES},
            encoder_hidden_dim=64,
            encoder_in_channels=[32, 64, 128],
            encoder_ffn_dim=128,
            encoder_attention_heads=4,
            d_model=64,
            decoder_in_channels=[64, 64, 64],
            decoder_ffn_dim=128,
            decoder_layers=2,
            decoder_attention_heads=4,
            num_queries=30,
            num_denoising=20,
        ),
    ),
    "rt-detr-r18": HFModel(
        OBJECT_DETECTION,
        "rt_detr",
        "RT-DETR with a ResNet-18 backbone (random init), 3 decoder layers, 300 queries",
        dict(
            backbone=dict(
                embedding_size=64,
                hidden_sizes=[64, 128, 256, 512],
                depths=[2, 2, 2, 2],
                layer_type="basic",
                out_features=_RT_DETR_STAGES,
            ),
            encoder_in_channels=[128, 256, 512],
            decoder_layers=3,
        ),
    ),
    "yolos-micro": HFModel(
        OBJECT_DETECTION,
        "yolos",
        "YOLOS, 2 layers, hidden 64, 20 detection tokens (CPU/tests)",
        dict(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            num_detection_tokens=20,
        ),
    ),
    "yolos-tiny": HFModel(
        OBJECT_DETECTION,
        "yolos",
        "YOLOS-Ti: 12 layers, hidden 192, 3 heads",
        dict(
            hidden_size=192,
            num_hidden_layers=12,
            num_attention_heads=3,
            intermediate_size=768,
            num_detection_tokens=100,
        ),
    ),
    # semantic segmentation
    "segformer-micro": HFModel(
        SEMANTIC_SEGMENTATION,
        "segformer",
        "SegFormer, widths 16-128, 1 block per stage (CPU/tests)",
        dict(
            hidden_sizes=[16, 32, 64, 128],
            depths=[1, 1, 1, 1],
            num_attention_heads=[1, 1, 2, 4],
            decoder_hidden_size=64,
        ),
    ),
    "segformer-b0": HFModel(
        SEMANTIC_SEGMENTATION,
        "segformer",
        "SegFormer-B0 (MiT-b0), 3.7M parameters",
        dict(
            hidden_sizes=[32, 64, 160, 256],
            depths=[2, 2, 2, 2],
            num_attention_heads=_SEGFORMER_HEADS,
            decoder_hidden_size=256,
        ),
    ),
    "segformer-b1": HFModel(
        SEMANTIC_SEGMENTATION,
        "segformer",
        "SegFormer-B1 (MiT-b1), 13.7M parameters",
        dict(
            hidden_sizes=[64, 128, 320, 512],
            depths=[2, 2, 2, 2],
            num_attention_heads=_SEGFORMER_HEADS,
            decoder_hidden_size=256,
        ),
    ),
}

# name -> (task, family, description): the catalogue's view for listing and checking.
MODELS: dict[str, tuple[str, str, str]] = {
    name: (m.task, m.family, m.description) for name, m in CATALOGUE.items()
}

TASKS = (IMAGE_CLASSIFICATION, OBJECT_DETECTION, SEMANTIC_SEGMENTATION)
BEST_METRIC = {
    IMAGE_CLASSIFICATION: "val/top1",
    OBJECT_DETECTION: "val/map50_95",
    SEMANTIC_SEGMENTATION: "val/miou",
}
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "linear", "constant", "cosine_with_min_lr", "polynomial")


class HFAdapter(EngineAdapter):
    framework = "hf"
    package = "transformers"
    engine_module = "trainers.hf.engine"
    child_env = OFFLINE_ENV
    distributed_devices = ("cpu", "cuda")  # torch.distributed in the torch loop

    def models(self) -> list[ModelSpec]:
        return [
            ModelSpec(name=name, task_types=(task,), family=family, description=description)
            for name, (task, family, description) in MODELS.items()
        ]

    def hyperparameters(self) -> list[Hyperparameter]:
        h = Hyperparameter
        return [
            h("epochs", "int", "20", "Training epochs", min_value="1", max_value="10000"),
            h("batch_size", "int", "16", "Images per step", min_value="1", max_value="4096"),
            h(
                "image_size",
                "int",
                "224",
                "Square input size in pixels (images are resized to it)",
                min_value="32",
            ),
            h("learning_rate", "float", "0.0001", "Peak learning rate (AdamW)", min_value="0"),
            h("seed", "int", "0", "Random seed (weights init, shuffling, augmentation)"),
            h(
                "patience",
                "int",
                "0",
                "Epochs without gain in the task's best metric before stopping; 0 = off",
            ),
            h("pretrained", "bool", "false", "Start from models/pretrained/hf/<model>"),
            h("optimizer", "string", "adamw", "Optimizer", choices=OPTIMIZERS, extra=True),
            h(
                "scheduler",
                "string",
                "cosine",
                "transformers learning-rate schedule (per step)",
                choices=SCHEDULERS,
                extra=True,
            ),
            h("weight_decay", "float", "0.0001", "Weight decay", min_value="0", extra=True),
            h(
                "warmup_epochs",
                "float",
                "0",
                "Linear warm-up, in epochs",
                min_value="0",
                extra=True,
            ),
            h(
                "grad_clip",
                "float",
                "",
                "Max gradient norm; default 0.1 for detection (as DETR), 1.0 otherwise; 0 = off",
                min_value="0",
                extra=True,
            ),
            h(
                "label_smoothing",
                "float",
                "0",
                "Label smoothing of the classification loss",
                min_value="0",
                max_value="1",
                extra=True,
            ),
            h(
                "hflip",
                "float",
                "0.5",
                "Probability of a horizontal flip (every task)",
                min_value="0",
                max_value="1",
                extra=True,
            ),
            h(
                "augmentation",
                "string",
                "light",
                "Classification: light = random resized crop (scale 0.5-1) + flip; flip = flip "
                "only (for small objects a crop could cut out); none",
                choices=("light", "flip", "none"),
                extra=True,
            ),
            h("amp", "bool", "true", "Mixed precision on CUDA (ignored on CPU)", extra=True),
            h("workers", "int", "0", "Data loader workers; 0 = auto", min_value="0", extra=True),
        ]

    def dataset_format(self, task_type: str) -> str:
        if task_type == IMAGE_CLASSIFICATION:
            return "imagefolder"
        if task_type in (OBJECT_DETECTION, SEMANTIC_SEGMENTATION):
            return "coco"
        raise ValueError(f"the hf trainer trains {', '.join(TASKS)}; {task_type} is not supported")

    def check_spec(self, spec: TrainSpec) -> None:
        """Server side, without importing transformers: task, model for the task, extras."""
        if spec.task_type not in TASKS:
            raise SpecError(
                "spec.task_type",
                f"the hf trainer trains {', '.join(TASKS)}; {spec.task_type} is not supported",
            )
        names = [name for name, (task, _, _) in MODELS.items() if task == spec.task_type]
        if spec.model not in names:
            raise SpecError(
                "spec.model",
                f"hf has no model {spec.model!r} for {spec.task_type}; "
                f"choose one of: {', '.join(names)}",
            )
        self.check_extra(dict(spec.extra or {}))

    def best_metric(self, task_type: str) -> str:
        return BEST_METRIC.get(task_type, "val/loss")
