"""The Trainer on a tiny synthetic problem, without the data or run-folder layers."""

import math

import pytest
import torch
from torch import nn

from trainlab.config import ScheduleConfig
from trainlab.engine import loop
from trainlab.engine.callbacks import Callback
from trainlab.engine.loop import Trainer, hard_labels
from trainlab.engine.schedules import LRSchedule


def batches(n_batches=6, batch=32, seed=0):
    """Two separable blobs: a linear model learns them in a few steps."""
    generator = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_batches):
        y = torch.randint(0, 2, (batch,), generator=generator)
        x = torch.randn(batch, 4, generator=generator) + (y[:, None] * 2 - 1) * 1.5
        out.append((x, y))
    return out


def make_trainer(*, lr=0.1, epochs=3, schedule="constant", callbacks=(), **kwargs):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    lr_schedule = LRSchedule(optimizer, ScheduleConfig(name=schedule), peak_lr=lr)
    return Trainer(
        model,
        optimizer,
        lr_schedule,
        batches(),
        batches(2, seed=1),
        num_classes=2,
        epochs=epochs,
        callbacks=callbacks,
        **kwargs,
    )


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_fit_start(self, trainer):
        self.events.append("fit_start")

    def on_epoch_start(self, trainer):
        self.events.append("epoch_start")

    def on_batch_end(self, trainer):
        self.events.append("batch")

    def on_epoch_end(self, trainer, record):
        self.events.append("epoch_end")

    def on_fit_end(self, trainer):
        self.events.append("fit_end")


def test_events_fire_in_order():
    recorder = Recorder()
    make_trainer(epochs=2, callbacks=[recorder]).fit()
    epoch = ["epoch_start", *["batch"] * 6, "epoch_end"]
    assert recorder.events == ["fit_start", *epoch, *epoch, "fit_end"]


def test_fit_learns_and_records_history():
    trainer = make_trainer()
    state = trainer.fit()
    assert state.status == "completed" and state.epoch == 3 and state.step == 18
    assert [row["epoch"] for row in state.history] == [1, 2, 3]
    assert state.history[-1]["val_accuracy"] > 0.9
    assert state.history[-1]["train_loss"] < state.history[0]["train_loss"]


def test_best_weights_are_restored_at_the_end():
    class Sabotage(Callback):
        """Ruin the weights after epoch 2, so epoch 3 is worse than the best."""

        def on_epoch_start(self, trainer):
            if trainer.state.epoch == 2:
                with torch.no_grad():
                    for p in trainer.model.parameters():
                        p.mul_(-5)

    trainer = make_trainer(lr=1e-4, callbacks=[Sabotage()])
    state = trainer.fit()
    assert state.best_epoch == 2
    restored = trainer.evaluate(trainer.val_loader)
    assert restored["loss"] == pytest.approx(state.history[1]["val_loss"], rel=1e-6)


def test_monitor_in_max_mode_picks_the_highest_accuracy():
    trainer = make_trainer(monitor="val.accuracy", mode="max")
    state = trainer.fit()
    best = max(row["val_accuracy"] for row in state.history)
    assert state.best_value == best
    assert state.history[state.best_epoch - 1]["val_accuracy"] == best


def test_divergence_stops_with_a_status():
    state = make_trainer(lr=1e30, epochs=5).fit()
    assert state.status == "diverged" and "loss became" in state.stop_reason
    assert state.epoch < 5


class SteppingClock:
    """A ``time`` stand-in whose clock advances a fixed amount per reading: the budget test
    then depends on the loop's logic, not on how fast the machine runs (a cold GPU's first
    epoch took longer than the whole budget)."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def perf_counter(self) -> float:
        self.now += self.tick
        return self.now


def test_budget_ends_the_run_and_anneals_the_schedule(monkeypatch):
    monkeypatch.setattr(loop, "time", SteppingClock(0.002))
    trainer = make_trainer(epochs=1, budget=0.3, schedule="cosine")
    state = trainer.fit()
    assert state.status == "budget_exhausted" and state.epoch > 1
    assert state.elapsed < 1.0
    assert state.history[-1]["lr"] < 0.05  # peak 0.1, cosine measured in seconds


def test_under_a_budget_the_schedule_anneals_before_the_final_validation(monkeypatch):
    """Validation takes a fifth of the budget: the schedule must still reach its end when the
    steps stop, and no epoch starts that could run only a sliver before its validation."""
    clock = SteppingClock(0.002)
    monkeypatch.setattr(loop, "time", clock)
    trainer = make_trainer(epochs=1, budget=1.0, schedule="cosine")
    evaluate = trainer.evaluate

    def slow_validation(*args, **kwargs):
        clock.now += 0.2
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(trainer, "evaluate", slow_validation)
    state = trainer.fit()
    assert state.status == "budget_exhausted" and state.epoch >= 2
    assert state.history[-1]["lr"] < 0.1 * 0.02  # peak 0.1: annealed, not cut off at 80%
    assert state.elapsed <= 1.0 + 0.05  # the final validation fitted in the budget
    first_epoch_steps = len(batches())
    assert trainer.state.step > (state.epoch - 1) * first_epoch_steps  # last epoch not a sliver


def costly_forward(trainer, clock, *, train: float, evaluate: float) -> None:
    """Each forward pass of the model advances the fake clock: ``train`` seconds in training
    mode, ``evaluate`` in eval mode (validation, and the loop's estimate of it)."""

    def advance(module, inputs, output):
        clock.now += train if module.training else evaluate

    trainer.model.register_forward_hook(advance)


def test_a_budgets_first_epoch_leaves_room_for_its_validation(monkeypatch):
    """One epoch costs more than the budget and its validation 30% of it: without an estimate
    before the first validation, the run overran its budget by that validation, its LR cut."""
    clock = SteppingClock(1e-6)
    monkeypatch.setattr(loop, "time", clock)
    trainer = make_trainer(epochs=1, budget=1.0, schedule="cosine")
    trainer.train_loader = batches(60)  # 60 steps of 0.02 s: 1.2 s; validation 2 × 0.15 s
    costly_forward(trainer, clock, train=0.02, evaluate=0.15)
    state = trainer.fit()
    assert state.elapsed <= 1.0 + 0.02 and state.epoch == 1  # at most one step over
    assert state.history[-1]["lr"] < 0.1 * 0.02  # annealed by the time the steps stop


def test_a_budget_shorter_than_a_validation_still_trains(monkeypatch):
    clock = SteppingClock(1e-6)
    monkeypatch.setattr(loop, "time", clock)
    trainer = make_trainer(epochs=1, budget=0.3, schedule="cosine")
    costly_forward(trainer, clock, train=0.01, evaluate=0.5)  # validation: 1 s > the budget
    state = trainer.fit()
    assert state.epoch == 1 and state.step >= 1 and state.best_epoch == 1


def test_budget_timings_survive_a_resume(monkeypatch):
    clock = SteppingClock(1e-6)
    monkeypatch.setattr(loop, "time", clock)
    trainer = make_trainer(epochs=1, budget=10.0, schedule="cosine")
    costly_forward(trainer, clock, train=0.1, evaluate=0.5)
    trainer.fit()
    saved = trainer.state_dict()
    assert saved["fit"]["validation_seconds"] == pytest.approx(1.0, abs=0.01)
    resumed = make_trainer(epochs=1, budget=10.0, schedule="cosine")
    resumed.load_state_dict(saved)
    assert resumed.state.validation_seconds == trainer.state.validation_seconds
    assert resumed.state.epoch_train_seconds == trainer.state.epoch_train_seconds
    old = {key: value for key, value in saved["fit"].items() if "seconds" not in key}
    assert loop.FitState.from_dict(old).validation_seconds == 0.0  # a state from before


def test_the_class_weighted_train_loss_is_the_epochs_weighted_mean():
    weights = torch.tensor([1.0, 4.0])
    trainer = make_trainer(lr=1e-12, epochs=1, class_weights=weights)  # weights barely move
    sizes = (32, 32, 5, 32, 9, 32)
    trainer.train_loader = [(x[:n], y[:n]) for (x, y), n in zip(batches(), sizes, strict=True)]
    record = trainer.fit().history[0]
    images = torch.cat([x for x, _ in trainer.train_loader])
    labels = torch.cat([y for _, y in trainer.train_loader])
    with torch.no_grad():
        expected = nn.functional.cross_entropy(trainer.model(images), labels, weight=weights)
    assert record["train_loss"] == pytest.approx(expected.item(), rel=1e-5)


def test_ema_is_what_gets_evaluated():
    trainer = make_trainer(ema_decay=0.5)
    trainer.fit()
    assert trainer.eval_model is trainer.ema.module
    assert not any(p.requires_grad for p in trainer.eval_model.parameters())


def test_ema_with_a_long_horizon_still_learns_in_a_short_run():
    """Without warm-up, decay 0.999 over 18 steps would leave the initial weights in place."""
    plain = make_trainer().fit()
    ema = make_trainer(ema_decay=0.999).fit()
    assert ema.history[-1]["val_accuracy"] >= plain.history[-1]["val_accuracy"] - 0.1


def test_divergence_with_early_stopping_is_recorded_not_raised():
    from trainlab.engine.callbacks import EarlyStopping

    state = make_trainer(lr=1e30, epochs=5, callbacks=[EarlyStopping(patience=1)]).fit()
    assert state.status == "diverged"
    assert len(state.history) == state.epoch, "the diverged epoch is in the history"


def test_bf16_autocast_runs_on_cpu():
    state = make_trainer(amp_dtype=torch.bfloat16).fit()
    assert state.status == "completed" and math.isfinite(state.history[-1]["val_loss"])


def test_full_precision_evaluation_leaves_mixed_precision_out():
    trainer = make_trainer(amp_dtype=torch.bfloat16)
    trainer.fit()
    loader = batches(2, seed=3)
    model = trainer.eval_model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in loader])
    labels = torch.cat([y for _, y in loader])
    float32_loss = nn.functional.cross_entropy(logits, labels).item()
    assert trainer.evaluate(loader, full_precision=True)["loss"] == pytest.approx(
        float32_loss, rel=1e-6
    )
    assert trainer.evaluate(loader)["loss"] != pytest.approx(float32_loss, rel=1e-6)  # bf16


def test_float32_evaluation_turns_tf32_convolutions_off_for_its_duration_only(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", True)  # cuDNN's default
    with loop._float32_arithmetic(torch.device("cuda")):  # only a flag: no GPU needed
        assert torch.backends.cudnn.allow_tf32 is False
    assert torch.backends.cudnn.allow_tf32 is True
    with pytest.raises(KeyError), loop._float32_arithmetic(torch.device("cuda")):
        raise KeyError("an evaluation that fails")
    assert torch.backends.cudnn.allow_tf32 is True


def test_gradient_clipping_bounds_the_update():
    trainer = make_trainer(lr=1.0, epochs=1, grad_clip=1e-3)
    before = [p.detach().clone() for p in trainer.model.parameters()]
    trainer.fit()
    change = torch.sqrt(
        sum(((p - b) ** 2).sum() for p, b in zip(trainer.model.parameters(), before, strict=True))
    )
    assert change <= 6 * 1e-3 + 1e-6  # 6 steps, each moves at most lr * clip


def test_state_dict_round_trip_continues_identically():
    straight = make_trainer(epochs=4)
    straight.fit()
    first = make_trainer(epochs=2)
    first.fit()
    second = make_trainer(epochs=4)
    second.load_state_dict(first.state_dict())
    second.state.status = "running"  # the first trainer completed its 2 epochs
    second.fit()
    for a, b in zip(straight.model.parameters(), second.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_soft_targets_are_accepted():
    assert hard_labels(torch.tensor([[0.2, 0.8], [0.9, 0.1]])).tolist() == [1, 0]
    assert hard_labels(torch.tensor([1, 0])).tolist() == [1, 0]
