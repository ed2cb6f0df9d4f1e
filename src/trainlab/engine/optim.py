"""Optimizers by name, with weight decay kept off biases and normalisation parameters."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from trainlab.config import OptimConfig

OptimizerFactory = Callable[[list[dict], OptimConfig], torch.optim.Optimizer]


def _sgd(groups: list[dict], config: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=config.lr, momentum=0.0)


def _momentum(groups: list[dict], config: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum)


def _nesterov(groups: list[dict], config: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)


def _adam(groups: list[dict], config: OptimConfig) -> torch.optim.Optimizer:
    # Adam's weight decay is the classic L2 penalty added to the gradient (torch semantics).
    return torch.optim.Adam(groups, lr=config.lr, betas=config.betas, eps=config.eps)


def _adamw(groups: list[dict], config: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(groups, lr=config.lr, betas=config.betas, eps=config.eps)


def _rmsprop(groups: list[dict], config: OptimConfig) -> torch.optim.Optimizer:
    # Plain RMSprop as users know it from Keras/torch defaults: no momentum term.
    return torch.optim.RMSprop(groups, lr=config.lr, alpha=0.99, eps=config.eps)


def _adagrad(groups: list[dict], config: OptimConfig) -> torch.optim.Optimizer:
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


def build_optimizer(model: nn.Module, config: OptimConfig) -> torch.optim.Optimizer:
    """Create the optimizer named in ``config`` for ``model``'s trainable parameters."""
    factory = OPTIMIZERS[config.name]  # the config's Literal type already rejected unknown names
    optimizer = factory(parameter_groups(model, config.weight_decay), config)
    for group in optimizer.param_groups:
        group["initial_lr"] = config.lr
    return optimizer
