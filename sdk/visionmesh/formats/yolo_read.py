"""YOLO detect / segment / pose label folders (``images/<split>/x.jpg`` + ``labels/<split>/x.txt``).

Lines are ``cls cx cy w h`` (detect), ``cls x1 y1 x2 y2 ...`` (segment) or
``cls cx cy w h x1 y1 [v1] ...`` (pose, shape from ``kpt_shape`` in data.yaml), all
normalized to [0, 1]; the image sizes turn them into pixels. Class names come from the
caller, else data.yaml ``names``, else ``classes.txt``, else the class index.
"""

from __future__ import annotations

import math
import posixpath
from typing import Any

import yaml

from .model import Annotation, Category, Dataset, Image
from .paths import split_from_path, yolo_label_candidates
from .problems import ProblemList, show
from .source import Source

_TOLERANCE = 1e-6
# Bounds on a YAML file: its size, aliases (an alias bomb expands a few lines into
# gigabytes), and the values it expands to once aliases are followed.
MAX_YAML_BYTES = 1 << 20
MAX_YAML_ALIASES = 100
MAX_YAML_VALUES = 200_000
MAX_YAML_DEPTH = 64  # nesting; the YAML parser recurses, so deeper is refused up front
MAX_CLASS_INDEX = 65_535  # YOLO class indices; every index below the largest gets a category
DARKNET_DATA = "obj.data"
_SPLIT_KEYS = (("train", "train"), ("val", "val"), ("valid", "val"), ("test", "test"))


class YamlLimitError(ValueError):
    """A YAML document beyond the size, alias or expansion bounds."""


class _BoundedLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses more than MAX_YAML_ALIASES aliases and nesting deeper
    than MAX_YAML_DEPTH."""

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self.alias_count = 0
        self.depth = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.alias_count += 1
            if self.alias_count > MAX_YAML_ALIASES:
                raise YamlLimitError(f"more than {MAX_YAML_ALIASES} YAML aliases")
        self.depth += 1
        if self.depth > MAX_YAML_DEPTH:
            raise YamlLimitError(f"YAML nested deeper than {MAX_YAML_DEPTH} levels")
        try:
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _expanded_size(value: Any) -> int:
    """How many values ``value`` holds once shared (aliased) parts are counted each time."""
    count, stack = 0, [value]
    while stack:
        v = stack.pop()
        count += 1
        if count > MAX_YAML_VALUES:
            raise YamlLimitError(
                f"the YAML expands to more than {MAX_YAML_VALUES} values once its aliases "
                "are followed"
            )
        if isinstance(v, dict):
            stack.extend(v.keys())
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
        elif isinstance(v, str) and len(v) > MAX_YAML_BYTES:
            raise YamlLimitError("a YAML string is longer than the file limit")
    return count


def safe_yaml_load(data: bytes | str) -> Any:
    """``yaml.safe_load`` with bounds: raises YamlLimitError (a ValueError) beyond them and
    yaml.YAMLError for malformed text."""
    if len(data) > MAX_YAML_BYTES:
        raise YamlLimitError(f"{len(data)} bytes; YAML files are read up to {MAX_YAML_BYTES}")
    loader = _BoundedLoader(data)
    try:
        value = loader.get_single_data()
    finally:
        loader.dispose()
    _expanded_size(value)
    return value


def is_label_file(path: str) -> bool:
    return path.endswith(".txt") and "labels" in path.split("/")[:-1]


def find_yaml(source: Source) -> str | None:
    files = source.files()
    for name in ("data.yaml", "data.yml", "dataset.yaml"):
        if name in files:
            return name
    roots = [f for f in files if "/" not in f and f.endswith((".yaml", ".yml"))]
    return roots[0] if len(roots) == 1 else None


def _beside_labels(source: Source) -> set[str]:
    """``x.txt`` files next to an image ``x.<ext>`` (Darknet, Kaggle exports)."""
    stems = {posixpath.splitext(im)[0] for im in source.images()}
    return {f for f in source.files() if f.endswith(".txt") and f[:-4] in stems}


def yolo_layout(source: Source) -> str | None:
    """The YOLO layout a source holds, in words, or None."""
    files = source.files()
    if any(is_label_file(f) for f in files):
        yaml_path = find_yaml(source)
        return "YOLO images/ + labels/ folders" + (f" with {yaml_path}" if yaml_path else "")
    beside = _beside_labels(source)
    if DARKNET_DATA in files or (beside and _names_file(source)):
        return "Darknet (obj.data / obj.names, labels beside the images)"
    if beside:
        return "YOLO labels beside the images"
    return None


def _names_file(source: Source) -> str | None:
    files = source.files()
    for name in ("obj.names", "classes.txt", "classes.names"):
        if name in files:
            return name
    roots = [f for f in files if "/" not in f and f.endswith(".names")]
    return roots[0] if len(roots) == 1 else None


def load_yaml_config(source: Source, path: str, problems: ProblemList) -> dict[str, Any]:
    try:
        cfg = safe_yaml_load(source.read_bytes(path)) or {}
    except YamlLimitError as exc:
        problems.error(path, f"refused: {exc}")
        return {}
    except yaml.YAMLError as exc:
        problems.error(path, f"not valid YAML: {exc}")
        return {}
    if not isinstance(cfg, dict):
        problems.error(path, "must be a mapping with 'names'")
        return {}
    return cfg


def load_darknet_data(source: Source, path: str, problems: ProblemList) -> dict[str, Any]:
    """Darknet's ``obj.data``: ``key = value`` lines (classes, train, valid, names)."""
    cfg: dict[str, Any] = {}
    text = source.read_bytes(path)[:MAX_YAML_BYTES].decode("utf-8", "replace")
    for line_no, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        key, sep, value = line.partition("=")
        if not sep:
            problems.warning(f"{path}:{line_no}", f"not a 'key = value' line: {show(line)}")
            continue
        cfg[key.strip()] = value.strip()
    return cfg


def _name(value: Any, where: str, problems: ProblemList) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        problems.error(where, f"a class name must be a string, not {type(value).__name__}")
        return ""
    return str(value)


def names_from_config(cfg: dict[str, Any], path: str, problems: ProblemList) -> list[str] | None:
    names = cfg.get("names")
    if names is None:
        return None
    if isinstance(names, dict):
        try:
            indexed = {int(k): v for k, v in names.items()}
        except (TypeError, ValueError):
            problems.error(path + ":names", "names keys must be class indices")
            return None
        if sorted(indexed) != list(range(len(indexed))):
            problems.error(path + ":names", "names must cover indices 0..N-1")
            return None
        return [_name(indexed[i], f"{path}:names[{i}]", problems) for i in range(len(indexed))]
    if isinstance(names, list):
        return [_name(n, f"{path}:names[{i}]", problems) for i, n in enumerate(names)]
    problems.error(path + ":names", "names must be a list or an index -> name mapping")
    return None


def _names_from_text(source: Source, path: str) -> list[str]:
    text = source.read_bytes(path)[:MAX_YAML_BYTES].decode("utf-8", "replace")
    return [n.strip() for n in text.splitlines() if n.strip()]


def _entry_candidates(entry: str, base: str) -> list[str]:
    """Where a path from data.yaml / obj.data / a list file may be in the source: relative
    to ``base``, then ever shorter tails of it (``/abs/coco/images/x.jpg``, ``data/x.txt``)."""
    norm = entry.strip().replace("\\", "/")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    out = []
    if not norm.startswith("/") and ":" not in (parts[0] if parts else ""):
        joined = posixpath.normpath(posixpath.join(base, *parts)) if parts else base
        if joined not in (".", "") and not joined.startswith(".."):
            out.append(joined)
    tail = [p for p in parts if p != ".."]
    for i in range(len(tail)):
        candidate = "/".join(tail[i:])
        if candidate not in out:
            out.append(candidate)
    return out


def _listed_images(
    source: Source,
    entry: Any,
    base: str,
    images: set[str],
    folders: dict[str, list[str]],
    files: set[str],
) -> list[str] | None:
    """The images a split entry names: a folder, an image list (.txt), an image, or a list
    of those. None when nothing of it is in the source."""
    if isinstance(entry, list):
        found = [_listed_images(source, e, base, images, folders, files) for e in entry]
        if all(f is None for f in found):
            return None
        return [im for f in found if f for im in f]
    if not isinstance(entry, str) or not entry.strip():
        return None
    for candidate in _entry_candidates(entry, base):
        if candidate in images:
            return [candidate]
        if candidate in folders:
            return folders[candidate]
        if candidate in files and candidate.endswith(".txt"):
            listed = []
            text = source.read_bytes(candidate).decode("utf-8", "replace")
            list_dir = posixpath.dirname(candidate)
            for line in text.splitlines():
                if line.strip():
                    hit = next((c for c in _entry_candidates(line, list_dir) if c in images), None)
                    if hit is not None:
                        listed.append(hit)
            return listed
    return None


def _image_folders(images: list[str]) -> dict[str, list[str]]:
    """Every folder -> the images below it (at any depth)."""
    out: dict[str, list[str]] = {}
    for im in images:
        parts = im.split("/")[:-1]
        for k in range(1, len(parts) + 1):
            out.setdefault("/".join(parts[:k]), []).append(im)
    return out


def listed_splits(
    source: Source, cfg: dict[str, Any], cfg_path: str, problems: ProblemList
) -> dict[str, str]:
    """Image path -> split, from the train/val/test entries of data.yaml (or obj.data)."""
    images = source.images()
    image_set = set(images)
    folders = _image_folders(images)
    files = set(source.files())
    base = posixpath.dirname(cfg_path)
    out: dict[str, str] = {}
    for key, split in _SPLIT_KEYS:
        entry = cfg.get(key)
        if entry is None:
            continue
        listed = _listed_images(source, entry, base, image_set, folders, files)
        if listed is None:
            problems.warning(
                f"{cfg_path}:{key}",
                f"{show(entry)} is not in the dataset; those images take the split their "
                "folder names, if any",
            )
            continue
        for im in listed:
            out.setdefault(im, split)
    return out


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
            problems.error(where, f"not a number in {show(line)}")
            continue
        cls = values[0]
        if not math.isfinite(cls) or cls != int(cls) or cls < 0:
            problems.error(where, f"class {show(tokens[0])} must be a non-negative integer")
            continue
        if cls > MAX_CLASS_INDEX:
            problems.error(where, f"class {show(tokens[0])} is beyond {MAX_CLASS_INDEX}")
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


def _class_names(
    source: Source,
    cfg: dict[str, Any],
    cfg_path: str | None,
    darknet: dict[str, Any],
    problems: ProblemList,
) -> tuple[list[str] | None, str]:
    """Names from data.yaml, else obj.data's names file, else obj.names / classes.txt."""
    if cfg:
        names = names_from_config(cfg, cfg_path or "data.yaml", problems)
        if names is not None:
            return names, cfg_path or "data.yaml"
    files = set(source.files())
    given = darknet.get("names")
    if isinstance(given, str):
        hit = next((c for c in _entry_candidates(given, "") if c in files), None)
        if hit:
            return _names_from_text(source, hit), hit
    found = _names_file(source)
    if found:
        return _names_from_text(source, found), found
    return None, ""


def read_yolo(
    source: Source,
    problems: ProblemList,
    class_names: list[str] | None = None,
) -> tuple[Dataset, str]:
    """Read a YOLO detect/segment/pose folder. Returns the dataset and its variant.

    Layouts: ``images/<split>/`` + ``labels/<split>/``; labels beside the images (Darknet's
    ``obj_train_data/``, Kaggle exports). Splits come from data.yaml's (or obj.data's)
    train/val/test entries (folders, image lists, or lists of them), else from folder
    names such as ``train``, ``valid``, ``val2017``.
    """
    cfg: dict[str, Any] = {}
    yaml_path = find_yaml(source)
    if yaml_path:
        cfg = load_yaml_config(source, yaml_path, problems)
    files = source.files()
    darknet = load_darknet_data(source, DARKNET_DATA, problems) if DARKNET_DATA in files else {}
    names = class_names
    if names is None:
        names, _ = _class_names(source, cfg, yaml_path, darknet, problems)
    kpt_shape = cfg.get("kpt_shape")
    if kpt_shape is not None and (
        not isinstance(kpt_shape, list)
        or len(kpt_shape) != 2
        or kpt_shape[1] not in (2, 3)
        or not isinstance(kpt_shape[0], int)
    ):
        problems.error(f"{yaml_path}:kpt_shape", "kpt_shape must be [number of keypoints, 2 or 3]")
        kpt_shape = None
    listed: dict[str, str] = {}
    if cfg:
        listed = listed_splits(source, cfg, yaml_path or "data.yaml", problems)
    elif darknet:
        listed = listed_splits(source, darknet, DARKNET_DATA, problems)

    beside = _beside_labels(source)
    label_files = {f for f in files if is_label_file(f)} | beside
    beside_folders = {posixpath.dirname(f) for f in beside}
    used_labels: set[str] = set()
    pending: list[tuple[Image, str, list[tuple[int, list[float]]]]] = []
    outside = unlisted = 0
    for path in source.images():
        label = next((c for c in yolo_label_candidates(path) if c in label_files), None)
        folders = path.split("/")[:-1]
        if (
            label is None
            and "images" not in folders
            and path not in listed
            and posixpath.dirname(path) not in beside_folders
        ):
            outside += 1
            continue
        try:
            size = source.image_size(path)
        except Exception as exc:  # PIL raises many types for broken files
            problems.error(path, f"cannot read the image: {exc}")
            continue
        if size is None:
            continue
        split = listed.get(path)
        if split is None:
            split = split_from_path(path)
            unlisted += bool(listed)
        image = Image(len(pending) + 1, path, size[0], size[1], split, origin=path)
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
    if unlisted:
        problems.warning(
            yaml_path or DARKNET_DATA,
            f"{unlisted} image(s) are in none of its train/val/test entries; their split "
            "comes from their folder names",
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
    if not names and top:
        problems.warning(
            "names",
            f"no class names: the {top} class(es) are named by their index (0..{top - 1}); "
            "pass class_names (vmesh --names FILE) or add a data.yaml with names",
        )
    for i in range(top):
        name = names[i] if names and i < count else str(i)
        ds.categories.append(Category(i, name, keypoints=list(kp_names), origin=f"names[{i}]"))
