"""The table people used to write by hand: one row per configuration, the varied parameters as
columns, every metric as mean ± std with n, a 95% confidence interval for the study metric, and
whether each configuration is distinguishable from the best (see ``stats.TEST_DESCRIPTION``)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainlab.analysis.collect import RunData, StudyData
from trainlab.analysis.stats import Comparison, Summary, compare_to_best, summarize
from trainlab.experiments.space import format_param

# Test classes this much rarer than the commonest make plain accuracy flattering.
IMBALANCE_RATIO = 1.5


@dataclass(frozen=True)
class Column:
    title: str
    value: Callable[[RunData], float | None]
    percent: bool = False
    digits: int = 4


BASE_COLUMNS = [
    Column("train loss", lambda r: r.best_row().get("train_loss")),
    Column("val loss", lambda r: r.val.get("loss")),
    Column("test accuracy", lambda r: r.test.get("accuracy"), percent=True, digits=2),
    Column("test macro F1", lambda r: r.test.get("macro_f1"), percent=True, digits=2),
]
BALANCED_COLUMN = Column(
    "test balanced accuracy", lambda r: r.test.get("balanced_accuracy"), percent=True, digits=2
)
TAIL_COLUMNS = [
    Column("best epoch", lambda r: r.best_epoch, digits=1),
    Column("seconds", lambda r: r.seconds, digits=1),
]


@dataclass
class ConfigGroup:
    overrides: dict[str, Any]
    runs: list[RunData] = field(default_factory=list)

    def summary(self, column: Column) -> Summary:
        return summarize([_finite(column.value(run)) for run in self.runs])

    def main_values(self) -> list[float]:
        return [run.value for run in self.runs if run.value is not None]

    def label(self) -> str:
        return " ".join(f"{k}={format_param(v)}" for k, v in self.overrides.items()) or "base"


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def group_runs(runs: list[RunData], keys: list[str]) -> list[ConfigGroup]:
    """Completed runs grouped by their values of ``keys`` (other varied keys are pooled)."""
    groups: dict[str, ConfigGroup] = {}
    for run in runs:
        if not run.completed:
            continue
        overrides = {key: run.overrides.get(key) for key in keys}
        identity = json.dumps(overrides, sort_keys=True, default=str)
        groups.setdefault(identity, ConfigGroup(overrides)).runs.append(run)
    return list(groups.values())


def classes_imbalanced(data: StudyData) -> bool:
    """From the test split's class counts of a run folder on this machine (False if none)."""
    for run in data.completed:
        summary = run.summary()
        per_class = (summary or {}).get("test", {}).get("per_class") or {}
        supports = [c.get("support", 0) for c in per_class.values() if isinstance(c, dict)]
        if supports:
            return max(supports) > IMBALANCE_RATIO * max(min(supports), 1)
    return False


@dataclass
class ResultTable:
    keys: list[str]
    metric: str
    direction: str
    groups: list[ConfigGroup]  # best first
    columns: list[Column]
    main: list[Summary]
    comparisons: list[Comparison]
    planned: dict[str, int] = field(default_factory=dict)  # every run per configuration

    def headers(self) -> list[str]:
        return [*self.keys, "n", f"{self.metric} [95% CI]", *(c.title for c in self.columns),
                "vs. best"]  # fmt: skip

    def count(self, group: ConfigGroup) -> str:
        """``3``, or ``2 of 3`` when runs of this configuration failed or are unfinished."""
        planned = self.planned.get(json.dumps(group.overrides, sort_keys=True, default=str), 0)
        done = len(group.runs)
        return f"{done} of {planned}" if planned > done else str(done)

    def numeric(self) -> list[bool]:
        return [False] * len(self.keys) + [True] * (2 + len(self.columns)) + [False]

    def rows(self) -> list[list[str]]:
        rows = []
        for group, main, comparison in zip(self.groups, self.main, self.comparisons, strict=True):
            main_text = main.format(4)
            if main.ci_low is not None:
                main_text += f" [{main.ci_low:.4f}, {main.ci_high:.4f}]"
            cells = [group.summary(c).format(c.digits, percent=c.percent) for c in self.columns]
            rows.append([*(format_param(group.overrides.get(k)) for k in self.keys),
                         self.count(group), main_text, *cells, comparison.verdict])  # fmt: skip
        return rows

    def csv(self) -> tuple[list[str], list[list[Any]]]:
        """Numbers unformatted: mean, std and n of every column, CI and test results."""
        headers = [*self.keys, "n", f"{self.metric}_mean", f"{self.metric}_std",
                   f"{self.metric}_ci95_low", f"{self.metric}_ci95_high"]  # fmt: skip
        for column in self.columns:
            name = column.title.replace(" ", "_").replace(".", "")
            headers += [f"{name}_mean", f"{name}_std", f"{name}_n"]
        headers += ["p_vs_best", "p_vs_best_holm", "distinguishable_from_best"]
        rows = []
        for group, main, comparison in zip(self.groups, self.main, self.comparisons, strict=True):
            row: list[Any] = [format_param(group.overrides.get(k)) for k in self.keys]
            row += [len(group.runs), main.mean, main.std, main.ci_low, main.ci_high]
            for column in self.columns:
                summary = group.summary(column)
                row += [summary.mean, summary.std, summary.n]
            row += [comparison.p, comparison.p_adjusted, comparison.distinguishable]
            rows.append(["" if value is None else value for value in row])
        return headers, rows


def build_table(data: StudyData, by: list[str] | None = None,
                balanced: bool | None = None) -> ResultTable:  # fmt: skip
    """Rank configurations by the mean of the study metric over their seeds (best first)."""
    keys = list(by) if by else list(data.keys)
    unknown = [key for key in keys if key not in data.keys]
    if unknown:
        from trainlab.errors import StudyError

        varied = ", ".join(data.keys) or "none"
        raise StudyError(f"--by {', '.join(unknown)}: not varied in {data.name}; varied: {varied}")
    groups = group_runs(data.runs, keys)
    reverse = data.direction == "maximize"
    groups.sort(key=lambda g: summarize(g.main_values()).mean or 0.0, reverse=reverse)
    show_balanced = classes_imbalanced(data) if balanced is None else balanced
    columns = [*BASE_COLUMNS, *([BALANCED_COLUMN] if show_balanced else []), *TAIL_COLUMNS]
    names = [str(index) for index in range(len(groups))]
    comparisons = compare_to_best(
        {name: g.main_values() for name, g in zip(names, groups, strict=True)}, data.direction
    )
    main = [summarize(g.main_values()) for g in groups]
    planned: dict[str, int] = {}
    for run in data.runs:
        identity = json.dumps({k: run.overrides.get(k) for k in keys}, sort_keys=True, default=str)
        planned[identity] = planned.get(identity, 0) + 1
    return ResultTable(keys, data.metric, data.direction, groups, columns, main, comparisons,
                       planned)  # fmt: skip
