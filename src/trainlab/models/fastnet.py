"""``fastnet``: a small, fast BatchNorm CNN in the style of the CIFAR-10 speed-run nets.

The block design is Keller Jordan's airbench (github.com/KellerJordan/cifar10-airbench,
``airbench94.py``), itself descended from David Page's ResNet-9 ("How to train your ResNet",
myrtle.ai 2018):

- stem: a 2×2 convolution without padding, ``2·C·4`` channels wide (8 for grey images, 24 for
  RGB), with a bias and an activation but no BatchNorm. In airbench it is a patch-whitening
  layer; :meth:`FastNet.init_whitening` sets it up the same way from a batch of training
  images (optional; without it the stem is an ordinary learned conv).
- three blocks of ``conv3×3 → max-pool 2 → BN → act → conv3×3 → BN → act``: pooling right
  after the first conv makes the second conv and the BN run at a quarter of the pixels.
  Convs have no bias (BN follows) and start with a *Dirac* (identity) kernel on their first
  input channels, an implicit residual connection that lets the plain stack train fast.
- a global max-pool (airbench) or average-pool, then a bias-free linear layer whose logits
  are multiplied by ``logit_scale`` (1/9 in airbench), which keeps the initial logits small.
- BatchNorm momentum is high (0.2 vs torch's 0.1) so running statistics follow the fast-moving
  weights of a short training run; airbench uses 0.4 with batches of 1024.

It is trainlab's default model for a 2-core CPU, so the default is narrow: ``widths=(64, 128,
512)`` scaled by ``width=0.25`` → 16, 32, 128 channels, ~204 k parameters and ~5.0 M MACs for one
1×28×28 image. The last group is wide because it runs on a 6×6 and 3×3 grid, where channels are
cheap: on mnist-5k it gains 0.1–0.7 points over (16, 32, 64) for ~25% more time (airbench's CIFAR net is ~2 M parameters, ~120 M MACs per 32×32 image).
"""

from __future__ import annotations

import torch
from torch import nn

from trainlab.errors import ModelError
from trainlab.models.layers import (
    ACTIVATIONS,
    Classifier,
    Head,
    check_choice,
    check_float,
    check_int,
    check_ints,
    check_probability,
    make_activation,
    pool_kernel,
    scaled,
)
from trainlab.models.registry import register_model


def dirac_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3×3 'same' conv without bias whose first ``min(in, out)`` filters start as identities."""
    conv = nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False)
    with torch.no_grad():
        n = min(in_channels, out_channels)
        nn.init.dirac_(conv.weight[:n, :n])
        conv.weight[:n, n:].zero_()
    return conv


class ConvGroup(nn.Module):
    """conv → max-pool → BN → act → conv → BN → act (airbench's ``ConvGroup``)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        pool: tuple[int, int],
        activation: str,
        bn_momentum: float,
    ):
        super().__init__()
        self.conv1 = dirac_conv(in_channels, out_channels)
        self.pool = nn.MaxPool2d(pool) if pool != (1, 1) else nn.Identity()
        self.norm1 = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.conv2 = dirac_conv(out_channels, out_channels)
        self.norm2 = nn.BatchNorm2d(out_channels, momentum=bn_momentum)
        self.act = make_activation(activation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class FastNet(Classifier):
    family = "fastnet"

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        widths: tuple[int, ...],
        stem_width: int,
        activation: str,
        bn_momentum: float,
        pool: str,
        logit_scale: float,
        dropout: float,
    ):
        super().__init__()
        height, width = image_size
        if height < 2 or width < 2:
            raise ModelError(f"image {height}×{width} is too small; fastnet needs at least 2×2")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem_width, kernel_size=2, padding=0, bias=True),
            make_activation(activation),
        )
        height, width = height - 1, width - 1
        blocks: list[nn.Module] = []
        previous = stem_width
        for channels in widths:
            kernel = pool_kernel(height, width)
            blocks.append(ConvGroup(previous, channels, kernel, activation, bn_momentum))
            height, width = height // kernel[0], width // kernel[1]
            previous = channels
        self.blocks = nn.Sequential(*blocks)
        global_pool = nn.AdaptiveMaxPool2d(1) if pool == "max" else nn.AdaptiveAvgPool2d(1)
        self.pool = nn.Sequential(global_pool, nn.Flatten())
        self.classifier = Head(
            previous, num_classes, dropout=dropout, bias=False, scale=logit_scale
        )

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.blocks(self.stem(x)))

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Make the stem a patch-whitening layer from normalised training images ``[N, C, H, W]``.

        As in airbench: the eigenvectors of the 2×2-patch covariance, scaled by 1/sqrt(eigenvalue),
        and their negatives (so that the activation keeps both signs). Requires the default
        stem width ``2·C·4``. A few thousand images are plenty.
        """
        conv: nn.Conv2d = self.stem[0]
        channels, kh, kw = conv.weight.shape[1:]
        if conv.out_channels != 2 * channels * kh * kw:
            raise ModelError(
                f"init_whitening needs stem_width = {2 * channels * kh * kw}, "
                f"got {conv.out_channels}"
            )
        x = images.to(device=conv.weight.device, dtype=torch.float32)
        patches = (
            x.unfold(2, kh, 1).unfold(3, kw, 1).transpose(1, 3).reshape(-1, channels * kh * kw)
        )
        covariance = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(covariance)
        filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).flip(0)
        filters = filters.reshape(-1, channels, kh, kw)  # patches were flattened as (C, kh, kw)
        conv.weight.copy_(torch.cat([filters, -filters]).to(conv.weight.dtype))
        conv.bias.zero_()


def _momentum(value: object) -> float:
    momentum = check_float(value, "bn_momentum", exclusive=True)
    if momentum > 1:
        raise ModelError(f"option 'bn_momentum' must be in (0, 1]; got {value!r}")
    return momentum


@register_model("fastnet", description="fast BatchNorm CNN after airbench: the CPU default")
def build(
    *,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    widths: tuple[int, ...] = (64, 128, 512),
    width: float = 0.25,
    stem_width: int | None = None,
    activation: str = "gelu",
    bn_momentum: float = 0.2,
    pool: str = "max",
    logit_scale: float = 1 / 9,
    dropout: float = 0.0,
) -> nn.Module:
    """Options:

    - ``widths``: channels of each conv group (each halves the image with a max-pool).
    - ``width``: multiplier for ``widths`` (0.25 → 16, 32, 128; 1.0 → 64, 128, 512).
    - ``stem_width``: channels of the 2×2 stem conv; null = 2·C·4, the whitening width.
    - ``activation``: gelu (airbench), relu, leaky_relu, elu or silu.
    - ``bn_momentum``: torch BatchNorm momentum (weight of the newest batch statistics).
    - ``pool``: global pooling before the classifier, max (airbench) or avg.
    - ``logit_scale``: factor on the logits (airbench: 1/9).
    - ``dropout``: dropout probability before the classifier.
    """
    multiplier = check_float(width, "width", exclusive=True)
    stem = 2 * in_channels * 4 if stem_width is None else check_int(stem_width, "stem_width")
    model = FastNet(
        in_channels=in_channels,
        num_classes=num_classes,
        image_size=image_size,
        widths=scaled(check_ints(widths, "widths"), multiplier),
        stem_width=stem,
        activation=check_choice(activation, "activation", ACTIVATIONS),
        bn_momentum=_momentum(bn_momentum),
        pool=check_choice(pool, "pool", ("max", "avg")),
        logit_scale=check_float(logit_scale, "logit_scale", exclusive=True),
        dropout=check_probability(dropout, "dropout"),
    )
    # The checkpoint records the stem width null stood for, whatever the default becomes.
    model.trainlab_spec_options = {"stem_width": stem}
    return model
