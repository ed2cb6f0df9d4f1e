"""``trainlab report | compare``: studies and runs as tables, figures and pages.

Registered on the main app by ``trainlab.cli``; parses flags and calls ``trainlab.analysis``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trainlab.cli import app, console, print_columns, user_errors
from trainlab.cli_options import RunsDirOption, StorageOption
from trainlab.errors import TrainlabError

BalancedOption = Annotated[
    bool | None,
    typer.Option("--balanced/--no-balanced",
                 help="balanced-accuracy column (default: when the test classes are imbalanced)"),
]  # fmt: skip
PIVOT_HELP = (
    "a two-way table of two varied keys, rows then columns: test accuracy of each cell's best "
    "configuration over the other varied keys, picked by the validation metric; the best of "
    "each column and those not distinguishable from it are marked"
)


def parse_pivot_option(text: str | None) -> tuple[str, str] | None:
    from trainlab.analysis.tables import parse_pivot

    return None if text is None else parse_pivot(text)


def load_target(target: str, storage: str | None, runs_dir: Path):
    """A run folder (has summary.json) or the name of a study in the store."""
    from trainlab.analysis.collect import collect_run, collect_study
    from trainlab.experiments import open_store, resolve_storage_url

    folder = Path(target)
    if (folder / "summary.json").is_file():
        return collect_run(folder)
    try:  # a study of that name wins over a folder that happens to share it
        return collect_study(
            open_store(resolve_storage_url(storage, runs_dir), create=False), target
        )
    except TrainlabError:
        if folder.exists():
            raise TrainlabError(f"{folder} is not a finished run folder (no summary.json) nor a "
                                "study in the store; see `trainlab studies`") from None  # fmt: skip
        if "/" in target or "\\" in target:  # meant as a folder: a study name has no slash
            raise TrainlabError(f"no such run folder: {folder}") from None
        raise


@app.command(
    epilog=(
        "**Examples**\n\n"
        "* `trainlab report lr-study` — reports/lr-study/report.md, figures/ and results.csv\n\n"
        "* `trainlab report lr-study --format html` — one self-contained page\n\n"
        "* `trainlab report runs/k1` — a single run folder\n\n"
        "* `trainlab report optimizers --pivot optim.name,data.dataset` — adds an optimizer × "
        "dataset table, each optimizer at its best learning rate (a full grid of exactly two "
        "varied keys gets this table by itself)"
    )
)
@user_errors
def report(
    target: Annotated[str, typer.Argument(help="study name, or a run folder")],
    format_: Annotated[str, typer.Option("--format", help="md (+ PNG, CSV) or html")] = "md",
    out: Annotated[Path | None, typer.Option(help="output folder (default reports/NAME)")] = None,
    balanced: BalancedOption = None,
    pivot: Annotated[
        str | None,
        typer.Option(metavar="ROWS,COLUMNS", help=PIVOT_HELP + " (section after the results)"),
    ] = None,
    storage: StorageOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    data_root: Annotated[
        str | None, typer.Option(help="data cache folder (for the gallery of mistakes)")
    ] = None,
) -> None:
    """Write a report: results table (mean ± std, n, CI, tests), curves, diagnostics, figures."""
    from trainlab.analysis.report import write_report

    keys = parse_pivot_option(pivot)
    data = load_target(target, storage, runs_dir)
    folder = out or Path("reports") / data.name
    files = write_report(data, folder, fmt=format_, balanced=balanced, root=data_root, pivot=keys)
    extra = f", {len(files.figures)} figures" if format_ == "md" else " (figures embedded)"
    console.print(f"wrote {files.main}{extra}", highlight=False, soft_wrap=True)


@app.command(
    epilog=(
        "**Examples**\n\n"
        "* `trainlab compare lr-study` — one row per configuration\n\n"
        "* `trainlab compare lr-study --by optim.lr` — pooled over the other varied keys\n\n"
        "* `trainlab compare optimizers --pivot optim.name,data.dataset` — optimizer × dataset, "
        "each optimizer at its best learning rate"
    )
)
@user_errors
def compare(
    study: Annotated[str, typer.Argument(help="study name (see `trainlab studies`)")],
    by: Annotated[
        list[str] | None, typer.Option(help="group by these varied keys only (repeatable)")
    ] = None,
    balanced: BalancedOption = None,
    pivot: Annotated[
        str | None, typer.Option(metavar="ROWS,COLUMNS", help=PIVOT_HELP + " (instead of --by)")
    ] = None,
    storage: StorageOption = None,
    runs_dir: RunsDirOption = Path("runs"),
) -> None:
    """The results table in the terminal: mean ± std (n), 95% CI, distinguishable from best;
    or, with --pivot, one varied key down and another across (optimizer × dataset)."""
    from trainlab.analysis import stats
    from trainlab.analysis.tables import WITHIN_DATASET, build_pivot, build_table

    keys = parse_pivot_option(pivot)
    if keys is not None and by:
        raise TrainlabError("--by and --pivot: use one (--pivot ROWS,COLUMNS already picks the "
                            "best of the other varied keys per cell)")  # fmt: skip
    data = load_target(study, storage, runs_dir)
    failed = sum(run.failed for run in data.runs)
    pruned = sum(run.state == "PRUNED" for run in data.runs)  # stopped early by a search
    unfinished = sum(run.unfinished for run in data.runs)  # interrupted or lost ones included
    if keys is not None:
        two_way = build_pivot(data, *keys)
        if any(cell.picked for cells in two_way.cells for cell in cells):
            console.print(f"[bold]{two_way.title}[/]: {two_way.value.title}", highlight=False)
            print_columns(two_way.headers(), two_way.rows())
        else:
            console.print(f"no completed runs in {data.name}")
        describe = two_way.legend().replace("`", "")
    else:
        table = build_table(data, by=by, balanced=balanced)
        if table.groups:
            print_columns(table.headers(), table.rows())
        else:
            console.print(f"no completed runs in {data.name}")
        describe = f"vs. best: {stats.comparison_description(data.cv)}"
        if table.within:
            describe += " " + WITHIN_DATASET.replace("`", "")
    if failed or pruned or unfinished:
        counts = [f"{failed} failed", *([f"{pruned} pruned"] if pruned else []),
                  f"{unfinished} unfinished"]  # fmt: skip
        console.print(f"[yellow]{', '.join(counts[:-1])} and {counts[-1]} run(s) are not in "
                      f"the table (see `trainlab runs {data.name}`)[/]")  # fmt: skip
    console.print(describe, style="dim", highlight=False, markup=False, soft_wrap=True)
