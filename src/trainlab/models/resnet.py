"""``resnet``: pre-activation ResNet for small images.

He et al. 2016, "Identity Mappings in Deep Residual Networks": every block computes
``x + conv(act(bn(conv(act(bn(x))))))``, so the identity path carries the signal untouched and
deep nets train without warm-up tricks. Layout as the CIFAR PreActResNet-18 of
github.com/kuangliu/pytorch-cifar: a 3×3 stem conv with no max-pool (28–32 px images have no
pixels to spare), four stages of basic blocks with widths ``width × (1, 2, 4, 8)``, stride 2 at
the start of stages 2-4, then — as in the paper, unlike kuangliu's version — a final
BatchNorm + ReLU before the global average pool (the last block's output is not normalised).

``depth`` picks the blocks per stage: 10 → (1, 1, 1, 1), 18 → (2, 2, 2, 2), 34 → (3, 4, 6, 3);
``blocks`` gives them directly (any number of stages, each doubling the width). The default is
PreActResNet-18 (11 M parameters, ~0.45 G MACs at 28×28); ``width=16`` or ``32`` suits a CPU.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.models.layers import (
    Classifier,
    Head,
    check_int,
    check_int_choice,
    check_ints,
    check_probability,
    init_conv_kaiming,
)
from trainlab.models.registry import register_model

RESNET_DEPTHS: dict[int, tuple[int, ...]] = {10: (1, 1, 1, 1), 18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


class PreActBlock(nn.Module):
    """BN → ReLU → conv3×3(stride) → BN → ReLU → conv3×3, plus the shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            # A 1×1 projection when the shape changes (option B of the ResNet paper).
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        # The projection reads the pre-activated input, as in the paper's full pre-activation.
        shortcut = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(Classifier):
    family = "resnet"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        blocks: tuple[int, ...],
        width: int,
        dropout: float,
    ):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        stages: list[nn.Module] = []
        previous = width
        for index, count in enumerate(blocks):
            channels = width * 2**index
            stride = 1 if index == 0 else 2
            stage = [PreActBlock(previous, channels, stride)]
            stage += [PreActBlock(channels, channels, 1) for _ in range(count - 1)]
            stages.append(nn.Sequential(*stage))
            previous = channels
        self.stages = nn.Sequential(*stages)
        self.final_norm = nn.BatchNorm2d(previous)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = Head(previous, num_classes, dropout=dropout)
        init_conv_kaiming(self)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.pool(F.relu(self.final_norm(x)))


@register_model("resnet", description="pre-activation ResNet (18 by default), 3×3 stem")
def build(
    *,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    depth: int = 18,
    blocks: tuple[int, ...] | None = None,
    width: int = 64,
    dropout: float = 0.0,
) -> nn.Module:
    """Options:

    - ``depth``: 10, 18 or 34 (basic blocks per stage 1-1-1-1, 2-2-2-2, 3-4-6-3).
    - ``blocks``: blocks per stage, e.g. (2, 2, 2); overrides ``depth``; null = use depth.
    - ``width``: channels of the first stage; stage i has ``width × 2**i``.
    - ``dropout``: dropout probability before the classifier.
    """
    if blocks is None:
        layout = RESNET_DEPTHS[check_int_choice(depth, "depth", tuple(RESNET_DEPTHS))]
    else:
        layout = check_ints(blocks, "blocks")
    return PreActResNet(
        in_channels=in_channels,
        num_classes=num_classes,
        blocks=layout,
        width=check_int(width, "width"),
        dropout=check_probability(dropout, "dropout"),
    )
