"""Validation of a :class:`Dataset`: every problem, with the path it is about.

Errors make a dataset unusable as given (an import refuses it); warnings are worth a
look but do not stop anything. Paths are those of the source document when the reader
recorded them (``images[3].annotations[1].bbox``, ``labels/train/a.txt:4``), else those of
the DICE standard document (``annotations[17].bbox``).
"""

from __future__ import annotations

import math
from collections import defaultdict
from itertools import chain

import numpy as np

from .model import BACKGROUND, Dataset, Image
from .paths import check_relative
from .problems import Problem, ProblemList, show
from .source import Source

# Boxes and polygons may overhang the image by this many pixels (rounding in annotation
# tools, Roboflow's sub-pixel overruns).
BBOX_TOLERANCE = 1.0
# Category names: at most this many characters, no control characters (NUL, newlines).
MAX_NAME_LENGTH = 256
_VISIBILITY = (0, 1, 2)


def _at(origin: str, field: str) -> str:
    """``annotations[3]`` + ``bbox`` -> ``annotations[3].bbox``; file origins stay as they are."""
    return f"{origin}.{field}" if origin.endswith("]") else origin


def _is_int(value: object) -> bool:
    return type(value) is int


def _key(value: object) -> object:
    """``value`` when it can be a dict key, else a stand-in that matches nothing."""
    return value if type(value) in (int, float, str, bool, type(None)) else _UNHASHABLE


_UNHASHABLE = object()


def _value_set(column: list) -> set:
    """The distinct values of a column, unhashable ones as one stand-in (fast when none)."""
    try:
        return set(column)
    except TypeError:
        return set(map(_key, column))


def validate(
    dataset: Dataset,
    source: Source | None = None,
    *,
    check_images: bool = True,
    check_duplicates: bool | None = None,
) -> list[Problem]:
    """All problems of ``dataset``; with a ``source``, image files are checked too.

    ``check_images``: each image must exist in the source and its decoded size must match
    width/height. ``check_duplicates`` (default: with ``check_images``): byte-identical
    images are reported (hashing only files of equal size).
    """
    problems = ProblemList()
    categories = _check_categories(dataset, problems)
    sizes = _check_images(dataset, problems)
    _check_annotations(dataset, categories, sizes, problems)
    if source is not None and check_images:
        _check_files(dataset, source, problems)
        if check_duplicates is None or check_duplicates:
            _check_duplicates(dataset, source, problems)
    return problems


def _check_categories(dataset: Dataset, problems: ProblemList) -> dict[int, int]:
    """Category id -> number of keypoint names."""
    seen: dict[int, str] = {}
    names: dict[str, str] = {}
    out: dict[int, int] = {}
    for i, c in enumerate(dataset.categories):
        p = c.origin or f"categories[{i}]"
        if not _is_int(c.id) or c.id < 0:
            problems.error(_at(p, "id"), f"category id {show(c.id)} must be a non-negative integer")
        elif c.id in seen:
            problems.error(_at(p, "id"), f"duplicate category id {c.id} (also {seen[c.id]})")
        else:
            seen[c.id] = p
            out[c.id] = len(c.keypoints)
        if not isinstance(c.name, str) or not c.name.strip():
            problems.error(_at(p, "name"), "category name must be a non-empty string")
        elif len(c.name) > MAX_NAME_LENGTH:
            problems.error(
                _at(p, "name"),
                f"category name of {len(c.name)} characters; at most {MAX_NAME_LENGTH}",
            )
        elif any(ch < " " or "\x7f" <= ch < "\xa0" for ch in c.name):
            problems.error(
                _at(p, "name"),
                f"category name {show(c.name)} has control characters (NUL, newline...)",
            )
        elif c.name in names:
            problems.warning(
                _at(p, "name"), f"category name {show(c.name)} is also {names[c.name]}"
            )
        else:
            names[c.name] = p
        if any(not isinstance(k, str) for k in c.keypoints):
            problems.error(_at(p, "keypoints"), "keypoint names must be strings")
        count = len(c.keypoints)
        if not isinstance(c.skeleton, list):
            continue
        for j, pair in enumerate(c.skeleton):
            if not count:
                # No keypoint names (pycocotools reads such categories): only the shape.
                if not isinstance(pair, list) or len(pair) != 2 or not all(map(_is_int, pair)):
                    problems.error(_at(p, f"skeleton[{j}]"), "a skeleton edge must be two numbers")
                continue
            if (
                not isinstance(pair, list)
                or len(pair) != 2
                or not all(_is_int(k) and 1 <= k <= count for k in pair)
            ):
                problems.error(
                    _at(p, f"skeleton[{j}]"),
                    f"a skeleton edge must be two keypoint numbers in 1..{count}",
                )
    return out


def _check_images(dataset: Dataset, problems: ProblemList) -> dict[object, tuple[int, int] | None]:
    """Image id -> (width, height), None where the size itself is invalid."""
    sizes: dict[object, tuple[int, int] | None] = {}
    where: dict[object, str] = {}
    paths: dict[str, str] = {}
    for i, im in enumerate(dataset.images):
        p = im.origin or f"images[{i}]"
        if not _is_int(im.id) or im.id < 0:
            problems.error(_at(p, "id"), f"image id {show(im.id)} must be a non-negative integer")
        elif im.id in where:
            problems.error(_at(p, "id"), f"duplicate image id {im.id} (also {where[im.id]})")
        else:
            where[im.id] = p
        norm, message, is_error = check_relative(im.path)
        if message and is_error:
            problems.error(_at(p, "file_name"), message)
        elif norm in paths:
            problems.error(
                _at(p, "file_name"), f"{show(norm)} is listed twice (also {paths[norm]})"
            )
        else:
            paths[norm] = p
        ok = True
        for field, value in (("width", im.width), ("height", im.height)):
            if not _is_int(value) or value <= 0:
                problems.error(_at(p, field), f"{field} {show(value)} must be a positive integer")
                ok = False
        if _key(im.id) not in sizes:
            sizes[_key(im.id)] = (im.width, im.height) if ok else None
        if not isinstance(im.sha256, str):
            problems.error(_at(p, "sha256"), f"sha256 {show(im.sha256)} must be a hex string")
        if im.split not in ("", "train", "val", "test"):
            problems.error(_at(p, "split"), f"split {show(im.split)} must be train, val or test")
    return sizes


def _check_annotations(
    dataset: Dataset,
    categories: dict[int, int],
    sizes: dict[object, tuple[int, int] | None],
    problems: ProblemList,
) -> None:
    """Duplicate ids over all annotations, then every other check on those a screen flags."""
    anns = dataset.annotations
    _check_duplicate_ids(anns, problems)
    background = {c.id for c in dataset.categories if c.name == BACKGROUND}
    for i in sorted(_screen(anns, categories, sizes, background)):
        _check_annotation(i, anns[i], categories, sizes, background, problems)


def _check_duplicate_ids(anns: list, problems: ProblemList) -> None:
    ids = [a.id for a in anns]
    if set(map(type, ids)) <= {int} and len(set(ids)) == len(ids):
        return
    seen: dict[object, int] = {}
    for i, aid in enumerate(ids):
        if type(aid) is not int or aid < 0:
            continue  # reported with the annotation's other checks
        if aid in seen:
            j = seen[aid]
            p = anns[i].origin or f"annotations[{i}]"
            other = anns[j].origin or f"annotations[{j}]"
            problems.error(_at(p, "id"), f"duplicate annotation id {aid} (also {other})")
        else:
            seen[aid] = i


def _flagged(mask: np.ndarray) -> set[int]:
    return set(np.flatnonzero(mask).tolist())


def _screen(
    anns: list,
    categories: dict[int, int],
    sizes: dict[object, tuple[int, int] | None],
    background: set[int],
) -> set[int]:
    """Indices of annotations that may have a problem, found with whole-column checks.

    Anything the columns cannot vouch for (odd types, geometry near a limit, keypoints,
    polygons given as lists) is flagged for the detailed check, so nothing is missed.
    """
    n = len(anns)
    if n == 0:
        return set()
    flagged: set[int] = set()
    ids = [a.id for a in anns]
    if not set(map(type, ids)) <= {int}:
        flagged.update(i for i, v in enumerate(ids) if type(v) is not int)
    elif min(ids) < 0:
        flagged.update(i for i, v in enumerate(ids) if v < 0)
    image_ids = [a.image_id for a in anns]
    cat_ids = [a.category_id for a in anns]
    known_images = {k for k, v in sizes.items() if v is not None}
    for column, known in ((image_ids, known_images), (cat_ids, set(categories) - background)):
        if not _value_set(column) <= known:
            flagged.update(i for i, v in enumerate(column) if _key(v) not in known)
    crowd = [a.iscrowd for a in anns]
    if not _value_set(crowd) <= {0, 1}:
        flagged.update(i for i, v in enumerate(crowd) if v not in (0, 1))
    areas = [a.area for a in anns]
    if not set(map(type, areas)) <= {int, float, type(None)}:
        flagged.update(i for i, v in enumerate(areas) if type(v) not in (int, float, type(None)))
    else:
        if None in areas:
            given = [i for i, v in enumerate(areas) if v is not None]
            values = np.asarray([areas[i] for i in given], dtype=np.float64)
        else:  # every area given: no index list to make
            given = range(n)
            values = np.fromiter(areas, dtype=np.float64, count=n)
        bad = ~(np.isfinite(values) & (values >= 0))
        flagged.update(given[k] for k in np.flatnonzero(bad).tolist())
    wh_all = image_sizes(image_ids, sizes)
    flagged |= _screen_boxes(anns, wh_all)
    segs = [a.segmentation for a in anns]
    single = _single_buffer_polygons(segs)
    if single is not None:
        flagged |= _screen_extents(single, np.arange(n, dtype=np.int64), wh_all)
    else:
        flagged |= _screen_polygons(anns)
        flagged |= _screen_polygon_bounds(anns, wh_all)
    flagged.update(i for i, a in enumerate(anns) if a.keypoints is not None)
    return flagged


def _single_buffer_polygons(segs: list) -> tuple[np.ndarray, np.ndarray] | None:
    """The usual case in one go: every annotation has exactly one polygon, a slice of a
    1-D float64 buffer (as fastjson reads them) with an even count of at least 6 finite
    numbers. Returns (coordinates one after another, count per polygon), else None."""
    if not segs or set(map(type, segs)) != {list} or set(map(len, segs)) != {1}:
        return None
    polys = [s[0] for s in segs]
    if set(map(type, polys)) != {np.ndarray}:
        return None
    bases = {id(p.base): p.base for p in polys}
    if not all(
        type(b) is np.ndarray and b.ndim == 1 and b.dtype == np.float64 for b in bases.values()
    ):
        return None
    lengths = np.fromiter(map(len, polys), dtype=np.int64, count=len(polys))
    if lengths.min() < 6 or (lengths & 1).any():
        return None
    try:
        flat = np.concatenate(polys)
    except ValueError:  # arrays of other shapes
        return None
    if flat.ndim != 1 or flat.size != int(lengths.sum()) or not np.isfinite(flat).all():
        return None
    return flat, lengths


def _screen_polygons(anns: list) -> set[int]:
    """Annotations whose polygons may be wrong; all polygons checked at once when possible."""
    segs = [a.segmentation for a in anns if a.segmentation is not None]
    if not segs:
        return set()
    if set(map(type, segs)) == {list}:
        polys = list(chain.from_iterable(segs))
        kinds = set(map(type, polys))
        lengths = None
        if polys and kinds <= {list, np.ndarray}:
            lengths = np.fromiter(map(len, polys), dtype=np.int64, count=len(polys))
        shapes_ok = lengths is not None and lengths.min() >= 6 and not (lengths & 1).any()
        if shapes_ok and kinds == {np.ndarray}:
            bases = {id(p.base): p.base for p in polys}
            if all(
                type(b) is np.ndarray and b.ndim == 1 and b.dtype == np.float64
                for b in bases.values()
            ) and all(bool(np.isfinite(b).all()) for b in bases.values()):
                return set()  # 1-D slices of finite 1-D float buffers
        elif shapes_ok and kinds == {list}:
            try:
                total = math.fsum(map(sum, polys))
            except TypeError:
                total = math.nan
            if total == total and total not in (math.inf, -math.inf):
                return set()
    checked: dict[int, tuple[np.ndarray, bool]] = {}
    return {
        i
        for i, a in enumerate(anns)
        if a.segmentation is not None and not _plain_polygons(a.segmentation, checked)
    }


def image_sizes(image_ids: list, sizes: dict) -> np.ndarray:
    """``(n, 2)`` width and height of each annotation's image (inf where unknown): looked up
    in numpy when the ids are plain integers."""
    n = len(image_ids)
    known = [(k, v) for k, v in sizes.items() if v is not None and type(k) is int]
    if known and set(map(type, image_ids)) <= {int}:
        try:
            keys = np.fromiter((k for k, _ in known), dtype=np.int64, count=len(known))
            ids = np.fromiter(image_ids, dtype=np.int64, count=n)
        except OverflowError:
            pass  # ids beyond 64 bits: the plain way below
        else:
            vals = np.asarray([v for _, v in known], dtype=np.float64)
            order = np.argsort(keys, kind="stable")
            keys, vals = keys[order], vals[order]
            pos = np.minimum(np.searchsorted(keys, ids), len(keys) - 1)
            hit = keys[pos] == ids
            out = np.full((n, 2), np.inf)
            out[hit] = vals[pos[hit]]
            return out
    get, unknown = sizes.get, (np.inf, np.inf)
    return np.asarray([get(_key(i)) or unknown for i in image_ids], dtype=np.float64).reshape(-1, 2)


def _screen_polygon_bounds(anns: list, wh_all: np.ndarray) -> set[int]:
    """Annotations with a polygon point outside their image: each polygon's extent, all
    polygons at once (nothing per vertex is made but one flat copy of the coordinates)."""
    segs = [a.segmentation for a in anns]
    rows = [i for i, seg in enumerate(segs) if type(seg) is list and seg]
    if not rows:
        return set()
    per_row = np.fromiter(map(len, [segs[i] for i in rows]), dtype=np.int64, count=len(rows))
    rows_arr = np.asarray(rows, dtype=np.int64)
    if int(per_row.max()) == 1:  # one polygon each, the usual case
        polys = [segs[i][0] for i in rows]
        owner = rows_arr
    else:
        polys = list(chain.from_iterable(segs[i] for i in rows))
        owner = np.repeat(rows_arr, per_row)
    try:
        lengths = np.fromiter(map(len, polys), dtype=np.int64, count=len(polys))
    except TypeError:
        return set(owner.tolist())  # odd shapes: the detailed check reports them
    even = (lengths >= 2) & ((lengths & 1) == 0)
    if not even.all():
        keep = np.flatnonzero(even)
        polys = [polys[k] for k in keep.tolist()]
        owner, lengths = owner[keep], lengths[keep]
        if not polys:
            return set()
    try:
        flat = np.concatenate(polys).astype(np.float64, copy=False)
    except (TypeError, ValueError):
        return set(owner.tolist())
    if flat.ndim != 1 or flat.size != int(lengths.sum()):
        return set(owner.tolist())
    return _screen_extents((flat, lengths), owner, wh_all)


def _screen_extents(
    polygons: tuple[np.ndarray, np.ndarray], owner: np.ndarray, wh_all: np.ndarray
) -> set[int]:
    """Owners of the polygons (flat coordinates, count per polygon) that reach outside
    their image or hold a non-finite number."""
    flat, lengths = polygons
    tol = BBOX_TOLERANCE
    starts = np.cumsum(lengths // 2) - lengths // 2
    xs, ys = flat[0::2], flat[1::2]
    wh = wh_all[owner]
    bad = np.minimum.reduceat(xs, starts) < -tol
    bad |= np.minimum.reduceat(ys, starts) < -tol
    bad |= np.maximum.reduceat(xs, starts) > wh[:, 0] + tol
    bad |= np.maximum.reduceat(ys, starts) > wh[:, 1] + tol
    bad |= ~np.isfinite(np.add.reduceat(flat, 2 * starts))  # NaN compares false
    return set(owner[bad].tolist())


def _screen_boxes(anns: list, wh_all: np.ndarray) -> set[int]:
    rows = [i for i, a in enumerate(anns) if a.bbox is not None]
    if not rows:
        return set()
    boxes = [anns[i].bbox for i in rows]
    if not set(map(type, boxes)) <= {list} or set(map(len, boxes)) != {4}:
        return set(rows)
    if not set(map(type, chain.from_iterable(boxes))) <= {int, float}:
        return set(rows)
    b = np.fromiter(chain.from_iterable(boxes), dtype=np.float64, count=4 * len(boxes))
    b = b.reshape(-1, 4)
    wh = wh_all[np.asarray(rows, dtype=np.int64)]
    tol = BBOX_TOLERANCE
    ok = (
        np.isfinite(b).all(axis=1)
        & (b[:, 2] > 0)
        & (b[:, 3] > 0)
        & (b[:, 0] >= -tol)
        & (b[:, 1] >= -tol)
        & (b[:, 0] + b[:, 2] <= wh[:, 0] + tol)
        & (b[:, 1] + b[:, 3] <= wh[:, 1] + tol)
    )
    return {rows[k] for k in np.flatnonzero(~ok).tolist()}


def _plain_polygons(polygons: object, checked: dict[int, tuple[np.ndarray, bool]]) -> bool:
    """True when every polygon surely passes: numbers, even count, at least 3 points."""
    if type(polygons) is not list:
        return False
    for p in polygons:
        t = type(p)
        if t is np.ndarray:
            n = p.size
            if n < 6 or n % 2 or p.ndim != 1 or not _finite_buffer(p, checked):
                return False
        elif t is list:
            n = len(p)
            if n < 6 or n % 2:
                return False
            try:
                total = sum(p)
            except TypeError:
                return False
            if total != total or total in (math.inf, -math.inf):
                return False
        else:
            return False
    return True


def _finite_buffer(p: np.ndarray, checked: dict[int, tuple[np.ndarray, bool]]) -> bool:
    """Whether an array polygon is finite, checking a shared buffer only once per pass."""
    base = p.base
    if base is None or type(base) is not np.ndarray or base.dtype != np.float64:
        return p.dtype == np.float64 and bool(np.isfinite(p).all())
    known = checked.get(id(base))
    if known is None:
        known = (base, bool(np.isfinite(base).all()))  # the reference keeps the id valid
        checked[id(base)] = known
    return known[1] or bool(np.isfinite(p).all())


def _check_annotation(
    i: int,
    a: object,
    categories: dict[int, int],
    sizes: dict[object, tuple[int, int] | None],
    background: set[int],
    problems: ProblemList,
) -> None:
    p = a.origin or f"annotations[{i}]"
    aid = a.id
    if not _is_int(aid) or aid < 0:
        problems.error(_at(p, "id"), f"annotation id {show(aid)} must be a non-negative integer")
    size = sizes.get(_key(a.image_id))
    if size is None and _key(a.image_id) not in sizes:
        problems.error(_at(p, "image_id"), f"image id {show(a.image_id)} does not exist")
    cid = a.category_id
    if _key(cid) not in categories:
        problems.error(_at(p, "category_id"), f"category id {show(cid)} does not exist")
    b = a.bbox
    if b is not None:
        message = _bbox_problem(b, size, BBOX_TOLERANCE)
        if message:
            problems.error(_at(p, "bbox"), message)
    if a.segmentation is not None:
        _check_polygons(a.segmentation, p, problems, size)
    kp = a.keypoints
    if kp is not None:
        _check_keypoints(kp, categories.get(_key(cid), 0), p, problems)
    if a.iscrowd not in (0, 1):
        problems.error(_at(p, "iscrowd"), f"iscrowd {show(a.iscrowd)} must be 0 or 1")
    if a.area is not None and (
        type(a.area) not in (int, float) or not a.area >= 0 or a.area == math.inf
    ):
        problems.error(_at(p, "area"), f"area {show(a.area)} must be a non-negative number")
    if _key(cid) in background and (b is not None or a.segmentation or kp):
        problems.warning(
            p, "a __background__ annotation marks a negative image; its geometry is ignored"
        )


def _bbox_problem(b: object, size: tuple[int, int] | None, tol: float) -> str | None:
    if type(b) is not list or len(b) != 4:
        return "bbox must be 4 numbers [x, y, width, height]"
    try:
        x, y, w, h = b
        total = x + y + w + h
        if not all(type(v) in (int, float) for v in b):
            raise TypeError
    except TypeError:
        return f"bbox {show(b)} must be 4 numbers [x, y, width, height]"
    if total != total or total in (math.inf, -math.inf):
        return f"bbox {show(b)} has non-finite numbers"
    if w <= 0 or h <= 0:
        return f"bbox {show(b)} has width or height <= 0"
    if size is not None:
        width, height = size
        if x < -tol or y < -tol or x + w > width + tol or y + h > height + tol:
            return f"bbox {show(b)} extends outside the {width}x{height} image"
    return None


def _check_polygons(
    polygons: object, p: str, problems: ProblemList, size: tuple[int, int] | None = None
) -> None:
    if type(polygons) is not list:
        problems.error(_at(p, "segmentation"), "segmentation must be a list of polygons")
        return
    if polygons and all(type(v) in (int, float) for v in polygons):
        problems.error(
            _at(p, "segmentation"),
            "segmentation is one flat list of numbers; COCO wants a list of polygons "
            "[[x1, y1, x2, y2, ...]]",
        )
        return
    for k, poly in enumerate(polygons):
        where = _at(p, f"segmentation[{k}]")
        if type(poly) is np.ndarray and poly.ndim == 1:
            poly = poly.tolist()
        if type(poly) is not list:
            problems.error(where, "a polygon must be a flat list [x1, y1, x2, y2, ...]")
            continue
        n = len(poly)
        if n % 2:
            problems.error(where, f"odd number of coordinates ({n}); a polygon needs x, y pairs")
            continue
        if n < 6:
            problems.error(where, f"{n // 2} point(s); a polygon needs at least 3")
            continue
        try:
            total = sum(poly)
        except TypeError:
            problems.error(where, "polygon coordinates must be numbers")
            continue
        if total != total or total in (math.inf, -math.inf):
            problems.error(where, "polygon coordinates must be finite numbers")
            continue
        if size is not None:
            xs, ys = poly[0::2], poly[1::2]
            tol = BBOX_TOLERANCE
            x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
            if x0 < -tol or y0 < -tol or x1 > size[0] + tol or y1 > size[1] + tol:
                problems.error(
                    where,
                    f"polygon points x {x0:g}..{x1:g}, y {y0:g}..{y1:g} extend outside the "
                    f"{size[0]}x{size[1]} image",
                )


def _check_keypoints(kp: object, expected: int, p: str, problems: ProblemList) -> None:
    where = _at(p, "keypoints")
    if type(kp) is not list:
        problems.error(where, "keypoints must be a flat list [x1, y1, v1, ...]")
        return
    n = len(kp)
    if n % 3:
        problems.error(where, f"{n} values is not a multiple of 3 (x, y, visibility)")
        return
    try:
        total = sum(kp)
    except TypeError:
        problems.error(where, "keypoints must be numbers")
        return
    if total != total or total in (math.inf, -math.inf):
        problems.error(where, "keypoints must be finite numbers")
        return
    if any(v not in _VISIBILITY for v in kp[2::3]):
        problems.error(where, "keypoint visibility must be 0, 1 or 2")
    if expected and n // 3 != expected:
        problems.error(where, f"{n // 3} keypoints but the category names {expected}")


def _check_files(dataset: Dataset, source: Source, problems: ProblemList) -> None:
    for i, im in enumerate(dataset.images):
        p = im.origin or f"images[{i}]"
        if not isinstance(im.path, str) or not im.path:
            continue
        if not source.has_image(im.path):
            problems.error(_at(p, "file_name"), f"image file not found: {im.path}")
            continue
        try:
            size = source.image_size(im.path)
        except Exception as exc:  # PIL raises many types for broken files
            problems.error(_at(p, "file_name"), f"cannot read the image {im.path}: {exc}")
            continue
        if size is not None and size != (im.width, im.height):
            hint = ""
            if size == (im.height, im.width):
                hint = " (swapped: the EXIF orientation rotates this image)"
            problems.error(
                _at(p, "width"),
                f"width x height {show(im.width)}x{show(im.height)} disagree with the image file's "
                f"{size[0]}x{size[1]}{hint}",
            )


def _check_duplicates(dataset: Dataset, source: Source, problems: ProblemList) -> None:
    """Byte-identical images: only files of equal size (or with known hashes) are hashed."""
    by_size: dict[object, list[tuple[int, Image]]] = defaultdict(list)
    for i, im in enumerate(dataset.images):
        if not isinstance(im.path, str) or not source.has_image(im.path):
            continue
        key = source.image_byte_size(im.path)
        if key is None:
            given = im.sha256 if isinstance(im.sha256, str) else ""
            key = ("sha256", given or source.image_sha256(im.path))
            if key[1] is None:
                continue
        by_size[key].append((i, im))
    for group in by_size.values():
        if len(group) < 2:
            continue
        group.sort(key=lambda item: (len(item[1].path), item[1].path))  # shortest = original
        first_by_hash: dict[str, tuple[int, Image]] = {}
        for i, im in group:
            digest = (im.sha256 if isinstance(im.sha256, str) else "") or source.image_sha256(
                im.path
            )
            if digest is None:
                continue
            im.sha256 = digest
            if digest not in first_by_hash:
                first_by_hash[digest] = (i, im)
                continue
            _, first = first_by_hash[digest]
            p = im.origin or f"images[{i}]"
            message = f"byte-identical to {first.path}"
            if first.split != im.split and first.split and im.split:
                message += f": the same image is in {first.split} and {im.split}"
            problems.warning(_at(p, "file_name"), message)
