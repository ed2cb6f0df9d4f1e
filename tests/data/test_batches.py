"""Channel statistics, normalisation and the on-device batch loader."""

from __future__ import annotations

import pytest
import torch

from trainlab.config import AugmentConfig
from trainlab.data import batches
from trainlab.data.augment import BatchAugmenter
from trainlab.data.batches import BatchLoader, channel_stats, normalize, normalize_uint8
from trainlab.data.types import ImageSplit


def make_split(
    count: int = 103, shape: tuple[int, int, int] = (3, 5, 6), seed: int = 0
) -> ImageSplit:
    """Random images; label i = i, so targets reveal which samples a batch holds."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (count, *shape), generator=generator, dtype=torch.uint8)
    return ImageSplit(images, torch.arange(count))


def loader(split: ImageSplit, batch_size: int = 10, seed: int = 0, **kw) -> BatchLoader:
    kw.setdefault("shuffle", True)
    kw.setdefault("mean", [0.5] * split.images.shape[1])
    kw.setdefault("std", [0.25] * split.images.shape[1])
    return BatchLoader(split, batch_size, generator=torch.Generator().manual_seed(seed), **kw)


# ---------------------------------------------------------------------------------------------
# channel_stats / normalize
# ---------------------------------------------------------------------------------------------


def test_channel_stats_matches_direct_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(batches, "_STATS_CHUNK_VALUES", 500)  # force many uneven chunks
    images = make_split(count=57, shape=(3, 7, 9)).images
    mean, std = channel_stats(images)
    as_float = images.double() / 255
    assert mean == pytest.approx(as_float.mean(dim=(0, 2, 3)).tolist(), abs=1e-9)
    assert std == pytest.approx(as_float.std(dim=(0, 2, 3), unbiased=False).tolist(), abs=1e-9)


def test_channel_stats_constant_channel_has_unit_std() -> None:
    images = torch.zeros(4, 2, 3, 3, dtype=torch.uint8)
    images[:, 1] = 51
    mean, std = channel_stats(images)
    assert mean == pytest.approx([0.0, 0.2]) and std == [1.0, 1.0]


def test_channel_stats_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        channel_stats(torch.zeros(0, 1, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError):
        channel_stats(torch.zeros(4, 4, 4, dtype=torch.uint8))


def test_normalize_uint8_matches_manual() -> None:
    images = make_split(count=4).images
    mean, std = [0.1, 0.2, 0.3], [0.5, 0.25, 2.0]
    out = normalize_uint8(images, mean, std)
    manual = (images.float() / 255 - torch.tensor(mean)[:, None, None]) / torch.tensor(std)[
        :, None, None
    ]
    assert out.dtype == torch.float32 and torch.allclose(out, manual, atol=1e-6)
    scalar = normalize_uint8(images, 0.5, 0.25)
    assert torch.allclose(scalar, (images.float() / 255 - 0.5) / 0.25, atol=1e-6)
    assert torch.equal(normalize(images.float() / 255, mean, std), out)


def test_normalize_wrong_channel_count() -> None:
    with pytest.raises(ValueError, match="2 values for 3 channels"):
        normalize_uint8(make_split(count=2).images, [0.1, 0.2], [1.0])


# ---------------------------------------------------------------------------------------------
# BatchLoader
# ---------------------------------------------------------------------------------------------


def test_shuffled_epoch_covers_every_sample_once() -> None:
    split = make_split(count=103)
    data = loader(split, batch_size=10)
    assert len(data) == 11 and data.num_samples == 103
    seen = [targets for _, targets in data]
    assert [len(t) for t in seen] == [10] * 10 + [3]
    everything = torch.cat(seen)
    assert torch.equal(everything.sort().values, torch.arange(103))
    assert not torch.equal(everything, torch.arange(103))  # actually shuffled


def test_drop_last() -> None:
    data = loader(make_split(count=103), batch_size=10, drop_last=True)
    assert len(data) == 10 and data.num_samples == 100
    seen = torch.cat([targets for _, targets in data])
    assert len(seen) == 100 and len(seen.unique()) == 100
    assert len(loader(make_split(count=7), batch_size=10, drop_last=True)) == 0
    assert len(loader(make_split(count=7), batch_size=10)) == 1


def test_eval_loader_is_in_order_and_normalised() -> None:
    split = make_split(count=25)
    mean, std = [0.4, 0.5, 0.6], [0.2, 0.3, 0.4]
    data = BatchLoader(split, 8, shuffle=False, mean=mean, std=std)
    xs, ys = zip(*data, strict=True)
    assert torch.equal(torch.cat(ys), torch.arange(25))
    expected = normalize_uint8(split.images, mean, std)
    assert torch.allclose(torch.cat(xs), expected, atol=1e-6)
    assert xs[0].dtype == torch.float32 and xs[0].device == split.images.device


def test_same_generator_state_same_batches_and_resume() -> None:
    split = make_split()
    augmenter = BatchAugmenter(AugmentConfig(rotate=10, hflip=True), num_classes=103)
    a, b = loader(split, seed=4, augmenter=augmenter), loader(split, seed=4, augmenter=augmenter)
    epoch1 = []
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
        epoch1.append(ya)
    # The generator state after an epoch (what a checkpoint saves) determines the next epoch.
    state = a.generator.get_state()
    epoch2 = [y for _, y in a]
    resumed = loader(split, seed=999, augmenter=augmenter)
    resumed.generator.set_state(state)
    assert all(torch.equal(p, q) for p, q in zip(epoch2, [y for _, y in resumed], strict=True))
    assert not torch.equal(torch.cat(epoch2), torch.cat(epoch1))  # a new order each epoch


def test_augmentation_happens_before_normalisation() -> None:
    split = make_split(count=40, shape=(1, 4, 6))
    mean, std = [0.3], [0.2]
    data = BatchLoader(
        split, 40, shuffle=False, mean=mean, std=std,
        augmenter=BatchAugmenter(AugmentConfig(hflip=True), 40),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    ((x, _y),) = list(data)
    pixels = x * 0.2 + 0.3  # back to [0, 1]
    original = split.images.float() / 255
    flipped = [torch.allclose(pixels[i], original[i].flip(2), atol=1e-6) for i in range(40)]
    kept = [torch.allclose(pixels[i], original[i], atol=1e-6) for i in range(40)]
    assert all(f or k for f, k in zip(flipped, kept, strict=True)) and 0 < sum(flipped) < 40


def test_mixup_loader_yields_soft_targets() -> None:
    split = make_split(count=30)
    augmenter = BatchAugmenter(AugmentConfig(mixup=0.5), num_classes=30)
    _x, targets = next(iter(loader(split, augmenter=augmenter)))
    assert targets.shape == (10, 30) and torch.allclose(targets.sum(1), torch.ones(10))


def test_identity_augmenter_is_dropped() -> None:
    data = loader(make_split(), augmenter=BatchAugmenter(AugmentConfig(), 103))
    assert data.augmenter is None


def test_channels_last() -> None:
    x, _ = next(iter(loader(make_split(), channels_last=True)))
    assert x.is_contiguous(memory_format=torch.channels_last)


def test_bad_batch_size() -> None:
    with pytest.raises(ValueError):
        loader(make_split(), batch_size=0)


def test_unshuffled_loader_without_generator() -> None:
    data = BatchLoader(make_split(count=5), 2, shuffle=True, mean=0.5, std=0.5)
    assert sorted(torch.cat([y for _, y in data]).tolist()) == [0, 1, 2, 3, 4]


def test_ink_layout_measures_where_handwriting_sits_in_its_frame():
    from trainlab.data import load_dataset
    from trainlab.data.batches import ink_layout

    digits = load_dataset("mnist-5k").train.images
    layout = ink_layout(digits, "dark")
    assert layout["ink_box"] == pytest.approx(20 / 28, abs=0.01)  # MNIST's 20-pixel box
    assert 0.8 < layout["ink_offset"] < 2  # centred by mass, to a pixel or so
    assert ink_layout(255 - digits, "light") == layout  # dark ink on white: the same layout
    filling = torch.zeros(10, 1, 28, 28, dtype=torch.uint8)
    filling[:, :, 1:27, 12:16] = 255  # strokes nearly the frame's height, centred
    assert ink_layout(filling, "dark") == {"ink_box": round(26 / 28, 4), "ink_offset": 0.0}
    blank = torch.zeros(3, 1, 8, 8, dtype=torch.uint8)
    assert ink_layout(blank, "dark")["ink_box"] == pytest.approx(20 / 28)  # nothing to measure
