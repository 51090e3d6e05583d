"""The prepared "imagefolder" layout read back: (image path, class index) samples.

Shared by the timm and hf engines; plain pathlib, so it imports no framework.
"""

from __future__ import annotations

from pathlib import Path

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def folder_key(name: str) -> str:
    """Class name and folder name agree on this (folder names may be sanitized)."""
    return "".join(c for c in name.lower() if c.isalnum())


def imagefolder_samples(root: Path, class_names: list[str]) -> list[tuple[Path, int]]:
    """(image path, class index) under ``root/<class folder>/``, in a stable order."""
    exact = {name: i for i, name in enumerate(class_names)}
    loose = {folder_key(name): i for i, name in enumerate(class_names)}
    samples: list[tuple[Path, int]] = []
    if not root.is_dir():
        return samples
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        label = exact.get(folder.name, loose.get(folder_key(folder.name)))
        if label is None:
            raise ValueError(
                f"prepared dataset folder {folder.name!r} under {root} matches none of the "
                f"job's classes {class_names}"
            )
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                samples.append((path, label))
    return samples
