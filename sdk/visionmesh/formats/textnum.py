"""Fast text for normalized coordinates: numbers in [0, 1] as ``d.dddddd`` without a Python loop.

YOLO label files hold millions of such numbers; formatting them one by one dominates a
conversion. Here a whole batch becomes bytes with a handful of numpy operations (two
digits at a time from a lookup table). Six decimals keep every value within 5e-7.
"""

from __future__ import annotations

import numpy as np

WIDTH = 9  # "0.123456" and a separator
# "00".."99" as little-endian uint16: one gather gives two characters.
_PAIRS = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), dtype="<u2")
_PREFIXES = [f"{i} ".encode() for i in range(1000)]


def fixed6(values: np.ndarray) -> np.ndarray:
    """``(n, 9)`` uint8 rows ``b"d.dddddd "`` for values in [0, 1] (callers clip first)."""
    ints = np.rint(np.asarray(values, dtype=np.float64).ravel() * 1e6).astype(np.int32)
    out = np.empty((ints.size, WIDTH), dtype=np.uint8)
    whole = ints // 1_000_000
    frac = ints - whole * 1_000_000
    out[:, 0] = whole + 48
    out[:, 1] = 46  # "."
    high = frac // 10_000
    rest = frac - high * 10_000
    mid = rest // 100
    out[:, 2:4] = _PAIRS[high].view(np.uint8).reshape(-1, 2)
    out[:, 4:6] = _PAIRS[mid].view(np.uint8).reshape(-1, 2)
    out[:, 6:8] = _PAIRS[rest - mid * 100].view(np.uint8).reshape(-1, 2)
    out[:, 8] = 32  # " "
    return out


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
