"""Callbacks: everything that is not the training step itself hooks into the loop by events.

Events, in order: ``on_fit_start``, then per epoch ``on_epoch_start``, ``on_batch_end`` (after
every optimizer step), ``on_epoch_end`` (after validation, with the epoch's history row), and
finally ``on_fit_end`` — or ``on_exception`` when an exception (Ctrl-C included) ends the fit. A callback with state implements ``state_dict``/``load_state_dict`` so
``--resume`` continues it exactly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from trainlab.engine.monitor import is_improvement
from trainlab.units import format_metric

if TYPE_CHECKING:
    from trainlab.engine.loop import Trainer


class Callback:
    """Base class; override the events you need."""

    def on_fit_start(self, trainer: Trainer) -> None: ...

    def on_epoch_start(self, trainer: Trainer) -> None: ...

    def on_batch_end(self, trainer: Trainer) -> None: ...

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None: ...

    def on_fit_end(self, trainer: Trainer) -> None: ...

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        """Training stopped by an exception (Ctrl-C included): release what you hold
        (a terminal, files). The saved state stays at the last completed epoch."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        del state


class EarlyStopping(Callback):
    """Stop when the monitored validation metric has not improved by ``min_delta`` for
    ``patience`` epochs. The best weights are restored by the trainer, which always keeps them."""

    def __init__(self, patience: int, min_delta: float = 0.0):
        self.patience = patience
        self.min_delta = min_delta
        self.best: float | None = None
        self.wait = 0

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        if trainer.state.status != "running":
            return  # already stopping (diverged, out of budget): nothing to decide
        value = record[trainer.monitor_key]
        if is_improvement(value, self.best, trainer.mode, self.min_delta):
            self.best, self.wait = value, 0
            return
        self.wait += 1
        if self.wait >= self.patience:
            # The trainer's best (what is kept): with min_delta, a later epoch may be better by
            # less than min_delta than the value this callback compares against.
            best_value = trainer.state.best_value
            best = (
                "none finite"
                if self.best is None or best_value is None
                else f"best {format_metric(best_value, trainer.monitor)} at epoch "
                f"{trainer.state.best_epoch}"
            )
            trainer.request_stop(
                "early_stopped",
                f"{trainer.monitor} did not improve by more than {self.min_delta} "
                f"for {self.patience} epochs ({best})",
            )

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "wait": self.wait}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.wait = state["best"], int(state["wait"])
