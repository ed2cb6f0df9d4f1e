"""Reading studies back: one row per run, counts per study, configurations ranked by the mean
validation metric over their repeats (mean ± standard deviation, with n always shown)."""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from trainlab.errors import StudyError
from trainlab.experiments import study as s
from trainlab.experiments.store import Store

T = TypeVar("T")

# Means that agree to this many significant digits are tied: float noise never picks the best.
RANK_DIGITS = 12


def ranking_mean(values: Sequence[float]) -> float:
    """The one mean every ranking of configurations uses (the report's results table and best
    configuration, ``trainlab compare``, ``trainlab best``, the end of a sweep): exact and
    correctly rounded (``statistics.mean``), so it does not depend on the order of the runs."""
    return statistics.mean(values)


def best_first(means: Sequence[float | None], direction: str) -> list[int]:
    """Positions of ``means`` best first: the highest (``maximize``) or lowest (``minimize``)
    mean, compared at ``RANK_DIGITS`` significant digits. Tied means keep their order, so the
    configuration that ran first wins a tie; missing (None) or non-finite means come last."""
    sign = -1.0 if direction == "maximize" else 1.0

    def key(index: int) -> tuple[int, float]:
        mean = means[index]
        if mean is None or not math.isfinite(mean):
            return (1, 0.0)
        return (0, sign * float(f"{mean:.{RANK_DIGITS}g}"))

    return sorted(range(len(means)), key=key)


@dataclass
class RunRow:
    """One trial as ``trainlab runs`` shows it."""

    number: int
    state: str  # Optuna state: WAITING, RUNNING, COMPLETE, PRUNED, FAIL
    status: str  # trainlab status: completed, early_stopped, pruned, diverged, error, lost, ...
    reason: str | None
    overrides: dict[str, Any]
    seed: int | None
    repeat: int | None
    fold: int | None  # k-fold cross-validation: the validation fold
    value: float | None  # the study metric at the best validation epoch
    best_epoch: int | None
    epochs_run: int | None
    seconds: float | None
    val: dict[str, float]
    test: dict[str, float]
    run_dir: str | None
    host: str | None
    retry_of: int | None
    retried: bool  # a lost attempt whose retry continues it
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)


def _row(trial: Any, continued: set[int]) -> RunRow:
    attrs = trial.user_attrs
    state = trial.state.name
    default_status = {"COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "error"}.get(
        state, state.lower()
    )
    return RunRow(
        number=trial.number,
        state=state,
        status=attrs.get(s.STATUS, default_status) if state != "RUNNING" else "running",
        reason=attrs.get(s.REASON),
        overrides=attrs.get(s.OVERRIDES, {}),
        seed=attrs.get(s.SEED),
        repeat=attrs.get(s.REPEAT),
        fold=attrs.get(s.FOLD),
        value=trial.value if state == "COMPLETE" else None,
        best_epoch=attrs.get(s.BEST_EPOCH),
        epochs_run=attrs.get(s.EPOCHS_RUN),
        seconds=attrs.get(s.SECONDS),
        val={k[4:]: v for k, v in attrs.items() if k.startswith("val.")},
        test={k[5:]: v for k, v in attrs.items() if k.startswith("test.")},
        run_dir=attrs.get(s.RUN_DIR),
        host=attrs.get(s.HOST),
        retry_of=attrs.get(s.RETRY_OF),
        retried=trial.number in continued,
        history=attrs.get(s.HISTORY, []),
    )


def rows_of(study: Any) -> list[RunRow]:
    """Every run of an opened study in trial order, lost attempts that were retried included."""
    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs[s.RETRY_OF] for t in trials if s.RETRY_OF in t.user_attrs}
    return [_row(trial, continued) for trial in trials]


def study_runs(store: Store, name: str, *, include_retried: bool = False) -> list[RunRow]:
    """Every run of a study in trial order; lost attempts that were retried only on request."""
    study, _ = s.open_study(store, name)
    return [row for row in rows_of(study) if include_retried or not row.retried]


@dataclass
class StudyInfo:
    name: str
    kind: str
    metric: str
    direction: str
    counts: dict[str, int]  # completed, pruned, running, waiting, interrupted, failed, retried
    best_value: float | None
    planned: int | None  # sweeps: planned runs; searches: the trial budget


def count_states(rows: list[RunRow]) -> dict[str, int]:
    states = ("completed", "pruned", "running", "waiting", "interrupted", "failed", "retried")
    counts = dict.fromkeys(states, 0)
    for row in rows:
        if row.retried:
            counts["retried"] += 1
        elif row.state == "COMPLETE":
            counts["completed"] += 1
        elif s.is_resumable(row.state, row.status):  # the same command resumes it
            counts["interrupted"] += 1
        elif row.state == "FAIL":
            counts["failed"] += 1
        else:
            counts[row.state.lower()] = counts.get(row.state.lower(), 0) + 1
    return counts


def study_info(name: str, spec: s.StudySpec, rows: list[RunRow]) -> StudyInfo:
    """Counts and the best single run of one study, from its rows (retried ones included)."""
    values = [r.value for r in rows if r.value is not None and math.isfinite(r.value)]
    best = None
    if values:
        best = min(values) if spec.direction == "minimize" else max(values)
    planned = len(s.sweep_plan(spec)) if spec.kind == "sweep" else spec.trials
    return StudyInfo(name, spec.kind, spec.metric, spec.direction, count_states(rows), best,
                     planned)  # fmt: skip


def list_studies(store: Store) -> list[StudyInfo]:
    import optuna

    infos = []
    for name in sorted(optuna.get_all_study_names(storage=store.storage)):
        try:
            study, spec = s.open_study(store, name)
        except StudyError:  # not made by trainlab (or its definition is missing): say so
            infos.append(StudyInfo(name, "?", "?", "?", {}, None, None))
            continue
        infos.append(study_info(name, spec, rows_of(study)))
    return infos


@dataclass
class ConfigResult:
    """One configuration of a study over its repeats (seeds)."""

    overrides: dict[str, Any]
    values: list[float]  # the study metric of each completed repeat
    test: dict[str, list[float]]  # test metrics of the same runs (reported, never selected on)
    numbers: list[int]
    run_dirs: list[str]
    planned: int = 0  # its runs in the study, whatever their state (n of them completed)

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return ranking_mean(self.values)

    @property
    def std(self) -> float | None:
        """Sample standard deviation; None for a single run, which has no spread to show."""
        return statistics.stdev(self.values) if self.n > 1 else None

    def test_mean(self, metric: str) -> float | None:
        values = self.test.get(metric) or []
        return ranking_mean(values) if values else None

    def test_std(self, metric: str) -> float | None:
        values = self.test.get(metric) or []
        return statistics.stdev(values) if len(values) > 1 else None


def rank_configurations(store: Store, name: str) -> tuple[s.StudySpec, list[ConfigResult]]:
    """Completed runs grouped by configuration, best mean validation metric first."""
    study, spec = s.open_study(store, name)
    return spec, rank_rows(spec, rows_of(study))


def rank_rows(spec: s.StudySpec, rows: list[RunRow]) -> list[ConfigResult]:
    groups: dict[str, ConfigResult] = {}
    planned: dict[str, int] = {}
    for row in rows:
        key = json.dumps(row.overrides, sort_keys=True)
        if not row.retried:
            planned[key] = planned.get(key, 0) + 1
        if (
            row.retried
            or row.state != "COMPLETE"
            or row.value is None
            or not math.isfinite(row.value)
        ):
            continue
        group = groups.setdefault(key, ConfigResult(row.overrides, [], {}, [], []))
        group.values.append(row.value)
        group.numbers.append(row.number)
        if row.run_dir:
            group.run_dirs.append(row.run_dir)
        for metric, value in row.test.items():
            if isinstance(value, (int, float)):
                group.test.setdefault(metric, []).append(float(value))
    for key, group in groups.items():
        group.planned = planned[key]
    found = list(groups.values())  # in trial order of their first completed run
    return [found[i] for i in best_first([g.mean for g in found], spec.direction)]


DATASET_KEY = "data.dataset"  # the key that changes the validation set itself


def by_dataset(
    items: Sequence[T], overrides: Callable[[T], Mapping[str, Any]]
) -> dict[str, list[T]]:
    """``items`` (configurations, runs) grouped by the data set their ``overrides`` name, in the
    order the data sets first appear; one group (key ``"None"``) when none is named."""
    groups: dict[str, list[T]] = {}
    for item in items:
        groups.setdefault(str(overrides(item).get(DATASET_KEY)), []).append(item)
    return groups


def best_per_dataset(ranked: list[ConfigResult]) -> dict[str, ConfigResult]:
    """The best configuration of each data set when a study varies ``data.dataset`` (empty when
    it does not): accuracies on different validation sets are not comparable, so a study over
    several data sets has a best per data set, not one."""
    groups = by_dataset(ranked, lambda group: group.overrides)
    # Best first: the first of each data set is its best.
    return {dataset: found[0] for dataset, found in groups.items()} if len(groups) > 1 else {}


def best_run(store: Store, name: str, dataset: str | None = None) -> RunRow:
    """The run to serve from a study: of the best configuration (by mean validation metric over
    its repeats), the repeat with the best validation metric. Test metrics play no part. A study
    over several data sets needs ``dataset``: which one's best."""
    study, spec = s.open_study(store, name)
    rows = rows_of(study)
    ranked = rank_rows(spec, rows)
    if not ranked:
        raise StudyError(f"study {name!r} has no completed run yet; see `trainlab runs {name}`")
    per_dataset = best_per_dataset(ranked)
    if per_dataset and dataset is None:
        raise StudyError(f"study {name!r} compares data sets ({', '.join(per_dataset)}), each "
                         "with its own best: pick one with --dataset NAME")  # fmt: skip
    if dataset is not None:
        if dataset not in per_dataset:
            varied = (
                f"its data sets are {', '.join(per_dataset)}"
                if per_dataset
                else ("it does not vary data.dataset: leave --dataset out")
            )
            raise StudyError(f"--dataset {dataset}: {varied}")
        ranked = [per_dataset[dataset]]
    numbers = set(ranked[0].numbers)
    candidates = [row for row in rows if row.number in numbers and row.run_dir]
    if not candidates:
        raise StudyError(f"the best runs of study {name!r} have no run folder recorded")
    pick = max if spec.direction == "maximize" else min
    return pick(candidates, key=lambda row: row.value)  # type: ignore[arg-type, return-value]
