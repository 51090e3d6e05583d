"""Train/val splits: the images' own splits where given, else a seeded, stratified split.

The generated split is deterministic for a seed, puts about ``val_fraction`` of the images
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
    total = Counter(c for i in ids for c in set(labels[i]))
    target = {c: min(t - 1, _round(t * val_fraction)) for c, t in total.items()}
    n_val = min(n - 1, max(1, _round(n * val_fraction)))
    in_train = dict(total)
    in_val: Counter = Counter()
    val: set[int] = set()

    def movable(i: int) -> bool:
        return all(in_train[c] > 1 for c in set(labels[i]))

    def move(i: int) -> None:
        val.add(i)
        for c in set(labels[i]):
            in_train[c] -= 1
            in_val[c] += 1

    shuffled = [i for i in ids if labels[i]]
    negatives = [i for i in ids if not labels[i]]
    # Rarest classes first; the shuffled order breaks ties (sorted() is stable).
    labelled = sorted(shuffled, key=lambda i: min(total[c] for c in labels[i]))
    neg_val = _round(len(negatives) * val_fraction)
    for i in labelled:
        if len(val) >= n_val - neg_val:
            break
        if movable(i) and any(in_val[c] < target[c] for c in set(labels[i])):
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


def resolve_splits(
    dataset: Dataset,
    *,
    seed: int = 0,
    val_fraction: float = DEFAULT_VAL_FRACTION,
    labels: Mapping[int, Collection[int]] | None = None,
) -> SplitResult:
    """Each image's split: given ones are kept; missing ones (or a missing val) are made.

    ``labels`` (image id -> classes) defaults to the dataset's annotations; pass the
    classes after a task conversion to stratify on what will actually be trained.
    """
    labels = image_classes(dataset) if labels is None else labels
    given = {im.id: im.split for im in dataset.images if im.split}
    ids = [im.id for im in dataset.images if im.id in labels]
    result = SplitResult({}, False, seed, val_fraction)
    missing = [i for i in ids if i not in given]
    if not missing:
        result.splits = {i: given[i] for i in ids}
        present = set(result.splits.values())
        if "train" not in present:
            raise SplitError("the given splits have no training images")
        if "val" not in present:
            train = {i: labels[i] for i in ids if given[i] == "train"}
            carved = stratified_split(train, seed=seed, val_fraction=val_fraction)
            result.splits.update(carved)
            result.generated = True
            result.warnings.append(
                f"the given splits have no val images; {sum(v == 'val' for v in carved.values())} "
                f"training images were moved to val (seed {seed})"
            )
        return result
    result.generated = True
    if len(missing) == len(ids):
        result.splits = stratified_split(
            {i: labels[i] for i in ids}, seed=seed, val_fraction=val_fraction
        )
        return result
    # Some images have a split, others not: split the rest on its own.
    result.splits = {i: given[i] for i in ids if i in given}
    rest = {i: labels[i] for i in missing}
    if len(rest) >= 2:
        result.splits.update(stratified_split(rest, seed=seed, val_fraction=val_fraction))
    else:
        result.splits.update({i: "train" for i in rest})
    result.warnings.append(
        f"{len(missing)} image(s) had no split; they were split with seed {seed}"
    )
    return result


def apply_splits(dataset: Dataset, splits: Mapping[int, str]) -> None:
    """Write ``splits`` onto the dataset's images (in place)."""
    for im in dataset.images:
        if im.id in splits:
            im.split = splits[im.id]
