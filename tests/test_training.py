import io
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import trainlab
from trainlab.engine.callbacks import Callback
from trainlab.errors import RunError, TrainlabError
from trainlab.runs.checkpoint import load_checkpoint

SUMMARY_KEYS = {"status", "best_epoch", "epochs_run", "train_seconds", "val", "test"}
TEST_KEYS = {"accuracy", "balanced_accuracy", "macro_f1", "loss"}


def test_train_writes_a_self_describing_run_folder(tiny_config):
    config = tiny_config()
    result = trainlab.train(config)
    run_dir = result.run_dir
    for name in (
        "config.yaml",
        "environment.json",
        "history.csv",
        "summary.json",
        "checkpoint/model.json",
        "checkpoint/model.safetensors",
    ):
        assert (run_dir / name).is_file(), name
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary.keys() >= SUMMARY_KEYS
    assert summary["test"].keys() >= TEST_KEYS
    assert {"loss", "accuracy", "balanced_accuracy", "macro_f1"} <= summary["val"].keys()
    assert summary["status"] == "completed" and summary["epochs_run"] == 2
    assert summary["test"]["confusion_matrix"] and summary["test"]["per_class"]
    assert summary["dataset"]["train_size"] == 300 and summary["dataset"]["val_size"] == 100
    assert summary["dataset"]["test_size"] == 1000
    assert len(result.history) == 2 and result.summary == summary

    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert isinstance(saved["data"]["augment"], dict), "augment 'auto' is resolved in config.yaml"
    assert saved["model"]["options"]["hidden"] == [32]
    assert len(saved["model"]["options"]) > 1, "model defaults are written out too"
    preprocessing = json.loads((run_dir / "checkpoint" / "model.json").read_text())["preprocessing"]
    assert preprocessing["ink_box"] == pytest.approx(20 / 28, abs=0.01)  # for the server
    environment = json.loads((run_dir / "environment.json").read_text())
    assert "torch" in json.dumps(environment)

    header = (run_dir / "history.csv").read_text().splitlines()[0].split(",")
    assert header[:3] == ["epoch", "train_loss", "train_accuracy"] and "val_macro_f1" in header


def test_checkpoint_rebuilds_the_best_model(tiny_config):
    result = trainlab.train(tiny_config())
    checkpoint = load_checkpoint(result.run_dir)
    rebuilt = checkpoint.build_model()
    x = torch.randn(8, 1, 28, 28)
    result.model.eval()  # on the training device (CUDA where there is one); compared on the CPU
    torch.testing.assert_close(rebuilt(x), result.model.cpu()(x))
    assert checkpoint.class_names == [str(i) for i in range(10)]
    assert checkpoint.metadata["epoch"] == result.summary["best_epoch"]


class StopAfter(Callback):
    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_epoch_end(self, trainer, record):
        if trainer.state.epoch == self.epoch:
            raise KeyboardInterrupt  # a killed process, as far as the run folder can tell


def comparable(history):
    return [{k: v for k, v in row.items() if k not in ("seconds", "elapsed")} for row in history]


@pytest.mark.slow
def test_resume_continues_a_killed_run_exactly(tiny_config, tmp_path):
    overrides = {
        "epochs": 4,
        "data__augment": {"rotate": 10, "translate": 0.1},
        "model__options": {"hidden": [32], "dropout": 0.2},
    }
    straight = trainlab.train(tiny_config(out=str(tmp_path / "a"), **overrides))
    with pytest.raises(KeyboardInterrupt):
        trainlab.train(tiny_config(out=str(tmp_path / "b"), **overrides), callbacks=[StopAfter(3)])
    resumed = trainlab.train(resume=tmp_path / "b")
    assert comparable(resumed.history) == comparable(straight.history)
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
    assert resumed.test == straight.test
    with pytest.raises(RunError, match="already finished"):
        trainlab.train(resume=tmp_path / "b")


def test_resume_refuses_a_config_that_is_not_the_one_the_run_started_with(tiny_config, tmp_path):
    from trainlab.runs.record import RESUME_STATE

    run = tmp_path / "b"
    with pytest.raises(KeyboardInterrupt):
        trainlab.train(tiny_config(out=str(run), epochs=4), callbacks=[StopAfter(2)])
    original = (run / "config.yaml").read_text()
    for damaged in (original.replace("epochs: 4", "epochs: 13"), "", original[:200]):
        (run / "config.yaml").write_text(damaged)
        with pytest.raises(TrainlabError, match="config"):
            trainlab.train(resume=run)  # was: 13 epochs, or the default recipe, silently
    (run / "config.yaml").write_text(original)
    state = (run / (RESUME_STATE + ".json")).read_text()
    (run / (RESUME_STATE + ".json")).write_text(state.replace('"optimizer"', '"optimiser"'))
    with pytest.raises(RunError, match="resume state does not fit this run"):
        trainlab.train(resume=run)
    (run / (RESUME_STATE + ".json")).write_text(state)
    assert trainlab.train(resume=run, runtime_overrides=["device=cpu"]).summary["epochs_run"] == 4


def _write_digits(path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    np.savez(path, x_train=rng.integers(0, 256, (count, 8, 8), dtype=np.uint8),
             y_train=np.arange(count) % 2, x_test=rng.integers(0, 256, (20, 8, 8), dtype=np.uint8),
             y_test=np.arange(20) % 2)  # fmt: skip


def test_resume_refuses_a_data_set_that_changed_since_the_run_started(tiny_config, tmp_path):
    data, run = tmp_path / "d.npz", tmp_path / "run"
    _write_digits(data, 100, seed=0)
    config = tiny_config(out=str(run), epochs=3, data__dataset=str(data), data__train_size=None,
                         data__val_size=None)  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        trainlab.train(config, callbacks=[StopAfter(2)])  # epoch 1 saved
    _write_digits(data, 200, seed=0)  # images added: another split, silently (was)
    with pytest.raises(RunError, match=r"d\.npz changed since .*train_size 90 -> 180"):
        trainlab.train(resume=run)
    _write_digits(data, 100, seed=0)
    np.savez(data, **{**np.load(data), "y_train": 1 - np.arange(100) % 2})  # labels fixed
    with pytest.raises(RunError, match=r"changed since .*\(other training labels\)"):
        trainlab.train(resume=run)
    _write_digits(data, 100, seed=0)
    assert trainlab.train(resume=run).summary["dataset"]["train_size"] == 90


def test_a_config_field_added_or_removed_by_an_upgrade_is_not_an_edit():
    from trainlab.runs.record import changed_keys

    started = {"epochs": 4, "optim.lr": 0.01, "gone": 1}
    assert changed_keys(started, {"epochs": 4, "optim.lr": 0.01, "new.field": True}) == []
    assert changed_keys(started, {"epochs": 13, "optim.lr": 0.01}) == ["epochs"]


def test_ctrl_c_during_the_test_evaluation_leaves_a_run_to_resume(tiny_config, tmp_path,
                                                                  monkeypatch):  # fmt: skip
    from trainlab.engine.loop import Trainer
    from trainlab.training import RunInterrupted

    evaluate = Trainer.evaluate

    def interrupted_test(self, loader, **kwargs):
        if kwargs.get("full_precision"):  # the test split's evaluation
            raise KeyboardInterrupt
        return evaluate(self, loader, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", interrupted_test)
    with pytest.raises(RunInterrupted):
        trainlab.train(tiny_config(out=str(tmp_path / "run")))
    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    resumed = trainlab.train(resume=tmp_path / "run")
    assert resumed.status == "completed" and resumed.summary["epochs_run"] == 2


def test_early_stopping_stops_and_keeps_the_best_epoch(tiny_config):
    config = tiny_config(
        epochs=10, early_stopping={"enabled": True, "patience": 2, "min_delta": 0.5}
    )
    result = trainlab.train(config)
    assert result.status == "early_stopped"
    assert result.summary["epochs_run"] == 3
    assert "did not improve" in result.summary["stop_reason"]
    best = result.summary["best_epoch"]
    assert result.summary["val"]["loss"] == pytest.approx(
        result.history[best - 1]["val_loss"], rel=1e-6
    )


def test_divergence_is_a_status_not_a_crash(tiny_config):
    config = tiny_config(
        optim={"name": "sgd", "lr": 1e8, "weight_decay": 0},
        label_smoothing=0.0,
        schedule={"name": "constant"},
    )
    result = trainlab.train(config)
    assert result.status == "diverged"
    summary = json.loads((result.run_dir / "summary.json").read_text())
    assert summary["status"] == "diverged" and "loss became" in summary["stop_reason"]


def test_budget_fits_the_schedule_to_the_time(tiny_config):
    result = trainlab.train(tiny_config(budget=1.5, epochs=1))
    assert result.status == "budget_exhausted"
    assert result.summary["epochs_run"] > 1, "the budget, not epochs, decides the length"
    assert result.summary["train_seconds"] < 1.5 * 2
    peak = result.config.optim.lr
    assert result.history[-1]["lr"] < 0.25 * peak, "the learning rate has annealed by the end"


def test_the_test_split_is_evaluated_once_after_training(tmp_path, tiny_config, monkeypatch):
    """Spy on every evaluation: the test split (a size no other split has) is seen exactly once,
    after fit() has finished, so it cannot have steered early stopping or the best epoch."""
    from trainlab.engine.loop import Trainer

    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(
        path,
        x_train=rng.integers(0, 256, size=(400, 12, 12), dtype=np.uint8),
        y_train=np.arange(400) % 3,
        x_test=rng.integers(0, 256, size=(37, 12, 12), dtype=np.uint8),
        y_test=np.arange(37) % 3,
    )
    seen = []
    original = Trainer.evaluate

    def spy(self, loader, **kwargs):
        seen.append((loader.num_samples, self.state.status))
        return original(self, loader, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", spy)
    config = tiny_config(
        epochs=6,
        data={"dataset": str(path), "val_size": 80, "batch_size": 40},
        early_stopping={"enabled": True, "patience": 2},
    )
    result = trainlab.train(config)
    test_calls = [status for size, status in seen if size == 37]
    assert test_calls == [result.status] and result.status != "running"
    assert len(seen) == result.summary["epochs_run"] + 1


def test_a_used_run_folder_is_refused(tiny_config):
    config = tiny_config()
    trainlab.train(config)
    with pytest.raises(RunError, match="already exists"):
        trainlab.train(config)


def test_train_without_a_folder(tiny_config):
    result = trainlab.train(tiny_config(out=None), save=False)
    assert result.run_dir is None and result.status == "completed"


def test_ema_and_plateau_and_clipping_run(tiny_config):
    config = tiny_config(
        ema_decay=0.9,
        schedule={"name": "plateau"},
        optim={"name": "momentum", "lr": 0.05, "grad_clip": 1.0},
    )
    result = trainlab.train(config)
    assert result.status == "completed" and result.test["accuracy"] > 0.3


def test_same_seed_deterministic_runs_repeat_exactly(tiny_config, tmp_path):
    runs = [
        trainlab.train(tiny_config(deterministic=True, seed=3, out=str(tmp_path / f"d{i}")))
        for i in range(2)
    ]
    assert comparable(runs[0].history) == comparable(runs[1].history)
    assert runs[0].test == runs[1].test


def test_mixed_precision_can_be_forced_on_cpu(tiny_config):
    result = trainlab.train(
        tiny_config(amp=True, model={"name": "cnn", "options": {"channels": [4, 8], "hidden": 16}})
    )
    assert result.status == "completed" and result.test["loss"] is not None


def test_auto_epochs_scale_with_the_data(tiny_config):
    result = trainlab.train(tiny_config(epochs="auto"))
    assert result.config.epochs == result.summary["epochs_run"] >= 8


class KillDuringEpoch(Callback):
    """Ctrl-C in the middle of an epoch, after the previous epoch's state was saved."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_batch_end(self, trainer):
        if trainer.state.epoch + 1 == self.epoch:
            raise KeyboardInterrupt


@pytest.mark.slow
def test_resume_with_ema_is_exact_and_continues_from_saved_state(tiny_config, tmp_path):
    overrides = {"epochs": 4, "ema_decay": 0.9}
    straight = trainlab.train(tiny_config(out=str(tmp_path / "a"), **overrides))
    with pytest.raises(KeyboardInterrupt):
        trainlab.train(
            tiny_config(out=str(tmp_path / "b"), **overrides), callbacks=[KillDuringEpoch(3)]
        )
    saved_rows = (tmp_path / "b" / "history.csv").read_text().splitlines()
    assert len(saved_rows) == 3, "two epochs were recorded before the kill"
    resumed = trainlab.train(resume=tmp_path / "b")
    # A real resume keeps the recorded epochs as they were (timings included) instead of redoing them.
    assert (tmp_path / "b" / "history.csv").read_text().splitlines()[:3] == saved_rows
    assert comparable(resumed.history) == comparable(straight.history)
    assert resumed.test == straight.test


def test_run_record_details(tiny_config, tmp_path):
    result = trainlab.train(tiny_config(out=str(tmp_path / "r")))
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    assert saved["out"] is None, "feeding config.yaml back starts a new run"
    assert saved["data"]["dataset"] == "mnist-5k" and saved["data"]["kind"] == "digits"
    assert isinstance(saved["epochs"], int)
    runtime = result.summary["runtime"]
    if torch.cuda.is_available():  # device auto; mixed precision auto (bf16 or fp16) on CUDA
        assert runtime["device"] == "cuda" and runtime["amp"] in {"bfloat16", "float16"}
    else:
        assert runtime == {"device": "cpu", "amp": None, "channels_last": False}


def test_a_registered_name_stays_a_name_even_with_a_same_named_folder(
    tiny_config, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist-5k").mkdir()
    trainlab.train(tiny_config(out=str(tmp_path / "r")))
    assert (
        yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["data"]["dataset"]
        == "mnist-5k"
    )


def test_resume_keeps_the_original_environment_and_may_change_the_device_only(
    tiny_config, tmp_path
):
    from trainlab.config import ConfigError

    with pytest.raises(KeyboardInterrupt):
        trainlab.train(
            tiny_config(out=str(tmp_path / "b"), epochs=3), callbacks=[KillDuringEpoch(2)]
        )
    environment = (tmp_path / "b" / "environment.json").read_text()
    with pytest.raises(ConfigError, match="can only change"):
        trainlab.train(resume=tmp_path / "b", runtime_overrides=["seed=3"])
    result = trainlab.train(
        resume=tmp_path / "b", runtime_overrides=["device=cpu", "progress=false"]
    )
    assert result.status == "completed"
    assert (tmp_path / "b" / "environment.json").read_text() == environment


def test_balanced_class_weights_are_inverse_frequencies():
    from trainlab.training import balanced_class_weights

    weights = balanced_class_weights(torch.tensor([0, 0, 0, 1]), num_classes=3)
    assert torch.allclose(weights, torch.tensor([4 / 9, 4 / 3, 0.0]))  # class 2 never seen
    assert torch.isclose(weights[0] * 3, weights[1] * 1)  # each seen class weighs the same


def test_class_weighted_loss_changes_training_and_is_recorded(tiny_config, tmp_path):
    from trainlab.data import load_dataset

    # Imbalanced on purpose: 200 images of class 0, 20 of each other class (a stratified
    # subsample of MNIST would give every class the same count, and weights of exactly 1).
    split = load_dataset("mnist-5k").test
    keep = torch.cat([torch.nonzero(split.labels == c)[: 200 if c == 0 else 20, 0]
                      for c in range(10)])  # fmt: skip
    images, labels = split.images[keep][:, 0].numpy(), split.labels[keep].numpy()
    np.savez(tmp_path / "skewed.npz", x_train=images, y_train=labels, x_test=images[::5],
             y_test=labels[::5])  # fmt: skip
    skewed = {"data__dataset": str(tmp_path / "skewed.npz"), "data__train_size": None}
    runs = {
        w: trainlab.train(
            tiny_config(deterministic=True, class_weights=w, out=str(tmp_path / w), **skewed)
        )
        for w in ("none", "balanced")
    }
    plain, balanced = (runs[w].history[0]["train_loss"] for w in ("none", "balanced"))
    assert plain != pytest.approx(balanced)  # the weights reached the loss
    saved = yaml.safe_load((tmp_path / "balanced" / "config.yaml").read_text())
    assert saved["class_weights"] == "balanced"


def test_seed_everything_sets_determinism_and_skips_the_slow_call_when_unchanged():
    import subprocess
    import sys

    from trainlab.training import seed_everything

    seed_everything(0, deterministic=True)
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.backends.cudnn.benchmark
    seed_everything(0, deterministic=False)
    assert not torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.benchmark
    # Nothing to change: torch.use_deterministic_algorithms (it imports torch._inductor, ~1 s)
    # is not called at all.
    code = ("import sys; from trainlab.training import seed_everything; "
            "seed_everything(0, deterministic=False); print('torch._inductor' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_checkpoint_records_the_ink_polarity_the_server_must_draw(tiny_config, tmp_path):
    """A model trained on dark ink on white (scanned digits) is served dark ink on white."""
    from trainlab.data import load_dataset
    from trainlab.serve.preprocess import preprocess_upload

    digits = load_dataset("mnist-5k")
    scans = tmp_path / "scans.npz"
    np.savez(scans, x_train=255 - digits.train.images[::8, 0].numpy(),
             y_train=digits.train.labels[::8].numpy(), x_test=255 - digits.test.images[::10, 0].numpy(),
             y_test=digits.test.labels[::10].numpy(), kind="digits")  # fmt: skip
    mnist_run = trainlab.train(tiny_config())
    mnist = load_checkpoint(mnist_run.run_dir).preprocessing
    inverted = trainlab.train(tiny_config(data__dataset=str(scans), out=str(tmp_path / "s")))
    preprocessing = load_checkpoint(inverted.run_dir).preprocessing
    assert mnist["background"] == "dark" and preprocessing["background"] == "light"
    # Augmentation fills what it rotates in with the background, not black corners on white.
    assert mnist_run.config.data.augment.fill == "zero"
    assert inverted.config.data.augment.fill == "edge"
    scan = 255 - digits.test.images[0, 0].numpy()  # a training-format image passes unchanged
    buffer = io.BytesIO()
    Image.fromarray(scan).save(buffer, format="PNG")
    assert np.array_equal(preprocess_upload(buffer.getvalue(), preprocessing)[0].numpy(), scan)


def test_a_last_batch_of_one_image_never_reaches_batch_norm(tiny_config):
    """129 images in batches of 64: the lone 129th would crash BatchNorm's training step."""
    config = tiny_config(data__train_size=129, data__batch_size=64, epochs=1,
                         model__options={"hidden": [16], "batch_norm": True})  # fmt: skip
    result = trainlab.train(config)
    assert result.status == "completed" and result.summary["steps"] == 2


def test_mixed_precision_on_a_gpu_without_native_bf16_is_fp16(monkeypatch):
    """A T4 or V100 reports bf16 'supported' by emulation, which is slow: fp16 there."""
    from trainlab.training import resolve_amp

    config = trainlab.TrainConfig()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))  # T4
    assert resolve_amp(config, torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 0))  # A100
    assert resolve_amp(config, torch.device("cuda")) == torch.bfloat16


def test_prepared_data_holds_the_training_images_once(tiny_config):
    from trainlab.training import prepare_data

    prepared = prepare_data(tiny_config(data__train_size=None), torch.device("cpu"))
    assert len(prepared.train) + len(prepared.val) == 5000 - 1000  # mnist-5k: 1,000 for test
    assert prepared.bundle.train.images.numel() == 0  # not a third copy beside train and val
    assert prepared.bundle.image_shape == (1, 28, 28) and prepared.bundle.test is prepared.test
    assert len(prepared.train_labels_sha256) == 64


def test_a_training_size_larger_than_the_data_names_the_option(tiny_config):
    with pytest.raises(TrainlabError, match=r"--train-size\) 100000 is more than the 3600 "
                                            "training images of mnist-5k"):  # fmt: skip
        trainlab.train(tiny_config(data__train_size=100000, data__val_size=400), save=False)


def test_batch_size_1_with_batch_norm_is_refused_before_the_run_folder(tiny_config, tmp_path):
    config = tiny_config(out=str(tmp_path / "bs1"), data__batch_size=1, model__name="vgg",
                         model__options={"width": 0.125})  # fmt: skip
    with pytest.raises(TrainlabError, match=r"batch size 1 cannot train model 'vgg': its "
                                            "BatchNorm layers need at least 2"):  # fmt: skip
        trainlab.train(config)
    assert not (tmp_path / "bs1").exists()  # was: a traceback and a half-made run folder
    config = tiny_config(data__batch_size=1, data__train_size=20, epochs=1)  # mlp: no BatchNorm
    assert trainlab.train(config, save=False).summary["status"] == "completed"
