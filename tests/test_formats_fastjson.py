"""The fast COCO loader means exactly what json.loads means; the fast number text is exact."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from visionmesh import formats
from visionmesh.formats import fastjson, textnum


def _number(rng: random.Random) -> float | int:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randrange(0, 5000)
    if kind == 1:
        return -round(rng.uniform(0, 999), rng.randrange(0, 4))
    if kind == 2:
        return rng.uniform(0, 2000)  # long repr: more than 8 characters
    return round(rng.uniform(0, 2000), rng.randrange(0, 4))


def coco_doc(n: int = 120, seed: int = 0, inside: bool = False) -> dict:
    """A COCO document of random polygons; ``inside``: every point inside its image (for
    tests that read it as a dataset, which reports points outside the image)."""
    rng = random.Random(seed)
    anns = []
    size = 5000 if inside else 10
    for i in range(n):
        polys = [
            [_number(rng) for _ in range(2 * rng.randrange(3, 9))]
            for _ in range(rng.choice([1, 1, 2]))
        ]
        if inside:
            polys = [[abs(v) for v in p] for p in polys]
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "segmentation": polys,
                     "bbox": [1.5, 2, 3, 4.25], "area": 1.0, "iscrowd": 0})  # fmt: skip
    return {
        "info": {"description": 'a "segmentation": [[1,2]] inside a string'},
        "images": [{"id": 1, "file_name": "a.jpg", "width": size, "height": size}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "x"}],
    }


def resolved(doc: dict, table: fastjson.PolygonTable | None) -> dict:
    """The document with markers swapped back for plain polygon lists."""
    if table is None:
        return doc
    for a in doc["annotations"]:
        if table.is_marker(a["segmentation"]):
            a["segmentation"] = [p.tolist() for p in table.take(a["segmentation"])]
    assert table.complete
    return doc


@pytest.mark.parametrize("separators", [None, (",", ":")])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_meaning_as_json(separators: tuple[str, str] | None, seed: int) -> None:
    text = json.dumps(coco_doc(seed=seed), separators=separators).encode()
    doc, table = fastjson.loads(text)
    assert table is not None and len(table) == 120
    assert resolved(doc, table) == json.loads(text)


def test_polygons_are_views_of_one_buffer() -> None:
    doc, table = fastjson.loads(json.dumps(coco_doc()).encode())
    polys = table.take(doc["annotations"][0]["segmentation"])
    assert all(any(np.shares_memory(p, b) for b in table.buffers) for p in polys)
    assert len({id(p.base) for p in polys}) == 1
    assert polys[0].dtype == np.float64


def test_blocks_json_must_read_are_left_to_json() -> None:
    doc = coco_doc()
    doc["annotations"][0]["segmentation"] = [[1e-07, 2.5e16, 3, 4, 5, 6]]  # exponents
    doc["annotations"][1]["segmentation"] = {"counts": [1, 2], "size": [10, 10]}  # RLE
    doc["annotations"][2]["segmentation"] = []
    text = json.dumps(doc).encode()
    parsed, table = fastjson.loads(text)
    assert table is not None and len(table) == 117
    assert resolved(parsed, table) == json.loads(text)


def test_pretty_printed_documents_still_mean_the_same() -> None:
    text = json.dumps(coco_doc(), indent=2).encode()
    doc, table = fastjson.loads(text)
    assert resolved(doc, table) == json.loads(text)


@pytest.mark.parametrize("bad", [b"5.", b".5", b"05", b"1.2.3", b"--1", b"1-2", b"1 2", b"", b"-"])
def test_malformed_numbers_raise_like_json(bad: bytes) -> None:
    text = json.dumps(coco_doc()).encode()
    first = text.index(b'"segmentation": [[') + len(b'"segmentation": [[')
    broken = text[:first] + bad + b", " + text[first:]
    with pytest.raises(ValueError):
        json.loads(broken)
    with pytest.raises(ValueError):
        fastjson.loads(broken)


def test_many_chunks_keep_document_order(monkeypatch) -> None:
    monkeypatch.setattr(fastjson, "_CHUNK", 300)  # dozens of chunks
    text = json.dumps(coco_doc(n=400, seed=5)).encode()
    doc, table = fastjson.loads(text)
    assert table is not None and len(table.buffers) > 20
    assert resolved(doc, table) == json.loads(text)
    last = text.rindex(b'"segmentation": [[') + len(b'"segmentation": [[')
    with pytest.raises(ValueError):  # a bad number in a late chunk: json's error
        fastjson.loads(text[:last] + b"1.2.3, " + text[last:])


def test_what_orjson_refuses_json_still_reads() -> None:
    text = b'{"a": NaN, "b": [Infinity, -Infinity]}'
    assert json.dumps(fastjson.json_loads(text)) == json.dumps(json.loads(text))


def test_an_id_beyond_64_bits_is_reported(tmp_path: Path) -> None:
    doc = coco_doc(n=80, inside=True)
    doc["annotations"][3]["id"] = 123456789012345678901234  # orjson reads it as a float
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    result = formats.read(tmp_path, check_images=False)
    assert [p.path for p in result.errors] == ["annotations[3].id"]


def test_small_documents_use_plain_json() -> None:
    text = json.dumps(coco_doc(n=10)).encode()
    doc, table = fastjson.loads(text)
    assert table is None and doc == json.loads(text)


def test_reader_with_markers_outside_annotations_rereads(tmp_path: Path) -> None:
    doc = coco_doc(inside=True)
    doc["extra"] = [{"segmentation": [[1, 2, 3, 4, 5, 6]]} for _ in range(70)]
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    result = formats.read(tmp_path, check_images=False)
    assert result.ok, [str(p) for p in result.errors]
    first = result.dataset.annotations[0].segmentation
    assert first == doc["annotations"][0]["segmentation"]


def test_reader_validates_array_polygons(tmp_path: Path) -> None:
    doc = coco_doc(inside=True)
    doc["annotations"][5]["segmentation"] = [[1, 2, 3, 4]]  # still cut out, but too short
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    result = formats.read(tmp_path, check_images=False)
    assert isinstance(result.dataset.annotations[0].segmentation[0], np.ndarray)
    assert [p.path for p in result.errors] == ["annotations[5].segmentation[0]"]
    back = formats.to_dice_dict(result.dataset)
    assert back["annotations"][0]["segmentation"] == doc["annotations"][0]["segmentation"]


def test_one_array_polygon_each_is_screened_at_once(tmp_path: Path) -> None:
    """The usual layout (one polygon per annotation, all read into numpy) is checked in
    one pass: points outside the image and non-finite numbers are still reported."""
    doc = coco_doc(inside=True)
    for a in doc["annotations"]:
        a["segmentation"] = a["segmentation"][:1]
    doc["annotations"][7]["segmentation"] = [[10, 10, 5200.5, 20, 30, 40]]  # x beyond 5000
    (tmp_path / "annotations.json").write_text(json.dumps(doc))
    result = formats.read(tmp_path, check_images=False)
    assert isinstance(result.dataset.annotations[0].segmentation[0], np.ndarray)
    assert [p.path for p in result.errors] == ["annotations[7].segmentation[0]"]
    assert "outside" in result.errors[0].message


def test_fixed6_matches_printf() -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.random(5000), [0.0, 1.0, 0.5, 1e-7, 0.9999995, 0.0000005]])
    cells = textnum.fixed6(values).tobytes().split(b" ")[:-1]
    assert cells == [f"{v:.6f}".encode() for v in values]


def test_lines_layout() -> None:
    out = textnum.lines([3, 12], np.array([0.5, 0.25, 1.0, 0.0, 0.125]), np.array([2, 3]))
    assert out == [b"3 0.500000 0.250000\n", b"12 1.000000 0.000000 0.125000\n"]


@pytest.mark.parametrize("top", [80, 1500])  # class numbers within the prefix table, or past it
def test_grouped_lines_join_the_rows_of_each_group(top: int) -> None:
    rng = np.random.default_rng(top)
    counts = rng.integers(1, 6, 40) * 2
    values = rng.random(int(counts.sum()))
    classes = rng.integers(0, top, 40).tolist()
    owners = np.sort(rng.integers(0, 12, 40))
    owners[owners == 5] = 6  # group 5 holds no row
    groups = np.searchsorted(owners, np.arange(13))
    rows = textnum.lines(classes, values, counts)
    bounds = groups.tolist()
    expected = [b"".join(rows[a:b]) for a, b in zip(bounds, bounds[1:], strict=False)]
    assert textnum.grouped_lines(classes, values, counts, groups) == expected
    assert b"" in expected
