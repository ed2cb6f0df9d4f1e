"""``vit``: a small Vision Transformer trained from scratch.

Dosovitskiy et al. 2021, "An Image is Worth 16x16 Words", scaled down for 28–32 px images: the
image is cut into ``patch_size``² patches (a strided conv), each becomes a ``dim``-wide token
with a learned position embedding, and ``depth`` pre-norm transformer blocks follow
(``x + attention(LN(x))``, ``x + MLP(LN(x))``, GELU MLP ``mlp_ratio × dim`` wide; attention via
``F.scaled_dot_product_attention``). The embedding is the final LayerNorm of either the mean of
the patch tokens (``pool="mean"``, the default: Beyer et al. 2022, "Better plain ViT baselines",
found global average pooling as good as a class token and simpler) or of a class token
(``pool="cls"``).

``patch_size="auto"`` takes the largest grid of at most 8×8 = 64 tokens with a power-of-two
patch: 4 for 28×28 (7×7 tokens) and 32×32 (8×8), 4 for 20×24 (5×6). Images whose sides are not
multiples of the patch are zero-padded on the right and bottom.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.errors import ModelError
from trainlab.models.layers import (
    Classifier,
    Head,
    check_choice,
    check_float,
    check_int,
    check_probability,
)
from trainlab.models.registry import register_model

MAX_AUTO_TOKENS = 64


def auto_patch_size(height: int, width: int) -> int:
    """Smallest power-of-two patch giving at most :data:`MAX_AUTO_TOKENS` tokens."""
    patch = 1
    while math.ceil(height / patch) * math.ceil(width / patch) > MAX_AUTO_TOKENS:
        patch *= 2
    return patch


class Attention(nn.Module):
    """Multi-head self-attention on ``[B, N, dim]`` tokens."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, dim // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each [B, heads, N, dim/heads]
        drop = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float, dropout: float):
        super().__init__()
        hidden = max(1, round(dim * mlp_ratio))
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, dim),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x)))
        return x + self.drop(self.mlp(self.norm2(x)))


class VisionTransformer(Classifier):
    family = "vit"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        patch_size: int,
        dim: int,
        depth: int,
        heads: int,
        mlp_ratio: float,
        dropout: float,
        pool: str,
    ):
        super().__init__()
        height, width = image_size
        self.patch_size = patch_size
        # Right/bottom zero padding that makes both sides multiples of the patch size.
        self.padding = (0, -width % patch_size, 0, -height % patch_size)
        tokens = math.ceil(height / patch_size) * math.ceil(width / patch_size)
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        extra = 1 if pool == "cls" else 0
        self.pos_embed = nn.Parameter(torch.zeros(1, tokens + extra, dim))
        self.pos_drop = nn.Dropout(dropout)
        self.blocks = nn.Sequential(*(Block(dim, heads, mlp_ratio, dropout) for _ in range(depth)))
        self.norm = nn.LayerNorm(dim)
        self.pool = pool
        self.classifier = Head(dim, num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        # timm's ViT recipe: truncated-normal(0.02) linears and position embeddings.
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        if any(self.padding):
            x = F.pad(x, self.padding)
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # [B, N, dim]
        if self.cls_token is not None:
            # x.shape[0], not len(x): tracing (ONNX, TorchScript, the server) keeps the batch
            # size symbolic only through the shape; len() would fix it to the example batch's.
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.blocks(self.pos_drop(x + self.pos_embed))
        x = x[:, 0] if self.cls_token is not None else x.mean(dim=1)
        return self.norm(x)


@register_model("vit", description="small Vision Transformer (patch 4, dim 128, depth 6)")
def build(
    *,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    patch_size: int | str = "auto",
    dim: int = 128,
    depth: int = 6,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    dropout: float = 0.0,
    pool: str = "mean",
) -> nn.Module:
    """Options:

    - ``patch_size``: side of the square patches in pixels, or "auto" (≤ 64 tokens).
    - ``dim``: token width; must be divisible by ``heads``.
    - ``depth``: number of transformer blocks.
    - ``heads``: attention heads per block.
    - ``mlp_ratio``: width of the block MLP as a multiple of ``dim``.
    - ``dropout``: dropout probability on attention weights, block outputs and embeddings.
    - ``pool``: "mean" of the patch tokens or a "cls" token as the image embedding.
    """
    height, width = image_size
    if isinstance(patch_size, str) and patch_size.lower() == "auto":
        patch = auto_patch_size(height, width)
    elif isinstance(patch_size, str):
        raise ModelError(
            f"option 'patch_size' must be an integer >= 1 or 'auto'; got {patch_size!r}"
        )
    else:
        patch = check_int(patch_size, "patch_size")
        if patch > max(height, width):
            raise ModelError(
                f"option 'patch_size' {patch} is larger than the {height}×{width} image; "
                f"use at most {max(height, width)} or 'auto'"
            )
    dim = check_int(dim, "dim")
    heads = check_int(heads, "heads")
    if dim % heads:
        raise ModelError(f"option 'dim' ({dim}) must be divisible by 'heads' ({heads})")
    model = VisionTransformer(
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        patch_size=patch,
        dim=dim,
        depth=check_int(depth, "depth"),
        heads=heads,
        mlp_ratio=check_float(mlp_ratio, "mlp_ratio", exclusive=True),
        dropout=check_probability(dropout, "dropout"),
        pool=check_choice(pool, "pool", ("mean", "cls")),
    )
    # The checkpoint records the patch "auto" chose: a later rule cannot change its shapes.
    model.trainlab_spec_options = {"patch_size": patch}
    return model
