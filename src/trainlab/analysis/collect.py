"""Gather what a report needs: runs from the study store (history and metrics travel with each
trial, so runs trained on other machines are reported too) and, where the run folder is on this
machine, its summary, checkpoint and environment."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainlab.errors import RunError
from trainlab.experiments.study import is_resumable
from trainlab.runs.record import read_run_object


@dataclass
class RunData:
    """One run, from the store or from its folder."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING, WAITING
    status: str
    reason: str | None
    overrides: dict[str, Any]
    seed: int | None
    value: float | None  # the study metric at the run's best validation epoch
    best_epoch: int | None
    epochs_run: int | None
    seconds: float | None
    val: dict[str, float]
    test: dict[str, float]
    history: list[dict[str, float]]
    run_dir: Path | None  # None when the folder is not on this machine
    host: str | None = None
    retried: bool = False
    label_smoothing: float | None = None  # of its training loss; None: not known
    _files: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def completed(self) -> bool:
        return self.state == "COMPLETE" and self.value is not None and math.isfinite(self.value)

    @property
    def resumable(self) -> bool:
        """Interrupted (Ctrl-C) or lost (its worker died): the same command resumes it."""
        return is_resumable(self.state, self.status)

    @property
    def failed(self) -> bool:
        """Failed for good (an error, say): left out of the statistics, not to be resumed."""
        return self.state == "FAIL" and not self.resumable

    @property
    def unfinished(self) -> bool:
        """Still running or waiting, or resumable."""
        return self.state in ("RUNNING", "WAITING") or self.resumable

    def best_row(self) -> dict[str, float]:
        return next((r for r in self.history if r.get("epoch") == self.best_epoch), {})

    def summary(self) -> dict[str, Any] | None:
        """summary.json of the run folder, when it is here."""
        return self._json("summary.json")

    def environment(self) -> dict[str, Any] | None:
        """environment.json of the run folder, when it is here."""
        return self._json("environment.json")

    def _json(self, name: str) -> dict[str, Any] | None:
        """A JSON file of the run folder, read once (a report asks for it several times)."""
        if name not in self._files:
            path = self.run_dir / name if self.run_dir else None
            exists = path is not None and path.is_file()
            self._files[name] = read_run_object(path) if exists else None
        return self._files[name]


@dataclass
class StudyData:
    name: str
    kind: str  # sweep | tune | run
    metric: str
    direction: str
    keys: list[str]  # the varied config keys
    runs: list[RunData]
    store: str = ""  # where it came from, for the header
    study: Any = field(default=None, repr=False)  # the Optuna study (searches: importances)
    dataset: str | None = None
    cv: int = 0  # sweeps with k-fold cross-validation: the number of folds

    @property
    def completed(self) -> list[RunData]:
        return [run for run in self.runs if run.completed]


def _local(path: str | None) -> Path | None:
    if not path:
        return None
    folder = Path(path)
    return folder if (folder / "config.yaml").is_file() else None


def _label_smoothing(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _from_row(row: Any, base: dict[str, Any]) -> RunData:
    smoothing = row.overrides.get("label_smoothing", base.get("label_smoothing"))
    return RunData(number=row.number, state=row.state, status=row.status, reason=row.reason,
                   overrides=row.overrides, seed=row.seed, value=row.value,
                   best_epoch=row.best_epoch, epochs_run=row.epochs_run, seconds=row.seconds,
                   val=row.val, test=row.test, history=row.history, run_dir=_local(row.run_dir),
                   host=row.host, retried=row.retried,
                   label_smoothing=_label_smoothing(smoothing))  # fmt: skip


def collect_study(store: Any, name: str) -> StudyData:
    from trainlab.experiments import study as s
    from trainlab.experiments.results import rows_of

    study, spec = s.open_study(store, name)
    runs = [_from_row(row, spec.base) for row in rows_of(study) if not row.retried]
    return StudyData(name=name, kind=spec.kind, metric=spec.metric, direction=spec.direction,
                     keys=[axis.key for axis in spec.all_axes()], runs=runs,
                     store=store.display_url, study=study,
                     dataset=spec.base.get("data", {}).get("dataset"), cv=spec.cv)  # fmt: skip


def collect_run(run_dir: str | Path) -> StudyData:
    """A single run folder as a study of one run (no varied keys)."""
    from trainlab.runs.record import read_history, read_run_config, read_summary

    folder = Path(run_dir)
    summary = read_summary(folder)
    if summary is None or not (folder / "config.yaml").is_file():
        raise RunError(f"{folder} is not a finished run folder (no summary.json / config.yaml)")
    config = read_run_config(folder)
    metric = summary.get("monitor") or config.monitor
    value = summary.get("best_value")
    scalars = {k: v for k, v in summary.get("test", {}).items() if isinstance(v, (int, float))}
    status = summary.get("status", "completed")
    state = "COMPLETE" if status in ("completed", "early_stopped", "budget_exhausted") else "FAIL"
    run = RunData(number=0, state=state, status=status, reason=summary.get("stop_reason"),
                  overrides={}, seed=config.seed, value=value,
                  best_epoch=summary.get("best_epoch"), epochs_run=summary.get("epochs_run"),
                  seconds=summary.get("train_seconds"), val=summary.get("val", {}), test=scalars,
                  history=read_history(folder), run_dir=folder.resolve(),
                  label_smoothing=config.label_smoothing)  # fmt: skip
    direction = "minimize" if metric.endswith("loss") else "maximize"
    return StudyData(name=folder.resolve().name, kind="run", metric=metric, direction=direction,
                     keys=[], runs=[run], store=str(folder.resolve()),
                     dataset=summary.get("dataset", {}).get("name"))  # fmt: skip
