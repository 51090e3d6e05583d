"""Train/val splits: the images' own splits where given, else a seeded, stratified split.

Given splits are never changed. The generated split is deterministic for a seed, puts about ``val_fraction`` of the images
in val, and keeps two promises: every class that appears in val also appears in train,
and val is never the same set as train (both are non-empty and disjoint).

Stratification is greedy: images holding the rarest classes are considered first, and an
image goes to val while one of its classes is still short of its share there and moving
it leaves each of its classes at least one training image.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from itertools import chain

from .formats.model import Dataset

DEFAULT_VAL_FRACTION = 0.2


class SplitError(ValueError):
    """No split can keep the promises (too few images, or every class on a single image)."""


@dataclass
class SplitResult:
    splits: dict[int, str]  # image id -> "train" | "val" | "test"
    generated: bool  # some or all images were split with ``seed``
    seed: int
    val_fraction: float
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        return dict(Counter(self.splits.values()))


def _round(x: float) -> int:
    """Half up (Python's round() goes to even: round(2.5) == 2)."""
    return int(x + 0.5)


def stratified_split(
    labels: Mapping[int, Collection[int]],
    *,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
) -> dict[int, str]:
    """Split items (``id -> classes on it``; empty for negatives) into train and val."""
    if not 0 < val_fraction < 1:
        raise SplitError(f"val_fraction {val_fraction} must be between 0 and 1")
    ids = sorted(labels)
    n = len(ids)
    if n < 2:
        raise SplitError(f"{n} image(s): a train/val split needs at least 2")
    rng = random.Random(seed)
    rng.shuffle(ids)
    # Each item's distinct classes once (as a tuple: the loops below only iterate them).
    classes = {i: tuple(set(labels[i])) for i in ids}
    total = Counter(chain.from_iterable(classes.values()))
    target = {c: min(t - 1, _round(t * val_fraction)) for c, t in total.items()}
    n_val = min(n - 1, max(1, _round(n * val_fraction)))
    in_train = dict(total)
    in_val: Counter = Counter()
    val: set[int] = set()

    def movable(i: int) -> bool:
        for c in classes[i]:
            if in_train[c] <= 1:
                return False
        return True

    def short(i: int) -> bool:
        for c in classes[i]:
            if in_val[c] < target[c]:
                return True
        return False

    def move(i: int) -> None:
        val.add(i)
        for c in classes[i]:
            in_train[c] -= 1
            in_val[c] += 1

    shuffled = [i for i in ids if labels[i]]
    negatives = [i for i in ids if not labels[i]]
    # Rarest classes first; the shuffled order breaks ties (sorted() is stable).
    rarest = total.__getitem__
    labelled = sorted(shuffled, key=lambda i: min(map(rarest, classes[i])))
    neg_val = _round(len(negatives) * val_fraction)
    for i in labelled:
        if len(val) >= n_val - neg_val:
            break
        if movable(i) and short(i):
            move(i)
    # Shares met but val still short of its size: any image that keeps train complete.
    for i in shuffled:
        if len(val) >= n_val - neg_val:
            break
        if i not in val and movable(i):
            move(i)
    if labelled and neg_val == len(negatives):
        neg_val = max(0, neg_val - 1)
    for i in negatives[:neg_val]:
        val.add(i)
    if not val:
        # Shares rounded to zero: take any image that keeps every class in train.
        pick = next((i for i in labelled if movable(i)), None)
        if pick is None and len(negatives) >= 1 and (labelled or len(negatives) >= 2):
            pick = negatives[0]
        if pick is None:
            raise SplitError(
                "cannot make a validation split in which every class also appears in "
                "train: each class is on a single image"
            )
        if labels[pick]:
            move(pick)
        else:
            val.add(pick)
    if len(val) == n:
        raise SplitError("the validation split would hold every image")
    return {i: ("val" if i in val else "train") for i in sorted(labels)}


def image_classes(dataset: Dataset) -> dict[int, set[int]]:
    """Image id -> ids of the (non-background) categories annotated on it."""
    bg = dataset.background_ids()
    out: dict[int, set[int]] = {im.id: set() for im in dataset.images}
    for a in dataset.annotations:
        if a.category_id not in bg and a.image_id in out:
            out[a.image_id].add(a.category_id)
    return out


def best_split(
    labels: Mapping[int, Collection[int]], *, seed: int, val_fraction: float
) -> tuple[dict[int, str], list[str]]:
    """A stratified split when one can be made, else the best possible: every image in train
    (with a warning saying why). ``val_fraction`` 0 means no val split at all."""
    if val_fraction == 0:
        return {i: "train" for i in labels}, []
    if not 0 < val_fraction < 1:
        raise SplitError(f"val_fraction {val_fraction} must be between 0 and 1")
    try:
        return stratified_split(labels, seed=seed, val_fraction=val_fraction), []
    except SplitError as exc:
        return {i: "train" for i in labels}, [
            f"no val split could be made ({exc}); all {len(labels)} image(s) are in train"
        ]


def resolve_splits(
    dataset: Dataset,
    *,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    labels: Mapping[int, Collection[int]] | None = None,
) -> SplitResult:
    """Each image's split: given ones are kept as they are; missing ones are made.

    A given split is never changed: a dataset given only train images gets no val (and a
    warning saying so), one given only val images has no train (warned too). Images
    without a split are split among themselves with ``seed`` (stratified, see
    :func:`stratified_split`); when that is impossible (too few images, every class on
    one image) they all go to train, with a warning. ``val_fraction`` 0: no val split.
    ``labels`` (image id -> classes) defaults to the dataset's annotations; pass the
    classes after a task conversion to stratify on what will actually be trained.
    Raises SplitError only for a ``val_fraction`` outside [0, 1).
    """
    labels = image_classes(dataset) if labels is None else labels
    given = {im.id: im.split for im in dataset.images if im.split}
    ids = [im.id for im in dataset.images if im.id in labels]
    result = SplitResult({}, False, seed, val_fraction)
    result.splits = {i: given[i] for i in ids if i in given}
    missing = [i for i in ids if i not in given]
    if missing:
        made, warnings = best_split(
            {i: labels[i] for i in missing}, seed=seed, val_fraction=val_fraction
        )
        result.splits.update(made)
        result.generated = True
        result.warnings.extend(warnings)
        if given:
            result.warnings.append(
                f"{len(missing)} image(s) had no split; they were split with seed {seed}"
            )
    present = set(result.splits.values())
    if ids and "train" not in present:
        result.warnings.append(
            "no train images: every image is in "
            + " and ".join(s for s in ("val", "test") if s in present)
            + " as given"
        )
    elif ids and "val" not in present and val_fraction != 0 and given:
        result.warnings.append("no val images were given; the given splits are kept")
    return result


def apply_splits(dataset: Dataset, splits: Mapping[int, str]) -> None:
    """Write ``splits`` onto the dataset's images (in place)."""
    for im in dataset.images:
        if im.id in splits:
            im.split = splits[im.id]
