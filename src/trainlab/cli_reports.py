"""``trainlab report | compare``: studies and runs as tables, figures and pages.

Registered on the main app by ``trainlab.cli``; parses flags and calls ``trainlab.analysis``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from trainlab.cli import app, console, print_columns, user_errors
from trainlab.cli_studies import RunsDirOption, StorageOption
from trainlab.errors import TrainlabError

BalancedOption = Annotated[
    bool | None,
    typer.Option("--balanced/--no-balanced",
                 help="balanced-accuracy column (default: when the test classes are imbalanced)"),
]  # fmt: skip


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
        raise


@app.command(
    epilog=(
        "**Examples**\n\n"
        "* `trainlab report lr-study` — reports/lr-study/report.md, figures/ and results.csv\n\n"
        "* `trainlab report lr-study --format html` — one self-contained page\n\n"
        "* `trainlab report runs/k1` — a single run folder"
    )
)
@user_errors
def report(
    target: Annotated[str, typer.Argument(help="study name, or a run folder")],
    format_: Annotated[str, typer.Option("--format", help="md (+ PNG, CSV) or html")] = "md",
    out: Annotated[Path | None, typer.Option(help="output folder (default reports/NAME)")] = None,
    balanced: BalancedOption = None,
    storage: StorageOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    data_root: Annotated[
        str | None, typer.Option(help="data cache folder (for the gallery of mistakes)")
    ] = None,
) -> None:
    """Write a report: results table (mean ± std, n, CI, tests), curves, diagnostics, figures."""
    from trainlab.analysis.report import write_report

    data = load_target(target, storage, runs_dir)
    folder = out or Path("reports") / data.name
    files = write_report(data, folder, fmt=format_, balanced=balanced, root=data_root)
    extra = f", {len(files.figures)} figures" if format_ == "md" else " (figures embedded)"
    console.print(f"wrote {files.main}{extra}", highlight=False, soft_wrap=True)


@app.command(
    epilog=(
        "**Examples**\n\n"
        "* `trainlab compare lr-study` — one row per configuration\n\n"
        "* `trainlab compare lr-study --by optim.lr` — pooled over the other varied keys"
    )
)
@user_errors
def compare(
    study: Annotated[str, typer.Argument(help="study name (see `trainlab studies`)")],
    by: Annotated[
        list[str] | None, typer.Option(help="group by these varied keys only (repeatable)")
    ] = None,
    balanced: BalancedOption = None,
    storage: StorageOption = None,
    runs_dir: RunsDirOption = Path("runs"),
) -> None:
    """The results table in the terminal: mean ± std (n), 95% CI, distinguishable from best."""
    from trainlab.analysis import stats
    from trainlab.analysis.tables import build_table

    data = load_target(study, storage, runs_dir)
    table = build_table(data, by=by, balanced=balanced)
    failed = sum(run.state == "FAIL" for run in data.runs)
    unfinished = sum(run.state in ("RUNNING", "WAITING") for run in data.runs)
    if table.groups:
        print_columns(table.headers(), table.rows())
    else:
        console.print(f"no completed runs in {data.name}")
    if failed or unfinished:
        console.print(f"[yellow]{failed} failed and {unfinished} unfinished run(s) are not in "
                      f"the table (see `trainlab runs {data.name}`)[/]")  # fmt: skip
    console.print(f"[dim]vs. best: {stats.TEST_DESCRIPTION}[/]", soft_wrap=True)
