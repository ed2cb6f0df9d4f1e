"""``trainlab report``: a study (or one run) as Markdown + PNG figures + CSV, or one HTML page.

Sections, in order: what was run (and what failed or is still running), the results table,
the two-way table of two varied keys (``--pivot``, or by itself for a full grid of two), learning
curves, overfitting diagnostics, loss versus accuracy, the best configuration (confusion
matrix, per-class metrics, most confident mistakes), parameter effects, the environment, and the
rules behind the diagnostics.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainlab._io import check_writable, write_text_atomic
from trainlab.analysis import diagnostics, plots, stats
from trainlab.analysis.collect import RunData, StudyData
from trainlab.analysis.document import (
    Bullets,
    Document,
    Figure,
    Heading,
    Markdown,
    Note,
    Paragraph,
    Table,
    render_html,
    render_markdown,
    table_csv,
)
from trainlab.analysis.tables import (
    WITHIN_DATASET,
    ConfigGroup,
    PivotTable,
    ResultTable,
    build_pivot,
    build_table,
    datasets_vary,
    default_pivot,
    format_param,
)
from trainlab.experiments.results import DATASET_KEY, by_dataset
from trainlab.units import format_metric, is_fraction

MAX_CURVES = 12  # configurations drawn in the learning-curve grids (the best ones)
GALLERY_SIZE = 24
RESULTS_CSV = "results.csv"  # the results table's unrounded numbers
PIVOT_CSV = "pivot.csv"  # the two-way table's unrounded numbers, beside results.csv


@dataclass
class ReportFiles:
    folder: Path
    main: Path  # report.md or report.html
    figures: list[Path]
    csv: Path | None
    pivot_csv: Path | None = None  # when the report has a two-way table


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.2f}%"


def _describe_counts(data: StudyData) -> tuple[Paragraph, list[Note]]:
    states: dict[str, int] = {}
    for run in data.runs:
        states[run.state] = states.get(run.state, 0) + 1
    parts = [f"{count} {state.lower()}" for state, count in sorted(states.items())]
    if data.kind == "run":
        run = data.runs[0]
        text = (f"One run, status **{run.status}**, {run.epochs_run} epoch(s); the kept epoch is "
                f"the best by `{data.metric}` on the validation split (epoch {run.best_epoch}); "
                f"the test split is evaluated once on it. Folder: `{data.store}`.")  # fmt: skip
        return Paragraph(text), []
    what = {"sweep": "grid/random sweep", "tune": "Optuna search"}[data.kind]
    keys = ", ".join(f"`{k}`" for k in data.keys) or "nothing (one configuration)"
    article = "An" if what[0] in "aeiouAEIOU" else "A"
    text = (f"{article} {what} of **{len(data.runs)}** run(s) ({', '.join(parts) or 'none'}), varying "
            f"{keys}; selection metric `{data.metric}` ({data.direction}d, on the validation "
            f"split; the test split is reported, never used to choose). Source: `{data.store}`.")  # fmt: skip
    notes = []
    failed = [r for r in data.runs if r.failed]
    unfinished = [r for r in data.runs if r.unfinished]
    if failed:
        notes.append(Note(f"{len(failed)} run(s) failed; they are listed below and left out of "
                          "the statistics."))  # fmt: skip
    if unfinished:
        notes.append(Note(f"{len(unfinished)} run(s) are still running, waiting or interrupted: "
                          "this report is a snapshot of an unfinished study (the same command "
                          "continues it)."))  # fmt: skip
    return Paragraph(text), notes


def _unfinished_table(data: StudyData) -> Table | None:
    rows = [
        [f"#{run.number}", run.status, " ".join(f"{k}={format_param(v)}" for k, v in
                                                  run.overrides.items()) or "–",
         str(run.seed if run.seed is not None else "–"), run.reason or "–",
         str(run.run_dir or run.host or "–")]
        for run in data.runs if run.state in ("FAIL", "RUNNING", "WAITING", "PRUNED")
    ]  # fmt: skip
    if not rows:
        return None
    return Table(["run", "status", "configuration", "seed", "reason", "where"], rows)


# -- sections --------------------------------------------------------------------------------


# Below this many runs per configuration, the vs. best test can hardly separate anything.
LOW_POWER_N = 3
# How to get them: a search has no repeats of its own (its trials are the sampler's points).
MORE_RUNS = {
    "sweep": "Run more seeds (--repeats 5) or folds (--cv 5) before ranking.",
    "tune": "Before trusting the ranking, sweep the leading configurations with seeds: "
    "`trainlab sweep --grid ... --repeats 5` (or --cv 5) with their values.",
}


def _beyond_the_scale(table: ResultTable) -> str:
    """Why an accuracy's interval may run past 0–100%, said where one does."""
    if not is_fraction(table.metric):
        return ""
    bounds = [b for m in table.main for b in (m.ci_low, m.ci_high) if b is not None]
    if all(0.0 <= bound <= 1.0 for bound in bounds):
        return ""
    return (
        " (with few runs it can reach past 0–100%: it bounds where the mean may lie, "
        "computed as for any number, not where an accuracy can be)"
    )


def _write_results_csv(table: ResultTable, folder: Path) -> Path:
    """The results table's unrounded numbers, beside the report."""
    headers, rows = table.csv()
    csv_path = folder / RESULTS_CSV
    write_text_atomic(csv_path, table_csv(headers, rows))
    return csv_path


def run_results_section(doc: Document, table: ResultTable, folder: Path) -> Path:
    """A single run's values: one per line (no means, intervals or tests of one value)."""
    csv_path = _write_results_csv(table, folder)
    (group,) = table.groups[:1]
    metric_value = table.main[0].mean
    lines = []
    if table.metric != "val.loss":  # the val loss line says that one already
        shown = "–" if metric_value is None else format_metric(metric_value, table.metric)
        lines.append([table.metric, shown])
    for column in table.columns:
        value = group.summary(column).mean
        if value is None:
            shown = "–"
        elif column.percent:
            shown = f"{100 * value:.2f}%"
        else:  # an epoch is a whole number; seconds and losses keep their digits
            shown = str(int(value)) if float(value).is_integer() else f"{value:.{column.digits}f}"
        lines.append([column.title, shown])
    doc.add(Heading("Results"), Table(["", "value"], lines, [False, True]),
            Paragraph(f"The run's values at its kept epoch (the best by `{table.metric}`); "
                      f"unrounded in `{csv_path.name}`."))  # fmt: skip
    return csv_path


def results_section(
    doc: Document, table: ResultTable, folder: Path, cv: int = 0, kind: str = "sweep"
) -> Path:
    doc.add(Heading("Results"), Table(table.headers(), table.rows(), table.numeric()))
    csv_path = _write_results_csv(table, folder)
    over = "seeds"
    if cv:
        over = (f"seeds × {cv} folds ({cv}-fold cross-validation: each run validates on another "
                "fold of the training data and trains on the rest; the test split is the same)")  # fmt: skip
    doc.add(Paragraph(
        f"Each cell is mean ± sample standard deviation over {over}, with n the number of "
        f"completed runs; the metrics are those of each run's best validation epoch by "
        f"`{table.metric}`. The interval is the 95% t-interval of the mean of `{table.metric}`"
        f"{_beyond_the_scale(table)}. **vs. best**: {stats.comparison_description(cv)} The same "
        f"numbers, unrounded: `{csv_path.name}`."
    ))  # fmt: skip
    if table.within:
        doc.add(Note(WITHIN_DATASET, "info"))
    smallest = min((len(group.main_values()) for group in table.groups), default=0)
    more = MORE_RUNS.get(kind, MORE_RUNS["sweep"])
    if len(table.groups) > 1 and smallest < 2:
        doc.add(Note(
            "Some configurations have a single completed run: no test can compare them (their "
            f"rows say \"untested\"), and one run's value says little about its seed's luck. {more}",
            "info"))  # fmt: skip
    elif len(table.groups) > 1 and smallest < LOW_POWER_N:
        doc.add(Note(
            f"Some configurations have only {smallest} completed runs: a t-test on {smallest} "
            f"values has {smallest - 1} degree(s) of freedom, so only very large "
            "differences can show as distinguishable, and \"not distinguishable\" here means "
            f"\"not enough runs to tell\". {more}",
            "info"))  # fmt: skip
    return csv_path


def pivot_section(doc: Document, pivot: PivotTable, folder: Path) -> Path:
    """The two-way table, e.g. optimizer × dataset, and its CSV."""
    doc.add(Heading(pivot.title), Table(pivot.headers(), pivot.rows(bold=True)))
    headers, rows = pivot.csv()
    csv_path = folder / PIVOT_CSV
    write_text_atomic(csv_path, table_csv(headers, rows))
    doc.add(
        Paragraph(
            f"Rows: `{pivot.rows_key}`; columns: `{pivot.columns_key}`. "
            f"{pivot.legend()} The same numbers, unrounded: `{csv_path.name}`."
        )
    )
    return csv_path


def _histories(group: ConfigGroup) -> list[list[dict[str, float]]]:
    return [run.history for run in group.runs if run.history]


def _curves(group: ConfigGroup) -> plots.LearningCurves:
    runs = [run for run in group.runs if run.history]
    stops = [run.epochs_run if run.status == "early_stopped" else None for run in runs]
    return plots.learning_curves([run.history for run in runs], stops,
                                 best_epochs=[run.best_epoch for run in runs])  # fmt: skip


def curves_section(
    doc: Document, table: ResultTable, figures: Path, single: bool = False
) -> list[Path]:
    """Every configuration, best first, in grids of ``MAX_CURVES`` panels per figure."""
    groups = [g for g in table.groups if _histories(g)]
    if not groups:
        return []
    what = ("The run's train (dashed) and validation (solid) curves; the dotted line marks the "
            "kept epoch, a triangle an early stop." if single else
            "Train and validation curves per configuration, best first: the line is the mean "
            "over seeds, the band ± one standard deviation (train dashed, validation solid); the "
            "dotted line marks the median best (kept) epoch, triangles early stops.")  # fmt: skip
    doc.add(Heading("Learning curves"), Paragraph(what))
    paths = []
    # Only the keys that differ, paths as file names: titles stay short and tell panels apart.
    titles = plots.panel_titles([{key: format_param(value) for key, value in g.overrides.items()}
                                 for g in groups])  # fmt: skip
    for start in range(0, len(groups), MAX_CURVES):
        chunk = groups[start : start + MAX_CURVES]
        curves = {titles[start + i]: _curves(g) for i, g in enumerate(chunk)}
        part = "" if len(groups) <= MAX_CURVES else f"-{start // MAX_CURVES + 1}"
        which = "" if not part else f" (configurations {start + 1}–{start + len(chunk)})"
        for metric in ("loss", "accuracy"):
            path = plots.draw_learning_curves(curves, figures / f"curves-{metric}{part}.png",
                                              metric=metric)  # fmt: skip
            paths.append(path)
            doc.add(Figure(path, f"{metric.capitalize()} per epoch: train vs validation{which}"))
    return paths


SMOOTHED_MARK = "†"  # a loss gap whose train loss was taken against label-smoothed targets


def _smoothing(group: ConfigGroup) -> float | None:
    """The largest label smoothing of the group's runs (None when none is known)."""
    known = [run.label_smoothing for run in group.runs if run.label_smoothing is not None]
    return max(known) if known else None


def diagnostics_section(doc: Document, table: ResultTable, single: bool = False) -> None:
    rows = []
    smoothed: set[float] = set()
    for group in table.groups:
        histories = _histories(group)
        if not histories:
            continue
        early = any(run.status == "early_stopped" for run in group.runs)
        found = diagnostics.diagnose_mean(histories, early_stopped=early)
        gap = "–" if found.gap_loss is None else f"{found.gap_loss:+.4f}"
        if found.gap_loss is not None and (smoothing := _smoothing(group) or 0.0) > 0:
            gap += f" {SMOOTHED_MARK}"
            smoothed.add(smoothing)
        rows.append([group.label(), found.verdict, str(found.overfit_onset or "–"), gap,
                     "–" if found.gap_accuracy is None else f"{100 * found.gap_accuracy:+.2f} pts",
                     "yes" if found.early_stopped else "no", found.finding])  # fmt: skip
    if not rows:
        return
    doc.add(Heading("Overfitting diagnostics"),
            Paragraph(("On the run's curves" if single else "On the mean curves over seeds")
                      + "; the rules are at the end of the report. Gaps are at the last epoch: "
                      "val − train loss, train − val accuracy."),
            Table(["configuration", "verdict", "overfitting from epoch", "loss gap",
                   "accuracy gap", "early stopped", "finding"], rows))  # fmt: skip
    if smoothed:
        values = ", ".join(f"{value:g}" for value in sorted(smoothed))
        doc.add(Note(
            f"{SMOOTHED_MARK} These runs trained with label smoothing ({values}): their train "
            "loss is taken against smoothed targets and cannot fall below a floor (about 0.5 for "
            "0.1 over 10 classes), while val loss is plain cross-entropy, so the loss gap is "
            "biased low, negative by design. It is no sign of underfitting or of a good fit; "
            "no verdict here uses it. Read the accuracy gap instead, and compare loss gaps only "
            "between runs with the same smoothing.", "info"))  # fmt: skip


def scatter_section(doc: Document, data: StudyData, figures: Path) -> Path | None:
    histories = [run.history for run in data.completed if run.history]
    if not histories:
        return None
    points = plots.loss_accuracy_points(histories)
    path = plots.draw_scatter(points, figures / "loss-vs-accuracy.png")
    corr = points.correlation
    rho = "undefined" if corr.rho is None or math.isnan(corr.rho) else f"{corr.rho:.3f}"
    p = ""  # no p-value: the epochs of one run are not independent observations
    doc.add(Heading("Validation loss versus accuracy"),
            Paragraph(f"Across all epochs of all completed runs (n = {corr.n} epochs), Spearman's "
                      f"rank correlation between validation loss and validation accuracy is "
                      f"**ρ = {rho}**{p}. Strongly negative means the loss ranks epochs as the "
                      "accuracy does; near zero means a lower loss did not buy accuracy "
                      "(e.g. over-confident predictions)."),
            Figure(path, "Validation loss vs validation accuracy, one point per epoch"))  # fmt: skip
    return path


def best_section(doc: Document, data: StudyData, table: ResultTable, figures: Path,
                 root: str | None) -> list[Path]:  # fmt: skip
    """The best configuration (the first row of the table), or with several data sets the best
    configuration of each (the figures then numbered: confusion-1.png, mistakes-1.png, ...)."""
    bests = table.bests()
    paths: list[Path] = []
    for index, group in enumerate(bests, start=1):
        suffix = f"-{index}" if len(bests) > 1 else ""
        where = ""
        if len(bests) > 1 and table.within:
            where = f" on `{format_param(group.overrides.get(table.within))}`"
        paths += _best_of(doc, data, group, figures, root, suffix, where)
    return paths


def _best_of(doc: Document, data: StudyData, group: ConfigGroup, figures: Path,
             root: str | None, suffix: str, where: str) -> list[Path]:  # fmt: skip
    reverse = data.direction == "maximize"
    ranked = sorted(group.runs, key=lambda r: r.value or 0.0, reverse=reverse)
    run = ranked[0]
    title = "The run" if data.kind == "run" else f"The best configuration{where}"
    lead = (
        "" if data.kind == "run" else f"**{group.label()}** — its best seed is run #{run.number} "
    )
    doc.add(Heading(title),
            Paragraph(f"{lead}(`{data.metric}` = {format_metric(run.value, data.metric)}, test accuracy "
                      f"{_pct(run.test.get('accuracy'))})."))  # fmt: skip
    local = next((r for r in ranked if r.summary() is not None), None)
    if local is None:
        doc.add(Note("No run folder of this configuration was found here (moved, or trained on "
                     "another machine): no confusion matrix or gallery.", "info"))  # fmt: skip
        return []
    if local is not run:
        doc.add(Note(f"Run #{run.number}'s folder was not found here; the figures below are of "
                     f"run #{local.number}, the best seed of this configuration that is.", "info"))  # fmt: skip
        run = local
    summary = run.summary()
    assert summary is not None
    test = summary.get("test", {})
    classes = summary.get("dataset", {}).get("classes") or []
    paths = []
    if test.get("confusion_matrix"):
        confusion = plots.confusion_data(test["confusion_matrix"], classes)
        paths.append(plots.draw_confusion(confusion, figures / f"confusion{suffix}.png"))
        doc.add(Figure(paths[-1], f"Confusion matrix of run #{run.number} on the test split "
                                  "(rows: true class; colour: share of the row)"))  # fmt: skip
    per_class = test.get("per_class") or {}
    if per_class:
        rows = [[name, _pct(m.get("precision")), _pct(m.get("recall")), _pct(m.get("f1")),
                 str(m.get("support", "–"))] for name, m in per_class.items()]  # fmt: skip
        doc.add(Table(["class", "precision", "recall", "F1", "support"], rows,
                      [False, True, True, True, True]))  # fmt: skip
    gallery, why_not = _gallery(run, summary, figures / f"mistakes{suffix}.png", root)
    if gallery is None:
        doc.add(Note(f"No gallery of mistakes: {why_not}.", "info"))
    else:
        paths.append(gallery)
        doc.add(Figure(gallery, f"The {GALLERY_SIZE} most confidently misclassified test images "
                                "(true → predicted, confidence)"))  # fmt: skip
    return paths


def _gallery(run: RunData, summary: dict[str, Any], path: Path,
             root: str | None) -> tuple[Path | None, str]:  # fmt: skip
    """The mistakes figure, or None and why not. Never downloads data."""
    from trainlab.analysis import gallery
    from trainlab.errors import DataError, TrainlabError

    checkpoint = run.run_dir / "checkpoint" if run.run_dir else None
    if run.run_dir is None or checkpoint is None or not checkpoint.is_dir():
        return None, "the run folder has no checkpoint"
    try:
        split = gallery.load_test_split(run.run_dir, root=root)  # the run's dataset and root
        probabilities, labels = gallery.predict_test_set(checkpoint, split=split,
                                                         dataset=summary["dataset"]["name"])  # fmt: skip
    except DataError as error:
        return None, f"the test data is not available here ({error})"
    except TrainlabError as error:  # a damaged checkpoint: say so, the rest of the report stands
        return None, f"the run's checkpoint cannot be used ({error})"
    mistakes = gallery.most_confident_mistakes(probabilities, labels, GALLERY_SIZE)
    if not mistakes:
        return None, "every test image is classified correctly"
    classes = summary.get("dataset", {}).get("classes") or []
    return gallery.draw_gallery(split.images, mistakes, classes, path), ""


def effects_section(doc: Document, data: StudyData, figures: Path) -> list[Path]:
    completed = data.completed
    if not completed or not data.keys:
        return []
    paths: list[Path] = []
    doc.add(Heading("Parameter effects"))
    if data.kind == "tune" and data.study is not None:
        ordered = sorted(data.runs, key=lambda r: r.number)
        history = plots.optimization_history(
            [run.value if run.completed else None for run in ordered], data.direction,
            trial_numbers=[run.number for run in ordered],
        )  # fmt: skip
        paths.append(plots.draw_optimization_history(history, figures / "history.png",
                                                     metric=data.metric))  # fmt: skip
        doc.add(
            Figure(paths[-1], f"Optimisation history: `{data.metric}` per trial and best so far")
        )
        found = plots.importances(data.study)
        if found:
            paths.append(plots.draw_importances(found, figures / "importances.png"))
            doc.add(Figure(paths[-1], "Parameter importances (Optuna)"))
    # Values of different data sets are not comparable: with several, each key's effect is
    # drawn once per data set (and the data set itself is no "effect").
    groups = (
        by_dataset(completed, lambda run: run.overrides) if datasets_vary(data) else {"": completed}
    )
    keys = [key for key in data.keys if len(groups) == 1 or key != DATASET_KEY]
    for index, key in enumerate(keys):
        for part, (dataset, runs) in enumerate(groups.items()):
            effect = plots.param_effect([run.overrides.get(key) for run in runs],
                                        [run.value for run in runs], folds=data.cv)  # fmt: skip
            suffix = f"-{part}" if dataset else ""
            path = figures / f"effect-{index}{suffix}.png"
            paths.append(plots.draw_param_effect(effect, path, parameter=key, metric=data.metric))
            where = f" on {format_param(dataset)}" if dataset else ""
            doc.add(Figure(path, f"`{data.metric}` versus `{key}`{where} (mean and 95% interval "
                                 "over all runs at each value; other parameters pooled)"))  # fmt: skip
    return paths


def environment_lines(environment: dict[str, Any]) -> list[str]:
    """environment.json (see runs/environment.py) as short lines a reader can check."""
    python = environment.get("python") or {}
    system = environment.get("platform") or {}
    cpu, torch_info = environment.get("cpu") or {}, environment.get("torch") or {}
    cuda, device = environment.get("cuda") or {}, environment.get("device") or {}
    lines = [
        f"Python {python.get('version', '?')} ({python.get('implementation', '?')}), "
        f"torch {torch_info.get('version', '?')} ({torch_info.get('threads', '?')} threads)",
        f"device: {device.get('name', device.get('type', '?'))}",
        f"CPU: {cpu.get('model', '?')}, {cpu.get('logical_cores', '?')} logical cores; "
        f"{system.get('memory_gb', '?')} GB memory",
        f"system: {system.get('distribution') or system.get('system', '?')} "
        f"({system.get('machine', '?')})",
    ]
    if cuda.get("available"):
        gpus = ", ".join(d.get("name", "?") if isinstance(d, dict) else str(d)
                         for d in cuda.get("devices") or [])  # fmt: skip
        lines.append(f"CUDA {cuda.get('version')}, cuDNN {cuda.get('cudnn')}: {gpus}")
    git = environment.get("git")
    if isinstance(git, dict):
        dirty = " (uncommitted changes)" if git.get("dirty") else ""
        lines.append(f"git commit {git.get('commit', '?')}{dirty}")
    else:
        lines.append("git commit: not a git working copy")
    packages = environment.get("packages") or {}
    if packages:
        lines.append("packages: " + ", ".join(f"{k} {v}" for k, v in sorted(packages.items())))
    return lines


def environment_section(doc: Document, data: StudyData) -> None:
    ordered = [*data.completed, *(run for run in data.runs if not run.completed)]
    environment = next((e for run in ordered if (e := run.environment())), None)
    if environment is None:
        doc.add(Heading("Environment"),
                Note("No run folder of this study is on this machine.", "info"))  # fmt: skip
        return
    doc.add(Heading("Environment"), Paragraph("Recorded in the run folder (of the first completed run, where there is one):"),
            Bullets(environment_lines(environment)))  # fmt: skip


# -- the report ------------------------------------------------------------------------------


def build_report(
    data: StudyData, folder: Path, *, balanced: bool | None = None, root: str | None = None,
    pivot_table: PivotTable | None = None,
) -> tuple[Document, list[Path], Path | None]:  # fmt: skip
    """The report's blocks, its figures and results.csv (and pivot.csv, with ``pivot_table``)."""
    figures = folder / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    title = f"Run {data.name}" if data.kind == "run" else f"Study {data.name}"
    doc = Document(title)
    intro, notes = _describe_counts(data)
    doc.add(intro, *notes)
    paths: list[Path] = []
    csv_path = None
    table = build_table(data, balanced=balanced)
    if table.groups:
        csv_path = (run_results_section(doc, table, folder) if data.kind == "run"
                    else results_section(doc, table, folder, data.cv, data.kind))  # fmt: skip
        if pivot_table is not None:
            pivot_section(doc, pivot_table, folder)
    else:
        doc.add(Note("No completed runs yet: nothing to tabulate."))
    unfinished = _unfinished_table(data)
    if unfinished is not None:
        doc.add(Heading("Failed, pruned and unfinished runs"),
                Paragraph("Not in the statistics above (pruned runs stopped early by the "
                          "search's pruner; their partial results are in the store)."),
                unfinished)  # fmt: skip
    paths += curves_section(doc, table, figures, single=data.kind == "run")
    diagnostics_section(doc, table, single=data.kind == "run")
    if (scatter := scatter_section(doc, data, figures)) is not None:
        paths.append(scatter)
    paths += best_section(doc, data, table, figures, root)
    paths += effects_section(doc, data, figures)
    environment_section(doc, data)
    doc.add(Heading("How the diagnostics are decided"), Markdown(diagnostics.RULES))
    return doc, paths, csv_path


def write_report(
    data: StudyData, out: Path, *, fmt: str = "md", balanced: bool | None = None,
    root: str | None = None, pivot: tuple[str, str] | None = None,
) -> ReportFiles:  # fmt: skip
    """Write ``out/report.md`` (+ figures/, results.csv) or ``out/report.html`` (self-contained).

    ``pivot`` (rows key, columns key) adds a two-way table after the results, and pivot.csv; a
    full grid of exactly two varied keys gets one by itself (see ``tables.default_pivot``)."""
    if fmt not in ("md", "html"):
        from trainlab.errors import TrainlabError

        raise TrainlabError(f"unknown report format {fmt!r}; use md or html")
    pivot_table = None
    if pivot is not None or (pivot := default_pivot(data)) is not None:
        pivot_table = build_pivot(data, *pivot)  # before writing anything: unknown keys fail
    check_writable(out, folder=True)  # a file there: one line naming it, not "Not a directory"
    out.mkdir(parents=True, exist_ok=True)
    # Built beside, then moved in: Ctrl-C (or a failure) halfway leaves the previous report in
    # the folder whole, never its report.md pointing at figures of another study.
    staging = Path(tempfile.mkdtemp(prefix=".report-", dir=out))
    try:
        doc, paths, csv_path = build_report(data, staging, balanced=balanced, root=root,
                                            pivot_table=pivot_table)  # fmt: skip
        name = "report.md" if fmt == "md" else "report.html"
        text = render_markdown(doc, staging) if fmt == "md" else render_html(doc)
        write_text_atomic(staging / name, text)
        _move_in(staging, out, name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    moved = [out / path.relative_to(staging) for path in paths]
    pivot_csv = out / PIVOT_CSV
    return ReportFiles(out, out / name, moved, out / csv_path.name if csv_path else None,
                       pivot_csv if pivot_csv.is_file() else None)  # fmt: skip


def _move_in(staging: Path, out: Path, main: str) -> None:
    """Replace the report in ``out`` by the one built in ``staging``: the old main file goes
    first (a half-replaced set never looks complete), the new one last; figures and tables of
    the old report that this one lacks do not stay behind."""
    (out / main).unlink(missing_ok=True)
    old_figures = out / "figures"
    if old_figures.exists():
        os.replace(old_figures, staging / "figures.old")
    os.replace(staging / "figures", old_figures)
    for table in (RESULTS_CSV, PIVOT_CSV):
        if (staging / table).is_file():
            os.replace(staging / table, out / table)
        else:
            (out / table).unlink(missing_ok=True)
    os.replace(staging / main, out / main)
