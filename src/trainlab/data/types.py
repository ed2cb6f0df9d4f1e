"""The in-memory form of a dataset: one uint8 tensor per split, labels as int64."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch

# What the images are; it picks default augmentation (no flips for digits/characters) and how
# the server preprocesses uploads (ink on a dark background, centred by mass, for digit-like data).
#   digits, characters: handwritten symbols; mirroring or large rotations change their meaning
#   natural: photos (CIFAR-like); mirrored photos keep their label
#   other: known content that is neither, e.g. Fashion-MNIST (clothes: flips are fine)
#   unknown: user data that does not say what it is (a user .npz without a ``kind`` entry, any
#            image folder); nothing may be assumed, so defaults are the ones safe for any content
DataKind = Literal["digits", "characters", "natural", "other", "unknown"]
HANDWRITING_KINDS = ("digits", "characters")  # normalised like MNIST at the server


@dataclass
class ImageSplit:
    images: torch.Tensor  # uint8, [N, C, H, W]
    labels: torch.Tensor  # int64, [N]

    def __post_init__(self) -> None:
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ValueError(
                f"images must be uint8 [N, C, H, W], got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.ndim != 1 or len(self.labels) != len(self.images):
            raise ValueError(
                f"labels must be [N] with N={len(self.images)}, got {tuple(self.labels.shape)}"
            )
        self.labels = self.labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> ImageSplit:
        return ImageSplit(self.images[indices], self.labels[indices])

    def to(self, device: torch.device | str) -> ImageSplit:
        return ImageSplit(self.images.to(device), self.labels.to(device))


@dataclass
class DatasetBundle:
    name: str
    train: ImageSplit  # all training data; validation is carved from it later (data.splits)
    test: ImageSplit  # used only for the final evaluation
    class_names: list[str]
    kind: DataKind = "unknown"  # undeclared content gets the safe defaults
    source: str = ""  # where it was read from, for the run record
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        channels, height, width = self.train.images.shape[1:]
        return int(channels), int(height), int(width)
