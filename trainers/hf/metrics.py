"""Evaluation (COCO mAP via pycocotools, segmentation IoU) and mask outlines for Predict."""

from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np
import torch


def coco_map(ground_truth: dict[str, Any], detections: list[dict[str, Any]]) -> dict[str, float]:
    """``val/map50`` and ``val/map50_95`` from pycocotools' COCOeval (bbox).

    ``detections``: {"image_id", "category_id" (dataset id), "bbox" [x, y, w, h], "score"}.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not ground_truth["annotations"] or not detections:
        return {"val/map50": 0.0, "val/map50_95": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = ground_truth
        gt.createIndex()
        dt = gt.loadRes(detections)
        evaluator = COCOeval(gt, dt, iouType="bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [max(0.0, float(v)) for v in evaluator.stats]  # -1 means "no such objects"
    return {"val/map50": stats[1], "val/map50_95": stats[0]}


def box_cxcywh_to_xywh(boxes: torch.Tensor, width: float, height: float) -> torch.Tensor:
    cx, cy, w, h = boxes.unbind(-1)
    x0 = ((cx - w / 2) * width).clamp(0, width)
    y0 = ((cy - h / 2) * height).clamp(0, height)
    x1 = ((cx + w / 2) * width).clamp(0, width)
    y1 = ((cy + h / 2) * height).clamp(0, height)
    return torch.stack([x0, y0, x1 - x0, y1 - y0], dim=-1)


def decode_detections(
    logits: torch.Tensor, boxes: torch.Tensor, sigmoid: bool, max_detections: int
) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Per image (scores, class indices, cx-cy-w-h boxes), best first, at most max_detections.

    Softmax heads (DETR, YOLOS) keep each query's best real class; sigmoid heads
    (Conditional/Deformable DETR, RT-DETR) take the top (query, class) pairs, as their
    transformers image processors do.
    """
    out = []
    for lg, bx in zip(logits.float(), boxes.float(), strict=True):
        if sigmoid:
            prob = lg.sigmoid()
            k = min(max_detections, prob.numel())
            scores, flat = prob.flatten().topk(k)
            queries, labels = flat // prob.shape[1], flat % prob.shape[1]
            out.append((scores, labels, bx[queries]))
        else:
            prob = lg.softmax(-1)[:, :-1]
            scores, labels = prob.max(-1)
            order = scores.argsort(descending=True)[:max_detections]
            out.append((scores[order], labels[order], bx[order]))
    return out


def confusion(pred: torch.Tensor, target: torch.Tensor, num_classes: int, ignore: int = 255):
    keep = target != ignore
    index = target[keep] * num_classes + pred[keep]
    return torch.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def segmentation_scores(matrix: torch.Tensor) -> dict[str, float]:
    """mIoU over foreground classes seen in truth or prediction; pixel accuracy over all."""
    matrix = matrix.double()
    total = float(matrix.sum())
    correct = float(matrix.diag().sum())
    intersection = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - intersection
    ious = [float(intersection[c] / union[c]) for c in range(1, matrix.shape[0]) if union[c] > 0]
    return {
        "val/miou": float(np.mean(ious)) if ious else 0.0,
        "val/pixel_accuracy": correct / total if total else 0.0,
    }


# --- outlines -----------------------------------------------------------------------------

# Moore neighbourhood, clockwise on screen (y down), starting west.
_NEIGHBOURS = ((0, -1), (-1, -1), (-1, 0), (-1, 1), (0, 1), (1, 1), (1, 0), (1, -1))


def trace_outline(region: np.ndarray) -> list[tuple[int, int]]:
    """Outer boundary pixels (row, col) of one 8-connected region, clockwise (Moore tracing)."""
    padded = np.pad(region.astype(bool), 1)
    rows, cols = np.nonzero(padded)
    if rows.size == 0:
        return []
    start = (int(rows[0]), int(cols[0]))  # top-most, then left-most: its west is empty
    boundary = [start]
    current, back = start, 0  # we "arrived" from the west neighbour
    first_move: tuple[tuple[int, int], int] | None = None
    for _ in range(4 * int(padded.sum()) + 8):
        for step in range(1, 9):
            d = (back + step) % 8
            r, c = current[0] + _NEIGHBOURS[d][0], current[1] + _NEIGHBOURS[d][1]
            if padded[r, c]:
                # The neighbour checked just before d is empty: the new backtrack.
                prev = (back + step - 1) % 8
                pr, pc = current[0] + _NEIGHBOURS[prev][0], current[1] + _NEIGHBOURS[prev][1]
                nxt = (r, c)
                back = _direction(nxt, (pr, pc))
                break
        else:
            break  # isolated pixel
        if first_move is None:
            first_move = (nxt, back)
        elif current == start and (nxt, back) == first_move:
            break
        current = nxt
        boundary.append(current)
    if len(boundary) > 1 and boundary[-1] == start:
        boundary.pop()
    return [(r - 1, c - 1) for r, c in boundary]


def _direction(origin: tuple[int, int], to: tuple[int, int]) -> int:
    return _NEIGHBOURS.index((to[0] - origin[0], to[1] - origin[1]))


def simplify(points: list[tuple[float, float]], tolerance: float) -> list[tuple[float, float]]:
    """Douglas-Peucker on an open chain (endpoints kept)."""
    if len(points) < 3:
        return list(points)
    a, b = np.asarray(points[0], float), np.asarray(points[-1], float)
    pts = np.asarray(points[1:-1], float)
    ab = b - a
    norm = float(np.hypot(*ab))
    if norm == 0:
        dists = np.hypot(*(pts - a).T)
    else:
        dists = np.abs(ab[0] * (pts[:, 1] - a[1]) - ab[1] * (pts[:, 0] - a[0])) / norm
    i = int(np.argmax(dists))
    if dists[i] <= tolerance:
        return [points[0], points[-1]]
    left = simplify(points[: i + 2], tolerance)
    right = simplify(points[i + 1 :], tolerance)
    return left[:-1] + right


def region_polygons(
    mask: np.ndarray, min_pixels: int = 4, tolerance: float = 1.0
) -> list[list[float]]:
    """One outline polygon [x1, y1, ...] (pixel centres) per 8-connected region of ``mask``."""
    from scipy import ndimage

    labelled, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    polygons = []
    for index, window in enumerate(ndimage.find_objects(labelled), start=1):
        if window is None:
            continue
        region = labelled[window] == index
        if int(region.sum()) < min_pixels:
            continue
        outline = trace_outline(region)
        y0, x0 = window[0].start, window[1].start
        points = [(x0 + c + 0.5, y0 + r + 0.5) for r, c in outline]
        if len(points) >= 3:
            # Split the closed ring at its farthest point so both halves keep their shape.
            far = int(np.argmax([np.hypot(x - points[0][0], y - points[0][1]) for x, y in points]))
            ring = points + [points[0]]
            points = (
                simplify(ring[: far + 1], tolerance)[:-1] + simplify(ring[far:], tolerance)[:-1]
            )
        if len(points) < 3:
            h, w = region.shape
            points = [(x0, y0), (x0 + w, y0), (x0 + w, y0 + h), (x0, y0 + h)]
        polygons.append([round(float(v), 2) for point in points for v in point])
    return polygons
