"""Polygon and box arithmetic with numpy: areas, extents, merging parts, rasterizing."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .model import Annotation


def polygon_area(flat: Sequence[float]) -> float:
    """Shoelace area of a flat ``[x1, y1, x2, y2, ...]`` polygon."""
    pts = np.asarray(flat, dtype=np.float64).reshape(-1, 2)
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)


def polygons_bbox(polygons: Sequence[Sequence[float]]) -> list[float] | None:
    """``[x, y, w, h]`` enclosing every polygon, None when there are no points."""
    coords = [c for p in polygons for c in p]
    if len(coords) < 2:
        return None
    pts = np.asarray(coords, dtype=np.float64).reshape(-1, 2)
    x0, y0 = pts.min(axis=0)
    x1, y1 = pts.max(axis=0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def keypoints_bbox(keypoints: Sequence[float]) -> list[float] | None:
    """``[x, y, w, h]`` around the labelled keypoints (visibility > 0)."""
    kp = np.asarray(keypoints, dtype=np.float64).reshape(-1, 3)
    kp = kp[kp[:, 2] > 0]
    if not len(kp):
        return None
    x0, y0 = kp[:, :2].min(axis=0)
    x1, y1 = kp[:, :2].max(axis=0)
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def bbox_of_annotation(a: Annotation) -> list[float] | None:
    """The annotation's box, derived from its polygons or keypoints when it has none."""
    if a.bbox is not None:
        return a.bbox
    if a.segmentation:
        return polygons_bbox(a.segmentation)
    if a.keypoints:
        return keypoints_bbox(a.keypoints)
    return None


def annotation_area(a: Annotation) -> float:
    """Pixel area: the given area, else the polygons' area, else the box's."""
    if type(a.area) in (int, float) and a.area > 0:
        return float(a.area)
    if a.segmentation:
        return sum(polygon_area(p) for p in a.segmentation if len(p) >= 6)
    box = bbox_of_annotation(a)
    if box is None:
        return 0.0
    return float(max(box[2], 0) * max(box[3], 0))


def _closest(a: np.ndarray, b: np.ndarray) -> tuple[int, int]:
    """Indices of the closest pair of vertices of two ``(n, 2)`` outlines (first on ties)."""
    d = ((a[:, None, :] - b[None, :, :]) ** 2).sum(axis=2)
    i, j = np.unravel_index(int(np.argmin(d)), d.shape)
    return int(i), int(j)


def merge_polygons(polygons: Sequence[Sequence[float]]) -> list[float]:
    """Join the parts of a multi-part object into one polygon (YOLO keeps one per line).

    The parts are chained in order, each joined to the next at their closest pair of
    vertices by a zero-width bridge: the walk goes out through every part and comes back
    along the bridges, so the outline covers the same pixels. Vertex for vertex this is
    the outline ultralytics' ``convert_coco`` writes (``merge_multi_segment``).
    """
    parts = [np.asarray(p, dtype=np.float64).reshape(-1, 2) for p in polygons if len(p) >= 6]
    if not parts:
        return []
    if len(parts) == 1:
        return parts[0].reshape(-1).tolist()
    links: list[list[int]] = [[] for _ in parts]
    for k in range(1, len(parts)):
        i, j = _closest(parts[k - 1], parts[k])
        links[k - 1].append(i)
        links[k].append(j)
    last = len(parts) - 1
    out: list[np.ndarray] = []
    rolled: list[np.ndarray] = []
    for k, idx in enumerate(links):
        seg = parts[k]
        if len(idx) == 2 and idx[0] > idx[1]:  # a middle part walked the other way round
            idx = [len(seg) - 1 - x for x in idx]
            seg = seg[::-1]
        seg = np.roll(seg, -idx[0], axis=0)
        seg = np.concatenate([seg, seg[:1]])  # closed: back at its first vertex
        rolled.append(seg)
        if k in (0, last):
            out.append(seg)
        else:
            out.append(seg[: idx[1] - idx[0] + 1])  # out to the next part's bridge
    for k in range(last - 1, 0, -1):  # and back through the middle parts
        out.append(rolled[k][abs(links[k][1] - links[k][0]) :])
    return np.concatenate(out).reshape(-1).tolist()


def rasterize(
    width: int,
    height: int,
    shapes: Sequence[tuple[int, Sequence[Sequence[float]]]],
) -> np.ndarray:
    """A ``(height, width)`` uint8 mask: each ``(value, polygons)`` filled with ``value``.

    Shapes are drawn largest first so that small objects lying on larger ones stay visible;
    0 is background.
    """
    from PIL import Image as PILImage  # here: only masks need Pillow
    from PIL import ImageDraw

    canvas = PILImage.new("L", (int(width), int(height)), 0)
    draw = ImageDraw.Draw(canvas)
    ordered = sorted(shapes, key=lambda s: -sum(polygon_area(p) for p in s[1] if len(p) >= 6))
    for value, polygons in ordered:
        for p in polygons:
            if len(p) >= 6:
                draw.polygon(
                    [(float(p[k]), float(p[k + 1])) for k in range(0, len(p) - 1, 2)],
                    fill=int(value),
                )
    return np.asarray(canvas, dtype=np.uint8)
