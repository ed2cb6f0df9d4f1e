"""``trainlab.train(config) -> RunResult``: one run, from a config to a self-describing run folder.

This is the function the CLI, sweeps, tests and notebooks all call. It wires the packages
together — data, models, engine, runs — and adds nothing of its own to the training step.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import trainlab
from trainlab._io import write_json_atomic
from trainlab.config import (
    ConfigError,
    TrainConfig,
    apply_overrides,
    auto_epochs,
    build_config,
    known_device,
    load_config,
)
from trainlab.data import (
    BatchAugmenter,
    BatchLoader,
    DatasetBundle,
    ImageSplit,
    background_of,
    carve_validation,
    channel_stats,
    kfold_validation,
    load_dataset,
    resolve_augment,
    subsample,
)
from trainlab.data.batches import ink_layout
from trainlab.data.registry import is_registered
from trainlab.data.splits import labels_fingerprint
from trainlab.data.types import HANDWRITING_KINDS
from trainlab.engine.callbacks import Callback, EarlyStopping
from trainlab.engine.loop import Trainer
from trainlab.engine.optim import build_optimizer
from trainlab.engine.progress import ProgressBar
from trainlab.engine.schedules import LRSchedule
from trainlab.errors import DataError, RunError
from trainlab.models import count_parameters, create_model, model_options
from trainlab.runs.environment import collect_environment
from trainlab.runs.record import (
    CHECKPOINT_DIR,
    ENVIRONMENT_FILE,
    STARTED_CONFIG_KEY,
    STARTED_DATA_KEY,
    RunRecorder,
    changed_keys,
    config_values,
    has_resume_state,
    load_resume_state,
    prepare_run_dir,
    read_run_config,
    read_summary,
    write_config,
    write_summary,
)

# Below this many batches per epoch, a ragged last batch is kept (small data needs every image);
# above it, it is dropped. A last batch of one image is always dropped: BatchNorm cannot train
# on it (and the shuffle leaves out a different image each epoch).
DROP_LAST_MIN_BATCHES = 4


@dataclass
class RunResult:
    """What a run produced; ``summary`` is exactly what ``summary.json`` holds."""

    config: TrainConfig
    summary: dict[str, Any]
    history: list[dict[str, float]]
    model: nn.Module = field(repr=False)
    run_dir: Path | None = None

    @property
    def status(self) -> str:
        return self.summary["status"]

    @property
    def test(self) -> dict[str, Any]:
        return self.summary["test"]

    @property
    def val(self) -> dict[str, Any]:
        return self.summary["val"]

    @property
    def checkpoint_dir(self) -> Path | None:
        return self.run_dir / CHECKPOINT_DIR if self.run_dir else None


@dataclass
class PreparedData:
    bundle: DatasetBundle
    train: ImageSplit
    val: ImageSplit
    test: ImageSplit
    mean: list[float]
    std: list[float]
    background: str  # of the training images, "dark" or "light": the default fill and serving
    train_labels_sha256: str  # of the whole training set, before the split: see `data_identity`

    def data_identity(self) -> dict[str, Any]:
        """What says that a run trains on the same data: the training labels and the split
        sizes (recorded in summary.json; a resume and ``embed --split`` compare them)."""
        return {
            "train_labels_sha256": self.train_labels_sha256,
            "train_size": len(self.train),
            "val_size": len(self.val),
            "test_size": len(self.test),
        }


def balanced_class_weights(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """``n / (classes × count)`` per class (scikit-learn's "balanced"): every class then adds
    the same total weight to the loss. A class absent from the training split gets weight 0."""
    counts = torch.bincount(labels.long(), minlength=num_classes).float()
    weights = len(labels) / (num_classes * counts.clamp(min=1))
    return torch.where(counts > 0, weights, torch.zeros_like(weights))


# -- devices and seeds -----------------------------------------------------------------------


def _mps_available() -> bool:
    return bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available())


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU."""
    if not known_device(name):  # torch.device would raise a bare RuntimeError
        raise ConfigError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ConfigError(
                f"device {name!r} requested but CUDA is not available; use --device auto or cpu"
            )
        if device.index is not None and device.index >= count:
            raise ConfigError(f"device {name!r} requested but only cuda:0..cuda:{count - 1} exist")
    if device.type == "mps" and not _mps_available():
        raise ConfigError(
            f"device {name!r} requested but Apple MPS is not available; use --device auto or cpu"
        )
    return device


def resolve_amp(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    """Mixed precision: on by default on CUDA (bf16 where supported), off on CPU unless asked."""
    wanted = device.type == "cuda" if config.amp == "auto" else config.amp
    if not wanted:
        return None
    # Native bf16 only (compute capability 8+, Ampere on): older GPUs (T4, V100) would emulate
    # it, slowly; they get fp16 with loss scaling instead.
    if device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        return torch.float16
    return torch.bfloat16


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # torch.use_deterministic_algorithms imports torch._inductor (~1 s per process): call it
    # only when it changes something.
    wanted = (deterministic, deterministic)  # (enabled, warn only)
    current = (torch.are_deterministic_algorithms_enabled(),
               torch.is_deterministic_algorithms_warn_only_enabled())  # fmt: skip
    if current != wanted:
        torch.use_deterministic_algorithms(deterministic, warn_only=deterministic)
    torch.backends.cudnn.benchmark = not deterministic


# -- data, model, trainer --------------------------------------------------------------------


def check_classes(bundle: DatasetBundle) -> None:
    """One class of the user's data would fail later, deep in a split or a model build."""
    if bundle.num_classes < 2:
        found = ", ".join(map(repr, bundle.class_names)) or "none"
        raise DataError(f"{bundle.source} has {bundle.num_classes} class ({found}); a classifier "
                        "needs at least two (an image folder: one subfolder per class; an .npz: "
                        "labels of two classes or more)")  # fmt: skip


def prepare_data(config: TrainConfig, device: torch.device) -> PreparedData:
    """Load, split (validation carved from train; test untouched), subsample, move to device."""
    data = config.data
    bundle = load_dataset(data.dataset, root=data.root, download=data.download)
    check_classes(bundle)
    if data.kind is not None:
        bundle.kind = data.kind
    if data.folds is not None:
        train, val = kfold_validation(bundle.train, folds=data.folds, fold=data.fold,
                                      seed=data.split_seed)  # fmt: skip
    else:
        train, val = carve_validation(
            bundle.train, fraction=data.val_fraction, size=data.val_size, seed=data.split_seed
        )
    if data.train_size is not None and data.train_size > len(train):
        raise DataError(
            f"data.train_size (--train-size) {data.train_size} is more than the {len(train)} "
            f"training images of {data.dataset} left beside validation; choose 1..{len(train)}, "
            "or a share with --train-fraction"
        )
    if data.train_fraction is not None or data.train_size is not None:
        train = subsample(
            train, fraction=data.train_fraction, size=data.train_size, seed=data.split_seed
        )
    mean, std = channel_stats(train.images)
    fingerprint = labels_fingerprint(bundle.train.labels)
    test = bundle.test.to(device)
    # The unsplit training set is not needed past here (train and val are copies): keep only
    # its shape, or a run holds the training images twice (K49: 180 MB more); on a GPU the
    # host copy of the test split goes too.
    bundle.train, bundle.test = bundle.train.subset(torch.arange(0)), test
    return PreparedData(bundle, train.to(device), val.to(device), test, mean, std,
                        background_of(train.images), fingerprint)  # fmt: skip


def resolve_config(config: TrainConfig, prepared: PreparedData) -> TrainConfig:
    """Fill in what ``auto`` and defaults mean for this data, so config.yaml says it all."""
    bundle = prepared.bundle
    resolved = config.model_copy(deep=True)
    resolved.data.augment = resolve_augment(config.data.augment, bundle.kind, bundle.image_shape,
                                            prepared.background)  # fmt: skip
    resolved.model.options = {**model_options(config.model.name), **config.model.options}
    resolved.data.kind = bundle.kind
    if config.epochs == "auto":
        resolved.epochs = auto_epochs(len(prepared.train))
    return resolved


def uses_channels_last(config: TrainConfig, model: nn.Module) -> bool:
    """NHWC layout speeds up convolutions (oneDNN on CPU, tensor cores on GPU); others don't care."""
    if config.channels_last != "auto":
        return config.channels_last
    return any(isinstance(module, nn.Conv2d) for module in model.modules())


def build_model(config: TrainConfig, bundle: DatasetBundle, device: torch.device) -> nn.Module:
    channels, height, width = bundle.image_shape
    model = create_model(
        config.model.name,
        in_channels=channels,
        num_classes=bundle.num_classes,
        image_size=(height, width),
        **config.model.options,
    )
    return model.to(device)


def make_loaders(
    config: TrainConfig, prepared: PreparedData, generator: torch.Generator, channels_last: bool
):
    data = config.data
    augment = data.augment
    assert not isinstance(augment, str)  # resolve_config turned "auto" into a concrete config
    augmenter = (
        None
        if augment.is_identity()
        else BatchAugmenter(augment, prepared.bundle.num_classes, mean=prepared.mean)
    )
    size = len(prepared.train)
    drop_last = size >= DROP_LAST_MIN_BATCHES * data.batch_size or (
        size > data.batch_size and size % data.batch_size == 1
    )
    common = {"mean": prepared.mean, "std": prepared.std, "channels_last": channels_last}
    train_loader = BatchLoader(
        prepared.train,
        data.batch_size,
        shuffle=True,
        augmenter=augmenter,
        generator=generator,
        drop_last=drop_last,
        **common,
    )
    val_loader = BatchLoader(prepared.val, data.eval_batch_size, shuffle=False, **common)
    test_loader = BatchLoader(prepared.test, data.eval_batch_size, shuffle=False, **common)
    return train_loader, val_loader, test_loader


def _as_config(config: TrainConfig | dict[str, Any] | str | Path | None) -> TrainConfig:
    if config is None:
        return TrainConfig()
    if isinstance(config, TrainConfig):
        return config
    if isinstance(config, dict):
        return build_config(config)
    return load_config(config)


def default_run_dir(config: TrainConfig) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    dataset = Path(config.data.dataset).stem.replace(" ", "_") or "data"
    model = re.sub(r"[^\w.-]+", "_", Path(config.model.name).name)  # hf:org/id -> a folder name
    return Path("runs") / f"{stamp}-{dataset}-{model}"


# -- the public entry point ------------------------------------------------------------------


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during training; ``run_dir`` is where ``--resume`` continues."""

    def __init__(self, run_dir: Path | None):
        super().__init__(f"interrupted: {run_dir}")
        self.run_dir = run_dir


@dataclass
class RunStart:
    config: TrainConfig
    run_dir: Path | None
    state: dict[str, Any] | None = None  # saved training state to continue (None: epoch 0)


# What may change when a run is resumed: where and how it runs, never what it computes.
RESUMABLE_KEYS = ("device", "progress", "data.root", "data.download")


def _start_from_folder(run_dir: Path, runtime_overrides: list[str]) -> RunStart:
    """A run folder to continue: from its last completed epoch, or afresh if it has none."""
    config = read_run_config(run_dir)
    state = load_resume_state(run_dir) if has_resume_state(run_dir) else None
    started = json.loads((state or {}).get(STARTED_CONFIG_KEY) or "{}")
    changed = changed_keys(started, config_values(config, RESUMABLE_KEYS))
    if changed:
        raise RunError(f"{run_dir / 'config.yaml'} is not the config this run started with "
                       f"(edited or damaged: {', '.join(changed[:5])}): a resume continues the "
                       "same run, so restore it; to train with the new config, start a run "
                       f"from it (`trainlab train --config {run_dir / 'config.yaml'} --out "
                       "NEW_FOLDER`)")  # fmt: skip
    for override in runtime_overrides:
        if override.partition("=")[0] not in RESUMABLE_KEYS:
            raise ConfigError(
                f"a resumed run can only change {', '.join(RESUMABLE_KEYS)}; got {override!r}"
            )
    if runtime_overrides:
        config = build_config(apply_overrides(config.model_dump(mode="json"), runtime_overrides))
    summary = read_summary(run_dir)
    if summary is not None and summary.get("status") not in (None, "running"):
        raise RunError(
            f"{run_dir} already finished with status {summary['status']!r}; nothing to resume"
        )
    prepare_run_dir(run_dir, resume=True)
    return RunStart(config, run_dir, state)


def _check_batch_norm_batches(config: TrainConfig, model: nn.Module) -> None:
    """BatchNorm normalises over the batch: one image has no variance to normalise by (a crash
    deep in the first step where a layer sees one value per channel, noise elsewhere)."""
    if config.data.batch_size < 2 and any(
        isinstance(module, nn.modules.batchnorm._BatchNorm) for module in model.modules()
    ):
        raise ConfigError(
            f"batch size 1 cannot train model '{config.model.name}': its BatchNorm layers need "
            "at least 2 images a batch; use --batch-size 2 or more (or a model option without "
            "batch norm, such as batch_norm=false where it has one)"
        )


def _check_same_data(start: RunStart, prepared: PreparedData) -> None:
    """A resume must train on the data the run started with: a data set file rewritten since
    (images added, labels fixed) would give another split and silently mix two data sets."""
    # A state saved by an older version has no record of its data: nothing to compare.
    started = json.loads((start.state or {}).get(STARTED_DATA_KEY) or "{}")
    now = prepared.data_identity()
    changed = [key for key in started if started[key] != now.get(key)]
    if changed:
        sizes = ", ".join(f"{key} {started[key]} -> {now[key]}"
                          for key in changed if key.endswith("_size"))  # fmt: skip
        raise RunError(
            f"the data set {start.config.data.dataset} changed since {start.run_dir} started "
            f"({sizes or 'other training labels'}): a resume must train on the same data; "
            "restore the file, or start a new run on the new data"
        )


def _record_config(config: TrainConfig) -> TrainConfig:
    """The config as saved in config.yaml: reusable with --config from anywhere.

    A dataset path becomes absolute, and ``out`` is left out so that feeding the file back
    starts a new run instead of colliding with this folder.
    """
    recorded = config.model_copy(deep=True)
    if not is_registered(config.data.dataset):
        recorded.data.dataset = str(Path(config.data.dataset).expanduser().resolve())
    if config.data.root is not None:
        recorded.data.root = str(Path(config.data.root).expanduser().resolve())
    recorded.out = None
    return recorded


def _callbacks(config: TrainConfig, user: list[Callback] | None) -> list[Callback]:
    callbacks: list[Callback] = []
    if config.early_stopping.enabled:
        callbacks.append(
            EarlyStopping(config.early_stopping.patience, config.early_stopping.min_delta)
        )
    if config.progress:
        callbacks.append(ProgressBar())
    callbacks.extend(user or [])
    return callbacks


def _summary(
    config: TrainConfig, prepared: PreparedData, trainer: Trainer, test: dict, runtime: dict
) -> dict:
    state, bundle = trainer.state, prepared.bundle
    best_row = next((row for row in state.history if row["epoch"] == state.best_epoch), {})
    return {
        "status": state.status,
        "stop_reason": state.stop_reason,
        "best_epoch": state.best_epoch,
        "epochs_run": state.epoch,
        "steps": state.step,
        "train_seconds": round(state.elapsed, 3),
        "monitor": config.monitor,
        "mode": config.resolved_mode(),
        "best_value": state.best_value,
        "val": {key[4:]: value for key, value in best_row.items() if key.startswith("val_")},
        "test": test,
        "dataset": {
            "name": config.data.dataset,
            "source": bundle.source,
            "kind": bundle.kind,
            "classes": bundle.class_names,
            "image_shape": list(bundle.image_shape),
            **prepared.data_identity(),
        },
        "model": {"name": config.model.name, "parameters": count_parameters(trainer.eval_model)},
        "runtime": runtime,
        "trainlab_version": trainlab.__version__,
    }


def train(
    config: TrainConfig | dict[str, Any] | str | Path | None = None,
    *,
    resume: str | Path | None = None,
    save: bool = True,
    callbacks: list[Callback] | None = None,
    runtime_overrides: list[str] | None = None,
) -> RunResult:
    """Train one model and evaluate it once on the test split.

    ``config`` is a :class:`TrainConfig`, a dict of its fields, or a YAML file path; ``None``
    means the default recipe. ``resume`` continues the run in that folder exactly where its last
    completed epoch left off, with its saved config (a run killed before its first epoch ended
    starts again in the same folder); ``runtime_overrides`` such as ``["device=cpu"]`` may change
    only where it runs (see ``RESUMABLE_KEYS``). ``save=False`` writes no run folder.
    """
    start = (
        _start_from_folder(Path(resume), runtime_overrides or [])
        if resume is not None
        else RunStart(_as_config(config), None)
    )
    config, run_dir = start.config, start.run_dir

    device = resolve_device(config.device)
    seed_everything(config.seed, config.deterministic)
    prepared = prepare_data(config, device)
    if start.state is not None:
        _check_same_data(start, prepared)
    config = resolve_config(config, prepared)
    model = build_model(config, prepared.bundle, device)
    _check_batch_norm_batches(config, model)
    if hasattr(model, "set_input_normalization"):  # models that undo the pipeline's normalisation
        model.set_input_normalization(prepared.mean, prepared.std)
    # The folder is made once the model builds: a bad model option leaves no empty run folder.
    if save and run_dir is None:
        run_dir = Path(config.out) if config.out else default_run_dir(config)
        prepare_run_dir(run_dir, resume=False)
    if run_dir is not None:
        config.out = str(run_dir)
    channels_last = uses_channels_last(config, model)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    generator = torch.Generator().manual_seed(config.seed)
    train_loader, val_loader, test_loader = make_loaders(config, prepared, generator, channels_last)
    optimizer = build_optimizer(model, config.optim)
    amp_dtype = resolve_amp(config, device)
    runtime = {"device": str(device), "amp": str(amp_dtype).replace("torch.", "") if amp_dtype else None,
               "channels_last": channels_last}  # fmt: skip

    bundle = prepared.bundle
    all_callbacks = _callbacks(config, callbacks)
    if run_dir is not None:
        recorded = _record_config(config)
        write_config(run_dir, recorded)
        if not (run_dir / ENVIRONMENT_FILE).exists():  # a resume keeps the original record
            write_json_atomic(run_dir / ENVIRONMENT_FILE, collect_environment(device))
        preprocessing = {
            "mean": prepared.mean,
            "std": prepared.std,
            "kind": bundle.kind,
            "channels": bundle.image_shape[0],
            "image_size": list(bundle.image_shape[1:]),
            # The server draws uploaded handwriting in the polarity training saw...
            "background": prepared.background,
        }
        if bundle.kind in HANDWRITING_KINDS:  # ...and at the size and place its ink had
            preprocessing.update(ink_layout(prepared.train.images, prepared.background))
        all_callbacks.append(
            RunRecorder(
                run_dir,
                preprocessing=preprocessing,
                class_names=bundle.class_names,
                started_config=config_values(recorded, RESUMABLE_KEYS),
                started_data=prepared.data_identity(),
            )
        )

    class_weights = None
    if config.class_weights == "balanced":
        class_weights = balanced_class_weights(prepared.train.labels, bundle.num_classes)
    trainer = Trainer(
        model,
        optimizer,
        LRSchedule(optimizer, config.schedule, config.optim.lr),
        train_loader,
        val_loader,
        num_classes=bundle.num_classes,
        epochs=config.epochs,
        budget=config.budget,
        monitor=config.monitor,
        mode=config.resolved_mode(),
        label_smoothing=config.label_smoothing,
        class_weights=class_weights,
        grad_clip=config.optim.grad_clip,
        amp_dtype=amp_dtype,
        ema_decay=config.ema_decay,
        generator=generator,
        callbacks=all_callbacks,
    )
    if start.state is not None:
        try:
            trainer.load_state_dict(start.state)
        except (KeyError, TypeError, ValueError, RuntimeError) as error:  # edited, or damaged
            raise RunError(f"{run_dir}'s resume state does not fit this run "
                           f"({type(error).__name__}: {str(error)[:200]}); restore the run "
                           "folder from a copy, or start a new run") from None  # fmt: skip
    try:
        trainer.fit()
        # The one and only use of the test split: after training, on the best epoch's weights,
        # in float32 also after mixed-precision training, so the figures are those of the
        # checkpoint as `predict`, `serve` and reports run it (bf16 logits flipped 1 of 1,000
        # on a GPU). Ctrl-C here too leaves a run that `--resume` finishes.
        test = trainer.evaluate(
            test_loader, class_names=bundle.class_names, per_class=True, full_precision=True
        )
        summary = _summary(config, prepared, trainer, test, runtime)
        if run_dir is not None:
            write_summary(run_dir, summary)
    except KeyboardInterrupt:
        raise RunInterrupted(run_dir) from None
    return RunResult(config=config, summary=summary, history=trainer.state.history, model=trainer.eval_model,
                     run_dir=run_dir)  # fmt: skip
