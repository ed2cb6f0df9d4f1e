"""Stratified, deterministic splits: validation carving and subsampling for data-scaling studies.

Every function draws from its own ``torch.Generator`` seeded by ``seed``, so a split depends
only on the labels and the seed, never on global random state or on the run seed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from trainlab.data.types import ImageSplit
from trainlab.errors import DataError


def stratified_indices(
    labels: torch.Tensor | np.ndarray | Sequence[int],
    *,
    fraction: float | None = None,
    size: int | None = None,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick ``size`` (or ``fraction`` of all) indices with each class in proportion.

    Returns ``(chosen, rest)``: disjoint, together every index, each sorted ascending (int64).
    Per-class counts are proportional with largest-remainder rounding; every class with at
    least two samples keeps at least one on each side where the total allows. Within a class,
    which samples are chosen follows one seeded permutation, so for a fixed seed a smaller
    selection is (almost always) contained in a larger one: handy for data-scaling curves.
    """
    label_tensor = torch.as_tensor(np.asarray(labels)).reshape(-1)
    total = len(label_tensor)
    target = _target_size(total, fraction, size)
    _, inverse, counts = torch.unique(label_tensor, return_inverse=True, return_counts=True)
    per_class = torch.from_numpy(_allocate(counts.numpy(), target))

    generator = torch.Generator().manual_seed(seed)
    shuffled = torch.randperm(total, generator=generator)
    # Group the shuffled indices by class; a stable sort keeps each class's random order.
    grouped = shuffled[torch.sort(inverse[shuffled], stable=True).indices]
    starts = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(total) - torch.repeat_interleave(starts, counts)
    take = rank_in_class < torch.repeat_interleave(per_class, counts)
    return grouped[take].sort().values, grouped[~take].sort().values


def labels_fingerprint(labels: torch.Tensor) -> str:
    """SHA-256 of a training split's labels (as int64, in order). The validation split, the
    k-fold partition and the subsample are functions of these labels and the seeds only, so a
    run records it and whoever rebuilds those splits later can tell whether the data changed."""
    import hashlib

    data = labels.detach().to("cpu", torch.int64).contiguous().numpy().tobytes()
    return hashlib.sha256(data).hexdigest()


def carve_validation(
    split: ImageSplit, *, fraction: float, size: int | None = None, seed: int
) -> tuple[ImageSplit, ImageSplit]:
    """Split training data into ``(train, val)``, stratified; ``size`` overrides ``fraction``."""
    total = len(split)
    wanted = size if size is not None else _target_size(total, fraction, None)
    if wanted >= total:
        raise DataError(
            f"a validation split of {wanted} leaves no training data ({total} samples); "
            "use a smaller val_size or val_fraction"
        )
    val, train = stratified_indices(split.labels, size=wanted, seed=seed)
    return split.subset(train), split.subset(val)


def kfold_validation(
    split: ImageSplit, *, folds: int, fold: int, seed: int
) -> tuple[ImageSplit, ImageSplit]:
    """``(train, val)`` where val is fold ``fold`` of a stratified ``folds``-way partition.

    The partition depends only on the labels and ``seed``: the folds of one seed are disjoint
    and together cover the data, so ``folds`` runs validate on every sample exactly once.
    Each class is dealt round-robin after a seeded shuffle, continuing where the previous class
    stopped, so fold sizes differ by at most one overall and per class.
    """
    if not 0 <= fold < folds:
        raise DataError(f"fold {fold} does not exist with {folds} folds (0..{folds - 1})")
    if len(split) < folds:
        raise DataError(f"{folds}-fold validation needs at least {folds} samples, got {len(split)}")
    labels = split.labels.reshape(-1)
    _, inverse = torch.unique(labels, return_inverse=True)
    shuffled = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    grouped = shuffled[torch.sort(inverse[shuffled], stable=True).indices]
    in_fold = torch.arange(len(grouped)) % folds == fold
    return split.subset(grouped[~in_fold].sort().values), split.subset(
        grouped[in_fold].sort().values
    )


def subsample(
    split: ImageSplit, *, fraction: float | None = None, size: int | None = None, seed: int
) -> ImageSplit:
    """A stratified subset of ``split``; with neither ``fraction`` nor ``size``, the split itself."""
    if fraction is None and size is None:
        return split
    chosen, _ = stratified_indices(split.labels, fraction=fraction, size=size, seed=seed)
    return split if len(chosen) == len(split) else split.subset(chosen)


def _target_size(total: int, fraction: float | None, size: int | None) -> int:
    """How many indices to choose; impossible requests become one clear DataError."""
    if (fraction is None) == (size is None):
        raise DataError("give a fraction or a size for the split, not both or neither")
    if total == 0:
        raise DataError("cannot split an empty dataset")
    if fraction is not None:
        if not 0.0 < fraction <= 1.0:
            raise DataError(f"split fraction must be in (0, 1], got {fraction}")
        size = round(fraction * total)
        if size == 0:
            raise DataError(
                f"fraction {fraction} of {total} samples selects none; use at least {1 / total:.2g}"
            )
    assert size is not None
    if size < 1 or size > total:
        raise DataError(f"cannot take {size} of {total} samples; choose a size from 1 to {total}")
    return size


def _allocate(counts: np.ndarray, target: int) -> np.ndarray:
    """Per-class counts summing to ``target``, proportional to ``counts`` (largest remainder)."""
    counts = counts.astype(np.int64)
    quota = counts * (target / counts.sum())
    alloc = np.floor(quota).astype(np.int64)
    remainder_order = np.argsort(-(quota - alloc), kind="stable")  # ties: lower class first
    alloc[remainder_order[: target - alloc.sum()]] += 1

    # A class with >= 2 samples should appear on both sides; fix the total afterwards.
    low = (counts >= 2).astype(np.int64)
    high = counts - low
    alloc = np.clip(alloc, low, high)
    # Each clip moved a class by at most one, so these loops run at most once per class.
    while alloc.sum() > target:
        movable = alloc > low if np.any(alloc > low) else alloc > 0  # "where possible"
        alloc[np.argmax(np.where(movable, alloc - quota, -np.inf))] -= 1
    while alloc.sum() < target:
        movable = alloc < high if np.any(alloc < high) else alloc < counts
        alloc[np.argmax(np.where(movable, quota - alloc, -np.inf))] += 1
    return alloc
