"""A progress bar callback: epoch, batch, loss, metrics and ETA, plus one line per epoch."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from trainlab.engine.callbacks import Callback
from trainlab.units import format_metric

if TYPE_CHECKING:
    from trainlab.engine.loop import Trainer


def format_epoch_line(record: dict[str, float], epochs: int | None) -> str:
    """``epoch  3/12  train loss 0.4120 acc 87.40% | val loss 0.3010 acc 91.20% bal 91.00%
    f1 90.90% ...``: shares in percent, as every table prints them (``trainlab.units``)."""
    of = f"/{epochs}" if epochs else ""
    line = (
        f"epoch {int(record['epoch']):>3}{of}  train loss {record['train_loss']:.4f} "
        f"acc {_share(record['train_accuracy'])}"
    )
    if not math.isnan(record["val_loss"]):
        line += (
            f" | val loss {record['val_loss']:.4f} acc {_share(record['val_accuracy'])} "
            f"bal {_share(record['val_balanced_accuracy'])} f1 {_share(record['val_macro_f1'])}"
        )
    return line + f" | lr {record['lr']:.2e} | {record['seconds']:.1f}s"


def _number(value: float, digits: int) -> str:
    """A running value, or a dash before its first read-back of the epoch."""
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def _share(value: float) -> str:
    """An accuracy or F1 in percent, or a dash before there is one."""
    return "–" if math.isnan(value) else format_metric(value, "accuracy")


class ProgressBar(Callback):
    """Shows overall progress (steps, or seconds under a time budget) with the running loss."""

    def __init__(self, console: Console | None = None):
        # soft_wrap: an epoch line stays one line in logs and narrow terminals.
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.progress: Progress | None = None
        self.task = None

    def _total(self, trainer: Trainer) -> float:
        if trainer.budget is not None:
            return trainer.budget
        return trainer.epochs * trainer.steps_per_epoch

    def _completed(self, trainer: Trainer) -> float:
        return trainer.elapsed() if trainer.budget is not None else trainer.state.step

    def on_fit_start(self, trainer: Trainer) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=16),
            TextColumn("{task.fields[info]}"),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        )
        self.progress.start()
        self.task = self.progress.add_task(
            "training", total=self._total(trainer), completed=self._completed(trainer), info=""
        )

    def _describe(self, trainer: Trainer) -> str:
        epochs = "" if trainer.budget is not None else f"/{trainer.epochs}"
        return f"epoch {trainer.state.epoch + 1}{epochs}"

    def on_batch_end(self, trainer: Trainer) -> None:
        if self.progress is None:
            return
        stats = trainer.stats
        batch = trainer.state.step % max(trainer.steps_per_epoch, 1) or trainer.steps_per_epoch
        info = (f"batch {batch}/{trainer.steps_per_epoch} loss {_number(stats.last_loss, 4)} "
                f"acc {_share(stats.last_accuracy)}")  # fmt: skip
        if trainer.state.history:
            info += f" | val acc {_share(trainer.state.history[-1]['val_accuracy'])}"
        self.progress.update(
            self.task,
            completed=self._completed(trainer),
            description=self._describe(trainer),
            info=info,
        )

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        if self.progress is None:
            return
        epochs = None if trainer.budget is not None else trainer.epochs
        marker = " *" if trainer.state.best_epoch == trainer.state.epoch else ""
        self.progress.console.print(format_epoch_line(record, epochs) + marker, highlight=False)

    def on_fit_end(self, trainer: Trainer) -> None:
        if self.progress is not None:
            self.progress.stop()  # also shows the cursor again
            self.progress = None

    def on_exception(self, trainer: Trainer, error: BaseException) -> None:
        self.on_fit_end(trainer)
