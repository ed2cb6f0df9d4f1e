"""A picture of what an augmentation config does (``trainlab augment-preview``).

Each row is one image: the original in the first column, a wider gutter, then ``variants``
augmented versions. Mixup and cutmix mix with other images of the dataset, so those show too.
The grid is computed by a pure function (:func:`augment_grid`, numpy out) and saved by a thin one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from trainlab._io import atomic_path
from trainlab.config import AugmentConfig, ConfigError
from trainlab.data.augment import BatchAugmenter
from trainlab.data.batches import channel_stats

__all__ = ["augment_grid", "augment_preview_counts", "save_augment_preview"]

_GUTTER_VALUE = 96  # mid-dark grey: visible next to black digit backgrounds and white photos
_MIX_POOL = 64  # extra images in each augmented batch, so mixup partners are other images


def _upscale_factor(height: int, width: int) -> int:
    """Integer zoom so a cell is at least ~84 px: 3x for 28 px, 2x for 32 px, 1x for 84 px+."""
    return max(1, 84 // max(height, width))


MAX_PREVIEW_ROWS = 64  # 10,000 × 50 CIFAR images made a 1.5-gigapixel PNG no viewer opens
MAX_PREVIEW_VARIANTS = 32


def augment_preview_counts(
    images: torch.Tensor | int, samples: int, variants: int
) -> tuple[int, int]:
    """``(rows, variants)`` a preview of ``samples`` images will really show: ``samples`` is
    clamped to the number of images (``images``: the tensor, or its length). Raises
    :class:`ConfigError` for fewer than one sample or variant, as :func:`augment_grid` does, so a
    caller can validate and report the true numbers before drawing."""
    if samples < 1:
        raise ConfigError(f"samples must be at least 1, got {samples}")
    if variants < 1:
        raise ConfigError(f"variants must be at least 1, got {variants}")
    if samples > MAX_PREVIEW_ROWS or variants > MAX_PREVIEW_VARIANTS:  # an image one can open
        raise ConfigError(
            f"a preview shows at most {MAX_PREVIEW_ROWS} samples × {MAX_PREVIEW_VARIANTS} "
            f"variants; got {samples} × {variants}"
        )
    count = images if isinstance(images, int) else len(images)
    if count < 1:
        raise ConfigError("no images to preview")
    return min(samples, count), variants


def augment_grid(
    images: torch.Tensor,
    config: AugmentConfig,
    *,
    samples: int = 8,
    variants: int = 8,
    seed: int = 0,
    upscale: int | None = None,
    gutter: int = 2,
    mean: Sequence[float] | None = None,
) -> np.ndarray:
    """uint8 ``[H', W', C]`` grid (C = 1 for grey, 3 for colour) of ``samples`` random images
    (rows) from uint8 ``images`` ``[N, C, H, W]``: original, separator, ``variants`` versions.

    Fewer rows when there are fewer images (see :func:`augment_preview_counts`).
    ``upscale``: nearest-neighbour zoom per cell (default: 3x for 28 px, see
    :func:`_upscale_factor`); ``gutter``: pixels between cells (the separator is 3x wider).
    ``mean``: per-channel mean in [0, 1] for the cutout fill, as training passes it to
    :class:`BatchAugmenter`; by default the mean of all ``images`` (the training images, when
    the caller passes those: the same colour training fills with, up to the validation split).
    """
    if images.ndim != 4 or images.dtype != torch.uint8:
        raise ValueError(
            f"expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    n_rows, variants = augment_preview_counts(images, samples, variants)
    images = images.cpu()
    count, _channels, height, width = images.shape
    if mean is None and config.cutout:  # only cutout uses it; channel_stats reads every pixel
        mean, _std = channel_stats(images)
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randperm(count, generator=generator)
    rows = picked[:n_rows]
    pool = torch.cat([rows, picked[n_rows : n_rows + _MIX_POOL]])
    x = images[pool].float() / 255
    augmenter = BatchAugmenter(config, num_classes=1, mean=mean)
    labels = torch.zeros(len(pool), dtype=torch.long)
    columns = [x[:n_rows]]
    for _ in range(variants):
        # One call per column: every column gets its own mixup lam and partners.
        augmented, _targets = augmenter(x, labels, generator)
        columns.append(augmented[:n_rows])
    cells = torch.stack(columns, dim=1)  # [rows, 1 + variants, C, H, W] in [0, 1]
    cells = (cells.clamp(0, 1) * 255).round().to(torch.uint8)
    zoom = upscale or _upscale_factor(height, width)
    return _tile(cells.numpy(), zoom=zoom, gutter=gutter)


def _tile(cells: np.ndarray, *, zoom: int, gutter: int) -> np.ndarray:
    """Lay out ``[R, K, C, H, W]`` uint8 cells as an ``[H', W', C]`` image with gutters; the first
    column is followed by a separator three gutters wide."""
    n_rows, n_cols, channels, height, width = cells.shape
    cells = cells.repeat(zoom, axis=3).repeat(zoom, axis=4)
    cell_h, cell_w = height * zoom, width * zoom
    separator = 3 * gutter
    extra = separator - gutter if n_cols > 1 else 0
    out_h = n_rows * cell_h + (n_rows + 1) * gutter
    out_w = n_cols * cell_w + (n_cols + 1) * gutter + extra
    grid = np.full((out_h, out_w, channels), _GUTTER_VALUE, dtype=np.uint8)
    for r in range(n_rows):
        top = gutter + r * (cell_h + gutter)
        for k in range(n_cols):
            left = gutter + k * (cell_w + gutter) + (extra if k > 0 else 0)
            grid[top : top + cell_h, left : left + cell_w] = cells[r, k].transpose(1, 2, 0)
    return grid


def save_augment_preview(
    path: str | Path, images: torch.Tensor, config: AugmentConfig, **kwargs: Any
) -> Path:
    """Write :func:`augment_grid` (same keyword arguments) as a PNG, atomically; returns the path."""
    grid = augment_grid(images, config, **kwargs)
    picture = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    path = Path(path)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")
    return path
