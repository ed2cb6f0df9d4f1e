"""The table people used to write by hand: one row per configuration, the varied parameters as
columns, every metric as mean ± std with n, a 95% confidence interval for the study metric, and
whether each configuration is distinguishable from the best (see ``stats.TEST_DESCRIPTION``).

And its two-way form (``build_pivot``): one varied key down, another across (optimizer ×
dataset), each cell the configuration with the best validation metric over the remaining keys
(each optimizer at its own best learning rate), marked when it is the best of its column or not
distinguishable from it.

A study that varies the data set (``data.dataset``) measures its configurations on different
validation sets, whose accuracies say nothing about each other: configurations are then ranked
and tested only against the others on the same data set, and a two-way table keeps each data
set to one column (or, with the data sets down the rows, compares along each row)."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trainlab.analysis.collect import RunData, StudyData
from trainlab.analysis.stats import (
    ALPHA,
    CV_DESCRIPTION,
    Comparison,
    Summary,
    compare_to_best,
    summarize,
)
from trainlab.errors import StudyError
from trainlab.experiments.results import DATASET_KEY, best_first, ranking_mean
from trainlab.experiments.space import format_param
from trainlab.units import decimals_and_percent, format_metric

# Test classes this much rarer than the commonest make plain accuracy flattering.
IMBALANCE_RATIO = 1.5
# DATASET_KEY (results) changes the validation set itself: configurations are compared within it.
WITHIN_DATASET = (
    f"`{DATASET_KEY}` varies, and accuracies on different validation sets are not comparable: "
    "each configuration is ranked and tested only against the best configuration on the same "
    "data set (the rows come grouped by data set, each group best first)."
)


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


def _mean_or_none(group: ConfigGroup) -> float | None:
    values = group.main_values()
    return ranking_mean(values) if values else None


def ranked(groups: list[ConfigGroup], direction: str) -> list[ConfigGroup]:
    """``groups`` best first by ``results.best_first``: the mean and tie rule (the configuration
    run first wins a tie) of every ranking, ``trainlab best`` included."""
    return [groups[i] for i in best_first([_mean_or_none(g) for g in groups], direction)]


def datasets_vary(data: StudyData) -> bool:
    """Whether the completed runs of ``data`` were trained on more than one data set."""
    found = {_identity(run.overrides.get(DATASET_KEY)) for run in data.completed}
    return DATASET_KEY in data.keys and len(found) > 1


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
    """Whether the test split of any completed run is imbalanced, from the class counts in the
    run folders on this machine (False if none is here): a study may span data sets, and one
    imbalanced test split is enough for the balanced-accuracy column to matter."""
    for run in data.completed:
        summary = run.summary()
        per_class = (summary or {}).get("test", {}).get("per_class") or {}
        supports = [c.get("support", 0) for c in per_class.values() if isinstance(c, dict)]
        if supports and max(supports) > IMBALANCE_RATIO * max(min(supports), 1):
            return True
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
    folds: int = 0  # K-fold cross-validation: the intervals and tests are corrected for it
    within: str | None = None  # DATASET_KEY when groups are ranked and tested per data set

    def headers(self) -> list[str]:
        versus = "vs. best of its data set" if self.within else "vs. best"
        return [*self.keys, "n", f"{self.metric} [95% CI]", *(c.title for c in self.columns),
                versus]  # fmt: skip

    def bests(self) -> list[ConfigGroup]:
        """The best configuration: one, or with ``within`` the best of each data set."""
        if not self.within:
            return self.groups[:1]
        seen: dict[str, ConfigGroup] = {}
        for group in self.groups:  # grouped by data set, each group best first
            seen.setdefault(_identity(group.overrides.get(self.within)), group)
        return list(seen.values())

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
            main_text = main.format(*decimals_and_percent(self.metric))
            if main.ci_low is not None and main.ci_high is not None:
                main_text += (f" [{format_metric(main.ci_low, self.metric)}, "
                              f"{format_metric(main.ci_high, self.metric)}]")  # fmt: skip
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
        varied = ", ".join(data.keys) or "none"
        raise StudyError(f"--by {', '.join(unknown)}: not varied in {data.name}; varied: {varied}")
    within = DATASET_KEY if datasets_vary(data) else None
    if within and within not in keys:  # pooling data sets would average unrelated numbers
        keys = [within, *keys]
    blocks: dict[str, list[ConfigGroup]] = {}  # per data set, in the order they were first run
    for group in group_runs(data.runs, keys):
        where = _identity(group.overrides.get(within)) if within else ""
        blocks.setdefault(where, []).append(group)
    groups: list[ConfigGroup] = []
    comparisons: list[Comparison] = []
    for block in blocks.values():
        block = ranked(block, data.direction)  # the best is chosen here, once
        names = [str(index) for index in range(len(block))]
        comparisons += compare_to_best(
            {name: g.main_values() for name, g in zip(names, block, strict=True)},
            data.direction,
            folds=data.cv,
            best=names[0],
        )
        groups += block
    show_balanced = classes_imbalanced(data) if balanced is None else balanced
    columns = [*BASE_COLUMNS, *([BALANCED_COLUMN] if show_balanced else []), *TAIL_COLUMNS]
    main = [summarize(g.main_values(), folds=data.cv) for g in groups]
    planned: dict[str, int] = {}
    for run in data.runs:
        identity = json.dumps({k: run.overrides.get(k) for k in keys}, sort_keys=True, default=str)
        planned[identity] = planned.get(identity, 0) + 1
    return ResultTable(keys, data.metric, data.direction, groups, columns, main, comparisons,
                       planned, data.cv, within)  # fmt: skip


# -- the two-way table -------------------------------------------------------------------------

PIVOT_MAX_VALUES = 12  # a report adds a pivot by itself only for grids this small on each side
BEST_MARK = "★"  # the best cell of a column, by mean validation metric
TIED_MARK = "☆"  # not distinguishable from it (Welch, Holm-corrected within the column)


def _identity(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _short_names(keys: list[str]) -> dict[str, str]:
    """``optim.lr`` → ``lr`` for the picks in a cell; the full key where two would read alike."""
    last = [key.rsplit(".", 1)[-1] for key in keys]
    return {key: short if last.count(short) == 1 else key
            for key, short in zip(keys, last, strict=True)}  # fmt: skip


@dataclass
class PivotCell:
    """The configurations of one (row, column) pair and the one shown: the best by validation."""

    configurations: int  # configurations of this cell with a completed run
    picked: ConfigGroup | None  # best mean study metric over the other keys; None: no run done
    planned: int = 0  # runs of the picked configuration (of the cell when none completed),
    # failed and unfinished ones included
    comparison: Comparison | None = None  # against the best cell of its column

    @property
    def best(self) -> bool:
        return self.comparison is not None and self.comparison.verdict.startswith("best")

    @property
    def tied(self) -> bool:
        """Tested against the best of its column and not distinguishable from it."""
        return self.comparison is not None and self.comparison.distinguishable is False

    @property
    def verdict(self) -> str:
        """For the CSV: best, not distinguishable, worse, untested, or empty (no run done)."""
        if self.picked is None or self.comparison is None:
            return ""
        if self.best:
            return "best"
        if self.comparison.distinguishable is None:
            return "untested"
        return "not distinguishable" if self.tied else "worse"


@dataclass
class PivotTable:
    """``rows`` down, ``columns`` across; ``cells[i][j]`` is row value i, column value j."""

    rows_key: str
    columns_key: str
    others: list[str]  # the other varied keys: the best value(s) are picked per cell
    metric: str  # the study metric, on the validation split: it picks and it marks
    direction: str
    value: Column  # what the cells show (test accuracy by default)
    row_values: list[Any]
    column_values: list[Any]
    cells: list[list[PivotCell]]
    folds: int = 0  # K-fold cross-validation: the tests are corrected for it
    marks: str = "column"  # where the best cell is sought: "row" when the rows are data sets

    @property
    def title(self) -> str:
        return f"{self.rows_key} × {self.columns_key}"

    def headers(self) -> list[str]:
        return [self.rows_key, *(format_param(value) for value in self.column_values)]

    def text(self, cell: PivotCell, bold: bool = False) -> str:
        """``97.12 ± 0.21% (n=3, lr=0.001) ★``; ``n=2 of 3`` when runs failed; ``–``: none."""
        if cell.picked is None:
            return "–"
        summary = cell.picked.summary(self.value)
        number = summary.format(self.value.digits, percent=self.value.percent).split(" (n=")[0]
        done = len(cell.picked.runs)
        inside = [f"n={done} of {cell.planned}" if cell.planned > done else f"n={done}"]
        short = _short_names(self.others)
        inside += [f"{short[k]}={format_param(cell.picked.overrides.get(k))}" for k in self.others]
        mark = BEST_MARK if cell.best else TIED_MARK if cell.tied else ""
        if bold and mark and number != "–":
            number = f"**{number}**"
        return f"{number} ({', '.join(inside)}){' ' + mark if mark else ''}"

    def rows(self, bold: bool = False) -> list[list[str]]:
        """The cells as text; ``bold=True`` (Markdown, HTML) also sets marked numbers in bold."""
        return [[format_param(value), *(self.text(cell, bold) for cell in cells)]
                for value, cells in zip(self.row_values, self.cells, strict=True)]  # fmt: skip

    def legend(self) -> str:
        """What a cell is and the rule behind the marks, for under the table."""
        value = f"{self.value.title} mean ± std over its runs (seeds, × folds with --cv; n: completed runs)"
        if self.others:
            keys = ", ".join(f"`{key}`" for key in self.others)
            what = (f"Each cell: {value} of the configuration with the best mean `{self.metric}` "
                    f"(validation split) among that cell's values of {keys}, which are shown; the "
                    "test split never picks.")  # fmt: skip
        else:
            what = f"Each cell: {value} of that configuration."
        rule = (f"{BEST_MARK} marks the best cell of each {self.marks} by mean `{self.metric}`, "
                f"{TIED_MARK} the cells not distinguishable from it (Welch's t-test on the "
                f"per-run `{self.metric}`, Holm–Bonferroni corrected within the {self.marks}, "
                f"alpha {ALPHA}; cells with n<2 are not tested).")  # fmt: skip
        if DATASET_KEY in (self.rows_key, self.columns_key):
            rule += (f" Each {'row' if self.rows_key == DATASET_KEY else 'column'} is one data "
                     "set: cells are compared only with cells of the same data set, never "
                     "across data sets.")  # fmt: skip
        if self.folds:
            rule += f" {CV_DESCRIPTION}"
        return f"{what} {rule} Cells with – have no completed run."

    def csv(self) -> tuple[list[str], list[list[Any]]]:
        """One line per cell, numbers unrounded; the picked values of the other keys included."""
        name = self.value.title.replace(" ", "_").replace(".", "")
        headers = [self.rows_key, self.columns_key, *self.others, "configurations", "n",
                   "runs_planned", f"{name}_mean", f"{name}_std", f"{name}_n",
                   f"{self.metric}_mean", f"{self.metric}_std", "p_vs_best", "p_vs_best_holm",
                   "vs_best"]  # fmt: skip
        lines = []
        for row_value, cells in zip(self.row_values, self.cells, strict=True):
            for column_value, cell in zip(self.column_values, cells, strict=True):
                line: list[Any] = [format_param(row_value), format_param(column_value)]
                group = cell.picked
                if group is None:  # no completed run: counts only
                    lines.append([*line, *([""] * len(self.others)), 0, 0, cell.planned,
                                  *([""] * 8)])  # fmt: skip
                    continue
                shown, chosen = group.summary(self.value), summarize(group.main_values())
                comparison = cell.comparison
                line += [format_param(group.overrides.get(key)) for key in self.others]
                line += [cell.configurations, len(group.runs), cell.planned,
                         shown.mean, shown.std, shown.n, chosen.mean, chosen.std,
                         comparison.p if comparison else None,
                         comparison.p_adjusted if comparison else None, cell.verdict]  # fmt: skip
                lines.append(["" if value is None else value for value in line])
        return headers, lines


def parse_pivot(text: str) -> tuple[str, str]:
    """``"optim.name,data.dataset"`` → the rows key and the columns key."""
    parts = [part.strip() for part in text.split(",")]
    if len(parts) != 2 or not all(parts) or parts[0] == parts[1]:
        raise StudyError(f"--pivot {text}: give two different varied keys, ROWS,COLUMNS (e.g. "
                         "--pivot optim.name,data.dataset)")  # fmt: skip
    return parts[0], parts[1]


def pivot_columns(data: StudyData) -> dict[str, Column]:
    """What a pivot's cells can show: the study metric, or a column of the results table."""
    digits, percent = decimals_and_percent(data.metric)
    chosen = Column(data.metric, lambda r: r.value, percent=percent, digits=digits)
    return {data.metric: chosen,
            **{c.title: c for c in [*BASE_COLUMNS, BALANCED_COLUMN, *TAIL_COLUMNS]}}  # fmt: skip


def _in_order(values: list[Any]) -> list[Any]:
    """Distinct values in the order they first appear (a sweep's grid order, as typed)."""
    seen: dict[str, Any] = {}
    for value in values:
        seen.setdefault(_identity(value), value)
    return list(seen.values())


def build_pivot(data: StudyData, rows: str, columns: str, *,
                value: str = "test accuracy") -> PivotTable:  # fmt: skip
    """A two-way table of ``rows`` × ``columns`` (two varied keys; values in order of first run).

    Each cell holds the configurations with that pair of values; it shows the one with the best
    mean study metric (always a validation metric) over the other varied keys, so each row is
    compared at its own best setting of them, e.g. each optimizer at its best learning rate.
    Per column, the picked configurations are compared with the best of them by
    ``stats.compare_to_best`` on their per-run study metric (Welch, Holm within the column).
    With the data sets down the rows, the comparison runs along each row instead (one data set);
    a ``data.dataset`` that varies but is neither rows nor columns is refused: a cell would pick
    the data set with the best validation accuracy, which compares different validation sets.
    """
    unknown = [key for key in (rows, columns) if key not in data.keys]
    if unknown:
        varied = ", ".join(data.keys) or "none"
        raise StudyError(f"--pivot {', '.join(unknown)}: not varied in {data.name}; "
                         f"varied: {varied}")  # fmt: skip
    if rows == columns:
        raise StudyError(f"--pivot {rows},{columns}: rows and columns must be two different keys")
    choices = pivot_columns(data)
    if value not in choices:
        raise StudyError(f"pivot value {value!r}: use one of {', '.join(choices)}")
    others = [key for key in data.keys if key not in (rows, columns)]
    if DATASET_KEY in others and datasets_vary(data):
        raise StudyError(f"--pivot {rows},{columns}: {DATASET_KEY} varies in {data.name}, so each "
                         "cell would pick the data set with the best validation accuracy; "
                         f"put it on the rows or columns (e.g. --pivot {rows},{DATASET_KEY})")  # fmt: skip
    row_values = _in_order([run.overrides.get(rows) for run in data.runs])
    column_values = _in_order([run.overrides.get(columns) for run in data.runs])
    planned: dict[str, int] = {}  # runs per configuration, whatever their state
    in_cell: dict[str, int] = {}  # runs per (row, column) pair, whatever their state
    for run in data.runs:
        for keys, counts in ((data.keys, planned), ([rows, columns], in_cell)):
            identity = _identity({key: run.overrides.get(key) for key in keys})
            counts[identity] = counts.get(identity, 0) + 1
    cells: dict[tuple[str, str], list[ConfigGroup]] = {}
    for group in group_runs(data.runs, list(data.keys)):
        where = (_identity(group.overrides[rows]), _identity(group.overrides[columns]))
        cells.setdefault(where, []).append(group)
    table = []
    for row_value in row_values:
        line = []
        for column_value in column_values:
            groups = cells.get((_identity(row_value), _identity(column_value)), [])
            if not groups:
                pair = _identity({rows: row_value, columns: column_value})
                line.append(PivotCell(0, None, in_cell.get(pair, 0)))
                continue
            best = ranked(groups, data.direction)[0]  # a tie: the configuration run first
            line.append(PivotCell(len(groups), best, planned.get(_identity(best.overrides), 0)))
        table.append(line)
    # Compared down each column; along each row when the rows are the data sets.
    marks = "row" if rows == DATASET_KEY and len(row_values) > 1 else "column"
    lines = table if marks == "row" else [list(cells) for cells in zip(*table, strict=True)]
    for line in lines:
        filled = [cell for cell in line if cell.picked is not None]
        comparisons = compare_to_best(
            {str(index): cell.picked.main_values() for index, cell in enumerate(filled)
             if cell.picked},
            data.direction,
            folds=data.cv,
        )  # fmt: skip
        for cell, comparison in zip(filled, comparisons, strict=True):
            cell.comparison = comparison
    return PivotTable(rows, columns, others, data.metric, data.direction, choices[value],
                      row_values, column_values, table, data.cv, marks)  # fmt: skip


def default_pivot(data: StudyData) -> tuple[str, str] | None:
    """The pivot a report adds unasked: for a full grid of exactly two varied keys (the first
    down, the second across; ``data.dataset`` always across, so that each column, where the
    marks are decided, is one data set), each with at most ``PIVOT_MAX_VALUES`` values. With
    three or more keys, which ones to pick the best of per cell is the reader's protocol, so it
    is never guessed; searches and random draws rarely fill a grid, so they get none either."""
    if len(data.keys) != 2:
        return None
    rows, columns = data.keys
    if rows == DATASET_KEY:
        rows, columns = columns, rows
    pairs = {(_identity(run.overrides.get(rows)), _identity(run.overrides.get(columns)))
             for run in data.runs}  # fmt: skip
    row_count = len({row for row, _ in pairs})
    column_count = len({column for _, column in pairs})
    if max(row_count, column_count) > PIVOT_MAX_VALUES or len(pairs) < row_count * column_count:
        return None
    return rows, columns
