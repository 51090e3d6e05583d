"""Build each catalogued model from its transformers ``*Config`` (random init, no hub).

A checkpoint stores the config as JSON plus the architecture class name, so a model is
rebuilt from the checkpoint alone (:func:`rebuild`), whatever the catalogue says later.
"""

from __future__ import annotations

import json
from typing import Any

import torch
import transformers as tf

from trainers.hf.adapter import MODELS
from trainers.runtime.adapter import SEMANTIC_SEGMENTATION

# Families whose detection head scores classes with a sigmoid (focal loss, no "no object"
# class); the others (DETR, YOLOS) use a softmax whose last class means "no object".
SIGMOID_DETECTORS = {"conditional_detr", "deformable_detr", "rt_detr"}


def _labels(names: list[str]) -> dict[str, Any]:
    return {
        "id2label": {i: n for i, n in enumerate(names)},
        "label2id": {n: i for i, n in enumerate(names)},
    }


def _tiny_resnet() -> tf.ResNetConfig:
    return tf.ResNetConfig(
        embedding_size=16,
        hidden_sizes=[16, 32, 64, 128],
        depths=[1, 1, 1, 1],
        layer_type="basic",
        out_features=["stage4"],
    )


def _resnet50() -> tf.ResNetConfig:
    return tf.ResNetConfig(out_features=["stage4"])


def _micro_detr_dims() -> dict[str, Any]:
    return dict(
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


def _swin_window(image_size: int, window: int, patch: int = 4, stages: int = 4) -> int:
    # transformers' Swin breaks when the last stage is smaller than the window.
    return max(1, min(window, image_size // (patch * 2 ** (stages - 1))))


def build_config(name: str, class_names: list[str], image_size: int) -> tuple[Any, str]:
    """(config, architecture class name) for a catalogued model and this dataset."""
    if name not in MODELS:
        raise ValueError(f"unknown hf model {name!r}; choose one of {', '.join(MODELS)}")
    task = MODELS[name][0]
    n = image_size
    if task == SEMANTIC_SEGMENTATION:
        labels = _labels(["background", *class_names])
    else:
        labels = _labels(class_names)

    vit_sizes = {
        "micro": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, patch_size=8),
        "tiny": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768, patch_size=16),
        "small": dict(hidden_size=384, num_hidden_layers=12, num_attention_heads=6, intermediate_size=1536, patch_size=16),
        "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, patch_size=16),
    }  # fmt: skip
    family, _, size = name.partition("-")
    if family == "vit":
        return tf.ViTConfig(image_size=n, **vit_sizes[size], **labels), "ViTForImageClassification"
    if family == "deit":
        return tf.DeiTConfig(
            image_size=n, **vit_sizes[size], **labels
        ), "DeiTForImageClassification"
    if family == "convnext":
        dims = {
            "micro": ([16, 32, 64, 128], [1, 1, 1, 1]),
            "tiny": ([96, 192, 384, 768], [3, 3, 9, 3]),
            "small": ([96, 192, 384, 768], [3, 3, 27, 3]),
        }[size]
        config = tf.ConvNextConfig(hidden_sizes=dims[0], depths=dims[1], image_size=n, **labels)
        return config, "ConvNextForImageClassification"
    if family == "swin":
        embed, depths, heads, window = {
            "micro": (16, [1, 1, 1, 1], [1, 2, 4, 8], 4),
            "tiny": (96, [2, 2, 6, 2], [3, 6, 12, 24], 7),
            "small": (96, [2, 2, 18, 2], [3, 6, 12, 24], 7),
        }[size]
        config = tf.SwinConfig(
            image_size=n,
            patch_size=4,
            embed_dim=embed,
            depths=depths,
            num_heads=heads,
            window_size=_swin_window(n, window),
            **labels,
        )
        return config, "SwinForImageClassification"
    if name.startswith("conditional-detr-"):
        if name.endswith("micro"):
            config = tf.ConditionalDetrConfig(
                backbone_config=_tiny_resnet(), **_micro_detr_dims(), **labels
            )
        else:
            config = tf.ConditionalDetrConfig(
                backbone_config=_resnet50(), auxiliary_loss=True, **labels
            )
        return config, "ConditionalDetrForObjectDetection"
    if family == "detr":
        if size == "micro":
            config = tf.DetrConfig(backbone_config=_tiny_resnet(), **_micro_detr_dims(), **labels)
        else:
            config = tf.DetrConfig(backbone_config=_resnet50(), auxiliary_loss=True, **labels)
        return config, "DetrForObjectDetection"
    if name.startswith("rt-detr-"):
        if name.endswith("micro"):
            backbone = tf.RTDetrResNetConfig(
                embedding_size=16,
                hidden_sizes=[16, 32, 64, 128],
                depths=[1, 1, 1, 1],
                layer_type="basic",
                out_features=["stage2", "stage3", "stage4"],
            )
            dims = dict(
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
            )
        else:
            backbone = tf.RTDetrResNetConfig(
                embedding_size=64,
                hidden_sizes=[64, 128, 256, 512],
                depths=[2, 2, 2, 2],
                layer_type="basic",
                out_features=["stage2", "stage3", "stage4"],
            )
            dims = dict(encoder_in_channels=[128, 256, 512], decoder_layers=3)
        config = tf.RTDetrConfig(
            backbone_config=backbone,
            anchor_image_size=None,  # anchors follow the input size
            freeze_backbone_batch_norms=False,  # random init: keep BatchNorm trainable
            **dims,
            **labels,
        )
        return config, "RTDetrForObjectDetection"
    if family == "yolos":
        dims = {
            "micro": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, num_detection_tokens=20),
            "tiny": dict(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768, num_detection_tokens=100),
        }[size]  # fmt: skip
        config = tf.YolosConfig(image_size=[n, n], patch_size=16, **dims, **labels)
        return config, "YolosForObjectDetection"
    if family == "segformer":
        dims = {
            "micro": dict(hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], num_attention_heads=[1, 1, 2, 4], decoder_hidden_size=64),
            "b0": dict(hidden_sizes=[32, 64, 160, 256], depths=[2, 2, 2, 2], num_attention_heads=[1, 2, 5, 8], decoder_hidden_size=256),
            "b1": dict(hidden_sizes=[64, 128, 320, 512], depths=[2, 2, 2, 2], num_attention_heads=[1, 2, 5, 8], decoder_hidden_size=256),
        }[size]  # fmt: skip
        config = tf.SegformerConfig(semantic_loss_ignore_index=255, **dims, **labels)
        return config, "SegformerForSemanticSegmentation"
    raise ValueError(f"no builder for hf model {name!r}")  # pragma: no cover


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
