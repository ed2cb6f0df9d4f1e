"""Figures of a report: plot data from pure functions, then a thin matplotlib layer.

The data functions (:func:`curve_bands`, :func:`learning_curves`, :func:`loss_accuracy_points`,
:func:`confusion_data`, :func:`param_effect`, :func:`optimization_history`, :func:`importances`)
return dataclasses of plain lists and floats (a dict for importances), so tests check exact
numbers. Each ``draw_*`` function only draws such data: it builds a
:class:`matplotlib.figure.Figure` on the Agg canvas (no display, no pyplot global state), writes
one PNG atomically and returns its path.

Conventions:
- A history is a list of rows (``history.csv`` or a trial's stored history), one per epoch, with
  the columns of :data:`trainlab.runs.record.HISTORY_COLUMNS`. Missing, ``None`` and non-finite
  values (a diverged run) are ignored, never averaged.
- A band over seeds is mean ± one *sample* standard deviation (``ddof=1``); with one run it
  collapses to the mean. The confidence intervals of :func:`param_effect` are 95% Student-t.
"""

from __future__ import annotations

import math
import statistics
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any, Literal

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, MaxNLocator, PercentFormatter

from trainlab._io import atomic_path
from trainlab.analysis.stats import Correlation, spearman, summarize
from trainlab.units import is_fraction

__all__ = [
    "PALETTE",
    "Band",
    "ConfusionData",
    "EffectData",
    "HistoryData",
    "LearningCurves",
    "ScatterData",
    "confusion_data",
    "curve_bands",
    "draw_confusion",
    "draw_importances",
    "draw_learning_curves",
    "draw_optimization_history",
    "draw_param_effect",
    "draw_scatter",
    "importances",
    "learning_curves",
    "learning_curves_figure",
    "loss_accuracy_points",
    "new_figure",
    "optimization_history",
    "panel_titles",
    "param_effect",
    "save_png",
    "shorten_middle",
]

History = Sequence[Mapping[str, Any]]
Direction = Literal["minimize", "maximize"]

# Okabe-Ito: distinguishable with the common colour-vision deficiencies.
PALETTE = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000"]
TRAIN_COLOR, VAL_COLOR, MARK_COLOR = PALETTE[1], PALETTE[0], "#555555"
FIGSIZE = (6.4, 4.0)  # inches, one panel
DPI = 110
LOG_SCALE_RATIO = 100  # numeric levels spanning this factor or more are shown on a log axis
TITLE_LINE = 40  # characters on one line of a panel title (a grid panel is ~3 inches wide)
TITLE_VALUE = 24  # a longer value in a panel title keeps its two ends: "resnet18-wi…-cifar"


# --------------------------------------------------------------------------- helpers (pure)


def _finite(value: Any) -> float | None:
    """``value`` as a float, or None if it is missing, not a number, NaN or infinite."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _epoch_of(row: Mapping[str, Any], position: int) -> int:
    """The row's ``epoch`` column (1-based), or its position when the column is absent."""
    epoch = _finite(row.get("epoch"))
    return int(epoch) if epoch is not None else position + 1


# --------------------------------------------------------------------------- learning curves


@dataclass(frozen=True)
class Band:
    """One column's per-epoch mean over runs, with a band of mean ± sample std.

    Only epochs with at least one finite value appear; ``n_per_epoch`` says how many runs each
    point averages (fewer at late epochs when some runs stopped early).
    """

    epochs: list[int]
    mean: list[float]
    low: list[float]  # mean - std (ddof=1); equal to the mean where n is 1
    high: list[float]  # mean + std
    n_per_epoch: list[int]


def curve_bands(histories: Sequence[History], column: str) -> Band:
    """Mean ± sample std of ``column`` over runs, per epoch, using the runs that reached it."""
    by_epoch: dict[int, list[float]] = {}
    for history in histories:
        for position, row in enumerate(history):
            value = _finite(row.get(column))
            if value is not None:
                by_epoch.setdefault(_epoch_of(row, position), []).append(value)
    epochs = sorted(by_epoch)
    means = [statistics.fmean(by_epoch[epoch]) for epoch in epochs]
    stds = [statistics.stdev(by_epoch[e]) if len(by_epoch[e]) > 1 else 0.0 for e in epochs]
    return Band(
        epochs=epochs,
        mean=means,
        low=[m - s for m, s in zip(means, stds, strict=True)],
        high=[m + s for m, s in zip(means, stds, strict=True)],
        n_per_epoch=[len(by_epoch[epoch]) for epoch in epochs],
    )


@dataclass(frozen=True)
class LearningCurves:
    """Train and validation curves of one configuration, and the epochs worth marking."""

    train_loss: Band
    val_loss: Band
    train_accuracy: Band
    val_accuracy: Band
    n_runs: int
    best_epochs: list[int]  # per run with a best epoch
    median_best_epoch: float | None  # marked as a dotted line
    early_stop_epochs: list[int]  # last epoch of each early-stopped run, marked as ticks

    def band(self, split: Literal["train", "val"], metric: Literal["loss", "accuracy"]) -> Band:
        """The band of ``split`` and ``metric``, e.g. ``band("val", "loss")``."""
        return getattr(self, f"{split}_{metric}")


def _best_epoch(history: History) -> int | None:
    """The epoch of the lowest finite validation loss (the default monitor), first on ties."""
    scored = [
        (value, _epoch_of(row, position))
        for position, row in enumerate(history)
        if (value := _finite(row.get("val_loss"))) is not None
    ]
    return min(scored)[1] if scored else None


def learning_curves(
    histories: Sequence[History],
    stop_epochs: Sequence[int | None],
    best_epochs: Sequence[int | None] | None = None,
) -> LearningCurves:
    """Bands of train/val loss and accuracy over the runs of one configuration.

    ``stop_epochs[i]`` is the last epoch of run ``i`` when early stopping ended it, else None.
    ``best_epochs`` are the runs' recorded best epochs (by their own monitor); when omitted, each
    run's best epoch is that of its lowest validation loss.
    """
    if len(stop_epochs) != len(histories):
        raise ValueError(f"{len(stop_epochs)} stop epochs for {len(histories)} histories")
    if best_epochs is None:
        best_epochs = [_best_epoch(history) for history in histories]
    elif len(best_epochs) != len(histories):
        raise ValueError(f"{len(best_epochs)} best epochs for {len(histories)} histories")
    best = [int(epoch) for epoch in best_epochs if epoch is not None]
    return LearningCurves(
        train_loss=curve_bands(histories, "train_loss"),
        val_loss=curve_bands(histories, "val_loss"),
        train_accuracy=curve_bands(histories, "train_accuracy"),
        val_accuracy=curve_bands(histories, "val_accuracy"),
        n_runs=len(histories),
        best_epochs=best,
        median_best_epoch=float(statistics.median(best)) if best else None,
        early_stop_epochs=[int(epoch) for epoch in stop_epochs if epoch is not None],
    )


# --------------------------------------------------------------------------- loss vs accuracy


@dataclass(frozen=True)
class ScatterData:
    """Validation loss against validation accuracy, one point per (run, epoch)."""

    x: list[float]  # val_loss
    y: list[float]  # val_accuracy
    run_index: list[int]  # position of the run in the histories given
    epoch: list[int]
    correlation: Correlation  # Spearman's rho of x and y (NaN with < 3 points or a constant axis)

    @property
    def n(self) -> int:
        return len(self.x)


def loss_accuracy_points(histories: Sequence[History]) -> ScatterData:
    """Every epoch of every run with both a finite val_loss and val_accuracy, and their rho."""
    x: list[float] = []
    y: list[float] = []
    runs: list[int] = []
    epochs: list[int] = []
    for run, history in enumerate(histories):
        for position, row in enumerate(history):
            loss, accuracy = _finite(row.get("val_loss")), _finite(row.get("val_accuracy"))
            if loss is not None and accuracy is not None:
                x.append(loss)
                y.append(accuracy)
                runs.append(run)
                epochs.append(_epoch_of(row, position))
    return ScatterData(x, y, runs, epochs, spearman(x, y))


# --------------------------------------------------------------------------- confusion matrix


@dataclass(frozen=True)
class ConfusionData:
    """A confusion matrix, rows = true class, columns = predicted class."""

    counts: list[list[int]]
    row_normalized: list[list[float]]  # each row divided by its total (recall on the diagonal)
    class_names: list[str]


def confusion_data(matrix: Sequence[Sequence[int]], class_names: Sequence[str]) -> ConfusionData:
    """Counts and row-normalised rates; a class with no true samples gets a row of zeros."""
    size = len(class_names)
    if len(matrix) != size or any(len(row) != size for row in matrix):
        raise ValueError(f"the confusion matrix must be {size}x{size}, one row per class name")
    counts = [[int(value) for value in row] for row in matrix]
    normalized = [[value / sum(row) if sum(row) else 0.0 for value in row] for row in counts]
    return ConfusionData(counts, normalized, [str(name) for name in class_names])


# --------------------------------------------------------------------------- parameter effects


@dataclass(frozen=True)
class EffectData:
    """A metric against one varied parameter: one point per distinct level."""

    levels: list[Any]  # sorted when numeric, else in order of first appearance
    means: list[float]
    ci_low: list[float | None]  # 95% Student-t interval of the mean; None where n < 2
    ci_high: list[float | None]
    n: list[int]
    numeric: bool
    log_scale: bool  # numeric, all positive, max/min >= 100
    runs: list[list[float]]  # the metric of each run, per level (to show the seeds too)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _level_key(value: Any) -> Any:
    """A hashable key for a parameter value: lists (e.g. hidden sizes) by their repr, and
    booleans apart from the numbers they equal (``True == 1``)."""
    if isinstance(value, bool):
        return ("bool", value)
    try:
        hash(value)
    except TypeError:
        return ("repr", repr(value))
    return value


def param_effect(
    values: Sequence[Any], metrics: Sequence[float | None], folds: int = 0
) -> EffectData:
    """Mean and 95% t-interval of ``metrics`` per distinct parameter value.

    Runs with a missing or non-finite metric are left out. Levels are numeric when every value
    is a finite int or float (booleans are categories). ``folds`` K: the runs are K-fold
    cross-validation runs, and the intervals are widened for it (``stats.summarize``).
    """
    if len(values) != len(metrics):
        raise ValueError(f"{len(values)} parameter values for {len(metrics)} metrics")
    groups: dict[Any, tuple[Any, list[float]]] = {}
    for value, metric in zip(values, metrics, strict=True):
        number = _finite(metric)
        if number is not None:
            groups.setdefault(_level_key(value), (value, []))[1].append(number)
    levels = [level for level, _ in groups.values()]
    numeric = bool(levels) and all(_is_number(level) for level in levels)
    if numeric:
        levels.sort()
    runs = [groups[_level_key(level)][1] for level in levels]
    summaries = [summarize(group, folds=folds) for group in runs]
    positive = numeric and min(levels) > 0
    return EffectData(
        levels=levels,
        means=[statistics.fmean(group) for group in runs],
        ci_low=[summary.ci_low for summary in summaries],
        ci_high=[summary.ci_high for summary in summaries],
        n=[len(group) for group in runs],
        numeric=numeric,
        log_scale=positive and max(levels) / min(levels) >= LOG_SCALE_RATIO,
        runs=runs,
    )


# --------------------------------------------------------------------------- Optuna searches


@dataclass(frozen=True)
class HistoryData:
    """An optimisation history: each trial's value and the best value so far."""

    trial_numbers: list[int]  # trials with a finite value only
    values: list[float]
    best_so_far: list[float]
    direction: Direction


def optimization_history(
    values: Sequence[float | None],
    direction: Direction,
    trial_numbers: Sequence[int] | None = None,
) -> HistoryData:
    """Values in trial order and the running best; trials without a finite value are skipped.

    ``trial_numbers`` default to the positions 0, 1, 2, ... (Optuna's numbering).
    """
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    numbers = list(range(len(values))) if trial_numbers is None else list(trial_numbers)
    if len(numbers) != len(values):
        raise ValueError(f"{len(numbers)} trial numbers for {len(values)} values")
    better = min if direction == "minimize" else max
    kept, finite, best = [], [], []
    for number, value in zip(numbers, values, strict=True):
        number_value = _finite(value)
        if number_value is None:
            continue
        kept.append(int(number))
        finite.append(number_value)
        best.append(better(best[-1], number_value) if best else number_value)
    return HistoryData(kept, finite, best, direction)


def importances(study: Any) -> dict[str, float]:
    """Parameter importances of an Optuna study (sum 1, most important first), or {}.

    Uses PED-ANOVA (:class:`optuna.importance.PedAnovaImportanceEvaluator`): Optuna's default,
    fANOVA, needs scikit-learn, which trainlab does not depend on. Needs at least two completed
    trials with at least one parameter; otherwise, or if Optuna cannot evaluate the study
    (e.g. no parameter common to the completed trials), the result is empty.
    """
    import optuna
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2 or not any(trial.params for trial in complete):
        return {}
    with warnings.catch_warnings():
        # "importances will be equal" for tiny studies: the equal values say it already.
        warnings.simplefilter("ignore")
        try:
            result = get_param_importances(study, evaluator=PedAnovaImportanceEvaluator())
        except (ValueError, RuntimeError):
            return {}
    return {str(name): float(value) for name, value in result.items()}


# --------------------------------------------------------------------------- drawing


def new_figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    """A figure on the Agg canvas: no display and no pyplot state, safe in threads and servers."""
    figure = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def save_png(figure: Figure, path: str | Path) -> Path:
    """Write ``figure`` as a PNG at ``path`` atomically and return the path."""
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
    return path


def _no_data(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#666")
    ax.set_xticks([])
    ax.set_yticks([])


def _shorten(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def shorten_middle(text: str, limit: int) -> str:
    """Both ends kept (``/data/…/imb.npz``): names differ at their start as often as their end."""
    if len(text) <= limit:
        return text
    head = (limit - 1) // 2
    return text[:head] + "…" + text[len(text) - (limit - 1 - head) :]


def _title_value(value: str, full: bool) -> str:
    """A path as its file name (``/tmp/x/imb.npz`` → ``imb.npz``); long values kept at both ends.
    ``full``: the whole value, only shortened in the middle."""
    if not full and ("/" in value or "\\" in value):
        value = PurePath(value.replace("\\", "/").rstrip("/")).name or value
    return shorten_middle(value, TITLE_LINE if full else TITLE_VALUE)


def panel_titles(configurations: Sequence[Mapping[str, str]]) -> list[str]:
    """Short, distinct titles for the panels of a grid, one per configuration (``{key: value
    as text}``): only the keys whose values differ between the configurations (all of them
    when none differs), each key by its last part where that is unambiguous (``lr`` for
    ``optim.lr``), paths as their file name and long values kept at both ends; one line while
    that fits ``TITLE_LINE`` characters, else one line per key. Where two titles would still
    read alike, the full keys and values are used, and as a last resort a ``#i`` suffix."""
    if not configurations:
        return []
    keys = list(dict.fromkeys(key for config in configurations for key in config))
    varied = [k for k in keys if len({config.get(k) for config in configurations}) > 1] or keys
    last = [key.rsplit(".", 1)[-1] for key in varied]
    short = {key: name if last.count(name) == 1 else key
             for key, name in zip(varied, last, strict=True)}  # fmt: skip

    def title(config: Mapping[str, str], full: bool) -> str:
        parts = [f"{key if full else short[key]}={_title_value(config.get(key, '–'), full)}"
                 for key in varied]  # fmt: skip
        line = ", ".join(parts) or "base"
        return line if len(line) <= TITLE_LINE else "\n".join(parts)

    titles = [title(config, full=False) for config in configurations]
    if len(set(titles)) < len(titles):
        titles = [title(config, full=True) for config in configurations]
    if len(set(titles)) < len(titles):
        titles = [f"{text} #{index + 1}" for index, text in enumerate(titles)]
    return titles


def _grid_shape(count: int) -> tuple[int, int]:
    """Rows and columns of a small-multiples grid: up to 4 columns, nearly square."""
    columns = min(count, 4 if count > 9 else 3 if count > 4 else 2 if count > 1 else 1)
    return math.ceil(count / columns), columns


def _half(mean: float, bound: float | None) -> float:
    """Length of an error bar from the mean to ``bound``; 0 for a missing bound (n < 2)."""
    return 0.0 if bound is None else abs(bound - mean)


def _draw_band(ax: Axes, band: Band, color: str, label: str, linestyle: str) -> None:
    if not band.epochs:
        return
    ax.fill_between(band.epochs, band.low, band.high, color=color, alpha=0.2, linewidth=0)
    marker = "o" if len(band.epochs) <= 2 else None  # a line of one point would not show
    ax.plot(band.epochs, band.mean, color=color, linestyle=linestyle, linewidth=1.8, label=label,
            marker=marker, markersize=5)  # fmt: skip


def _mark_epochs(ax: Axes, curves: LearningCurves) -> None:
    if curves.median_best_epoch is not None:
        ax.axvline(
            curves.median_best_epoch,
            color=MARK_COLOR,
            linestyle=":",
            linewidth=1.2,
            label="median best epoch",
        )
    for index, epoch in enumerate(sorted(set(curves.early_stop_epochs))):
        ax.plot(
            [epoch],
            [0],
            marker="v",
            color=PALETTE[3],
            markersize=7,
            linestyle="none",
            transform=ax.get_xaxis_transform(),
            clip_on=False,
            label="early stop" if index == 0 else None,
        )


def _in_percent(axis: Any, metric: str) -> None:
    """Ticks of a share (accuracy, F1) in percent, as every table prints it; losses as they are."""
    if is_fraction(metric):
        axis.set_major_formatter(PercentFormatter(xmax=1.0))


def _label_grid(axes: Sequence[Axes], count: int, columns: int, ylabel: str) -> None:
    """Hide unused panels; label the lowest panel of each column and the first of each row."""
    for ax in axes[count:]:
        ax.set_visible(False)
    for column in range(columns):  # shared x: only the lowest visible panel shows its ticks
        lowest = axes[column + columns * ((count - 1 - column) // columns)]
        lowest.xaxis.set_tick_params(labelbottom=True)
        lowest.set_xlabel("epoch")
    for ax in axes[::columns]:
        ax.set_ylabel(ylabel)


def _legend_entries(axes: Sequence[Axes]) -> tuple[list[Any], list[str]]:
    """Each label once, from every panel (an early stop may be marked in a later panel only)."""
    handles: list[Any] = []
    labels: list[str] = []
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            if label not in labels:
                handles.append(handle)
                labels.append(label)
    return handles, labels


def draw_learning_curves(
    curves_by_config: Mapping[str, LearningCurves],
    path: str | Path,
    metric: Literal["loss", "accuracy"] = "loss",
) -> Path:
    """Small multiples, one panel per configuration: train (dashed) and validation (solid)
    mean ± std over seeds, the median best epoch (dotted) and early stops (triangles).

    Panels share their axes, so configurations compare at a glance (readable up to ~12). The
    keys are the panel titles (see :func:`panel_titles`), lines of them kept at both ends.
    """
    return save_png(learning_curves_figure(curves_by_config, metric), path)


def learning_curves_figure(
    curves_by_config: Mapping[str, LearningCurves], metric: Literal["loss", "accuracy"] = "loss"
) -> Figure:
    """The figure :func:`draw_learning_curves` writes; epochs are whole numbers on the axis."""
    if metric not in ("loss", "accuracy"):
        raise ValueError(f"metric must be 'loss' or 'accuracy', got {metric!r}")
    count = max(len(curves_by_config), 1)
    rows, columns = _grid_shape(count)
    figure = new_figure((max(FIGSIZE[0], 3.2 * columns), max(FIGSIZE[1], 2.6 * rows + 0.6)))
    axes = figure.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    for ax, (name, curves) in zip(axes, curves_by_config.items(), strict=False):
        _draw_band(ax, curves.band("train", metric), TRAIN_COLOR, "train", "--")
        _draw_band(ax, curves.band("val", metric), VAL_COLOR, "validation", "-")
        _mark_epochs(ax, curves)
        lines = [shorten_middle(line, TITLE_LINE + 8) for line in name.splitlines() or [""]]
        ax.set_title("\n".join(lines) + f" (n={curves.n_runs})", fontsize=9)
        ax.grid(alpha=0.3)
    if not curves_by_config:
        _no_data(axes[0], "no runs with a history")
    else:  # shared: one locator for every panel; no epoch 2.5
        axes[0].xaxis.set_major_locator(MaxNLocator(integer=True))
        low, high = axes[0].get_xlim()
        if high - low < 2:  # one or two epochs: half an epoch either side, a tick at each
            first, last = round(low), round(high)
            axes[0].xaxis.set_major_locator(FixedLocator(range(first, last + 1)))
            axes[0].set_xlim(first - 0.5, last + 0.5)
    _label_grid(axes, count, columns, metric)
    _in_percent(axes[0].yaxis, metric)  # shared by every panel
    handles, labels = _legend_entries(axes[:count])
    if handles:
        figure.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    figure.suptitle(f"Learning curves: {metric} (mean ± std over seeds)")
    return figure


def draw_scatter(data: ScatterData, path: str | Path, title: str | None = None) -> Path:
    """Validation loss against accuracy, coloured by epoch, with Spearman's rho in the title."""
    figure = new_figure()
    ax = figure.subplots()
    if data.n:
        points = ax.scatter(data.x, data.y, c=data.epoch, cmap="viridis", s=18, alpha=0.8)
        figure.colorbar(points, ax=ax, label="epoch")
    else:
        _no_data(ax, "no epochs with both values")
    rho = "n/a" if math.isnan(data.correlation.rho) else f"{data.correlation.rho:.2f}"
    ax.set_title(title or f"Loss vs accuracy: Spearman ρ = {rho} (n = {data.n} epochs)")
    ax.set_xlabel("validation loss")
    ax.set_ylabel("validation accuracy")
    _in_percent(ax.yaxis, "accuracy")
    ax.grid(alpha=0.3)
    return save_png(figure, path)


def draw_confusion(
    data: ConfusionData, path: str | Path, title: str = "Confusion matrix (test)"
) -> Path:
    """Row-normalised heat map (rows = true class) annotated with counts for up to 20 classes."""
    size = len(data.class_names)
    side = min(max(FIGSIZE[1], 0.45 * size + 2), 14)
    figure = new_figure((side + 1.2, side))
    ax = figure.subplots()
    image = ax.imshow(data.row_normalized, cmap="Blues", vmin=0, vmax=1)
    bar = figure.colorbar(image, ax=ax, label="share of the true class")
    _in_percent(bar.ax.yaxis, "accuracy")
    ticks = list(range(size))
    labels = [_shorten(name, 16) for name in data.class_names]
    tilt = size > 5 and max(map(len, labels), default=0) > 2  # long names would overlap
    ax.set_xticks(ticks, labels, rotation=45 if tilt else 0, ha="right" if tilt else "center")
    ax.set_yticks(ticks, labels)
    if size <= 20:
        for row in range(size):
            for column in range(size):
                rate = data.row_normalized[row][column]
                ax.text(
                    column,
                    row,
                    str(data.counts[row][column]),
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if rate > 0.5 else "black",
                )
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    return save_png(figure, path)


def _jitter(position: Any, count: int, data: EffectData) -> list[float]:
    """Spread a level's seed dots sideways so they do not hide under the mean marker: a fixed
    pattern (no randomness), multiplicative on a log axis."""
    offsets = [(i - (count - 1) / 2) * 0.08 / max(count - 1, 1) for i in range(count)]
    if data.numeric and data.log_scale:
        return [float(position) * 10 ** (0.6 * o) for o in offsets]
    if data.numeric:
        levels = [float(v) for v in data.levels]
        span = (max(levels) - min(levels)) or 1.0
        return [float(position) + o * span for o in offsets]
    return [float(position) + 2 * o for o in offsets]


def draw_param_effect(
    data: EffectData, path: str | Path, parameter: str, metric: str = "metric"
) -> Path:
    """Mean and 95% CI of the metric per parameter level, each run as a faint dot."""
    figure = new_figure()
    ax = figure.subplots()
    positions: list[Any] = data.levels if data.numeric else list(range(len(data.levels)))
    for position, runs in zip(positions, data.runs, strict=True):
        ax.plot(_jitter(position, len(runs), data), runs, "o", color=PALETTE[5], alpha=0.5,
                markersize=4)  # fmt: skip
    # A level with one run has no interval: its error bar is left out (zero length).
    below = [_half(mean, low) for mean, low in zip(data.means, data.ci_low, strict=True)]
    above = [_half(mean, high) for mean, high in zip(data.means, data.ci_high, strict=True)]
    ax.errorbar(
        positions,
        data.means,
        yerr=[below, above],
        color=PALETTE[0],
        marker="o",
        capsize=4,
        linewidth=1.5,
        linestyle="-" if data.numeric else "none",  # categories have no order to connect
        label="mean, 95% CI" if any(n > 1 for n in data.n) else "one run each (no interval)",
    )
    if not data.levels:
        _no_data(ax, "no completed runs")
    elif data.numeric and data.log_scale:
        ax.set_xscale("log")
    elif not data.numeric:
        ax.set_xticks(positions, [_shorten(str(level), 20) for level in data.levels])
    ax.set_xlabel(parameter)
    ax.set_ylabel(metric)
    _in_percent(ax.yaxis, metric)
    runs = sorted(set(data.n))
    counts = f"{runs[0]}–{runs[-1]}" if len(runs) > 1 else str(runs[0]) if runs else "0"
    ax.set_title(f"{metric} by {parameter} (n = {counts} runs a level)")
    ax.grid(alpha=0.3)
    if data.levels:
        ax.legend(fontsize=8)
    return save_png(figure, path)


def draw_optimization_history(data: HistoryData, path: str | Path, metric: str = "value") -> Path:
    """Each trial's value as a dot and the best so far as a step line."""
    figure = new_figure()
    ax = figure.subplots()
    if data.values:
        ax.plot(data.trial_numbers, data.values, "o", color=PALETTE[5], markersize=4, label="trial")
        ax.step(
            data.trial_numbers,
            data.best_so_far,
            where="post",
            color=PALETTE[3],
            linewidth=1.8,
            label="best so far",
        )
        ax.legend(fontsize=8)
    else:
        _no_data(ax, "no completed trials")
    ax.set_xlabel("trial")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # no trial 0.25
    ax.set_ylabel(metric)
    _in_percent(ax.yaxis, metric)
    ax.set_title(f"Optimisation history ({data.direction} {metric})")
    ax.grid(alpha=0.3)
    return save_png(figure, path)


def draw_importances(values: Mapping[str, float], path: str | Path) -> Path:
    """Horizontal bars, the most important parameter on top."""
    ranked = sorted(values.items(), key=lambda item: item[1])
    figure = new_figure((FIGSIZE[0], max(2.5, 0.4 * len(ranked) + 1.5)))
    ax = figure.subplots()
    if ranked:
        names = [name for name, _ in ranked]
        scores = [score for _, score in ranked]
        ax.barh(range(len(ranked)), scores, color=PALETTE[0])
        ax.set_yticks(range(len(ranked)), [_shorten(str(name), 30) for name in names])
        for position, score in enumerate(scores):
            ax.text(score, position, f" {score:.2f}", va="center", fontsize=8)
        ax.set_xlim(0, max(max(scores) * 1.15, 0.01))
    else:
        _no_data(ax, "too few completed trials")
    ax.set_xlabel("importance (PED-ANOVA, sums to 1)")
    ax.set_title("Parameter importances")
    return save_png(figure, path)
