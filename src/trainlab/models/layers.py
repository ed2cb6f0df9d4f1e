"""Pieces shared by the model families: the classifier base class, heads, activations, checks.

Every family builds a :class:`Classifier`: ``forward_features`` gives the penultimate embedding
``[B, D]`` and ``classifier`` (a :class:`Head`, i.e. an ``nn.Linear``) maps it to logits, so
``forward(x) == classifier(forward_features(x))`` holds for every model by construction.

The ``check_*`` helpers turn option values from Python, YAML or the command line (where tuples
arrive as lists) into clean values, raising :class:`~trainlab.errors.ModelError` with a message
that names the option and the fix. ``create_model`` prefixes the model name.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.errors import ModelError

ACTIVATIONS = ("relu", "leaky_relu", "gelu", "elu", "silu")


class Head(nn.Linear):
    """The final classifier layer: optional dropout on its input, a linear map, a fixed scale.

    It is an ``nn.Linear`` (``.weight``, ``.in_features`` ...) so code that swaps or inspects
    the head needs no per-family knowledge. ``scale`` multiplies the logits; airbench uses 1/9
    so that a freshly initialised net starts with small, well-calibrated logits.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        dropout: float = 0.0,
        bias: bool = True,
        scale: float = 1.0,
    ):
        super().__init__(in_features, out_features, bias=bias)
        self.dropout = dropout
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.dropout(x, self.dropout, self.training)
        logits = super().forward(x)
        return logits * self.scale if self.scale != 1.0 else logits

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, dropout={self.dropout}, scale={self.scale:g}"


class Classifier(nn.Module):
    """Base of every trainlab model: ``forward = classifier ∘ forward_features``.

    Subclasses set ``self.classifier`` and implement ``forward_features``. ``family`` names the
    registry family; ``trainlab_spec`` (set by ``create_model``) holds the build arguments.
    """

    family: str = ""
    classifier: nn.Module

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.forward_features(x))

    @property
    def embedding_dim(self) -> int:
        """Width ``D`` of the vector ``forward_features`` returns."""
        return int(self.classifier.in_features)


_SHOWN = reprlib.Repr()  # keyword arguments only from Python 3.12
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = 8
_SHOWN.maxstring = _SHOWN.maxother = 60
_SHOWN.maxlevel = 3


def shown(value: Any) -> str:
    """A user's value in an error message, cut to a readable length (a list of a million
    numbers, or the expansion of YAML aliases, must not become the message)."""
    return _SHOWN.repr(value)


def make_activation(name: str, negative_slope: float = 0.01) -> nn.Module:
    """An activation module by name (one of :data:`ACTIVATIONS`)."""
    if name == "relu":
        return nn.ReLU()
    if name == "leaky_relu":
        return nn.LeakyReLU(negative_slope)
    if name == "gelu":
        return nn.GELU()
    if name == "elu":
        return nn.ELU()
    if name == "silu":
        return nn.SiLU()
    raise ModelError(
        f"option 'activation' must be one of {', '.join(ACTIVATIONS)}; got {shown(name)}"
    )


def init_conv_kaiming(module: nn.Module) -> None:
    """He initialisation (fan-out, as torchvision's ResNet/VGG) for convs; BN at identity.

    Kaiming keeps activation variance constant through ReLU-like layers, which matters for the
    deeper VGG/ResNet variants trained from scratch without a warm-up. The ReLU gain is used
    for every activation: the others (GELU, SiLU, ELU, leaky ReLU) are close enough to it.
    """
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) and m.affine:
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def pooled_size(size: int, pools: int) -> int:
    """Spatial size after ``pools`` 2×2 max-pools that are skipped once a side reaches 1."""
    for _ in range(pools):
        size = size // 2 if size >= 2 else size
    return size


def pool_kernel(height: int, width: int) -> tuple[int, int]:
    """Kernel of a 2×2 max-pool that leaves a side of length 1 alone (tiny images)."""
    return (2 if height >= 2 else 1, 2 if width >= 2 else 1)


# ---------------------------------------------------------------------------------------------
# Option checks: values may come from YAML or `key=value` flags, so tuples arrive as lists.
# ---------------------------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(value: Any, name: str, minimum: int = 1) -> int:
    """An integer ``>= minimum``."""
    if not _is_int(value) or value < minimum:
        raise ModelError(f"option '{name}' must be an integer >= {minimum}; got {shown(value)}")
    return int(value)


def check_ints(
    value: Any, name: str, minimum: int = 1, allow_empty: bool = False
) -> tuple[int, ...]:
    """A tuple of integers ``>= minimum``; a single integer means a 1-tuple."""
    items = (value,) if _is_int(value) else value
    if not isinstance(items, Sequence) or isinstance(items, str):
        raise ModelError(f"option '{name}' must be a list of integers; got {shown(value)}")
    if not items and not allow_empty:
        raise ModelError(f"option '{name}' must list at least one integer; got {shown(value)}")
    if not all(_is_int(item) and item >= minimum for item in items):
        raise ModelError(
            f"option '{name}' must be a list of integers >= {minimum}; got {shown(list(items))}"
        )
    return tuple(int(item) for item in items)


def check_float(value: Any, name: str, minimum: float = 0.0, exclusive: bool = False) -> float:
    """A finite number ``>= minimum`` (``> minimum`` when ``exclusive``)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < minimum or (exclusive and value == minimum):
        bound = f"> {minimum:g}" if exclusive else f">= {minimum:g}"
        raise ModelError(f"option '{name}' must be a number {bound}; got {shown(value)}")
    return float(value)


def check_probability(value: Any, name: str) -> float:
    """A dropout-like probability in [0, 1)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not 0.0 <= value < 1.0:
        raise ModelError(f"option '{name}' must be a probability in [0, 1); got {shown(value)}")
    return float(value)


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise ModelError(f"option '{name}' must be true or false; got {shown(value)}")
    return value


def check_choice(value: Any, name: str, choices: Sequence[str]) -> str:
    """One of ``choices`` (case-insensitive)."""
    if not isinstance(value, str) or value.lower() not in choices:
        raise ModelError(f"option '{name}' must be one of {', '.join(choices)}; got {shown(value)}")
    return value.lower()


def check_int_choice(value: Any, name: str, choices: Sequence[int]) -> int:
    """One of a few allowed integers (e.g. a named depth)."""
    if not _is_int(value) or value not in choices:
        names = ", ".join(map(str, choices))
        raise ModelError(f"option '{name}' must be one of {names}; got {shown(value)}")
    return int(value)


def per_stage(value: Any, name: str, stages: int, minimum: int = 1) -> tuple[int, ...]:
    """An integer for every stage: one integer is repeated, a list must have ``stages`` items."""
    if _is_int(value):
        return (check_int(value, name, minimum),) * stages
    items = check_ints(value, name, minimum)
    if len(items) != stages:
        raise ModelError(
            f"option '{name}' must give one value per stage ({stages}) or a single integer; "
            f"got {shown(list(items))}"
        )
    return items


def scaled(channels: Sequence[int], width: float) -> tuple[int, ...]:
    """Channel counts multiplied by a width factor, rounded, at least 1."""
    return tuple(max(1, round(c * width)) for c in channels)
