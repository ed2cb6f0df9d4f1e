import io
from types import SimpleNamespace

import pytest
from rich.console import Console
from tests.engine.test_loop import make_trainer

from trainlab.engine.callbacks import EarlyStopping
from trainlab.engine.progress import ProgressBar, format_epoch_line


class FakeTrainer:
    def __init__(self, mode="min"):
        self.monitor, self.monitor_key, self.mode = "val.loss", "val_loss", mode
        self.state = SimpleNamespace(epoch=0, best_epoch=None, best_value=None, status="running")
        self.stopped = None

    def request_stop(self, status, reason):
        self.stopped = (status, reason)


def feed(callback, trainer, values):
    """Epochs as the Trainer runs them: its best is tracked before the callbacks hear of it."""
    state = trainer.state
    for value in values:
        state.epoch += 1
        if state.best_value is None or value < state.best_value:
            state.best_value, state.best_epoch = value, state.epoch
        callback.on_epoch_end(trainer, {"val_loss": value})
        if trainer.stopped:
            return


def test_early_stopping_waits_patience_epochs():
    trainer, callback = FakeTrainer(), EarlyStopping(patience=2)
    feed(callback, trainer, [1.0, 0.9, 0.95, 0.91])
    assert trainer.stopped[0] == "early_stopped" and "2 epochs" in trainer.stopped[1]


def test_early_stopping_min_delta_ignores_tiny_gains():
    trainer, callback = FakeTrainer(), EarlyStopping(patience=2, min_delta=0.05)
    feed(callback, trainer, [1.0, 0.99, 0.98])
    assert trainer.stopped is not None


def test_the_stop_reason_names_the_kept_epoch_and_its_value():
    """With min_delta, epoch 3 (0.94) is kept although it beat epoch 1 by less than 0.1."""
    trainer, callback = FakeTrainer(), EarlyStopping(patience=2, min_delta=0.1)
    feed(callback, trainer, [1.0, 0.95, 0.94])
    assert trainer.stopped[1].endswith("(best 0.9400 at epoch 3)")  # a loss: four decimals


def test_early_stopping_improvement_resets_the_wait_and_state_round_trips():
    trainer, callback = FakeTrainer(), EarlyStopping(patience=2)
    feed(callback, trainer, [1.0, 1.1, 0.5, 0.6])
    assert trainer.stopped is None and callback.wait == 1
    restored = EarlyStopping(patience=2)
    restored.load_state_dict(callback.state_dict())
    feed(restored, trainer, [0.7])
    assert trainer.stopped is not None


def test_early_stopping_in_max_mode():
    trainer, callback = FakeTrainer(mode="max"), EarlyStopping(patience=1)
    feed(callback, trainer, [0.5, 0.6, 0.55])
    assert trainer.stopped is not None and callback.best == 0.6


def test_nan_counts_as_no_improvement():
    trainer, callback = FakeTrainer(), EarlyStopping(patience=1)
    feed(callback, trainer, [1.0, float("nan")])
    assert trainer.stopped is not None


def test_no_finite_value_yet_still_stops_cleanly():
    trainer, callback = FakeTrainer(), EarlyStopping(patience=1)
    feed(callback, trainer, [float("nan")])
    assert trainer.stopped is not None and "none finite" in trainer.stopped[1]


def test_a_run_that_is_already_stopping_is_left_alone():
    trainer, callback = FakeTrainer(), EarlyStopping(patience=1)
    trainer.state.status = "diverged"
    feed(callback, trainer, [1.0, 2.0, 3.0])
    assert trainer.stopped is None


def test_progress_bar_prints_one_line_per_epoch():
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=150)
    make_trainer(epochs=2, callbacks=[ProgressBar(console)]).fit()
    text = stream.getvalue()
    assert "epoch   1/2" in text and "epoch   2/2" in text
    assert "val loss" in text and "lr" in text


def test_epoch_line_format():
    record = {
        "epoch": 3,
        "train_loss": 0.41234,
        "train_accuracy": 0.87,
        "val_loss": 0.3,
        "val_accuracy": 0.91,
        "val_balanced_accuracy": 0.9,
        "val_macro_f1": 0.905,
        "lr": 1e-3,
        "seconds": 1.25,
    }
    line = format_epoch_line(record, 12)
    assert line.startswith(
        "epoch   3/12  train loss 0.4123 acc 87.00% | val loss 0.3000 "
        "acc 91.00% bal 90.00% f1 90.50%"
    )  # shares as every table shows them
    assert line.endswith("| lr 1.00e-03 | 1.2s")


def test_progress_bar_is_closed_when_training_is_interrupted():
    from trainlab.engine.callbacks import Callback

    class Interrupt(Callback):
        def on_batch_end(self, trainer):
            raise KeyboardInterrupt

    stream = io.StringIO()
    bar = ProgressBar(Console(file=stream, force_terminal=True, width=100))
    trainer = make_trainer(epochs=2, callbacks=[bar, Interrupt()])
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert bar.progress is None
    assert "\x1b[?25h" in stream.getvalue(), "the cursor is shown again"
