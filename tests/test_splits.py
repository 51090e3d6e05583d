"""Splits: given ones respected; otherwise seeded, stratified, val classes all in train."""

from __future__ import annotations

import random

import pytest

from visionmesh.formats import Annotation, Category, Dataset, Image
from visionmesh.splits import SplitError, apply_splits, resolve_splits, stratified_split


def random_labels(seed: int, n: int = 60, classes: int = 8) -> dict[int, set[int]]:
    rng = random.Random(seed)
    out = {}
    for i in range(n):
        k = rng.choice([0, 1, 1, 1, 2, 3])
        # skewed class frequencies, including rare classes
        out[i] = {min(int(rng.expovariate(0.5)), classes - 1) for _ in range(k)}
    return out


def check_promises(labels: dict[int, set[int]], split: dict[int, str]) -> None:
    assert set(split) == set(labels)
    val = {i for i, s in split.items() if s == "val"}
    train = {i for i, s in split.items() if s == "train"}
    assert val and train and not val & train
    train_classes = set().union(*(labels[i] for i in train))
    val_classes = set().union(*(labels[i] for i in val))
    assert val_classes <= train_classes


@pytest.mark.parametrize("seed", range(12))
def test_promises_hold(seed: int) -> None:
    labels = random_labels(seed)
    split = stratified_split(labels, seed=seed, val_fraction=0.2)
    check_promises(labels, split)
    n_val = sum(s == "val" for s in split.values())
    assert 6 <= n_val <= 18


def test_deterministic_for_a_seed_and_varies_with_it() -> None:
    labels = random_labels(3)
    a = stratified_split(labels, seed=7)
    assert a == stratified_split(dict(reversed(list(labels.items()))), seed=7)
    assert any(stratified_split(labels, seed=s) != a for s in range(8, 12))


def test_stratified_by_class() -> None:
    labels = {i: {i % 4} for i in range(100)}  # 4 classes of 25 images
    split = stratified_split(labels, seed=1, val_fraction=0.2)
    for c in range(4):
        assert sum(1 for i in range(100) if i % 4 == c and split[i] == "val") == 5


def test_single_image_classes_stay_in_train() -> None:
    labels = {0: {1}, 1: {1}, 2: {1}, 3: {2}, 4: {3}}
    split = stratified_split(labels, seed=0, val_fraction=0.4)
    assert split[3] == split[4] == "train"
    check_promises(labels, split)


def test_negatives_are_split_too() -> None:
    labels = {i: set() for i in range(10)}
    split = stratified_split(labels, seed=0, val_fraction=0.3)
    assert sum(s == "val" for s in split.values()) == 3


def test_impossible_splits_are_refused() -> None:
    with pytest.raises(SplitError, match="at least 2"):
        stratified_split({1: {1}}, seed=0)
    with pytest.raises(SplitError, match="single image"):
        stratified_split({1: {1}, 2: {2}}, seed=0)
    with pytest.raises(SplitError):
        stratified_split({1: {1}, 2: {1}}, seed=0, val_fraction=1.5)


def test_two_images_one_class() -> None:
    split = stratified_split({1: {1}, 2: {1}}, seed=0)
    assert sorted(split.values()) == ["train", "val"]


def _dataset(splits: list[str]) -> Dataset:
    ds = Dataset(categories=[Category(1, "a"), Category(2, "b")])
    for i, s in enumerate(splits, start=1):
        ds.images.append(Image(i, f"{i}.jpg", 10, 10, s))
        ds.annotations.append(Annotation(i, i, 1 + i % 2))
    return ds


def test_given_splits_are_kept() -> None:
    ds = _dataset(["train", "train", "val", "test", "train", "val"])
    result = resolve_splits(ds, seed=3)
    assert not result.generated
    assert result.splits == {1: "train", 2: "train", 3: "val", 4: "test", 5: "train", 6: "val"}


def test_given_splits_without_val_are_never_changed() -> None:
    ds = _dataset(["train"] * 10 + ["test"])
    result = resolve_splits(ds, seed=0)
    assert not result.generated
    assert result.splits == {**{i: "train" for i in range(1, 11)}, 11: "test"}
    assert result.warnings == ["no val images were given; the given splits are kept"]


def test_partial_splits_fill_the_rest() -> None:
    ds = _dataset(["train", "val", "", "", "", ""])
    result = resolve_splits(ds, seed=0, val_fraction=0.5)
    assert result.splits[1] == "train" and result.splits[2] == "val"
    assert {result.splits[i] for i in range(3, 7)} == {"train", "val"}
    assert "4 image(s) had no split" in result.warnings[0]


def test_no_training_images_given_are_kept_and_said() -> None:
    result = resolve_splits(_dataset(["val", "val"]))
    assert result.splits == {1: "val", 2: "val"}
    assert result.warnings == ["no train images: every image is in val as given"]


def test_apply_splits() -> None:
    ds = _dataset(["", "", "", ""])
    result = resolve_splits(ds, seed=5)
    apply_splits(ds, result.splits)
    assert [im.split for im in ds.images] == [result.splits[i] for i in range(1, 5)]
    assert result.counts()["val"] >= 1


def test_val_fraction_zero_means_no_val_split() -> None:
    result = resolve_splits(_dataset(["", "", "", ""]), seed=0, val_fraction=0)
    assert set(result.splits.values()) == {"train"} and not result.warnings


def test_impossible_split_falls_back_to_train_with_a_warning() -> None:
    # two images, each class on one image: any val image would take a class out of train
    ds = _dataset(["", ""])
    result = resolve_splits(ds, seed=0)
    assert result.splits == {1: "train", 2: "train"}
    assert "no val split could be made" in result.warnings[0]
    one = resolve_splits(_dataset([""]), seed=0)
    assert one.splits == {1: "train"} and "at least 2" in one.warnings[0]


def test_bad_val_fraction_is_refused() -> None:
    with pytest.raises(SplitError, match="between 0 and 1"):
        resolve_splits(_dataset(["", "", ""]), val_fraction=1.5)
