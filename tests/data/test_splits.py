"""Stratified splits: proportions, rounding, determinism, disjointness and impossible requests."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from trainlab.data.splits import carve_validation, stratified_indices, subsample
from trainlab.data.types import ImageSplit
from trainlab.errors import DataError


def labels_with(counts: list[int]) -> torch.Tensor:
    return torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))


def per_class(labels: torch.Tensor, indices: torch.Tensor, classes: int) -> list[int]:
    return torch.bincount(labels[indices], minlength=classes).tolist()


def split_of(labels: torch.Tensor) -> ImageSplit:
    # Each image holds its own index, so tests can see which samples went where.
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1)
    return ImageSplit(images, labels)


def test_proportional_per_class():
    labels = labels_with([500, 300, 200])
    chosen, rest = stratified_indices(labels, fraction=0.1, seed=0)
    assert per_class(labels, chosen, 3) == [50, 30, 20]
    assert per_class(labels, rest, 3) == [450, 270, 180]


def test_largest_remainder_rounding_hits_the_exact_size():
    labels = labels_with([7, 7, 7, 5])
    chosen, _ = stratified_indices(labels, size=10, seed=0)
    counts = per_class(labels, chosen, 4)
    assert sum(counts) == 10
    assert counts == [3, 3, 2, 2]  # quotas 2.69, 2.69, 2.69, 1.92: the largest remainders win


def test_every_class_with_two_samples_keeps_one_on_each_side():
    labels = labels_with([100, 2, 2, 3])
    chosen, rest = stratified_indices(labels, fraction=0.1, seed=0)
    assert len(chosen) == 11  # round(0.1 × 107)
    assert all(n >= 1 for n in per_class(labels, chosen, 4))
    assert all(n >= 1 for n in per_class(labels, rest, 4))


def test_where_not_possible_the_size_still_wins():
    labels = labels_with([5, 5, 5, 5])
    chosen, rest = stratified_indices(labels, size=2, seed=0)
    assert len(chosen) == 2 and len(rest) == 18
    assert max(per_class(labels, chosen, 4)) == 1


def test_singleton_classes_and_arbitrary_label_values():
    labels = np.array([3, 3, 3, 3, 9, 42])
    chosen, rest = stratified_indices(labels, size=3, seed=1)
    assert len(chosen) == 3 and sorted(torch.cat([chosen, rest]).tolist()) == list(range(6))


def test_disjoint_complete_sorted_and_deterministic():
    labels = torch.randint(0, 7, (1000,), generator=torch.Generator().manual_seed(3))
    chosen, rest = stratified_indices(labels, fraction=0.25, seed=5)
    assert len(set(chosen.tolist()) & set(rest.tolist())) == 0
    assert sorted(torch.cat([chosen, rest]).tolist()) == list(range(1000))
    assert torch.equal(chosen, chosen.sort().values) and chosen.dtype == torch.int64
    again, _ = stratified_indices(labels, fraction=0.25, seed=5)
    other, _ = stratified_indices(labels, fraction=0.25, seed=6)
    assert torch.equal(chosen, again) and not torch.equal(chosen, other)


def test_independent_of_global_random_state():
    labels = labels_with([50, 50])
    torch.manual_seed(1)
    first, _ = stratified_indices(labels, size=10, seed=0)
    torch.manual_seed(2)
    second, _ = stratified_indices(labels, size=10, seed=0)
    assert torch.equal(first, second)


def test_fraction_one_takes_everything():
    labels = labels_with([3, 2])
    chosen, rest = stratified_indices(labels, fraction=1.0, seed=0)
    assert len(chosen) == 5 and len(rest) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 11}, "cannot take 11 of 10 samples"),
        ({"size": 0}, "cannot take 0 of 10 samples"),
        ({"fraction": 0.01}, "selects none"),
        ({"fraction": 1.5}, r"must be in \(0, 1\]"),
        ({}, "not both or neither"),
        ({"fraction": 0.5, "size": 2}, "not both or neither"),
    ],
)
def test_impossible_requests(kwargs, message):
    with pytest.raises(DataError, match=message):
        stratified_indices(labels_with([5, 5]), seed=0, **kwargs)


def test_carve_validation_stratifies_and_size_overrides_fraction():
    labels = labels_with([60, 40])
    train, val = carve_validation(split_of(labels), fraction=0.2, seed=0)
    assert len(train) == 80 and per_class(val.labels, torch.arange(len(val)), 2) == [12, 8]
    assert not set(train.images.flatten().tolist()) & set(val.images.flatten().tolist())
    train, val = carve_validation(split_of(labels), fraction=0.2, size=10, seed=0)
    assert len(val) == 10 and len(train) == 90


def test_carve_validation_refuses_to_leave_no_training_data():
    with pytest.raises(DataError, match="leaves no training data"):
        carve_validation(split_of(labels_with([5, 5])), fraction=0.5, size=10, seed=0)
    with pytest.raises(DataError, match="leaves no training data"):
        carve_validation(split_of(labels_with([5, 5])), fraction=0.99, seed=0)


def test_subsample():
    split = split_of(labels_with([80, 20]))
    assert subsample(split, seed=0) is split
    assert subsample(split, fraction=1.0, seed=0) is split
    small = subsample(split, size=10, seed=0)
    assert per_class(small.labels, torch.arange(10), 2) == [8, 2]
    assert len(subsample(split, fraction=0.5, seed=0)) == 50


def test_subsamples_of_growing_size_are_nested_for_one_seed():
    split = split_of(labels_with([100, 60, 40]))
    sizes = (20, 50, 100)
    picked = [set(subsample(split, size=n, seed=4).images.flatten().tolist()) for n in sizes]
    assert picked[0] <= picked[1] <= picked[2]


def test_k_folds_partition_the_data_and_stay_stratified():
    from trainlab.data.splits import kfold_validation

    labels = labels_with([23, 11, 6])
    split = split_of(labels)
    vals = []
    for fold in range(5):
        train, val = kfold_validation(split, folds=5, fold=fold, seed=3)
        train_ids, val_ids = train.images.flatten().long(), val.images.flatten().long()
        assert len(set(train_ids.tolist()) & set(val_ids.tolist())) == 0
        assert len(train) + len(val) == len(split)
        vals.append(val_ids)
        counts = per_class(labels, val_ids, 3)
        assert all(abs(c - n / 5) < 1 for c, n in zip(counts, [23, 11, 6], strict=True))
    every = torch.cat(vals).sort().values
    assert torch.equal(every, torch.arange(len(labels)))  # each sample validates exactly once
    sizes = sorted(len(v) for v in vals)
    assert sizes[-1] - sizes[0] <= 1
    again, _ = kfold_validation(split, folds=5, fold=2, seed=3)
    other, _ = kfold_validation(split, folds=5, fold=2, seed=4)
    assert torch.equal(again.images, kfold_validation(split, folds=5, fold=2, seed=3)[0].images)
    assert not torch.equal(again.images, other.images)


def test_k_fold_mistakes_are_clear():
    from trainlab.config import ConfigError, build_config
    from trainlab.data.splits import kfold_validation

    with pytest.raises(DataError, match="fold 5 does not exist"):
        kfold_validation(split_of(labels_with([5, 5])), folds=5, fold=5, seed=0)
    with pytest.raises(DataError, match="at least 5 samples"):
        kfold_validation(split_of(labels_with([2, 2])), folds=5, fold=0, seed=0)
    with pytest.raises(ConfigError, match="not both"):
        build_config({"data": {"folds": 5, "val_size": 100}})
    with pytest.raises(ConfigError, match="does not exist"):
        build_config({"data": {"folds": 3, "fold": 3}})
