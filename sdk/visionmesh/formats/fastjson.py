"""Load big COCO-family JSON fast: polygon coordinates go straight into numpy.

A COCO file is mostly ``"segmentation": [[x1, y1, x2, y2, ...]]`` number lists. Making
millions of Python floats out of them is what makes ``json.load`` slow and large. Here
each number-only segmentation block is cut out of the text, replaced by a marker integer,
and the blocks are parsed by a vectorized decimal parser into float64 buffers, a chunk
at a time; the rest of the document goes through orjson (see
:func:`json_loads`). Readers then swap each marker for its polygons: 1-D float64 views
of those buffers (:class:`PolygonTable`).

Anything unusual (exponents, long numbers, odd spacing, malformed text) leaves that block
to the JSON parser, and any inconsistency falls back to parsing the whole text, so the
result means what ``json.loads`` would have produced (but for integers beyond 64 bits).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import numpy as np
import orjson

_KEY = b'"segmentation"'
MARKER_BASE = 1 << 62  # markers are MARKER_BASE + block index
_CLEAN_CHARS = b"0123456789.-,]| "
_SPACE = b" \t\r\n"
_VALUE = re.compile(rb"\s*:\s*\[\s*\[")
_JSON_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
# Bytes of number text parsed at once. The parser's temporaries (a few hundred kilobytes
# each at this size) then come from reused heap memory; at 1 MB glibc mapped fresh pages
# for them chunk after chunk (four times the page faults, about 0.1 s of system time
# for 90 MB of polygons).
_CHUNK = 400_000
_MIN_BLOCKS = 64  # below this many blocks plain json is as fast

_U64 = np.uint64
_ONES = _U64(0x0101010101010101)
_HIGHS = _U64(0x8080808080808080)
_DOTS = _U64(0x2E2E2E2E2E2E2E2E)
_ZEROS = _U64(0x3030303030303030)
# _LOW[k]: a mask of the k low bytes (k = 0..8).
_LOW = np.array([(1 << (8 * k)) - 1 for k in range(9)], dtype=_U64)
_FILL = _LOW & _ZEROS
_POW10 = 10.0 ** np.arange(20)


class PolygonTable:
    """The polygons cut out of a document, handed out by marker in document order.

    Coordinates live in a few float64 buffers (one per parsed chunk; a block never spans
    two), and each polygon is a 1-D view of one of them.
    """

    def __init__(
        self, buffers: list[np.ndarray], poly_sizes: np.ndarray, block_polys: np.ndarray
    ) -> None:
        self.buffers = buffers
        starts = np.cumsum(poly_sizes) - poly_sizes  # first coordinate, over all buffers
        lengths = np.asarray([b.size for b in buffers], dtype=np.int64)
        buffer_ends = np.cumsum(lengths)
        which = np.searchsorted(buffer_ends, starts, side="right")
        offsets = starts - (buffer_ends - lengths)[which]
        polygons = [
            buffers[b][o:e]
            for b, o, e in zip(
                which.tolist(), offsets.tolist(), (offsets + poly_sizes).tolist(), strict=True
            )
        ]
        # The polygons of each block, in block order: what each marker stands for.
        if len(polygons) == len(block_polys):  # one polygon per block, the usual case
            self.blocks = [[p] for p in polygons]
        else:
            first = (np.cumsum(block_polys) - block_polys).tolist()
            self.blocks = [
                polygons[f : f + c] for f, c in zip(first, block_polys.tolist(), strict=True)
            ]
        self.claimed = 0

    def __len__(self) -> int:
        return len(self.blocks)

    def is_marker(self, value: Any) -> bool:
        return type(value) is int and MARKER_BASE <= value < MARKER_BASE + len(self.blocks)

    def take(self, marker: int) -> list[np.ndarray]:
        """The polygons (float64 views) of the block a marker stands for."""
        self.claimed += 1
        return self.blocks[marker - MARKER_BASE]

    @property
    def complete(self) -> bool:
        """Every block was claimed by a reader (else some marker sits elsewhere)."""
        return self.claimed == len(self.blocks)


MAX_DEPTH = 1024  # orjson's nesting limit; deeper documents are refused, never recursed into


class NestingError(ValueError):
    """A JSON document nested deeper than MAX_DEPTH."""


def _json_module_loads(data: bytes | bytearray) -> Any:
    """json.loads, with its RecursionError on deep nesting turned into a NestingError."""
    try:
        return json.loads(data)
    except RecursionError:
        raise NestingError(f"JSON nested deeper than {MAX_DEPTH} levels") from None


def json_loads(data: bytes | bytearray) -> Any:
    """``json.loads``, through orjson (about twice as fast) when it accepts the text.

    Texts orjson refuses (NaN/Infinity literals, malformed JSON) go to json, which also
    reports the errors, so messages are json's. One difference remains: an integer beyond
    64 bits comes back as a float (json gives an int). No id or coordinate can be that
    large; validation reports such an id as not an integer.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if "depth limit" in str(exc):
            raise NestingError(f"JSON nested deeper than {MAX_DEPTH} levels") from None
        return _json_module_loads(data)


def loads(data: bytes) -> tuple[Any, PolygonTable | None]:
    """Parse JSON text; returns ``(document, table)``, table None when nothing was cut out.

    Raises ``ValueError`` (``json.JSONDecodeError``) for malformed JSON, like ``json.loads``.
    """
    spans = _find_blocks(data)  # as fast as counting the keys when there are none
    if len(spans) < _MIN_BLOCKS:
        return json_loads(data), None
    parsed = _parse_blocks(data, spans)
    if parsed is None:
        return json_loads(data), None
    buffers, sizes, block_polys, kept = parsed
    doc = _loads_or_none(_skeleton(data, kept))
    if doc is None:
        return _json_module_loads(data), None  # raises the error json reports on the real text
    return doc, PolygonTable(buffers, sizes, block_polys)


def _loads_or_none(text: bytes | bytearray) -> Any:
    try:
        return json_loads(text)
    except ValueError:
        return None


def _find_blocks(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each ``[[...]]`` value of a "segmentation" key."""
    spans: list[tuple[int, int]] = []
    append = spans.append
    find, match, at = data.find, _VALUE.match, data.startswith
    pos = 0
    while True:
        i = find(_KEY, pos)
        if i < 0:
            return spans
        pos = i + len(_KEY)
        if data[i - 1] == 92:  # a backslash: the key is inside a string
            continue
        if at(b": [[", pos):  # the usual spacing, without the regular expression
            start = pos + 2
        elif at(b":[[", pos):
            start = pos + 1
        else:
            m = match(data, pos)
            if m is None:
                continue
            start = m.end() - 2
        end = find(b"]]", start)
        if end < 0:
            return spans
        pos = end + 2
        append((start, pos))


def _parse_blocks(
    data: bytes, spans: list[tuple[int, int]]
) -> tuple[list[np.ndarray], np.ndarray, np.ndarray, list[tuple[int, int]]] | None:
    """Parse the blocks about a megabyte at a time, in this thread: the parser is a few
    dozen numpy operations per chunk, and parsing on worker threads beside the JSON parser
    made each side wait for the interpreter lock (more CPU time, and more wall time too,
    on a machine with few or busy cores).

    Each group of blocks becomes ``x, y, ...]x, y, ...|`` ("]" ends a polygon, "|" a
    block; one space may follow a comma, as ``json.dumps`` writes by default). Blocks
    holding anything else (other spacing, exponents, objects) are left to json.
    Returns (value buffers, numbers per polygon, polygons per block, the blocks cut), or None.
    """
    buffers: list[np.ndarray] = []
    terminators: list[np.ndarray] = []  # per number: 0 inside, 1 polygon end, 2 block end
    kept: list[tuple[int, int]] = []
    for chunk, group in _chunks(data, spans):
        parsed = _parse_chunk(chunk)
        if parsed is None:
            return None
        buffers.append(parsed[0])
        terminators.append(parsed[1])
        kept.extend(group)
    if len(kept) < _MIN_BLOCKS:
        return None
    terms = np.concatenate(terminators)
    poly_end = np.flatnonzero(terms)
    sizes = np.diff(poly_end, prepend=-1)
    block_polys = np.diff(np.flatnonzero(terms[poly_end] == 2), prepend=-1)
    if block_polys.size != len(kept) or sizes.min() < 1:
        return None
    return buffers, sizes, block_polys, kept


def _chunks(
    data: bytes, spans: list[tuple[int, int]]
) -> Iterator[tuple[bytes, list[tuple[int, int]]]]:
    """Groups of about ``_CHUNK`` bytes of blocks as parser input, with the blocks they hold."""
    view = memoryview(data)  # slices of a view copy nothing until joined
    k = 0
    while k < len(spans):
        group: list[tuple[int, int]] = []
        size = 0
        while k < len(spans) and size < _CHUNK:
            group.append(spans[k])
            size += spans[k][1] - spans[k][0]
            k += 1
        chunk = b"|".join([view[s + 2 : e - 2] for s, e in group]) + b"|"
        if b"]" in chunk:
            chunk = chunk.replace(b"], [", b"]").replace(b"],[", b"]")
        if chunk.translate(None, _CLEAN_CHARS):
            parts = chunk.split(b"|")[:-1]
            good = [j for j, p in enumerate(parts) if p and not p.translate(None, _CLEAN_CHARS)]
            if not good:
                continue
            group = [group[j] for j in good]
            chunk = b"|".join([parts[j] for j in good]) + b"|"
        yield chunk, group
    view.release()


def _skeleton(data: bytes, spans: list[tuple[int, int]]) -> bytearray:
    """The text with each cut block replaced by its marker (grown in one buffer: a list
    of 400,000 pieces to join took twice the memory)."""
    view = memoryview(data)
    out = bytearray()
    last = 0
    for k, (s, e) in enumerate(spans, MARKER_BASE):
        out += view[last:s]
        out += b"%d" % k
        last = e
    out += view[last:]
    view.release()
    return out


def _parse_chunk(chunk: bytes) -> tuple[np.ndarray, np.ndarray] | None:
    """Vectorized decimal parsing: each token's bytes as one uint64, digits combined by SWAR.

    ``chunk`` ends with "|". Returns the values and, per value, what follows it
    (0 a comma, 1 "]", 2 "|"). numpy shifts by 64 or more give 0, which the steps use.
    """
    u = np.frombuffer(chunk, dtype=np.uint8)
    # Separators are "," and the only bytes above "9" that may appear: "]" and "|".
    ends = np.flatnonzero((u == 44) | (u > 57))
    count = ends.size
    if count == 0 or ends[-1] != u.size - 1:
        return None
    starts = np.empty(count, dtype=np.int64)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts
    if lengths.min() < 1:
        return None
    # The 8 bytes before each token's end as one little-endian word (an unaligned,
    # overlapping view of the padded text), shifted so the token's first byte is lowest.
    padded = bytes(8) + chunk
    word = np.ndarray((u.size + 1,), dtype="<u8", buffer=padded, strides=(1,))[ends]
    size = np.minimum(lengths, 8).astype(np.uint64)
    word >>= _U64(64) - (size << _U64(3))
    space = (word & _U64(0xFF)) == _U64(32)  # ", " puts one space before a number
    word >>= space.astype(np.uint64) << _U64(3)
    size -= space
    neg = (word & _U64(0xFF)) == _U64(45)
    word >>= neg.astype(np.uint64) << _U64(3)
    size -= neg
    t = word ^ _DOTS
    dot_bits = (t - _ONES) & ~t & _HIGHS & _LOW[size]
    has_dot = dot_bits != 0
    # Byte index of the dot (the lowest flagged byte); the token's size when there is none.
    lowest = np.frexp((dot_bits & (~dot_bits + _U64(1))).astype(np.float64))[1]
    dot = np.where(has_dot, (lowest - 8) >> 3, size.astype(np.int64)).astype(np.uint64)
    shift = dot << _U64(3)
    digits = (word & _LOW[dot]) | ((word >> (shift + _U64(8))) << shift)  # the dot removed
    ndigits = size - has_dot
    long = lengths > 8  # parsed one by one below
    short = ~long
    # JSON has no "5.", ".5" or "05": keep json's strictness.
    lead_zero = ((word & _U64(0xFF)) == _U64(48)) & (dot > 1)
    if (short & ((has_dot & ((dot == 0) | (dot + 1 == size))) | lead_zero | (ndigits == 0))).any():
        return None
    ndigits = np.clip(ndigits, 1, 8)
    # Right-align to 8 digits with leading "0"s, then combine pairs, quads, octets.
    v = ((digits << (_U64(64) - (ndigits << _U64(3)))) | _FILL[8 - ndigits]) - _ZEROS
    bad = ((v & _U64(0xF0F0F0F0F0F0F0F0)) | ((v + _U64(0x7676767676767676)) & _HIGHS)) != 0
    if (bad & short).any():
        return None  # a byte that is not a digit
    v = ((v * _U64(10)) + (v >> _U64(8))) & _U64(0x00FF00FF00FF00FF)
    v = ((v * _U64(100)) + (v >> _U64(16))) & _U64(0x0000FFFF0000FFFF)
    v = ((v * _U64(10000)) + (v >> _U64(32))) & _U64(0xFFFFFFFF)
    fraction = (size - dot - _U64(1)) * has_dot
    values = v.astype(np.float64) / _POW10[fraction]
    values *= 1.0 - 2.0 * neg
    dots, signs = chunk.count(b"."), chunk.count(b"-")
    if long.any():
        for k in np.flatnonzero(long).tolist():  # rare: numbers of more than 8 characters
            token = chunk[starts[k] : ends[k]]
            number = token[1:] if token[:1] == b" " else token
            if not _JSON_NUMBER.fullmatch(number):
                return None
            values[k] = float(number)
            dots -= number.count(b".")
            signs -= number.count(b"-")
            has_dot[k] = neg[k] = False
    if int(np.count_nonzero(has_dot)) != dots or int(np.count_nonzero(neg)) != signs:
        return None  # a second dot or a misplaced sign inside a token
    following = u[ends]
    terminator = (following != 44).astype(np.uint8) + (following == 124)
    return values, terminator
