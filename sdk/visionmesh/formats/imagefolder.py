"""ImageFolder (and YOLO classify) folders: ``[<split>/]<class>/<image>``.

The class is the first folder below the root (or below the split folder), as torchvision's
ImageFolder does; category ids follow the sorted class names (0..K-1).
"""

from __future__ import annotations

from .model import Annotation, Category, Dataset, Image
from .paths import split_name
from .problems import ProblemList
from .source import Source


def class_of(path: str) -> tuple[str, str | None]:
    """``(split, class)`` named by an image's folders; class None for a loose image."""
    parts = path.split("/")
    split = ""
    if len(parts) > 1 and split_name(parts[0]):
        split = split_name(parts[0])
        parts = parts[1:]
    return split, (parts[0] if len(parts) >= 2 else None)


def looks_like_imagefolder(paths: list[str]) -> bool:
    """Most images sit in a class folder, and there are at least two classes or splits."""
    if not paths:
        return False
    classes = set()
    placed = 0
    for p in paths:
        _, cls = class_of(p)
        if cls is not None and cls.lower() not in ("images", "labels"):
            placed += 1
            classes.add(cls)
    return placed * 2 > len(paths) and len(classes) >= 1


def read_imagefolder(source: Source, problems: ProblemList) -> Dataset:
    ds = Dataset()
    entries: list[tuple[str, str, str | None]] = []
    loose = 0
    for path in source.images():
        split, cls = class_of(path)
        if cls is None:
            loose += 1
        entries.append((path, split, cls))
    names = sorted({cls for _, _, cls in entries if cls is not None})
    ids = {name: i for i, name in enumerate(names)}
    ds.categories = [Category(i, name, origin=name + "/") for i, name in enumerate(names)]
    for path, split, cls in entries:
        try:
            size = source.image_size(path)
        except Exception as exc:  # PIL raises many types for broken files
            problems.error(path, f"cannot read the image: {exc}")
            continue
        if size is None:
            continue
        image = Image(len(ds.images) + 1, path, size[0], size[1], split, origin=path)
        ds.images.append(image)
        if cls is not None:
            ds.annotations.append(
                Annotation(len(ds.annotations) + 1, image.id, ids[cls], origin=path)
            )
    if loose:
        problems.warning("", f"{loose} image(s) are not inside a class folder; they have no label")
    return ds
