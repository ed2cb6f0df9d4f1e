"""Learning-rate schedules as functions of training progress.

A schedule maps progress to a multiplier of the peak learning rate. Progress is measured two ways:
``fraction`` in [0, 1] of the whole run (steps done / total steps, or seconds spent / budget when
training to a time budget) and ``epoch`` (a float, epochs done so far). Writing schedules this
way lets ``--budget`` fit the schedule to wall-clock time instead of cutting it off, and makes
the state to save for an exact resume tiny (reduce-on-plateau's, and where a warmup ended).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from trainlab.config import ScheduleConfig
from trainlab.engine.monitor import is_improvement


def _cosine(fraction: float, start: float, end: float) -> float:
    """Cosine interpolation from ``start`` (fraction 0) to ``end`` (fraction 1)."""
    fraction = min(max(fraction, 0.0), 1.0)
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * fraction))


class LRSchedule:
    """Sets the learning rate of every parameter group before each optimizer step."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: ScheduleConfig, peak_lr: float):
        self.optimizer = optimizer
        self.config = config
        self.peak_lr = peak_lr
        self.plateau_factor = 1.0  # reduce-on-plateau's accumulated decay
        self._plateau_best: float | None = None
        self._plateau_bad_epochs = 0
        self._warmup_end: float | None = None  # the fraction of training where warmup ended
        self._multiplied_warmup = False  # a run saved before the decay started after warmup

    def multiplier(self, fraction: float, epoch: float) -> float:
        """The learning rate as a multiple of the peak, at this point of training.

        A warmup ramps linearly to the peak over ``warmup_epochs``; the decay starts after it,
        as torch's ``SequentialLR(LinearLR, ...)`` does (cosine over the rest of training, step
        and exponential counted from its end), so the peak is reached and the decay complete.
        For onecycle the warmup replaces its own rise (``pct_start``): one ramp, not two.
        """
        config = self.config
        warmup = config.warmup_epochs
        if warmup > 0 and self._multiplied_warmup:  # resumed: keep the schedule it started with
            return self._decay(fraction, epoch) * max(min(epoch / warmup, 1.0), 1e-3)
        if warmup > 0:
            if epoch < warmup:
                ramp = max(epoch / warmup, 1e-3)
                return ramp * (self.plateau_factor if config.name == "plateau" else 1.0)
            if self._warmup_end is None:
                self._warmup_end = min(fraction, 1.0 - 1e-9)
            start = self._warmup_end
            fraction = (fraction - start) / (1.0 - start)
            epoch -= warmup
        return self._decay(fraction, epoch)

    def _decay(self, fraction: float, epoch: float) -> float:
        config = self.config
        name = config.name
        if name == "constant":
            shape = 1.0
        elif name == "step":
            shape = config.gamma ** math.floor(epoch / config.step_size)
        elif name == "exponential":
            shape = config.gamma**epoch
        elif name == "cosine":
            shape = _cosine(fraction, 1.0, config.min_lr_ratio)
        elif name == "onecycle":
            if config.warmup_epochs > 0:  # the warmup is its rise: only its decay is left
                shape = _cosine(fraction, 1.0, config.min_lr_ratio)
            elif fraction < config.pct_start:
                shape = _cosine(fraction / config.pct_start, config.start_ratio, 1.0)
            else:
                rest = (fraction - config.pct_start) / (1.0 - config.pct_start)
                shape = _cosine(rest, 1.0, config.min_lr_ratio)
        else:  # plateau
            shape = self.plateau_factor
        return shape

    def update(self, fraction: float, epoch: float) -> float:
        """Apply the learning rate for this point of training; returns it."""
        lr = self.peak_lr * self.multiplier(fraction, epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        return lr

    def end_epoch(self, value: float, mode: str) -> None:
        """Feed the monitored validation metric to reduce-on-plateau (a no-op otherwise)."""
        if self.config.name != "plateau" or not math.isfinite(value):
            return
        if is_improvement(value, self._plateau_best, mode):
            self._plateau_best, self._plateau_bad_epochs = value, 0
            return
        self._plateau_bad_epochs += 1
        if self._plateau_bad_epochs > self.config.plateau_patience:
            self.plateau_factor *= self.config.gamma
            self._plateau_bad_epochs = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "plateau_factor": self.plateau_factor,
            "plateau_best": self._plateau_best,
            "plateau_bad_epochs": self._plateau_bad_epochs,
            "warmup_end": self._warmup_end,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.plateau_factor = float(state["plateau_factor"])
        self._plateau_best = state["plateau_best"]
        self._plateau_bad_epochs = int(state["plateau_bad_epochs"])
        self._warmup_end = state.get("warmup_end")
        self._multiplied_warmup = "warmup_end" not in state  # saved by an earlier trainlab
