"""Optimizers by name, with weight decay kept off biases and normalisation parameters."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn

from trainlab.config import OptimConfig

OptimizerFactory = Callable[[list[dict], OptimConfig, bool], torch.optim.Optimizer]


def _fused(fused: bool) -> dict[str, bool]:
    # Passed only when wanted: SGD before torch 2.4 has no such argument.
    return {"fused": True} if fused else {}


def _sgd(groups: list[dict], config: OptimConfig, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.0, **_fused(fused))


def _momentum(groups: list[dict], config: OptimConfig, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, **_fused(fused))


def _nesterov(groups: list[dict], config: OptimConfig, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.SGD(
        groups, lr=config.lr, momentum=config.momentum, nesterov=True, **_fused(fused)
    )


def _adam(groups: list[dict], config: OptimConfig, fused: bool) -> torch.optim.Optimizer:
    # Adam's weight decay is the classic L2 penalty added to the gradient (torch semantics).
    return torch.optim.Adam(
        groups, lr=config.lr, betas=config.betas, eps=config.eps, **_fused(fused)
    )


def _adamw(groups: list[dict], config: OptimConfig, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=config.betas, eps=config.eps, **_fused(fused)
    )


def _rmsprop(groups: list[dict], config: OptimConfig, fused: bool) -> torch.optim.Optimizer:
    # Plain RMSprop as users know it from Keras/torch defaults: no momentum term.
    return torch.optim.RMSprop(groups, lr=config.lr, alpha=0.99, eps=config.eps)


def _adagrad(groups: list[dict], config: OptimConfig, fused: bool) -> torch.optim.Optimizer:
    return torch.optim.Adagrad(groups, lr=config.lr, eps=1e-10)


OPTIMIZERS: dict[str, OptimizerFactory] = {
    "sgd": _sgd,
    "momentum": _momentum,
    "nesterov": _nesterov,
    "adam": _adam,
    "adamw": _adamw,
    "rmsprop": _rmsprop,
    "adagrad": _adagrad,
}


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split parameters so weight decay applies to weights of convs/linears only.

    Decaying biases and BatchNorm/LayerNorm scales only shrinks them towards zero without
    regularising anything useful; the usual practice (timm, nanoGPT) exempts 1-D parameters.
    """
    decay, no_decay = [], []
    for parameter in model.parameters():
        if not parameter.requires_grad:
            continue
        (decay if parameter.ndim > 1 else no_decay).append(parameter)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


# Optimizers whose fused CUDA update (one kernel for all parameters instead of a few per
# tensor) computes the same update: on a GPU the studies' small models are bound by kernel
# launches, and fusing gave 1.08-1.14x training images/s on an H100 across four studies
# (bench/bench_study_cost.py --unfused-baseline; README). Adagrad's fused kernel is CPU-only
# and RMSprop has none.
FUSED_ON_CUDA = frozenset({"sgd", "momentum", "nesterov", "adam", "adamw"})


def use_fused(name: str, parameters: list[nn.Parameter]) -> bool:
    """Whether optimizer ``name`` should run fused: every parameter is a CUDA float tensor and
    this torch has the fused kernel (SGD's came in torch 2.4)."""
    if name not in FUSED_ON_CUDA or not parameters:
        return False
    if not all(p.is_cuda and p.is_floating_point() for p in parameters):
        return False
    optimizer_class = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}.get(
        name, torch.optim.SGD
    )
    return "fused" in inspect.signature(optimizer_class).parameters


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """Create the optimizer named in ``config`` for ``model``'s trainable parameters (fused on
    CUDA where torch has a fused kernel for it: same update, fewer kernel launches)."""
    factory = OPTIMIZERS[config.name]  # the config's Literal type already rejected unknown names
    groups = parameter_groups(model, config.weight_decay)
    fused = use_fused(config.name, [p for group in groups for p in group["params"]])
    optimizer = factory(groups, config, fused)
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr
    return optimizer
