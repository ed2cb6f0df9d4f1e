"""The run folder: a self-describing record of one training run.

```
run_dir/
  config.yaml        fully resolved configuration (re-runnable with --config)
  environment.json   Python, torch, device, CPU/GPU, package versions, git commit
  history.csv        one row per epoch
  summary.json       status, best epoch, validation and test metrics
  checkpoint/        best-epoch weights (safetensors) + model.json: the exported artifact
  resume/            full training state after the last completed epoch (for --resume)
```
Every file is written atomically, so a run killed at any moment leaves readable files.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainlab._io import write_json_atomic, write_text_atomic
from trainlab.config import (
    ConfigError,
    TrainConfig,
    build_config,
    config_to_yaml,
    read_yaml_file,
)
from trainlab.engine.callbacks import Callback
from trainlab.errors import RunError
from trainlab.runs.checkpoint import save_checkpoint
from trainlab.runs.state import load_state, save_state

if TYPE_CHECKING:
    from trainlab.engine.loop import Trainer

CONFIG_FILE = "config.yaml"
ENVIRONMENT_FILE = "environment.json"
HISTORY_FILE = "history.csv"
SUMMARY_FILE = "summary.json"
CHECKPOINT_DIR = "checkpoint"
RESUME_STATE = "resume/state"

HISTORY_COLUMNS = [
    "epoch",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_balanced_accuracy",
    "val_macro_f1",
    "lr",
    "seconds",
    "elapsed",
]


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN/inf: a diverged run's metrics are recorded as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, list):
        return [finite_or_none(item) for item in value]
    return value


def history_to_csv(history: list[dict[str, float]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=HISTORY_COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for row in history:
        writer.writerow(
            {
                key: f"{row[key]:.6g}" if isinstance(row[key], float) else row[key]
                for key in HISTORY_COLUMNS
            }
        )
    return buffer.getvalue()


def damaged(path: Path, error: BaseException) -> RunError:
    """A run folder's file that cannot be read: say which, and what to do."""
    detail = getattr(error, "strerror", None) or str(error).splitlines()[0]
    return RunError(f"{path} is damaged or unreadable ({detail}); restore it from a copy, or "
                    "train the run again")  # fmt: skip


def read_run_json(path: str | Path) -> Any:
    """A JSON file of a run folder (summary, environment, trial marker); damage is a RunError."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise damaged(path, error) from None


def read_run_object(path: str | Path) -> dict[str, Any]:
    """:func:`read_run_json` of a file that must hold a JSON object (environment.json, ...)."""
    value = read_run_json(path)
    if not isinstance(value, dict):
        raise damaged(Path(path), ValueError("not a JSON object"))
    return value


def read_history(run_dir: str | Path) -> list[dict[str, float]]:
    path = Path(run_dir) / HISTORY_FILE
    if not path.is_file():
        return []
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            return [{key: float(value) for key, value in row.items()}
                    for row in csv.DictReader(handle)]  # fmt: skip
    except (OSError, UnicodeDecodeError, ValueError, TypeError, csv.Error) as error:
        raise damaged(path, error) from None


def read_summary(run_dir: str | Path) -> dict[str, Any] | None:
    path = Path(run_dir) / SUMMARY_FILE
    if not path.is_file():
        return None
    summary = read_run_json(path)
    if not isinstance(summary, dict):
        raise damaged(path, ValueError("not a JSON object"))
    return summary


def read_run_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).exists():
        raise RunError(f"no such run folder: {run_dir}")
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
    try:
        tree = read_yaml_file(path, "the run's config")
    except ConfigError as error:
        raise RunError(
            f"{error}; the run folder is damaged (restore {CONFIG_FILE} from a copy)"
        ) from None
    return build_config(tree or {})


def prepare_run_dir(run_dir: Path, *, resume: bool) -> None:
    """Refuse to mix two runs in one folder: a new run needs an empty or absent folder."""
    if resume:
        if not (run_dir / CONFIG_FILE).is_file():
            raise RunError(
                f"cannot resume {run_dir}: it has no {CONFIG_FILE} (is it a run folder?)"
            )
        return
    if run_dir.exists() and not run_dir.is_dir():
        raise RunError(f"--out {run_dir} is a file, not a folder; choose another --out")
    if run_dir.exists() and any(run_dir.iterdir()):
        resume = (f"continue it with `trainlab train --resume {run_dir}` or "
                  if (run_dir / CONFIG_FILE).is_file() else "it is not a run folder; ")  # fmt: skip
        raise RunError(f"run folder {run_dir} already exists and is not empty; {resume}"
                       "choose another --out")  # fmt: skip
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise RunError(f"cannot create run folder {run_dir}: {error.strerror or error}") from None


def write_config(run_dir: Path, config: TrainConfig) -> None:
    write_text_atomic(run_dir / CONFIG_FILE, config_to_yaml(config))


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    write_json_atomic(run_dir / SUMMARY_FILE, finite_or_none(summary))


# The resume state's copy of the run's config (what it computes, not where it runs), as JSON.
STARTED_CONFIG_KEY = "started_config"
STARTED_DATA_KEY = "started_data"  # which data the run trains on: a resume checks it


def config_values(config: TrainConfig, runtime_keys: Sequence[str]) -> dict[str, Any]:
    """``config`` as dotted keys and JSON values, without ``out`` and ``runtime_keys`` (device,
    data root, ...: what a resume may change)."""
    flat: dict[str, Any] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and key != "options":  # model options: one value
                walk(value, f"{prefix}{key}.")
            else:
                flat[f"{prefix}{key}"] = value

    walk(config.model_dump(mode="json"), "")
    for key in ("out", *runtime_keys):
        flat.pop(key, None)
    return flat


def changed_keys(started: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Keys whose values differ between the config a run started with and ``now``. A key only
    one side has is a field another trainlab version added or removed: not a change."""
    return sorted(key for key in started.keys() & now.keys() if started[key] != now[key])


def has_resume_state(run_dir: Path) -> bool:
    """False for a run killed before its first epoch ended: it has nothing to continue from."""
    return (run_dir / (RESUME_STATE + ".json")).is_file()


def load_resume_state(run_dir: Path) -> dict[str, Any]:
    # Loaded on the CPU: load_state_dict moves tensors to where the parameters live, and keeping
    # optimizer step counters on the CPU avoids a GPU sync per step.
    return load_state(run_dir / RESUME_STATE)


class RunRecorder(Callback):
    """Writes history, the best checkpoint and the resume state after every epoch.

    The resume state is saved only at epoch ends: that is where a resumed run can continue
    exactly, and a run stopped after its last epoch needs nothing more.

    Put it last among the callbacks, so the saved state includes what the others did this epoch.
    """

    def __init__(self, run_dir: Path, *, preprocessing: dict[str, Any], class_names: list[str],
                 started_config: dict[str, Any] | None = None,
                 started_data: dict[str, Any] | None = None) -> None:  # fmt: skip
        self.run_dir = run_dir
        self.preprocessing = preprocessing
        self.class_names = class_names
        # Saved with the state: a resume checks config.yaml and the data set against them.
        self.started = {STARTED_CONFIG_KEY: json.dumps(started_config or {}, sort_keys=True),
                        STARTED_DATA_KEY: json.dumps(started_data or {}, sort_keys=True)}  # fmt: skip

    def on_epoch_end(self, trainer: Trainer, record: dict[str, float]) -> None:
        write_text_atomic(self.run_dir / HISTORY_FILE, history_to_csv(trainer.state.history))
        if trainer.state.best_epoch == trainer.state.epoch:
            self.save_best(trainer)
        save_state(self.run_dir / RESUME_STATE, {**trainer.state_dict(), **self.started})

    def save_best(self, trainer: Trainer) -> None:
        best_row = next(
            (row for row in trainer.state.history if row["epoch"] == trainer.state.best_epoch),
            trainer.state.history[-1] if trainer.state.history else {},
        )
        save_checkpoint(
            self.run_dir / CHECKPOINT_DIR,
            trainer.eval_model,
            preprocessing=self.preprocessing,
            class_names=self.class_names,
            metadata={
                "epoch": trainer.state.best_epoch,
                "monitor": trainer.monitor,
                "value": trainer.state.best_value,
                "val": {k[4:]: v for k, v in best_row.items() if k.startswith("val_")},
            },
        )

    def on_fit_end(self, trainer: Trainer) -> None:
        # The trainer has restored the best weights: save them once more, so the final
        # checkpoint is whole even if a kill once cut a mid-run save between its two files.
        # Diverged before any finite validation: the (last) weights, still inspectable.
        self.save_best(trainer)
