"""The one training loop. Everything optional (early stopping, checkpoints, progress, run records)
is a callback; the loop only steps, validates, tracks the best epoch and obeys stop requests.

The best epoch is decided once, here, by the monitored validation metric: its weights are the
ones restored at the end, recorded, checkpointed and tested. The test split never enters the loop.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from trainlab.engine.callbacks import Callback
from trainlab.engine.ema import ModelEMA
from trainlab.engine.metrics import MetricAccumulator
from trainlab.engine.monitor import is_improvement
from trainlab.engine.schedules import LRSchedule

Status = Literal["running", "completed", "early_stopped", "diverged", "budget_exhausted", "pruned"]

# How often (in optimizer steps) the loop reads the loss back from the device: often enough to
# catch a divergence quickly and drive the progress bar, rarely enough not to stall a GPU.
SYNC_EVERY = 10


@dataclass
class FitState:
    """Everything about a fit's progress that must survive a resume."""

    epoch: int = 0  # completed epochs
    step: int = 0  # optimizer steps taken
    elapsed: float = 0.0  # wall-clock seconds spent in fit(), summed over resumes
    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    status: Status = "running"
    stop_reason: str | None = None
    # Timings a budget plans with: the final validation must fit, and an epoch that could run
    # only a sliver of its steps is not started. Kept across a resume like the rest.
    validation_seconds: float = 0.0  # the last validation pass (before the first: an estimate)
    epoch_train_seconds: float = 0.0  # the last epoch's training steps

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FitState:
        known = {f.name for f in fields(cls)}  # a state saved before a field existed loads too
        return cls(**{key: value for key, value in data.items() if key in known})


@dataclass
class BatchStats:
    """Running sums for the current epoch, kept on the device to avoid a sync per step."""

    loss_sum: torch.Tensor  # batch losses × their weight (their image count, or class weights)
    correct: torch.Tensor
    weight: torch.Tensor  # with class weights: the summed weight, the epoch mean's denominator
    seen: int = 0
    last_loss: float = float("nan")  # read back every SYNC_EVERY steps
    last_accuracy: float = float("nan")  # running training accuracy of the epoch, same cadence

    @classmethod
    def zeros(cls, device: torch.device) -> BatchStats:
        return cls(torch.zeros((), device=device), torch.zeros((), device=device, dtype=torch.long),
                   torch.zeros((), device=device))  # fmt: skip


def hard_labels(targets: torch.Tensor) -> torch.Tensor:
    """Class indices from int labels or from soft (mixup/cutmix) target distributions."""
    return targets.argmax(dim=1) if targets.ndim == 2 else targets


# Under --budget, the least share of an epoch's steps that must still fit before the final
# validation for another epoch to start.
MIN_LAST_EPOCH_SHARE = 0.25


@contextlib.contextmanager
def _float32_arithmetic(device: torch.device) -> Iterator[None]:
    """Plain float32: no autocast, and on CUDA no TF32 convolutions (cuDNN's default on Ampere
    and later GPUs rounds their inputs to 10 mantissa bits), so figures match a CPU's."""
    if device.type != "cuda":
        yield
        return
    previous = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32 = previous


class Trainer:
    """Fits ``model`` on ``train_loader``, validating on ``val_loader`` after every epoch.

    Training length is ``epochs`` or, when ``budget`` (seconds) is given, as many steps as fit
    in the budget: the schedule's progress is then measured in seconds, so the learning rate
    anneals exactly as the time runs out instead of being cut off mid-schedule.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        schedule: LRSchedule,
        train_loader: Sequence | Iterable,
        val_loader: Sequence | Iterable,
        *,
        num_classes: int,
        epochs: int,
        budget: float | None = None,
        monitor: str = "val.loss",
        mode: Literal["min", "max"] = "min",
        label_smoothing: float = 0.0,
        class_weights: torch.Tensor | None = None,
        grad_clip: float | None = None,
        amp_dtype: torch.dtype | None = None,
        ema_decay: float | None = None,
        generator: torch.Generator | None = None,
        callbacks: Sequence[Callback] = (),
    ):
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.train_loader = train_loader
        self.val_loader = val_loader
        self.num_classes = num_classes
        self.epochs = epochs
        self.budget = budget
        self.monitor = monitor
        self.mode = mode
        self.label_smoothing = label_smoothing
        self.class_weights = class_weights
        self.grad_clip = grad_clip
        self.amp_dtype = amp_dtype
        self.generator = generator
        self.callbacks = list(callbacks)
        self.device = next(model.parameters()).device
        self.ema = ModelEMA(model, ema_decay) if ema_decay else None
        self.scaler = torch.amp.GradScaler(
            self.device.type, enabled=amp_dtype == torch.float16 and self.device.type == "cuda"
        )
        self.state = FitState()
        self.best_weights: dict[str, torch.Tensor] | None = None
        self.stats = BatchStats.zeros(self.device)
        self._stop_requested = False
        self._fit_started_at = 0.0
        self._elapsed_at_start = 0.0

    # -- public API ------------------------------------------------------------------------

    @property
    def eval_model(self) -> nn.Module:
        """The weights that are validated, kept as best and exported (the EMA when enabled)."""
        return self.ema.module if self.ema else self.model

    @property
    def monitor_key(self) -> str:
        """The history column of the monitor: ``val.loss`` is recorded as ``val_loss``."""
        return self.monitor.replace(".", "_")

    @property
    def steps_per_epoch(self) -> int:
        return len(self.train_loader)  # type: ignore[arg-type]

    def request_stop(self, status: Status, reason: str) -> None:
        """Ask the loop to stop after the current step; callbacks call this."""
        self._stop_requested = True
        if self.state.status == "running":
            self.state.status, self.state.stop_reason = status, reason

    def elapsed(self) -> float:
        """Training seconds so far, including those before a resume."""
        return self._elapsed_at_start + time.perf_counter() - self._fit_started_at

    def fraction_done(self) -> float:
        """Progress of the whole run in [0, 1]: by time under a budget, else by steps. Under a
        budget it reaches 1 when the steps must end for the final validation to fit, so the
        schedule anneals fully before the run ends."""
        if self.budget is not None:
            return min(self.elapsed() / self._training_horizon(), 1.0)
        return min(self.state.step / max(self.epochs * self.steps_per_epoch, 1), 1.0)

    def _training_horizon(self) -> float:
        """Seconds of the budget left for training steps: the budget less a validation pass."""
        assert self.budget is not None
        return max(self.budget - self.state.validation_seconds, 1e-9)

    def fit(self) -> FitState:
        self._fit_started_at = time.perf_counter()
        self._elapsed_at_start = self.state.elapsed
        self._stop_requested = self.state.status != "running"
        if self.budget is not None and self.state.validation_seconds == 0.0:
            self.state.validation_seconds = self._estimate_validation_seconds()
        self._emit("on_fit_start")
        try:
            while not self._stop_requested and self._more_epochs():
                self._run_epoch()
        except BaseException as error:
            self._emit("on_exception", error)
            raise
        if self.state.status == "running":
            self.state.status = "budget_exhausted" if self.budget is not None else "completed"
        self.state.elapsed = self.elapsed()
        self.restore_best()
        self._emit("on_fit_end")
        return self.state

    @torch.no_grad()
    def _estimate_validation_seconds(self) -> float:
        """What a validation pass will cost, before the first one: a budget's first epoch must
        leave room for it. Times up to two batches (the second without first-call warm-up)
        and scales by the number of batches."""
        model = self.eval_model
        was_training = model.training
        model.eval()
        seconds, batches = 0.0, len(self.val_loader)  # type: ignore[arg-type]
        for index, (images, _labels) in enumerate(self.val_loader):
            started = time.perf_counter()
            with self._autocast():
                model(images).float().sum().item()  # .item(): waits for the device
            seconds = time.perf_counter() - started
            if index == 1:
                break
        model.train(was_training)
        return seconds * batches

    def restore_best(self) -> None:
        """Load the best epoch's weights into the evaluated model (and the trained one)."""
        if self.best_weights is None:
            return
        self.eval_model.load_state_dict(self.best_weights)
        if self.ema:
            self.model.load_state_dict(self.best_weights)

    @torch.no_grad()
    def evaluate(
        self,
        loader: Iterable,
        *,
        class_names: list[str] | None = None,
        per_class: bool = False,
        model: nn.Module | None = None,
        full_precision: bool = False,
    ) -> dict[str, Any]:
        """Loss (plain cross-entropy, no smoothing) and classification metrics over ``loader``.

        ``full_precision`` evaluates in float32 even when training uses mixed precision (and
        without TF32 convolutions): what the saved weights do when served or reported.
        """
        model = model or self.eval_model
        was_training = model.training
        model.eval()
        accumulator = MetricAccumulator(self.num_classes)
        for images, labels in loader:
            with _float32_arithmetic(self.device) if full_precision else self._autocast():
                logits = model(images)
            logits = logits.float()
            loss_sum = F.cross_entropy(logits, labels, reduction="sum")
            accumulator.update(logits, labels, loss_sum)
        model.train(was_training)
        return accumulator.compute(class_names=class_names, per_class=per_class)

    # -- state for an exact resume ------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        if self.generator is not None:
            rng["generator"] = self.generator.get_state()
        return {
            "fit": self.state.to_dict(),
            "model": self.model.state_dict(),
            "ema": {"weights": self.ema.module.state_dict(), "updates": self.ema.updates}
            if self.ema
            else None,
            "best_weights": self.best_weights,
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "callbacks": {
                type(cb).__name__: cb.state_dict() for cb in self.callbacks if cb.state_dict()
            },
            "rng": rng,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.state = FitState.from_dict(state["fit"])
        self.model.load_state_dict(state["model"])
        if self.ema and state["ema"] is not None:
            self.ema.module.load_state_dict(state["ema"]["weights"])
            self.ema.updates = int(state["ema"]["updates"])
        self.best_weights = state["best_weights"]
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state["scaler"]:
            self.scaler.load_state_dict(state["scaler"])
        # Keyed by class name: a resumed run may carry other callbacks (a progress bar, a
        # sweep's pruning hook) than the one that was killed, but stateful ones match by name.
        for callback in self.callbacks:
            if type(callback).__name__ in state["callbacks"]:
                callback.load_state_dict(state["callbacks"][type(callback).__name__])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"].cpu())
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([s.cpu() for s in rng["cuda"]])
        if self.generator is not None and "generator" in rng:
            self.generator.set_state(rng["generator"].cpu())

    # -- the loop ----------------------------------------------------------------------------

    def _more_epochs(self) -> bool:
        if self.budget is not None:
            if self.state.epoch == 0:  # a budget shorter than one validation still trains
                return True
            # An epoch that could run only a sliver of its steps before the final validation
            # would still pay a whole validation pass (and overrun the budget): not started.
            remaining = self._training_horizon() - self.elapsed()
            return remaining > MIN_LAST_EPOCH_SHARE * self.state.epoch_train_seconds
        return self.state.epoch < self.epochs

    def _budget_nearly_spent(self) -> bool:
        # Stop early enough that the final validation still fits in the budget.
        return self.budget is not None and self.elapsed() >= self._training_horizon()

    def _autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        )

    def _run_epoch(self) -> None:
        epoch_started = time.perf_counter()
        self.model.train()
        self.stats = BatchStats.zeros(self.device)
        self._emit("on_epoch_start")
        for batch_index, (images, targets) in enumerate(self.train_loader):
            self._train_step(images, targets, batch_index)
            if self._stop_requested or self._budget_nearly_spent():
                break
        self.state.epoch += 1
        self.state.epoch_train_seconds = time.perf_counter() - epoch_started
        if self.state.status == "diverged":
            # Recorded (with NaN validation) so history.csv shows the epoch that blew up.
            record = self._epoch_record(epoch_started, {})
            self.state.history.append(record)
            self._emit("on_epoch_end", record)
            return
        validation_started = time.perf_counter()
        val_metrics = self.evaluate(self.val_loader)
        self.state.validation_seconds = time.perf_counter() - validation_started
        record = self._epoch_record(epoch_started, val_metrics)
        self._track_best(record)
        self.schedule.end_epoch(record[self.monitor_key], self.mode)
        self.state.history.append(record)
        self.state.elapsed = self.elapsed()
        self._emit("on_epoch_end", record)

    def _loss_weight(self) -> float:
        """What the epoch's summed train loss is divided by: its images, or their class weights."""
        if self.class_weights is None:
            return float(max(self.stats.seen, 1))
        return max(self.stats.weight.item(), 1e-12)

    def _train_step(self, images: torch.Tensor, targets: torch.Tensor, batch_index: int) -> None:
        epoch_float = self.state.epoch + batch_index / max(self.steps_per_epoch, 1)
        self.schedule.update(self.fraction_done(), epoch_float)
        with self._autocast():
            logits = self.model(images)
            loss = F.cross_entropy(logits.float(), targets, weight=self.class_weights,
                                   label_smoothing=self.label_smoothing)  # fmt: skip
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema:
            self.ema.update(self.model)
        self.state.step += 1
        stats = self.stats
        # A class-weighted mean divides by the batch's weight, not its size: summed that way,
        # the epoch's loss is the same weighted mean over all its images.
        weight: torch.Tensor | int = len(images)
        if self.class_weights is not None:
            if targets.ndim == 1:
                weight = self.class_weights[targets].sum()
            stats.weight += weight
        stats.loss_sum += loss.detach() * weight
        stats.correct += (logits.detach().argmax(dim=1) == hard_labels(targets)).sum()
        stats.seen += len(images)
        if self.state.step % SYNC_EVERY == 0 or batch_index == self.steps_per_epoch - 1:
            stats.last_loss = loss.item()
            stats.last_accuracy = stats.correct.item() / max(stats.seen, 1)
            if not math.isfinite(stats.last_loss):
                self.request_stop(
                    "diverged", f"loss became {stats.last_loss} at step {self.state.step}"
                )
        self._emit("on_batch_end")

    def _epoch_record(self, started: float, val: dict[str, Any]) -> dict[str, float]:
        seen = max(self.stats.seen, 1)
        record = {
            "epoch": self.state.epoch,
            "train_loss": self.stats.loss_sum.item() / self._loss_weight(),
            "train_accuracy": self.stats.correct.item() / seen,
            "val_loss": float(val.get("loss", math.nan)),
            "val_accuracy": float(val.get("accuracy", math.nan)),
            "val_balanced_accuracy": float(val.get("balanced_accuracy", math.nan)),
            "val_macro_f1": float(val.get("macro_f1", math.nan)),
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": time.perf_counter() - started,
            "elapsed": self.elapsed(),
        }
        return record

    def _track_best(self, record: dict[str, float]) -> None:
        value = record[self.monitor_key]
        if is_improvement(value, self.state.best_value, self.mode):
            self.state.best_value, self.state.best_epoch = value, self.state.epoch
            self.best_weights = copy.deepcopy(self.eval_model.state_dict())

    def _emit(self, event: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, event)(self, *args)
