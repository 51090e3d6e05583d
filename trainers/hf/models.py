"""Build each catalogued model (trainers.hf.adapter.CATALOGUE, the one table of names and
sizes) from its transformers ``*Config`` (random init, no hub).

A checkpoint stores the config as JSON plus the architecture class name, so a model is
rebuilt from the checkpoint alone (:func:`rebuild`), whatever the catalogue says later.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import transformers as tf

from trainers.hf.adapter import CATALOGUE
from trainers.runtime.adapter import SEMANTIC_SEGMENTATION

# Families whose detection head scores classes with a sigmoid (focal loss, no "no object"
# class); the others (DETR, YOLOS) use a softmax whose last class means "no object".
SIGMOID_DETECTORS = {"conditional_detr", "deformable_detr", "rt_detr"}


def _labels(names: list[str]) -> dict[str, Any]:
    return {
        "id2label": {i: n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }


def _swin_window(image_size: int, window: int, patch: int = 4, stages: int = 4) -> int:
    # transformers' Swin breaks when the last stage is smaller than the window.
    return max(1, min(window, image_size // (patch * 2 ** (stages - 1))))


# family -> (config class, architecture class) in transformers
ARCHITECTURES = {
    "vit": ("ViTConfig", "ViTForImageClassification"),
    "deit": ("DeiTConfig", "DeiTForImageClassification"),
    "convnext": ("ConvNextConfig", "ConvNextForImageClassification"),
    "swin": ("SwinConfig", "SwinForImageClassification"),
    "detr": ("DetrConfig", "DetrForObjectDetection"),
    "conditional_detr": ("ConditionalDetrConfig", "ConditionalDetrForObjectDetection"),
    "rt_detr": ("RTDetrConfig", "RTDetrForObjectDetection"),
    "yolos": ("YolosConfig", "YolosForObjectDetection"),
    "segformer": ("SegformerConfig", "SegformerForSemanticSegmentation"),
}


def build_config(name: str, class_names: list[str], image_size: int) -> tuple[Any, str]:
    """(config, architecture class name) for a catalogued model and this dataset: the
    catalogue's sizes plus what depends on the input size and the classes."""
    if name not in CATALOGUE:
        raise ValueError(f"unknown hf model {name!r}; choose one of {', '.join(CATALOGUE)}")
    entry = CATALOGUE[name]
    n = image_size
    kwargs = dict(entry.dims)
    names = ["background", *class_names] if entry.task == SEMANTIC_SEGMENTATION else class_names
    kwargs.update(_labels(names))
    family = entry.family
    if family in ("vit", "deit", "convnext"):
        kwargs["image_size"] = n
    elif family == "swin":
        kwargs.update(image_size=n, patch_size=4, window_size=_swin_window(n, kwargs.pop("window")))
    elif family in ("detr", "conditional_detr"):
        kwargs["backbone_config"] = tf.ResNetConfig(**kwargs.pop("backbone"))
    elif family == "rt_detr":
        kwargs["backbone_config"] = tf.RTDetrResNetConfig(**kwargs.pop("backbone"))
        kwargs["anchor_image_size"] = None  # anchors follow the input size
        kwargs["freeze_backbone_batch_norms"] = False  # random init: keep BatchNorm trainable
    elif family == "yolos":
        kwargs.update(image_size=[n, n], patch_size=16)
    elif family == "segformer":
        kwargs["semantic_loss_ignore_index"] = 255
    config_class, architecture = ARCHITECTURES[family]
    return getattr(tf, config_class)(**kwargs), architecture


def instantiate(config: Any, architecture: str) -> torch.nn.Module:
    cls = getattr(tf, architecture)
    return adapt_for_scratch(cls(config))


def adapt_for_scratch(model: torch.nn.Module) -> torch.nn.Module:
    """Make DETR-family CNN backbones trainable from random weights.

    transformers swaps the backbone's BatchNorm for a frozen one and freezes the stem, as
    fits an ImageNet-pretrained ResNet; with random weights that leaves an unnormalized,
    partly frozen network that barely learns. Restore real BatchNorm and train it all.
    """
    encoder = getattr(getattr(model, "model", None), "backbone", None)
    conv_encoder = getattr(encoder, "conv_encoder", encoder)
    backbone = getattr(conv_encoder, "model", None)
    if backbone is None or not any(
        "FrozenBatchNorm" in type(m).__name__ for m in backbone.modules()
    ):
        return model

    def swap(module: torch.nn.Module) -> None:
        for name, child in module.named_children():
            if "FrozenBatchNorm" in type(child).__name__:
                module._modules[name] = torch.nn.BatchNorm2d(child.weight.shape[0])
            else:
                swap(child)

    swap(backbone)
    for parameter in backbone.parameters():
        parameter.requires_grad_(True)
    return model


def config_to_json(config: Any) -> str:
    return config.to_json_string(use_diff=False)


def rebuild(config_json: str, architecture: str) -> torch.nn.Module:
    """The model a checkpoint describes, with random weights (load its state dict next)."""
    data = json.loads(config_json)
    cls = getattr(tf, architecture)
    config = cls.config_class.from_dict(data)
    return adapt_for_scratch(cls(config))


def load_pretrained(model: torch.nn.Module, path, log) -> None:
    """Load local weights (a file, or a save_pretrained folder) where the shapes agree."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        for candidate in ("model.safetensors", "pytorch_model.bin", "model.pt", "model.pth"):
            if (path / candidate).is_file():
                path = path / candidate
                break
        else:
            raise FileNotFoundError(f"no model.safetensors / pytorch_model.bin in {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
            state = state["model"]
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
    own = model.state_dict()
    usable = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    skipped = [k for k in state if k not in usable]
    if not usable:
        raise ValueError(f"pretrained weights {path.name} share no parameter with this model")
    model.load_state_dict(usable, strict=False)
    log(
        f"pretrained weights {path.name}: loaded {len(usable)} tensors, "
        f"skipped {len(skipped)} (head or shape mismatch), {len(own) - len(usable)} left random"
    )
