"""``gru``: a recurrent network that reads the image one row at a time.

The sequential-MNIST baseline (e.g. Le et al. 2015, "A Simple Way to Initialize Recurrent
Networks"; here row by row, 28 steps, rather than pixel by pixel): every row of ``W × C``
pixels is one time step. An optional linear ``embedding`` projects each row first (fewer GRU
input weights, a learned per-row feature). A (stacked, optionally bidirectional) GRU
(Cho et al. 2014) follows; the image embedding is the final hidden state of the top layer
(both directions concatenated when bidirectional), or the mean of its outputs over all rows
(``pool="mean"``).
"""

from __future__ import annotations

import torch
from torch import nn

from trainlab.models.layers import (
    Classifier,
    Head,
    check_bool,
    check_choice,
    check_int,
    check_probability,
)
from trainlab.models.registry import register_model


class RowGRU(Classifier):
    family = "gru"

    def __init__(
        self,
        row_features: int,
        num_classes: int,
        embedding: int,
        hidden: int,
        layers: int,
        bidirectional: bool,
        dropout: float,
        pool: str,
    ):
        super().__init__()
        self.embed = nn.Linear(row_features, embedding) if embedding else nn.Identity()
        # torch applies GRU dropout between stacked layers only (it warns if layers == 1).
        self.gru = nn.GRU(
            input_size=embedding or row_features,
            hidden_size=hidden,
            num_layers=layers,
            batch_first=True,
            dropout=dropout if layers > 1 else 0.0,
            bidirectional=bidirectional,
        )
        self.pool = pool
        self.directions = 2 if bidirectional else 1
        self.classifier = Head(hidden * self.directions, num_classes, dropout=dropout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        batch, channels, height, width = x.shape
        # [B, C, H, W] -> [B, H, W·C]: one step per row; contiguous for channels_last input.
        rows = x.permute(0, 2, 3, 1).reshape(batch, height, width * channels)
        outputs, last = self.gru(self.embed(rows))
        if self.pool == "mean":
            return outputs.mean(dim=1)
        # last: [layers·directions, B, hidden]; the top layer's states are the final ones.
        top = last[-self.directions :]
        return top.transpose(0, 1).reshape(batch, -1)


@register_model("gru", description="GRU reading the image row by row (sequential MNIST style)")
def build(
    *,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    embedding: int = 64,
    hidden: int = 128,
    layers: int = 1,
    bidirectional: bool = False,
    dropout: float = 0.0,
    pool: str = "last",
) -> nn.Module:
    """Options:

    - ``embedding``: width of the linear projection of each row; 0 = feed raw rows.
    - ``hidden``: GRU hidden units (per direction).
    - ``layers``: stacked GRU layers.
    - ``bidirectional``: also read the rows bottom to top.
    - ``dropout``: between stacked GRU layers and before the classifier.
    - ``pool``: "last" hidden state or "mean" of the outputs over rows.
    """
    _, width = image_size
    return RowGRU(
        row_features=width * in_channels,
        num_classes=num_classes,
        embedding=check_int(embedding, "embedding", minimum=0),
        hidden=check_int(hidden, "hidden"),
        layers=check_int(layers, "layers"),
        bidirectional=check_bool(bidirectional, "bidirectional"),
        dropout=check_probability(dropout, "dropout"),
        pool=check_choice(pool, "pool", ("last", "mean")),
    )
