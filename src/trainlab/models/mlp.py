"""``mlp``: a multilayer perceptron on the flattened image.

The classic baseline (LeCun et al. 1998 report 2-3 % MNIST error for 300/100-unit nets): the
image is flattened to ``C·H·W`` numbers and passed through ``Linear → [BatchNorm] → activation
→ [Dropout]`` blocks. ``hidden=()`` gives multinomial logistic regression.
"""

from __future__ import annotations

import torch
from torch import nn

from trainlab.models.layers import (
    ACTIVATIONS,
    Classifier,
    Head,
    check_bool,
    check_choice,
    check_float,
    check_ints,
    check_probability,
    make_activation,
)
from trainlab.models.registry import register_model


class MLP(Classifier):
    family = "mlp"

    def __init__(
        self,
        in_features: int,
        num_classes: int,
        hidden: tuple[int, ...],
        dropout: float,
        activation: str,
        batch_norm: bool,
        negative_slope: float = 0.01,
    ):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for units in hidden:
            # No bias before BatchNorm: BN's shift makes it redundant.
            layers.append(nn.Linear(width, units, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(make_activation(activation, negative_slope))
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = units
        self.body = nn.Sequential(*layers)
        # Dropout already follows every hidden layer, so the head needs none of its own.
        self.classifier = Head(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))


@register_model("mlp", description="multilayer perceptron on the flattened image")
def build(
    *,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    hidden: tuple[int, ...] = (256, 128),
    dropout: float = 0.0,
    activation: str = "relu",
    batch_norm: bool = False,
    negative_slope: float = 0.01,
) -> nn.Module:
    """Options:

    - ``hidden``: units of each hidden layer, input side first; ``()`` = logistic regression.
    - ``dropout``: dropout probability after every hidden layer.
    - ``activation``: relu, leaky_relu, gelu, elu or silu.
    - ``batch_norm``: BatchNorm1d after every hidden linear layer.
    - ``negative_slope``: slope of leaky_relu for negative inputs.
    """
    height, width = image_size
    return MLP(
        in_features=in_channels * height * width,
        num_classes=num_classes,
        hidden=check_ints(hidden, "hidden", allow_empty=True),
        dropout=check_probability(dropout, "dropout"),
        activation=check_choice(activation, "activation", ACTIVATIONS),
        batch_norm=check_bool(batch_norm, "batch_norm"),
        negative_slope=check_float(negative_slope, "negative_slope"),
    )
