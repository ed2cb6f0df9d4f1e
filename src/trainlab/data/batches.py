"""Batches straight from one uint8 tensor on the training device.

A split is held as ``images`` uint8 ``[N, C, H, W]`` (4x smaller than float32) on the device that
trains. A batch is one ``index_select`` of a shuffled index, converted to float, augmented in
[0, 1] space and normalised, all on that device: no workers, no per-sample Python, and the only
state is the ``torch.Generator``, which a checkpoint saves.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch

from trainlab.data.augment import BatchAugmenter
from trainlab.data.types import ImageSplit

__all__ = ["BatchLoader", "channel_stats", "normalize", "normalize_uint8"]

ChannelValues = Sequence[float] | float | torch.Tensor

# Pixels per channel_stats chunk: one channel of it is copied (uint8, 16 MB) for bincount.
_STATS_CHUNK_VALUES = 2**24


def background_of(images: torch.Tensor, sample: int = 1000) -> str:
    """``"dark"`` or ``"light"``: the background of uint8 images ``[N, C, H, W]``, from the
    median of their border pixels (a glyph's background touches the edges, its ink mostly not).
    MNIST-style data is light ink on dark; a folder of scanned digits is often the reverse, and
    the server must hand the model the polarity it was trained on."""
    if images.numel() == 0:
        return "dark"
    picked = images[: max(1, sample)]
    border = torch.cat([picked[..., 0, :].flatten(), picked[..., -1, :].flatten(),
                        picked[..., :, 0].flatten(), picked[..., :, -1].flatten()])  # fmt: skip
    return background_of_border(border)


def background_of_border(border: torch.Tensor) -> str:
    """``"dark"`` or ``"light"`` from an image's (or images') border pixels: the one rule that
    training records a checkpoint's background with and the server judges an upload by."""
    return "dark" if float(border.float().median()) < 128 else "light"


INK_THRESHOLD = 0.2  # share of full intensity that counts as ink (cropping, the ink's box)
MNIST_INK_BOX = 20 / 28  # MNIST: each digit's longer side is 20 pixels of the 28...
MNIST_INK_OFFSET = 1.5  # ...and its centre of mass within ~1.5 px of the frame's centre


def ink_geometry(ink: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image of light-on-dark grey ``[N, H, W]`` (each with some ink): the longer side of
    its ink's box and the distance of its centre of mass from the frame's centre, in pixels.
    The one measure training records (:func:`ink_layout`) and the server checks uploads by."""
    _, height, width = ink.shape
    mask = ink > INK_THRESHOLD * 255

    def extent(flags: torch.Tensor) -> torch.Tensor:  # [n, L] bool -> last - first + 1
        length = flags.shape[1]
        first = flags.float().argmax(dim=1)
        last = length - 1 - flags.flip(1).float().argmax(dim=1)
        return last - first + 1

    box = torch.maximum(extent(mask.any(dim=2)), extent(mask.any(dim=1)))
    weights = ink.double()
    total = weights.sum(dim=(1, 2))
    rows = torch.arange(height, dtype=torch.float64, device=ink.device)
    cols = torch.arange(width, dtype=torch.float64, device=ink.device)
    cy = (weights.sum(dim=2) * rows).sum(dim=1) / total
    cx = (weights.sum(dim=1) * cols).sum(dim=1) / total
    return box, torch.hypot(cy - (height - 1) / 2, cx - (width - 1) / 2)


def ink_layout(images: torch.Tensor, background: str, sample: int = 10_000) -> dict[str, float]:
    """How handwriting sits in its frame, measured on uint8 ``[N, C, H, W]`` training images:
    ``ink_box``, the median longer side of the ink's box as a share of the frame (MNIST: 20/28),
    and ``ink_offset``, the 99th percentile of its centre of mass's distance from the frame's
    centre in pixels (MNIST: 1.3). The server scales drawings to this box and passes an upload
    through unchanged only when it sits like this (recorded in the checkpoint's preprocessing)."""
    picked = images[: max(1, sample)].float().mean(dim=1)  # grey [N, H, W]
    ink = picked if background == "dark" else 255 - picked
    drawn = (ink > INK_THRESHOLD * 255).flatten(1).any(dim=1)
    if not bool(drawn.any()):
        return {"ink_box": MNIST_INK_BOX, "ink_offset": MNIST_INK_OFFSET}
    box, offset = ink_geometry(ink[drawn])
    return {
        "ink_box": round(float(box.float().median()) / min(ink.shape[1:]), 4),
        "ink_offset": round(float(torch.quantile(offset.float(), 0.99)), 3),
    }


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and (population) std of uint8 ``[N, C, H, W]`` images, in [0, 1] units.

    Exact and cheap: a 256-bin histogram per channel (``bincount``, in chunks), so
    60000x3x32x32 is never materialised as float (700 MB); ~0.2 s for that size on 2 CPU cores.
    A constant channel gets std 1.0 instead of 0, so normalising by it cannot divide by zero.
    """
    if images.ndim != 4 or images.dtype != torch.uint8:
        raise ValueError(
            f"expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}"
        )
    count, channels, height, width = images.shape
    if count * height * width == 0:
        raise ValueError("channel_stats needs at least one non-empty image")
    chunk = max(1, _STATS_CHUNK_VALUES // (height * width))
    histogram = torch.zeros(channels, 256, dtype=torch.int64, device=images.device)
    for start in range(0, count, chunk):
        part = images[start : start + chunk]
        for channel in range(channels):
            histogram[channel] += torch.bincount(part[:, channel].reshape(-1), minlength=256)
    # Exact integer counts; the moments in float64 on the CPU (MPS has no float64).
    histogram = histogram.cpu().double()
    values = torch.arange(256, dtype=torch.float64)  # pixel values, 0..255 units
    pixels = count * height * width
    mean = histogram @ values / pixels
    var = (histogram @ values.square() / pixels - mean.square()).clamp_min(0)
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.full_like(std, 255.0))  # constant channel -> 1.0
    return (mean / 255).tolist(), (std / 255).tolist()


def _channel_tensor(
    values: ChannelValues, channels: int, device: torch.device, name: str
) -> torch.Tensor:
    """``[1, C, 1, 1]`` float32 from one value per channel (or one value for all channels)."""
    tensor = torch.as_tensor(values, dtype=torch.float32, device=device).reshape(-1)
    if tensor.numel() not in (1, channels):
        raise ValueError(f"{name} has {tensor.numel()} values for {channels} channels")
    return tensor.expand(channels).reshape(1, channels, 1, 1)


def normalize(x: torch.Tensor, mean: ChannelValues, std: ChannelValues) -> torch.Tensor:
    """``(x - mean) / std`` per channel, for float ``x`` ``[B, C, H, W]`` in [0, 1] units."""
    channels = x.shape[1]
    mean_t = _channel_tensor(mean, channels, x.device, "mean").to(x.dtype)
    std_t = _channel_tensor(std, channels, x.device, "std").to(x.dtype)
    return (x - mean_t) / std_t


def normalize_uint8(images: torch.Tensor, mean: ChannelValues, std: ChannelValues) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> float32 ``(images / 255 - mean) / std``; the one place of this math
    (training batches, evaluation batches and the server's preprocessing all use it)."""
    return normalize(images.float() / 255, mean, std)


class BatchLoader:
    """Iterate ``(x, targets)`` batches of an :class:`ImageSplit` that already lives on the device.

    ``x`` is float32 ``[B, C, H, W]``, normalised with ``mean``/``std`` (in [0, 1] units, e.g. from
    :func:`channel_stats`); ``targets`` is int64 ``[B]``, or soft float ``[B, classes]`` when the
    augmenter mixes (mixup/cutmix). Augmentation runs on [0, 1] pixels *before* normalisation.
    With ``shuffle`` every epoch is a fresh ``torch.randperm`` from ``generator``, and the
    augmenter draws from the same generator: the generator state fully determines the next epoch.
    An evaluation loader is ``shuffle=False`` without augmenter.
    """

    def __init__(
        self,
        split: ImageSplit,
        batch_size: int,
        *,
        shuffle: bool,
        mean: ChannelValues,
        std: ChannelValues,
        augmenter: BatchAugmenter | None = None,
        generator: torch.Generator | None = None,
        drop_last: bool = False,
        channels_last: bool = False,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.split = split
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augmenter = None if augmenter is None or augmenter.is_identity else augmenter
        self.generator = generator
        self.drop_last = drop_last
        self.channels_last = channels_last
        channels = split.images.shape[1]
        self.mean = _channel_tensor(mean, channels, split.images.device, "mean")
        self.std = _channel_tensor(std, channels, split.images.device, "std")

    @property
    def device(self) -> torch.device:
        return self.split.images.device

    @property
    def num_samples(self) -> int:
        """Samples seen per epoch (fewer than the split with ``drop_last``)."""
        return len(self) * self.batch_size if self.drop_last else len(self.split)

    def __len__(self) -> int:
        count = len(self.split)
        if self.drop_last:
            return count // self.batch_size
        return math.ceil(count / self.batch_size)

    def _order(self) -> torch.Tensor:
        count = len(self.split)
        if not self.shuffle:
            return torch.arange(count, device=self.device)
        gen_device = self.generator.device if self.generator is not None else torch.device("cpu")
        order = torch.randperm(count, generator=self.generator, device=gen_device)
        return order.to(self.device)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = self._order()
        images, labels = self.split.images, self.split.labels
        for batch in range(len(self)):
            index = order[batch * self.batch_size : (batch + 1) * self.batch_size]
            x = images.index_select(0, index).float().div_(255)  # [0, 1] units
            targets = labels.index_select(0, index)
            if self.augmenter is not None:
                x, targets = self.augmenter(x, targets, self.generator)
            x = normalize(x, self.mean, self.std)  # the math of normalize_uint8
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, targets
