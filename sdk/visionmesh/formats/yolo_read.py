"""YOLO detect / segment / pose label folders (``images/<split>/x.jpg`` + ``labels/<split>/x.txt``).

Lines are ``cls cx cy w h`` (detect), ``cls x1 y1 x2 y2 ...`` (segment) or
``cls cx cy w h x1 y1 [v1] ...`` (pose, shape from ``kpt_shape`` in data.yaml), all
normalized to [0, 1]; the image sizes turn them into pixels. Class names come from the
caller, else data.yaml ``names``, else ``classes.txt``, else the class index.
"""

from __future__ import annotations

from typing import Any

import yaml

from .model import Annotation, Category, Dataset, Image
from .paths import split_from_path, yolo_label_candidates
from .problems import ProblemList
from .source import Source

_TOLERANCE = 1e-6


def is_label_file(path: str) -> bool:
    return path.endswith(".txt") and "labels" in path.split("/")[:-1]


def find_yaml(source: Source) -> str | None:
    files = source.files()
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if name in files:
            return name
    roots = [f for f in files if "/" not in f and f.endswith((".yaml", ".yml"))]
    return roots[0] if len(roots) == 1 else None


def load_yaml_config(source: Source, path: str, problems: ProblemList) -> dict[str, Any]:
    try:
        cfg = yaml.safe_load(source.read_bytes(path)) or {}
    except yaml.YAMLError as exc:
        problems.error(path, f"not valid YAML: {exc}")
        return {}
    if not isinstance(cfg, dict):
        problems.error(path, "must be a mapping with 'names'")
        return {}
    return cfg


def names_from_config(cfg: dict[str, Any], path: str, problems: ProblemList) -> list[str] | None:
    names = cfg.get("names")
    if names is None:
        return None
    if isinstance(names, dict):
        try:
            indexed = {int(k): str(v) for k, v in names.items()}
        except (TypeError, ValueError):
            problems.error(path + ":names", "names keys must be class indices")
            return None
        if sorted(indexed) != list(range(len(indexed))):
            problems.error(path + ":names", "names must cover indices 0..N-1")
            return None
        return [indexed[i] for i in range(len(indexed))]
    if isinstance(names, list):
        return [str(n) for n in names]
    problems.error(path + ":names", "names must be a list or an index -> name mapping")
    return None


def _parse_lines(
    text: str, label_path: str, problems: ProblemList
) -> list[tuple[int, list[float]]]:
    rows: list[tuple[int, list[float]]] = []
    seen: set[str] = set()
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        where = f"{label_path}:{line_no}"
        tokens = line.split()
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            problems.error(where, f"not a number in {line!r}")
            continue
        cls = values[0]
        if cls != int(cls) or cls < 0:
            problems.error(where, f"class {tokens[0]!r} must be a non-negative integer")
            continue
        key = " ".join(tokens)
        if key in seen:
            problems.warning(where, "duplicate of an earlier line; dropped")
            continue
        seen.add(key)
        rows.append((line_no, [int(cls), *values[1:]]))
    return rows


def _infer_kpt_shape(all_rows: list[list[float]]) -> list[int] | None:
    """Without data.yaml, pose lines look like ``5 + 3k`` values with visibility in {0, 1, 2}."""
    lengths = {len(r) for r in all_rows}
    if len(lengths) != 1:
        return None
    n = lengths.pop()
    if n <= 5 or (n - 5) % 3:
        return None
    for r in all_rows:
        if any(v not in (0.0, 1.0, 2.0) for v in r[7::3]):
            return None
    return [(n - 5) // 3, 3]


def read_yolo(
    source: Source,
    problems: ProblemList,
    class_names: list[str] | None = None,
) -> tuple[Dataset, str]:
    """Read a YOLO detect/segment/pose folder. Returns the dataset and its variant."""
    cfg: dict[str, Any] = {}
    yaml_path = find_yaml(source)
    if yaml_path:
        cfg = load_yaml_config(source, yaml_path, problems)
    names = class_names
    if names is None and cfg:
        names = names_from_config(cfg, yaml_path or "data.yaml", problems)
    if names is None and source.exists("classes.txt"):
        text = source.read_bytes("classes.txt").decode("utf-8", "replace")
        names = [n.strip() for n in text.splitlines() if n.strip()]
    kpt_shape = cfg.get("kpt_shape")
    if kpt_shape is not None and (
        not isinstance(kpt_shape, list)
        or len(kpt_shape) != 2
        or kpt_shape[1] not in (2, 3)
        or not isinstance(kpt_shape[0], int)
    ):
        problems.error(f"{yaml_path}:kpt_shape", "kpt_shape must be [number of keypoints, 2 or 3]")
        kpt_shape = None

    label_files = {f for f in source.files() if is_label_file(f)}
    used_labels: set[str] = set()
    pending: list[tuple[Image, str, list[tuple[int, list[float]]]]] = []
    outside = 0
    for path in source.images():
        label = next((c for c in yolo_label_candidates(path) if c in label_files), None)
        if label is None and "images" not in path.split("/")[:-1]:
            outside += 1
            continue
        try:
            size = source.image_size(path)
        except Exception as exc:  # PIL raises many types for broken files
            problems.error(path, f"cannot read the image: {exc}")
            continue
        if size is None:
            continue
        image = Image(len(pending) + 1, path, size[0], size[1], split_from_path(path), origin=path)
        rows: list[tuple[int, list[float]]] = []
        if label is not None:
            used_labels.add(label)
            text = source.read_bytes(label).decode("utf-8", "replace")
            rows = _parse_lines(text, label, problems)
        pending.append((image, label or "", rows))
    if outside:
        problems.warning(
            "", f"{outside} image(s) outside any images/ folder and without labels ignored"
        )
    for orphan in sorted(label_files - used_labels):
        problems.warning(orphan, "label file without an image; ignored")

    if kpt_shape is None:
        long_rows = [r for _, _, rows in pending for _, r in rows]
        if long_rows and all(len(r) != 5 for r in long_rows):
            kpt_shape = _infer_kpt_shape(long_rows)
    dataset, variant = _build(pending, kpt_shape, problems)
    _name_categories(dataset, names, kpt_shape, cfg, problems)
    if cfg.get("flip_idx") is not None:
        dataset.info["flip_idx"] = cfg["flip_idx"]
    return dataset, variant


def _build(
    pending: list[tuple[Image, str, list[tuple[int, list[float]]]]],
    kpt_shape: list[int] | None,
    problems: ProblemList,
) -> tuple[Dataset, str]:
    ds = Dataset()
    has_polygons = False
    pose_len = 5 + kpt_shape[0] * kpt_shape[1] if kpt_shape else None
    dims = kpt_shape[1] if kpt_shape else 3
    for image, label, rows in pending:
        ds.images.append(image)
        w, h = image.width, image.height
        for line_no, r in rows:
            cls, n = r[0], len(r)
            origin = f"{label}:{line_no}"
            bbox = seg = kp = None
            coords = r[1:]
            if pose_len and dims == 3:  # visibility flags are not coordinates
                coords = r[1:5] + [v for k, v in enumerate(r[5:]) if k % 3 != 2]
            if any(v != v or v < -_TOLERANCE or v > 1 + _TOLERANCE for v in coords):
                problems.error(origin, "coordinates must be normalized to [0, 1]")
                continue
            if pose_len is not None:
                if n != pose_len:
                    problems.error(origin, f"{n} values; kpt_shape {kpt_shape} needs {pose_len}")
                    continue
                bbox = _box(r, w, h)
                kp = _keypoints(r[5:], kpt_shape[1], w, h)
            elif n == 5:
                bbox = _box(r, w, h)
            elif n % 2 == 1 and n >= 7:
                seg = [[v * (w if k % 2 == 0 else h) for k, v in enumerate(r[1:])]]
                has_polygons = True
            else:
                problems.error(
                    origin,
                    f"{n} values: expected 5 (class and box) or a class and at least 3 points",
                )
                continue
            ds.annotations.append(
                Annotation(len(ds.annotations) + 1, image.id, cls, bbox, seg, kp, origin=origin)
            )
    variant = "yolo-pose" if pose_len else "yolo-segment" if has_polygons else "yolo-detect"
    return ds, variant


def _box(r: list[float], w: int, h: int) -> list[float]:
    cx, cy, bw, bh = r[1], r[2], r[3], r[4]
    return [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]


def _keypoints(values: list[float], dims: int, w: int, h: int) -> list[float]:
    out: list[float] = []
    for k in range(0, len(values), dims):
        x, y = values[k] * w, values[k + 1] * h
        v = values[k + 2] if dims == 3 else 2.0
        out += [x, y, int(v) if v == int(v) else v]
    return out


def _name_categories(
    ds: Dataset,
    names: list[str] | None,
    kpt_shape: list[int] | None,
    cfg: dict[str, Any],
    problems: ProblemList,
) -> None:
    used = {a.category_id for a in ds.annotations}
    count = len(names) if names else 0
    for a in ds.annotations:
        if names and a.category_id >= count:
            problems.error(
                a.origin or "", f"class {a.category_id} has no name ({count} names given)"
            )
    top = max(used, default=-1) + 1
    if names:
        top = count
    kp_names: list[str] = []
    if kpt_shape:
        given = cfg.get("kpt_names")
        if isinstance(given, dict):  # ultralytics: {class index: [names]}
            given = next(iter(given.values()), None)
        if isinstance(given, list) and len(given) == kpt_shape[0]:
            kp_names = [str(n) for n in given]
        else:
            kp_names = [f"kp{i}" for i in range(kpt_shape[0])]
    for i in range(top):
        name = names[i] if names and i < count else str(i)
        ds.categories.append(Category(i, name, keypoints=list(kp_names), origin=f"names[{i}]"))
