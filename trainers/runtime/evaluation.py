"""The evaluation of a finished job: per-class metrics, confusion matrix, PR curves, pictures.

At the end of each job the worker asks the adapter to evaluate best.pt on the val split
(:meth:`FrameworkAdapter.evaluate`, framework-specific: ultralytics' own validator for
YOLO, pycocotools for the hf detection path, a plain pass over the val images for
classification). The adapter answers with a *raw* evaluation, classes by index::

    {"metrics": {"val/map50": 0.61, ...},                    # normalized names
     "classes": [{"index": 0, "values": {"ap50": ..}, "instance_count": 12}, ...],
     "confusion_matrix": {"labels": [...] | absent, "rows": [[...], ...]},  # rows: true class
     "pr_curves": [{"index": 0, "recall": [...], "precision": [...]}, ...]}

The runtime (this module) names the classes with the dataset's category ids and names,
draws ``confusion_matrix.png`` and ``pr_curve.png`` with matplotlib (Agg, DejaVu Sans that
ships with matplotlib: no font download) and stores ``runs/<job>/evaluation.json`` and
``runs/<job>/evaluation/<picture>``. The helpers below compute the raw form from plain
arrays so every adapter computes a given kind of metric one way.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trainers.runtime import records

PICTURES = ("confusion_matrix.png", "pr_curve.png")


def evaluation_key(job_id: str) -> str:
    return records.run_key(job_id, "evaluation.json")


def picture_key(job_id: str, filename: str) -> str:
    return records.run_key(job_id, f"evaluation/{filename}")


# -- raw evaluations from arrays -------------------------------------------------------------


def classification_report(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> dict:
    """Raw evaluation of class scores ``probs`` (N x C) against true ``labels`` (N)."""
    probs = np.asarray(probs, dtype=np.float64).reshape(-1, num_classes)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    pred = probs.argmax(1) if len(probs) else np.zeros(0, dtype=np.int64)
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, pred), 1)
    n = max(len(labels), 1)
    classes, curves = [], []
    for c in range(num_classes):
        tp = int(matrix[c, c])
        fp = int(matrix[:, c].sum()) - tp
        fn = int(matrix[c, :].sum()) - tp
        tn = len(labels) - tp - fp - fn
        classes.append(
            {
                "index": c,
                "values": {
                    "precision": tp / (tp + fp) if tp + fp else 0.0,
                    "recall": tp / (tp + fn) if tp + fn else 0.0,
                    "accuracy": (tp + tn) / n,
                },
                "instance_count": int(matrix[c, :].sum()),
            }
        )
        recall, precision = pr_curve(probs[:, c], labels == c)
        curves.append({"index": c, "recall": recall, "precision": precision})
    k = min(5, num_classes)
    topk = np.argsort(-probs, axis=1)[:, :k] if len(probs) else np.zeros((0, k))
    metrics = {
        "val/top1": float((pred == labels).mean()) if len(labels) else 0.0,
        "val/top5": float((topk == labels[:, None]).any(1).mean()) if len(labels) else 0.0,
    }
    return {
        "metrics": metrics,
        "classes": classes,
        "confusion_matrix": {"rows": matrix.tolist()},
        "pr_curves": curves,
    }


def confusion_report(matrix: np.ndarray) -> list[dict[str, Any]]:
    """Per-class precision / recall / accuracy (one-vs-rest) of a true x predicted matrix."""
    matrix = np.asarray(matrix, dtype=np.float64)
    n = matrix.sum() or 1.0
    out = []
    for c in range(matrix.shape[0]):
        tp = matrix[c, c]
        fp = matrix[:, c].sum() - tp
        fn = matrix[c, :].sum() - tp
        tn = n - tp - fp - fn
        out.append(
            {
                "index": c,
                "values": {
                    "precision": float(tp / (tp + fp)) if tp + fp else 0.0,
                    "recall": float(tp / (tp + fn)) if tp + fn else 0.0,
                    "accuracy": float((tp + tn) / n),
                },
                "instance_count": int(matrix[c, :].sum()),
            }
        )
    return out


def pr_curve(scores: np.ndarray, positive: np.ndarray, points: int = 101) -> tuple[list, list]:
    """One-vs-rest precision at ``points`` recall levels (precision made monotone, as COCO)."""
    scores = np.asarray(scores, dtype=np.float64)
    positive = np.asarray(positive, dtype=bool)
    total = int(positive.sum())
    grid = np.linspace(0, 1, points)
    if total == 0:
        return grid.tolist(), [0.0] * points
    order = np.argsort(-scores, kind="stable")
    hits = positive[order]
    tp = np.cumsum(hits)
    precision = tp / np.arange(1, len(hits) + 1)
    recall = tp / total
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    index = np.searchsorted(recall, grid, side="left")
    out = [float(envelope[i]) if i < len(envelope) else 0.0 for i in index]
    return grid.tolist(), out


def coco_detection_report(
    ground_truth: dict[str, Any],
    detections: Sequence[dict[str, Any]],
    category_ids: Sequence[int],
    *,
    iou_type: str = "bbox",
    confidence: float = 0.25,
) -> dict:
    """Raw evaluation of COCO ``detections`` with pycocotools' COCOeval.

    Per class: AP50 and AP50-95 (COCO's 101-point interpolation, area "all", 100
    detections), precision and recall at ``confidence``; PR curves at IoU 0.5; a confusion
    matrix of boxes matched greedily at IoU 0.5 above ``confidence`` ("background" last).
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    index_of = {int(c): i for i, c in enumerate(category_ids)}
    num = len(category_ids)
    counts = np.zeros(num, dtype=np.int64)
    for ann in ground_truth["annotations"]:
        if not ann.get("iscrowd") and int(ann["category_id"]) in index_of:
            counts[index_of[int(ann["category_id"])]] += 1
    classes = [
        {"index": i, "values": {"ap50": 0.0, "ap50_95": 0.0}, "instance_count": int(counts[i])}
        for i in range(num)
    ]
    curves = [
        {"index": i, "recall": np.linspace(0, 1, 101).tolist(), "precision": [0.0] * 101}
        for i in range(num)
    ]
    metrics = {"val/map50": 0.0, "val/map50_95": 0.0}
    if ground_truth["annotations"] and detections:
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO()
            gt.dataset = json.loads(json.dumps(ground_truth))
            gt.createIndex()
            dt = gt.loadRes([dict(d) for d in detections])
            ev = COCOeval(gt, dt, iouType=iou_type)
            ev.evaluate()
            ev.accumulate()
            ev.summarize()
        metrics = {"val/map50": max(0.0, float(ev.stats[1])), "val/map50_95": max(0.0, ev.stats[0])}
        precision = ev.eval["precision"]  # [T, R, K, A, M]
        for k, cat in enumerate(ev.params.catIds):
            i = index_of.get(int(cat))
            if i is None:
                continue
            p_all = precision[:, :, k, 0, -1]
            p50 = precision[0, :, k, 0, -1]
            classes[i]["values"]["ap50"] = float(p50[p50 > -1].mean()) if (p50 > -1).any() else 0.0
            classes[i]["values"]["ap50_95"] = (
                float(p_all[p_all > -1].mean()) if (p_all > -1).any() else 0.0
            )
            curves[i]["precision"] = [max(0.0, float(v)) for v in p50]
    matrix, tp, fp = detection_confusion(ground_truth, detections, index_of, confidence)
    for i in range(num):
        classes[i]["values"]["precision"] = tp[i] / (tp[i] + fp[i]) if tp[i] + fp[i] else 0.0
        classes[i]["values"]["recall"] = tp[i] / counts[i] if counts[i] else 0.0
    return {
        "metrics": {k: float(v) for k, v in metrics.items()},
        "classes": classes,
        "confusion_matrix": {"rows": matrix.tolist()},
        "pr_curves": curves,
    }


def _iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax0, ay0, aw, ah = a
    bx0, by0, bw, bh = b
    ix = max(0.0, min(ax0 + aw, bx0 + bw) - max(ax0, bx0))
    iy = max(0.0, min(ay0 + ah, by0 + bh) - max(ay0, by0))
    inter = ix * iy
    union = aw * ah + bw * bh - inter
    return inter / union if union > 0 else 0.0


def detection_confusion(
    ground_truth: dict[str, Any],
    detections: Sequence[dict[str, Any]],
    index_of: dict[int, int],
    confidence: float,
    iou: float = 0.5,
) -> tuple[np.ndarray, list[int], list[int]]:
    """(confusion matrix with "background" last, true positives, false positives) per class."""
    num = len(index_of)
    matrix = np.zeros((num + 1, num + 1), dtype=np.int64)
    tp, fp = [0] * num, [0] * num
    gts: dict[int, list[dict[str, Any]]] = {}
    for ann in ground_truth["annotations"]:
        if not ann.get("iscrowd") and int(ann["category_id"]) in index_of:
            gts.setdefault(int(ann["image_id"]), []).append(ann)
    dts: dict[int, list[dict[str, Any]]] = {}
    for det in detections:
        if det["score"] >= confidence and int(det["category_id"]) in index_of:
            dts.setdefault(int(det["image_id"]), []).append(det)
    for image_id in set(gts) | set(dts):
        g = gts.get(image_id, [])
        d = sorted(dts.get(image_id, []), key=lambda x: -x["score"])
        used = [False] * len(g)
        for det in d:
            best, best_j = iou, -1
            for j, ann in enumerate(g):
                if not used[j]:
                    value = _iou(det["bbox"], ann["bbox"])
                    if value >= best:
                        best, best_j = value, j
            p = index_of[int(det["category_id"])]
            if best_j < 0:
                matrix[num, p] += 1
                fp[p] += 1
                continue
            used[best_j] = True
            t = index_of[int(g[best_j]["category_id"])]
            matrix[t, p] += 1
            if t == p:
                tp[p] += 1
            else:
                fp[p] += 1
        for j, ann in enumerate(g):
            if not used[j]:
                matrix[index_of[int(ann["category_id"])], num] += 1
    return matrix, tp, fp


def segmentation_report(matrix: np.ndarray, class_names: Sequence[str]) -> dict:
    """Raw evaluation of a semantic segmentation confusion matrix (index 0 = background)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    classes = []
    for c in range(len(class_names)):
        k = c + 1
        tp = int(matrix[k, k])
        fp = int(matrix[:, k].sum()) - tp
        fn = int(matrix[k, :].sum()) - tp
        classes.append(
            {
                "index": c,
                "values": {
                    "iou": tp / (tp + fp + fn) if tp + fp + fn else 0.0,
                    "precision": tp / (tp + fp) if tp + fp else 0.0,
                    "recall": tp / (tp + fn) if tp + fn else 0.0,
                },
                "instance_count": int(matrix[k, :].sum()),
            }
        )
    return {
        "metrics": {},
        "classes": classes,
        "confusion_matrix": {"labels": ["background", *class_names], "rows": matrix.tolist()},
        "pr_curves": [],
    }


# -- completing, drawing and storing ----------------------------------------------------------


def complete(
    raw: dict[str, Any],
    *,
    job_name: str,
    task_type: str,
    class_names: Sequence[str],
    category_ids: Sequence[int],
    checkpoint: str = "best.pt",
) -> dict[str, Any]:
    """The stored evaluation: classes named by the dataset's ids and names."""

    def named(index: int) -> tuple[int, str]:
        if 0 <= index < len(class_names):
            cid = category_ids[index] if index < len(category_ids) else index
            return int(cid), str(class_names[index])
        return index, str(index)

    classes = []
    for item in raw.get("classes", []):
        cid, cname = named(int(item["index"]))
        classes.append(
            {
                "category_id": cid,
                "category_name": cname,
                "values": {k: float(v) for k, v in item.get("values", {}).items()},
                "instance_count": int(item.get("instance_count", 0)),
            }
        )
    curves = []
    for item in raw.get("pr_curves", []):
        cid, cname = named(int(item["index"]))
        curves.append(
            {
                "category_id": cid,
                "category_name": cname,
                "recall": [float(v) for v in item["recall"]],
                "precision": [float(v) for v in item["precision"]],
            }
        )
    cm = raw.get("confusion_matrix") or {}
    rows = [[float(v) for v in row] for row in cm.get("rows", [])]
    labels = list(cm.get("labels") or [])
    if not labels and rows:
        labels = list(class_names)
        if len(rows) == len(class_names) + 1:
            labels.append("background")
    return {
        "name": f"{job_name}/evaluation",
        "task_type": task_type,
        "checkpoint": checkpoint,
        "metrics": {k: float(v) for k, v in raw.get("metrics", {}).items()},
        "classes": classes,
        "confusion_matrix": {"labels": labels, "rows": rows},
        "pr_curves": curves,
        "pictures": [],
        "create_time": time.time(),
    }


def draw(evaluation: dict[str, Any], out_dir: Path) -> list[Path]:
    """confusion_matrix.png and pr_curve.png (when there is data for them) under ``out_dir``."""
    os.environ.setdefault("MPLCONFIGDIR", str(Path(out_dir) / ".matplotlib"))
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    cm = evaluation["confusion_matrix"]
    if cm["rows"]:
        matrix = np.asarray(cm["rows"], dtype=np.float64)
        labels = cm["labels"]
        n = len(labels)
        size = min(4 + 0.45 * n, 24)
        fig, ax = plt.subplots(figsize=(size, size * 0.85), dpi=100)
        image = ax.imshow(matrix, cmap="Blues")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
        ax.set_xticks(range(n), labels, rotation=90 if n > 6 else 45, ha="right")
        ax.set_yticks(range(n), labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"Confusion matrix ({evaluation['checkpoint']})")
        if n <= 30:
            top = matrix.max() or 1
            for i in range(n):
                for j in range(n):
                    if matrix[i, j]:
                        ax.text(
                            j,
                            i,
                            f"{matrix[i, j]:g}",
                            ha="center",
                            va="center",
                            fontsize=8,
                            color="white" if matrix[i, j] > top / 2 else "black",
                        )
        fig.tight_layout()
        path = out_dir / "confusion_matrix.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    if evaluation["pr_curves"]:
        fig, ax = plt.subplots(figsize=(7, 5.5), dpi=100)
        for curve in evaluation["pr_curves"]:
            ax.plot(
                curve["recall"], curve["precision"], linewidth=1.2, label=curve["category_name"]
            )
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.set_title("Precision-recall per class")
        if len(evaluation["pr_curves"]) <= 20:
            ax.legend(loc="lower left", fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / "pr_curve.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def store_evaluation(store: Any, job_id: str, evaluation: dict[str, Any], pictures: list[Path]):
    for path in pictures:
        store.put_file(picture_key(job_id, path.name), path, content_type="image/png")
    evaluation["pictures"] = [p.name for p in pictures]
    store.put_bytes(
        evaluation_key(job_id),
        json.dumps(evaluation).encode(),
        content_type="application/json",
    )


def run(job: Any, adapter: Any, store: Any, *, job_name: str) -> dict[str, Any] | None:
    """Evaluate the job's best.pt (worker side); the stored evaluation, or None."""
    key = records.checkpoint_key(job.job_id, "best.pt")
    if not store.exists(key):
        job.log("[visionmesh] evaluation skipped: the job has no best.pt")
        return None
    local = Path(job.work_dir) / "evaluation" / "best.pt"
    store.download(key, local)
    started = time.monotonic()
    raw = adapter.evaluate(job, local.resolve())
    if raw is None:
        return None
    evaluation = complete(
        raw,
        job_name=job_name,
        task_type=job.spec.task_type,
        class_names=job.class_names,
        category_ids=job.category_ids,
    )
    pictures = draw(evaluation, Path(job.work_dir) / "evaluation")
    store_evaluation(store, job.job_id, evaluation, pictures)
    job.log(
        f"[visionmesh] evaluation of best.pt on val in {time.monotonic() - started:.1f}s: "
        + ", ".join(f"{k}={v:.4f}" for k, v in sorted(evaluation["metrics"].items()))
    )
    return evaluation


def to_proto(evaluation: dict[str, Any], pictures: dict[str, bytes]) -> Any:
    """The Evaluation message (server side) of a stored evaluation and its pictures."""
    from visionmesh.v1 import trainer_pb2

    msg = trainer_pb2.Evaluation(
        name=evaluation["name"],
        task_type=records.task_enum(evaluation["task_type"]),
        checkpoint=evaluation.get("checkpoint", "best.pt"),
        metrics=evaluation.get("metrics", {}),
    )
    for item in evaluation.get("classes", []):
        msg.classes.add(
            category_id=item["category_id"],
            category_name=item["category_name"],
            values=item["values"],
            instance_count=item["instance_count"],
        )
    cm = evaluation.get("confusion_matrix") or {}
    msg.confusion_matrix.labels.extend(cm.get("labels", []))
    for row in cm.get("rows", []):
        msg.confusion_matrix.rows.add(counts=row)
    for curve in evaluation.get("pr_curves", []):
        msg.pr_curves.add(
            category_id=curve["category_id"],
            category_name=curve["category_name"],
            recall=curve["recall"],
            precision=curve["precision"],
        )
    for filename in evaluation.get("pictures", []):
        if filename in pictures:
            msg.pictures.add(filename=filename, content_type="image/png", data=pictures[filename])
    ts = records._ts(evaluation.get("create_time"))
    if ts is not None:
        msg.create_time.CopyFrom(ts)
    return msg
