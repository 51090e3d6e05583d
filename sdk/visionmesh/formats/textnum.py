"""Fast text for normalized coordinates: numbers in [0, 1] as ``d.dddddd`` without a Python loop.

YOLO label files hold millions of such numbers; formatting them one by one dominates a
conversion. Here a whole batch becomes bytes with a handful of numpy operations (each
number's eight characters from two lookup tables). Six decimals keep every value within 5e-7.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

WIDTH = 9  # "0.123456" and a separator
# A cell is one little-endian word ("d.dddddd", eight characters) and its separator.
_CELL = np.dtype([("text", "<u8"), ("sep", "u1")])
# The first five characters "d.ddd" of k / 1000 (k < 10000), and the last three "ddd" of
# k (k < 1000) in bytes 5..7: one gather each, one "or" makes the word.
_HEAD = np.frombuffer(
    b"".join(b"%d.%03d\0\0\0" % divmod(k, 1000) for k in range(10_000)), dtype="<u8"
)
_TAIL = np.frombuffer(b"".join(b"\0\0\0\0\0%03d" % k for k in range(1000)), dtype="<u8")
_PREFIXES = [f"{i} ".encode() for i in range(1000)]


def fixed6(values: np.ndarray) -> np.ndarray:
    """``(n, 9)`` uint8 rows ``b"d.dddddd "`` for values in [0, 1] (callers clip first;
    anything in [0, 10) is written right, anything else is clipped into that range)."""
    ints = np.rint(np.asarray(values, dtype=np.float64).ravel() * 1e6).astype(np.int32)
    np.clip(ints, 0, 9_999_999, out=ints)
    high = ints // 1000
    low = ints - high * 1000
    cells = np.empty(ints.size, dtype=_CELL)
    cells["text"] = _HEAD[high] | _TAIL[low]
    cells["sep"] = 32  # " "
    return cells.view(np.uint8).reshape(-1, WIDTH)


def lines(
    classes: list[int],
    values: np.ndarray,
    counts: np.ndarray,
) -> list[bytes]:
    """One ``b"cls v1 v2 ...\\n"`` per row; row ``r`` owns the next ``counts[r]`` values."""
    cells = fixed6(values)
    ends = np.cumsum(counts)
    if ends.size:
        cells[ends - 1, 8] = 10  # "\n" after each row's last value
    text = cells.tobytes()
    stops = (ends * WIDTH).tolist()
    starts = [0, *stops[:-1]]
    prefixes = _PREFIXES
    return [
        (prefixes[c] if c < 1000 else b"%d " % c) + text[a:b]
        for c, a, b in zip(classes, starts, stops, strict=True)
    ]


_PREFIX_SIZES = np.array([len(p) for p in _PREFIXES], dtype=np.int64)


def grouped_lines(
    classes: list[int],
    values: np.ndarray,
    counts: np.ndarray,
    groups: np.ndarray,
) -> list[bytes]:
    """The rows of :func:`lines`, joined per group: group ``g`` holds rows
    ``groups[g]`` to ``groups[g + 1] - 1`` (one text per image, made without a Python
    loop over the rows)."""
    if not classes or max(classes) >= 1000:  # class numbers past the table: row by row
        rows = lines(classes, values, counts)
        bounds = np.asarray(groups).tolist()
        return [b"".join(rows[a:b]) for a, b in pairwise(bounds)]
    cells = fixed6(values)
    ends = np.cumsum(counts)
    cells[ends - 1, 8] = 10  # "\n" after each row's last value
    sizes = _PREFIX_SIZES[np.asarray(classes, dtype=np.int64)]
    prefixes = np.frombuffer(b"".join(map(_PREFIXES.__getitem__, classes)), dtype=np.uint8)
    # Each row's class prefix goes in front of its first cell.
    at = np.repeat((ends - counts) * WIDTH, sizes)
    text = np.insert(cells.reshape(-1), at, prefixes).tobytes()
    offsets = np.concatenate([[0], np.cumsum(counts * WIDTH + sizes)])[groups].tolist()
    return [text[a:b] for a, b in pairwise(offsets)]
