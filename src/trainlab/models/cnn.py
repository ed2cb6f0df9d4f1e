"""``cnn``: the small two-convolution network every PyTorch tutorial starts with.

``conv(C→32, 3×3, pad 1) → ReLU → maxpool 2 → conv(32→64, 3×3, pad 1) → ReLU → maxpool 2 →
flatten → fc(→128) → ReLU → dropout → fc(→K)``, as in the PyTorch MNIST example and most
course notebooks. It is the baseline of trainlab's benchmarks, so it stays deliberately plain:
PyTorch's default initialisation, no BatchNorm unless ``batch_norm=True``.
On 1×28×28 with 10 classes it has 421,642 parameters (the fc layer holds 95 % of them).
"""

from __future__ import annotations

import torch
from torch import nn

from trainlab.errors import ModelError
from trainlab.models.layers import (
    Classifier,
    Head,
    check_bool,
    check_int,
    check_ints,
    check_probability,
)
from trainlab.models.registry import register_model


class SmallCNN(Classifier):
    family = "cnn"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        channels: tuple[int, ...],
        hidden: int,
        dropout: float,
        kernel_size: int,
        batch_norm: bool,
    ):
        super().__init__()
        height, width = image_size
        layers: list[nn.Module] = []
        previous = in_channels
        for out in channels:
            # Odd kernels with padding k//2 keep the size; even ones grow it by one (k=4: 28 -> 29).
            layers.append(nn.Conv2d(previous, out, kernel_size, padding=kernel_size // 2))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers += [nn.ReLU(), nn.MaxPool2d(2)]
            height = (height + 2 * (kernel_size // 2) - kernel_size + 1) // 2
            width = (width + 2 * (kernel_size // 2) - kernel_size + 1) // 2
            if height < 1 or width < 1:
                raise ModelError(
                    f"image {image_size[0]}×{image_size[1]} is too small for {len(channels)} "
                    f"conv+pool stages; use fewer 'channels' entries or larger images"
                )
            previous = out
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(previous * height * width, hidden), nn.ReLU())
        self.classifier = Head(hidden, num_classes, dropout=dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


@register_model("cnn", description="plain 2-conv CNN (conv-pool ×2, fc 128): the baseline")
def build(
    *,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    channels: tuple[int, ...] = (32, 64),
    hidden: int = 128,
    dropout: float = 0.25,
    kernel_size: int = 3,
    batch_norm: bool = False,
) -> nn.Module:
    """Options:

    - ``channels``: output channels of each conv → ReLU → 2×2 max-pool stage.
    - ``hidden``: units of the fully connected layer (its output is the embedding).
    - ``dropout``: dropout probability before the final layer.
    - ``kernel_size``: side of every conv kernel (padding ``kernel_size // 2``).
    - ``batch_norm``: BatchNorm2d after each conv (off: the baseline is the plain net).
    """
    return SmallCNN(
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        channels=check_ints(channels, "channels"),
        hidden=check_int(hidden, "hidden"),
        dropout=check_probability(dropout, "dropout"),
        kernel_size=check_int(kernel_size, "kernel_size"),
        batch_norm=check_bool(batch_norm, "batch_norm"),
    )
