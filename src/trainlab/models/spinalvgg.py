"""``spinalvgg``: VGG features with the SpinalNet fully connected head.

Kabir et al. 2020, "SpinalNet: Deep Neural Network with Gradual Input" (reference code:
github.com/dipuk0506/SpinalNet, ``MNIST_VGG/*_VGG_and_SpinalVGG.py``). The feature vector is
split into two halves; spinal layer 1 sees the first half, and every later layer sees the
*other* half than its predecessor together with the predecessor's output, like the spinal cord
receiving input gradually. Each spinal layer is ``Dropout → Linear → BatchNorm1d → ReLU`` of
``spinal_width`` units, and the classifier (``Dropout → Linear``) reads all spinal outputs
concatenated, so the embedding has ``spinal_width × spinal_layers`` numbers.

The defaults reproduce the paper's MNIST SpinalVGG: stages 64-64 | 128-128 | 256-256-256 |
256-256-256 with BatchNorm, a 256-wide feature vector (halves of 128), four spinal layers of
128 units, dropout 0.5. The reference flattens a 1×1 map; here the map is averaged globally,
which is identical at 28×28 and lets other image sizes keep a fixed feature width.
"""

from __future__ import annotations

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
    check_int,
    check_probability,
    make_activation,
)
from trainlab.models.registry import register_model
from trainlab.models.vgg import plan_stages, vgg_features


class SpinalHead(nn.Module):
    """The spinal layers: returns the concatenation of their outputs ``[B, width·layers]``."""

    def __init__(
        self,
        in_features: int,
        width: int,
        layers: int,
        dropout: float,
        activation: str,
        negative_slope: float,
    ):
        super().__init__()
        # An odd feature width gives halves of sizes n and n+1; the reference assumes even.
        self.halves = (in_features // 2, in_features - in_features // 2)
        self.out_features = width * layers
        self.layers = nn.ModuleList()
        for index in range(layers):
            fan_in = self.halves[index % 2] + (width if index > 0 else 0)
            self.layers.append(
                nn.Sequential(
                    nn.Dropout(dropout),
                    nn.Linear(fan_in, width),
                    nn.BatchNorm1d(width),
                    make_activation(activation, negative_slope),
                )
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        halves = torch.split(x, self.halves, dim=1)
        outputs: list[torch.Tensor] = []
        for index, layer in enumerate(self.layers):
            inputs = halves[index % 2]
            if outputs:
                inputs = torch.cat([inputs, outputs[-1]], dim=1)
            outputs.append(layer(inputs))
        return torch.cat(outputs, dim=1)


class SpinalVGG(Classifier):
    family = "spinalvgg"

    def __init__(
        self, features: nn.Sequential, spinal: SpinalHead, num_classes: int, dropout: float
    ):
        super().__init__()
        self.features = features
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.spinal = spinal
        self.classifier = Head(spinal.out_features, num_classes, dropout=dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.spinal(self.pool(self.features(x)))


@register_model("spinalvgg", description="VGG features + SpinalNet head (Kabir et al. 2020)")
def build(
    *,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    stages: tuple[int, ...] = (64, 128, 256, 256),
    convs_per_stage: int | tuple[int, ...] = (2, 2, 3, 3),
    width: float = 1.0,
    kernel_sizes: int | tuple[int, ...] = 3,
    batch_norm: bool = True,
    activation: str = "relu",
    negative_slope: float = 0.01,
    spinal_width: int = 128,
    spinal_layers: int = 4,
    dropout: float = 0.5,
) -> nn.Module:
    """Options:

    - ``stages``: output channels of each VGG stage (each ends with a 2×2 max-pool).
    - ``convs_per_stage``: convolutions per stage, one integer or one per stage.
    - ``width``: multiplier for every stage's channels (0.25 for a quick CPU run).
    - ``kernel_sizes``: conv kernel side, one integer or one per stage, e.g. (3, 5, 7).
    - ``batch_norm``: BatchNorm after every conv (the spinal layers always have it).
    - ``activation``: relu, leaky_relu, gelu, elu or silu, for convs and spinal layers.
    - ``negative_slope``: slope of leaky_relu for negative inputs.
    - ``spinal_width``: units of each spinal layer (the reference's ``layer_width``).
    - ``spinal_layers``: number of spinal layers (the reference uses 4).
    - ``dropout``: dropout probability before every spinal layer and the classifier.
    """
    plan = plan_stages(stages, convs_per_stage, None, width, kernel_sizes)
    if plan.channels[-1] < 2:
        raise ModelError("the last stage needs at least 2 channels to split into two halves")
    activation = check_choice(activation, "activation", ACTIVATIONS)
    negative_slope = check_float(negative_slope, "negative_slope")
    features, _ = vgg_features(
        in_channels,
        image_size,
        plan,
        check_bool(batch_norm, "batch_norm"),
        activation,
        negative_slope,
    )
    dropout = check_probability(dropout, "dropout")
    spinal = SpinalHead(
        in_features=plan.channels[-1],
        width=check_int(spinal_width, "spinal_width"),
        layers=check_int(spinal_layers, "spinal_layers"),
        dropout=dropout,
        activation=activation,
        negative_slope=negative_slope,
    )
    return SpinalVGG(features, spinal, num_classes, dropout)
