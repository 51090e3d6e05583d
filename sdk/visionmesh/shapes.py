"""A synthetic "shapes" dataset: coloured circles, squares and triangles on noise.

Each shape is drawn from the very polygon that is annotated (a circle is a 32-gon), so
boxes, polygons and masks match the pixels exactly. Shapes do not overlap. Triangles carry
their three vertices as keypoints (visible), so the same dataset trains classification
(dominant class), detection, instance and semantic segmentation, and pose estimation.
Everything is derived from the seed: the same seed gives the same files.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image as PILImage
from PIL import ImageDraw

from .formats import write
from .formats.model import Annotation, Category, Dataset, Image

CLASSES = ("circle", "square", "triangle")
COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 210, 40),
}
#: One colour per class, for ``class_colours=True`` (classes then differ by colour too).
CLASS_COLOURS = {"circle": COLOURS["red"], "square": COLOURS["green"], "triangle": COLOURS["blue"]}
#: A shape's circumradius, as fractions of the image size: (smallest, largest).
RADIUS = (0.08, 0.2)
_CIRCLE_SIDES = 32


def categories() -> list[Category]:
    return [
        Category(1, "circle", "shape"),
        Category(2, "square", "shape"),
        Category(
            3,
            "triangle",
            "shape",
            keypoints=["vertex1", "vertex2", "vertex3"],
            skeleton=[[1, 2], [2, 3], [3, 1]],
        ),
    ]


def _outline(kind: str, cx: float, cy: float, r: float, rng: np.random.Generator) -> np.ndarray:
    """Vertices (n, 2) of a shape of circumradius ``r`` around (cx, cy)."""
    turn = rng.uniform(0, 2 * math.pi)
    if kind == "circle":
        angles = turn + np.arange(_CIRCLE_SIDES) * (2 * math.pi / _CIRCLE_SIDES)
    elif kind == "square":
        angles = turn + np.arange(4) * (math.pi / 2)
    else:  # a triangle, irregular but never thin
        angles = turn + np.arange(3) * (2 * math.pi / 3) + rng.uniform(-0.35, 0.35, 3)
    return np.stack([cx + r * np.cos(angles), cy + r * np.sin(angles)], axis=1)


def _place(
    size: int,
    placed: list[tuple[float, float, float]],
    rng: np.random.Generator,
    radius: tuple[float, float] = RADIUS,
) -> tuple[float, float, float] | None:
    """A circle (cx, cy, r) inside the image that keeps clear of the others."""
    for _ in range(40):
        r = rng.uniform(size * radius[0], size * radius[1])
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        if all(math.hypot(cx - x, cy - y) > r + pr + 2 for x, y, pr in placed):
            return float(cx), float(cy), float(r)
    return None


def _background(size: int, rng: np.random.Generator) -> PILImage.Image:
    noise = rng.normal(110, 35, (size, size, 3)).clip(0, 255).astype(np.uint8)
    return PILImage.fromarray(noise)


def make_image(
    image_id: int,
    size: int,
    rng: np.random.Generator,
    next_annotation_id: int,
    max_shapes: int = 4,
    *,
    kinds: Sequence[str] | None = None,
    class_colours: bool = False,
    radius: tuple[float, float] = RADIUS,
) -> tuple[PILImage.Image, list[Annotation]]:
    """One picture and its annotations (ids from ``next_annotation_id``).

    ``kinds``: the shapes to draw, in order (default: 1 to ``max_shapes`` random ones); a
    shape that finds no free spot is left out, with the rest. ``class_colours``: each shape
    in its class's colour (:data:`CLASS_COLOURS`) instead of a random one of :data:`COLOURS`.
    ``radius``: the range of a shape's circumradius, as fractions of ``size``.
    """
    picture = _background(size, rng)
    draw = ImageDraw.Draw(picture)
    placed: list[tuple[float, float, float]] = []
    annotations: list[Annotation] = []
    count = len(kinds) if kinds is not None else int(rng.integers(1, max_shapes + 1))
    for n in range(count):
        spot = _place(size, placed, rng, radius)
        if spot is None:
            break
        placed.append(spot)
        kind = kinds[n] if kinds is not None else CLASSES[int(rng.integers(len(CLASSES)))]
        if class_colours:
            colour = CLASS_COLOURS[kind]
        else:
            colour = list(COLOURS.values())[int(rng.integers(len(COLOURS)))]
        pts = np.round(_outline(kind, *spot, rng), 2)
        draw.polygon([tuple(p) for p in pts.tolist()], fill=colour)
        flat = pts.reshape(-1).tolist()
        x0, y0 = pts.min(axis=0).tolist()
        x1, y1 = pts.max(axis=0).tolist()
        area = float(
            abs(
                np.dot(pts[:, 0], np.roll(pts[:, 1], -1))
                - np.dot(pts[:, 1], np.roll(pts[:, 0], -1))
            )
            / 2
        )
        keypoints = None
        if kind == "triangle":
            keypoints = [v for x, y in pts.tolist() for v in (x, y, 2)]
        annotations.append(
            Annotation(
                next_annotation_id + len(annotations),
                image_id,
                CLASSES.index(kind) + 1,
                [round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                [flat],
                keypoints,
                round(area, 2),
                0,
            )
        )
    return picture, annotations


def sample(
    images: int,
    *,
    size: int = 128,
    seed: int = 0,
    max_shapes: int = 4,
    class_colours: bool = False,
    cycle_classes: bool = False,
    radius: tuple[float, float] = RADIUS,
) -> tuple[Dataset, list[PILImage.Image]]:
    """``images`` pictures in memory and their dataset (paths ``images/shape_<n>.jpg``, no
    split); :func:`generate` writes them.

    ``cycle_classes``: image i's first shape is ``CLASSES[i % 3]`` (any three images in a
    row hold every class; with ``max_shapes=1`` the classes take turns); ``class_colours``
    and ``radius``: see :func:`make_image`.
    """
    if images < 1 or size < 32:
        raise ValueError("need at least 1 image of at least 32 pixels")
    rng = np.random.default_rng(seed)
    dataset = Dataset(categories=categories(), info={"description": f"shapes, seed {seed}"})
    pictures: list[PILImage.Image] = []
    width = max(5, len(str(images - 1)))
    for i in range(images):
        kinds = None
        if cycle_classes:
            count = int(rng.integers(1, max_shapes + 1))
            others = [CLASSES[int(k)] for k in rng.integers(len(CLASSES), size=count - 1)]
            kinds = [CLASSES[i % len(CLASSES)], *others]
        picture, annotations = make_image(
            i + 1,
            size,
            rng,
            len(dataset.annotations) + 1,
            max_shapes,
            kinds=kinds,
            class_colours=class_colours,
            radius=radius,
        )
        pictures.append(picture)
        dataset.images.append(Image(i + 1, f"images/shape_{i:0{width}d}.jpg", size, size))
        dataset.annotations.extend(annotations)
    return dataset, pictures


def generate(
    out_dir: str | Path,
    *,
    images: int = 64,
    size: int = 128,
    seed: int = 0,
    max_shapes: int = 4,
) -> Dataset:
    """Write ``images`` JPEGs under ``out_dir/images/`` plus a DICE ``annotations.json``:
    the pictures :func:`sample` draws for the same arguments."""
    dataset, pictures = sample(images, size=size, seed=seed, max_shapes=max_shapes)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    for image, picture in zip(dataset.images, pictures, strict=True):
        picture.save(out / image.path, quality=92)
    write(dataset, "dice", out, images="none")
    return dataset
