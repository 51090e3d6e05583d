"""Fidelity of the torch kit's loop: the platform's timm and hf trainers against plain scripts.

For each framework, one model is trained twice on the same ``visionmesh.shapes``
classification set (laid out by the runtime's own converter): once through the platform
(``TimmAdapter().train`` / ``HFAdapter().train``, i.e. trainers.runtime.torchkit.loop), once
by a plain training loop of that framework written here (torchvision's ImageFolder, the
framework's model, optimizer and schedule, a bare ``for epoch: for batch:`` loop). Same
seed, optimizer, schedule, epochs, batch size, image size and deterministic preprocessing
(augmentation "none"). The final val top1 of the two must agree within 1 point.

    python checks/loop_fidelity.py [--images 600] [--epochs 6]

Prints one line per epoch on stderr; the last stdout line is JSON with, per framework,
``platform_top1`` and ``plain_top1`` (final epoch, fractions), their difference in points,
both top1 series by epoch and ``passed``.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for entry in (str(ROOT / "sdk"), str(ROOT), str(ROOT / "checks")):
    if entry not in sys.path:
        sys.path.insert(0, entry)

from timm_shapes import BenchJob, prepare_shapes  # noqa: E402

from trainers.runtime.adapter import IMAGE_CLASSIFICATION, TrainSpec  # noqa: E402

SEED = 0


def seed_all(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def loaders(root: Path, transform, batch: int):
    """torchvision's ImageFolder: shuffled train with a seeded generator, val in order."""
    import torch
    from torchvision.datasets import ImageFolder

    train_set = ImageFolder(str(root / "train"), transform=transform)
    val_set = ImageFolder(str(root / "val"), transform=transform)
    generator = torch.Generator().manual_seed(SEED)
    train = torch.utils.data.DataLoader(
        train_set, batch_size=batch, shuffle=True, drop_last=True, generator=generator
    )
    val = torch.utils.data.DataLoader(val_set, batch_size=batch, shuffle=False)
    return train, val, train_set.classes


def top1(forward, loader) -> float:
    import torch

    hits = n = 0
    with torch.no_grad():
        for images, labels in loader:
            hits += int((forward(images).argmax(1) == labels).sum())
            n += labels.shape[0]
    return hits / n


def plain_timm(root: Path, args) -> tuple[list[float], list[str]]:
    """timm's own pieces in a bare loop: create_model, create_optimizer_v2 (AdamW, wd 0.05),
    create_scheduler_v2 (cosine, per epoch), cross-entropy with label smoothing 0.1."""
    import timm
    import timm.data
    import timm.optim
    import timm.scheduler
    import torch

    seed_all(SEED)
    model = timm.create_model(args.timm_model, num_classes=3)
    config = timm.data.resolve_data_config({}, model=model)
    transform = timm.data.create_transform(
        input_size=(3, args.size, args.size),
        is_training=False,
        interpolation=config.get("interpolation", "bilinear"),
        mean=config["mean"],
        std=config["std"],
        crop_pct=1.0,
        crop_mode="squash",
    )
    train, val, classes = loaders(root, transform, args.batch)
    optimizer = timm.optim.create_optimizer_v2(
        model, opt="adamw", lr=args.timm_lr, weight_decay=0.05
    )
    scheduler, _ = timm.scheduler.create_scheduler_v2(
        optimizer, sched="cosine", num_epochs=args.epochs, warmup_lr=args.timm_lr * 0.1
    )
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    scheduler.step(0)
    tops = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        for images, labels in train:
            loss = criterion(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        model.eval()
        tops.append(top1(model, val))
        scheduler.step(epoch, tops[-1])
        print(f"plain timm epoch {epoch} top1 {tops[-1]:.4f}", file=sys.stderr, flush=True)
    return tops, classes


def plain_hf(root: Path, args) -> tuple[list[float], list[str]]:
    """transformers' ViT from its config (vit-micro's sizes), AdamW (wd 1e-4), the cosine
    schedule from get_scheduler (per step), grad-norm clip 1.0, plain cross-entropy."""
    import torch
    import transformers
    from torchvision import transforms

    seed_all(SEED)
    config = transformers.ViTConfig(
        image_size=args.size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        patch_size=8,
        num_labels=3,
    )
    model = transformers.ViTForImageClassification(config)
    transform = transforms.Compose(
        [
            transforms.Resize((args.size, args.size)),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    train, val, classes = loaders(root, transform, args.batch)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.hf_lr, weight_decay=1e-4)
    scheduler = transformers.get_scheduler(
        "cosine",
        optimizer=optimizer,
        num_warmup_steps=0,
        num_training_steps=len(train) * args.epochs,
    )
    tops = []
    for epoch in range(1, args.epochs + 1):
        model.train()
        for images, labels in train:
            loss = torch.nn.functional.cross_entropy(model(pixel_values=images).logits, labels)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
        model.eval()
        tops.append(top1(lambda x: model(pixel_values=x).logits, val))
        print(f"plain hf epoch {epoch} top1 {tops[-1]:.4f}", file=sys.stderr, flush=True)
    return tops, classes


def platform(adapter, model: str, lr: float, info, work: Path, args) -> list[float]:
    spec = TrainSpec(
        task_type=IMAGE_CLASSIFICATION,
        model=model,
        epochs=args.epochs,
        batch_size=args.batch,
        image_size=args.size,
        learning_rate=lr,
        seed=SEED,
        patience=0,
        device="cpu",
        pretrained=False,
        extra={"augmentation": "none", "workers": "0", "hflip": "0"},
    )
    job = BenchJob(spec, info["path"], info["class_names"], work)
    adapter.train(job)
    return [e["val/top1"] for e in job.epochs]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=600)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--timm-model", default="test_resnet")
    parser.add_argument("--timm-lr", type=float, default=3e-3)
    parser.add_argument("--hf-lr", type=float, default=1e-3)
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    from trainers.hf.adapter import HFAdapter
    from trainers.timm.adapter import TimmAdapter

    started = time.monotonic()
    result: dict[str, object] = {"check": "loop_fidelity", "epochs": args.epochs}
    with tempfile.TemporaryDirectory(prefix="vm-loop-fidelity-") as tmp:
        info = prepare_shapes(
            Path(tmp),
            task_type=IMAGE_CLASSIFICATION,
            layout="imagefolder",
            images=args.images,
            size=args.size,
            max_shapes=1,
        )
        result["images"] = info["counts"]
        root = Path(info["path"])
        runs = {
            "timm": (TimmAdapter(), args.timm_model, args.timm_lr, plain_timm),
            "hf": (HFAdapter(), "vit-micro", args.hf_lr, plain_hf),
        }
        passed = True
        for name, (adapter, model, lr, plain) in runs.items():
            tops = platform(adapter, model, lr, info, Path(tmp) / f"work-{name}", args)
            plain_tops, classes = plain(root, args)
            gap = abs(tops[-1] - plain_tops[-1]) * 100
            ok = gap <= 1.0
            passed &= ok
            result[name] = {
                "model": model,
                "platform_top1": round(tops[-1], 4),
                "plain_top1": round(plain_tops[-1], 4),
                "gap_points": round(gap, 2),
                "platform_by_epoch": [round(v, 4) for v in tops],
                "plain_by_epoch": [round(v, 4) for v in plain_tops],
                "same_class_order": classes == list(info["class_names"]),
                "passed": ok,
            }
    result["passed"] = passed
    result["seconds"] = round(time.monotonic() - started, 1)
    print(json.dumps(result))
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
