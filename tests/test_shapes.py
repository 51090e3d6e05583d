"""The synthetic shapes dataset: seeded, valid DICE, annotations matching the pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image as PILImage

from visionmesh import compat, formats, shapes


def test_same_seed_same_files(tmp_path: Path) -> None:
    shapes.generate(tmp_path / "a", images=6, size=48, seed=11)
    shapes.generate(tmp_path / "b", images=6, size=48, seed=11)
    shapes.generate(tmp_path / "c", images=6, size=48, seed=12)
    files = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert Path("annotations.json") in files and Path("meta.json") in files
    for rel in files:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    assert (tmp_path / "a/annotations.json").read_bytes() != (
        tmp_path / "c/annotations.json"
    ).read_bytes()


def test_valid_dice_that_trains_every_task(tmp_path: Path) -> None:
    ds = shapes.generate(tmp_path, images=16, size=64, seed=0)
    result = formats.read(tmp_path)
    assert result.variant == "dice-standard"
    assert result.ok and not result.problems, [str(p) for p in result.problems]
    assert [c.name for c in result.dataset.categories] == ["circle", "square", "triangle"]
    assert len(result.dataset.annotations) == len(ds.annotations) >= 16
    for task in formats.TASKS:
        report = compat.check(result.dataset, task)
        assert report.compatible, (task, report.errors)


def test_annotations_match_pixels(tmp_path: Path) -> None:
    ds = shapes.generate(tmp_path, images=8, size=96, seed=3)
    for im in ds.images:
        pixels = np.asarray(PILImage.open(tmp_path / im.path).convert("RGB"), dtype=int)
        for a in (a for a in ds.annotations if a.image_id == im.id):
            poly = np.asarray(a.segmentation[0]).reshape(-1, 2)
            x, y, w, h = a.bbox
            assert 0 <= x and 0 <= y and x + w <= im.width and y + h <= im.height
            assert np.allclose([poly[:, 0].min(), poly[:, 1].min()], [x, y], atol=0.01)
            centre = pixels[int(poly[:, 1].mean()), int(poly[:, 0].mean())]
            assert any(np.abs(centre - c).max() < 40 for c in shapes.COLOURS.values())
            if a.category_id == 3:  # triangles carry their vertices as keypoints
                assert np.allclose(np.asarray(a.keypoints).reshape(-1, 3)[:, :2], poly)
                assert a.keypoints[2::3] == [2, 2, 2]
            else:
                assert a.keypoints is None
            assert a.area > 0


def test_shapes_do_not_overlap(tmp_path: Path) -> None:
    ds = shapes.generate(tmp_path, images=10, size=64, seed=9, max_shapes=5)
    masks = {}
    for a in ds.annotations:
        img = masks.setdefault(a.image_id, np.zeros((64, 64), dtype=int))
        one = compat.semantic_mask(
            formats.Dataset(ds.categories, ds.images, [a]), ds.image_map()[a.image_id]
        )
        img += one > 0
    assert all(m.max() <= 1 for m in masks.values())


def test_class_colours_and_cycled_classes(tmp_path: Path) -> None:
    """The options the trainer tests use: each class in its own colour, and image i's first
    shape of class i % 3 (one shape per image: the classes take turns)."""
    ds, pictures = shapes.sample(
        9, size=48, seed=4, max_shapes=1, class_colours=True, cycle_classes=True
    )
    assert [a.image_id for a in ds.annotations] == list(range(1, 10))
    assert [a.category_id for a in ds.annotations] == [1, 2, 3] * 3
    for a, picture in zip(ds.annotations, pictures, strict=True):
        poly = np.asarray(a.segmentation[0]).reshape(-1, 2)
        centre = np.asarray(picture)[int(poly[:, 1].mean()), int(poly[:, 0].mean())]
        colour = shapes.CLASS_COLOURS[shapes.CLASSES[a.category_id - 1]]
        assert np.abs(centre.astype(int) - colour).max() == 0
    many, _ = shapes.sample(12, size=64, seed=4, max_shapes=3, cycle_classes=True)
    firsts = {}
    for a in many.annotations:
        firsts.setdefault(a.image_id, a.category_id)
    assert [firsts[i] for i in range(1, 13)] == [1, 2, 3] * 4
    assert max(sum(a.image_id == i for a in many.annotations) for i in range(1, 13)) > 1
    # generate() writes what sample() draws
    written = shapes.generate(tmp_path, images=9, size=48, seed=4, max_shapes=3)
    assert written.annotations == shapes.sample(9, size=48, seed=4, max_shapes=3)[0].annotations


def test_make_image_draws_the_kinds_asked_for() -> None:
    rng = np.random.default_rng(0)
    picture, annotations = shapes.make_image(
        7, 96, rng, 40, kinds=["triangle", "square"], class_colours=True
    )
    assert picture.size == (96, 96)
    assert [(a.id, a.image_id, a.category_id) for a in annotations] == [(40, 7, 3), (41, 7, 2)]


def test_radius_bounds_the_shapes(tmp_path: Path) -> None:
    for low, high in ((0.08, 0.2), (0.15, 0.22)):
        ds, _ = shapes.sample(10, size=100, seed=2, max_shapes=2, radius=(low, high))
        for a in (a for a in ds.annotations if a.category_id != 3):  # regular: centred
            poly = np.asarray(a.segmentation[0]).reshape(-1, 2)
            r = np.hypot(*(poly - poly.mean(axis=0)).T).max()
            assert 100 * low - 1 <= r <= 100 * high + 1, (low, high, r)
