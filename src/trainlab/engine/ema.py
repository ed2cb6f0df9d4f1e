"""Exponential moving average of model weights."""

from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEMA:
    """Keeps ``ema = decay * ema + (1 - decay) * weights`` after every optimizer step.

    Buffers (BatchNorm running statistics) are copied rather than averaged: they are already
    running averages, and averaging them again would lag behind the weights they belong to.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.module = copy.deepcopy(model).eval()
        for parameter in self.module.parameters():
            parameter.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        ema_params = [p for p in self.module.parameters()]
        model_params = [p.detach() for p in model.parameters()]
        torch._foreach_lerp_(ema_params, model_params, 1.0 - self.decay)
        for ema_buffer, buffer in zip(self.module.buffers(), model.buffers(), strict=True):
            ema_buffer.copy_(buffer)
