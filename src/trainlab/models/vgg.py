"""``vgg``: a configurable VGG (Simonyan & Zisserman 2015, "Very Deep Convolutional Networks").

The network is a stack of *stages*; a stage is ``convs_per_stage`` convolutions
(``conv → [BatchNorm] → activation``, 'same' padding) followed by a 2×2 max-pool. Either give
the stage widths directly (``stages=(64, 128, 256)``, ``convs_per_stage=2``, the default, a
small VGG suited to 28–32 px images) or a named ``depth`` of the paper (11, 13, 16, 19: five
stages of 64…512 channels), in both cases scaled by the ``width`` multiplier.

Small images: a pool is skipped along a side that is already 1 pixel long, so even VGG-19's
five pools fit a 20×24 image. After the stages, ``global_pool=True`` averages each channel
(the feature vector is the last stage's width, independent of image size); ``False``
flattens the map as the original VGG does. ``dense`` fully connected layers (``dropout →
linear → [BatchNorm1d] → activation``, the head of the VGG used in the SpinalNet MNIST
examples) follow, and the final linear layer has dropout on its input.

``kernel_sizes`` may grow per stage, e.g. ``(3, 5, 7)``: larger receptive fields early help
on small, centred characters at little cost once the map is small.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from trainlab.errors import ModelError
from trainlab.models.layers import (
    ACTIVATIONS,
    Classifier,
    Head,
    check_bool,
    check_choice,
    check_float,
    check_int_choice,
    check_ints,
    check_probability,
    init_conv_kaiming,
    make_activation,
    per_stage,
    pool_kernel,
    scaled,
)
from trainlab.models.registry import register_model

# Table 1 of the paper: convolutions per stage for configurations A (11), B (13), D (16), E (19).
VGG_DEPTHS: dict[int, tuple[int, ...]] = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}
VGG_DEPTH_WIDTHS = (64, 128, 256, 512, 512)
DEFAULT_STAGES = (64, 128, 256)
DEFAULT_CONVS = 2


@dataclass(frozen=True)
class StagePlan:
    """Resolved layout of the convolutional part: one entry per stage."""

    channels: tuple[int, ...]
    convs: tuple[int, ...]
    kernels: tuple[int, ...]


def plan_stages(
    stages: object,
    convs_per_stage: object,
    depth: object,
    width: object,
    kernel_sizes: object,
) -> StagePlan:
    """Check the layout options shared by ``vgg`` and ``spinalvgg`` and resolve them."""
    multiplier = check_float(width, "width", exclusive=True)
    stage_widths = check_ints(stages, "stages")
    if depth is not None:
        depth = check_int_choice(depth, "depth", tuple(VGG_DEPTHS))
        if stage_widths != DEFAULT_STAGES or convs_per_stage != DEFAULT_CONVS:
            raise ModelError("give either 'depth' or 'stages'/'convs_per_stage', not both")
        stage_widths, convs = VGG_DEPTH_WIDTHS, VGG_DEPTHS[depth]
    else:
        convs = per_stage(convs_per_stage, "convs_per_stage", len(stage_widths))
    kernels = per_stage(kernel_sizes, "kernel_sizes", len(stage_widths))
    return StagePlan(scaled(stage_widths, multiplier), convs, kernels)


def vgg_features(
    in_channels: int,
    image_size: tuple[int, int],
    plan: StagePlan,
    batch_norm: bool,
    activation: str,
    negative_slope: float,
) -> tuple[nn.Sequential, tuple[int, int]]:
    """The convolutional stages and the spatial size ``(h, w)`` they output."""
    height, width = image_size
    layers: list[nn.Module] = []
    previous = in_channels
    for channels, convs, kernel in zip(plan.channels, plan.convs, plan.kernels, strict=True):
        for _ in range(convs):
            # 'same' padding keeps the size for odd and even kernels; bias is redundant with BN.
            layers.append(
                nn.Conv2d(previous, channels, kernel, padding="same", bias=not batch_norm)
            )
            if batch_norm:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(make_activation(activation, negative_slope))
            previous = channels
        kernel_hw = pool_kernel(height, width)
        if kernel_hw != (1, 1):
            layers.append(nn.MaxPool2d(kernel_hw))
        height, width = height // kernel_hw[0], width // kernel_hw[1]
    features = nn.Sequential(*layers)
    init_conv_kaiming(features)
    return features, (height, width)


def dense_layers(
    in_features: int,
    units: tuple[int, ...],
    dropout: float,
    batch_norm: bool,
    activation: str,
    negative_slope: float,
) -> nn.Sequential:
    """``dropout → linear → [BatchNorm1d] → activation`` for each entry of ``units``."""
    layers: list[nn.Module] = []
    previous = in_features
    for width in units:
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers.append(nn.Linear(previous, width, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(width))
        layers.append(make_activation(activation, negative_slope))
        previous = width
    return nn.Sequential(*layers)


class VGG(Classifier):
    family = "vgg"

    def __init__(
        self,
        features: nn.Sequential,
        pool: nn.Module,
        dense: nn.Sequential,
        embedding_dim: int,
        num_classes: int,
        dropout: float,
    ):
        super().__init__()
        self.features = features
        self.pool = pool
        self.dense = dense
        self.classifier = Head(embedding_dim, num_classes, dropout=dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.pool(self.features(x)))


@register_model("vgg", description="configurable VGG (stages or depth 11/13/16/19), BatchNorm")
def build(
    *,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    stages: tuple[int, ...] = DEFAULT_STAGES,
    convs_per_stage: int | tuple[int, ...] = DEFAULT_CONVS,
    depth: int | None = None,
    width: float = 1.0,
    kernel_sizes: int | tuple[int, ...] = 3,
    batch_norm: bool = True,
    activation: str = "relu",
    negative_slope: float = 0.01,
    global_pool: bool = True,
    dense: tuple[int, ...] = (512,),
    dropout: float = 0.5,
) -> nn.Module:
    """Options:

    - ``stages``: output channels of each conv stage (each ends with a 2×2 max-pool).
    - ``convs_per_stage``: convolutions per stage, one integer or one per stage.
    - ``depth``: 11, 13, 16 or 19 for the paper's layouts (overrides ``stages``); null = off.
    - ``width``: multiplier for every stage's channels (0.25 for a quick CPU run).
    - ``kernel_sizes``: conv kernel side, one integer or one per stage, e.g. (3, 5, 7).
    - ``batch_norm``: BatchNorm after every conv and dense layer.
    - ``activation``: relu, leaky_relu, gelu, elu or silu.
    - ``negative_slope``: slope of leaky_relu for negative inputs.
    - ``global_pool``: average each channel (true) or flatten the final map (false).
    - ``dense``: units of fully connected layers before the classifier; () = none.
    - ``dropout``: dropout probability before every dense layer and the classifier.
    """
    plan = plan_stages(stages, convs_per_stage, depth, width, kernel_sizes)
    batch_norm = check_bool(batch_norm, "batch_norm")
    activation = check_choice(activation, "activation", ACTIVATIONS)
    negative_slope = check_float(negative_slope, "negative_slope")
    dropout = check_probability(dropout, "dropout")
    units = check_ints(dense, "dense", allow_empty=True)
    features, (height, width_out) = vgg_features(
        in_channels, image_size, plan, batch_norm, activation, negative_slope
    )
    if check_bool(global_pool, "global_pool"):
        pool: nn.Module = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        flat = plan.channels[-1]
    else:
        pool = nn.Flatten()
        flat = plan.channels[-1] * height * width_out
    head = dense_layers(flat, units, dropout, batch_norm, activation, negative_slope)
    return VGG(features, pool, head, units[-1] if units else flat, num_classes, dropout)
