"""``trainlab sweep | tune | work | studies | runs | best``: studies from the command line.

Registered on the main app by ``trainlab.cli``; every command parses flags and calls
``trainlab.experiments``.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from trainlab.cli import app, console, err_console, flag_overrides, print_columns, user_errors
from trainlab.cli_options import RunsDirOption, StorageOption
from trainlab.config import load_config
from trainlab.errors import TrainlabError

WorkersOption = Annotated[
    int, typer.Option(min=1, help="parallel workers on this machine (they share the cores)")
]
ThreadsOption = Annotated[
    int | None, typer.Option(min=1, help="torch threads per worker (default: cores / workers)")
]
DeviceOption = Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1, mps")]
DataRootOption = Annotated[str | None, typer.Option(help="data cache folder on this machine")]
RetryFailedOption = Annotated[
    bool,
    typer.Option(
        "--retry-failed",
        help="run again the runs that failed on their own (an error, out of memory, a folder "
        "left by another study), continuing their folders; without it they are kept as failed",
    ),
]
OfflineOption = Annotated[bool, typer.Option(help="never download; fail if data is missing")]
ConfigOption = Annotated[
    Path | None, typer.Option("--config", "-c", help="base config file (YAML)")
]
DryRunOption = Annotated[
    bool,
    typer.Option(
        "--dry-run", help="build and check every configuration, show the plan, run nothing"
    ),
]
SetOption = Annotated[
    list[str] | None, typer.Option("--set", help="override a base config key: optim.lr=0.05")
]
MetricOption = Annotated[
    str | None,
    typer.Option(help="validation metric to rank by: val.loss, val.accuracy, "
                 "val.balanced_accuracy, val.macro_f1 (default: the config's monitor)"),
]  # fmt: skip


def random_draws(samples: int | None, sample: list[str] | None) -> int:
    """``--samples`` (default 10), which counts draws of ``--sample`` keys: alone, a mistake."""
    if samples is not None and not sample:
        raise TrainlabError("--samples counts random draws of --sample keys; give --sample "
                            "key=distribution too (a --grid tries every value)")  # fmt: skip
    return 10 if samples is None else samples


def runtime_options(device: str | None, data_root: str | None, offline: bool) -> dict[str, Any]:
    """Where this machine's workers run: never part of the study's definition."""
    from trainlab.training import resolve_device

    runtime: dict[str, Any] = {}
    if device:
        resolve_device(device)  # a typo fails here, not once per run
        runtime["device"] = device
    if data_root:
        runtime["data.root"] = data_root
    if offline:
        runtime["data.download"] = False
    return runtime


def base_config(config: Path | None, set_: list[str] | None, **flags: Any):
    return load_config(config, flag_overrides(**flags) + list(set_ or []))


def echo(line: str) -> None:
    console.print(line, highlight=False, markup=False, soft_wrap=True)


def interrupted(study: str) -> typer.Exit:
    err_console.print(
        f"interrupted; finished runs of {study} are kept — run the same command again to "
        "continue (the interrupted run resumes from its last epoch)",
        highlight=False,
    )
    return typer.Exit(130)


# -- formatting ------------------------------------------------------------------------------


def fmt_value(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e4 or value == 0 else f"{value:.3g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def fmt_metric(value: Any, metric: str) -> str:
    """A metric's value as every study table prints it (``units.format_metric``)."""
    from trainlab.units import format_metric

    if not isinstance(value, (int, float)) or not math.isfinite(value):
        return fmt_value(value)
    return format_metric(float(value), metric)


def fmt_param(value: Any) -> str:
    from trainlab.experiments.space import format_param  # numpy: not at CLI start-up

    return "-" if value is None else format_param(value)


def mean_std(metric: str, mean: float | None, std: float | None, n: int, planned: int = 0) -> str:
    """``97.12 ± 0.21% (n=3)`` (a share, as ``units.format_metric``), ``0.0912 ± 0.0021 (n=3)``
    (a loss); ``(n=1 of 3)`` when runs of the configuration failed or are not finished: a mean
    of the survivors must not pass for a mean of them all."""
    from trainlab.units import format_metric

    if mean is None:
        return "-"
    text = format_metric(mean, metric)
    if std is not None:
        text = f"{text.removesuffix('%')} ± {format_metric(std, metric)}"
    of = f" of {planned}" if planned > n else ""
    return f"{text} (n={n}{of})"


def print_ranking(report: Any, top: int) -> None:
    from trainlab.experiments.results import ConfigResult

    spec_metric = report.info.metric
    test_metric = spec_metric.split(".", 1)[1]
    ranked: list[ConfigResult] = report.ranked[:top]
    if not ranked:
        console.print(f"no completed runs in {report.name} yet")
        return
    keys = list(ranked[0].overrides)
    headers = ["rank", *keys, f"{spec_metric} mean ± std (n)", f"test.{test_metric}", "runs"]
    rows = []
    for index, group in within_datasets(ranked):
        rows.append([str(index), *(fmt_param(group.overrides.get(k)) for k in keys),
                     mean_std(spec_metric, group.mean, group.std, group.n, group.planned),
                     mean_std(test_metric, group.test_mean(test_metric),
                              group.test_std(test_metric), len(group.test.get(test_metric, []))),
                     " ".join(f"#{n}" for n in group.numbers)])  # fmt: skip
    print_columns(headers, rows)


def within_datasets(ranked: list[Any]) -> list[tuple[int, Any]]:
    """``ranked`` with its rank, as it is: or, when the configurations span several data sets
    (whose accuracies are not comparable), grouped by data set and ranked within each."""
    from trainlab.experiments.results import by_dataset

    groups = by_dataset(ranked, lambda group: group.overrides)
    return [(rank, group) for found in groups.values()
            for rank, group in enumerate(found, start=1)]  # fmt: skip


def print_best(report: Any) -> None:
    from trainlab.experiments.results import best_per_dataset

    best = report.best
    if best is None:
        console.print(f"no completed runs in {report.name} yet")
        return
    per_dataset = best_per_dataset(report.ranked)
    if not per_dataset:
        print_one_best(report, best, f"best of {report.name}")
        return
    console.print(f"{report.name} compares {len(per_dataset)} data sets; validation accuracies "
                  "of different data sets are not comparable, so each has its best:",
                  highlight=False)  # fmt: skip
    for dataset, group in per_dataset.items():
        console.print()
        print_one_best(report, group, f"best on {dataset}")


def print_one_best(report: Any, best: Any, title: str) -> None:
    metric = report.info.metric
    test_metric = metric.split(".", 1)[1]
    configuration = " ".join(f"{k}={fmt_param(v)}" for k, v in best.overrides.items())
    test = mean_std(test_metric, best.test_mean(test_metric), best.test_std(test_metric),
                    len(best.test.get(test_metric, [])))  # fmt: skip
    rows = [
        ("configuration", configuration or "base config"),
        (metric, mean_std(metric, best.mean, best.std, best.n, best.planned)),
        (f"test.{test_metric}", f"{test}  (reported, never used to choose)"),
        *(("run folder", run_dir) for run_dir in best.run_dirs),
    ]
    width = max(len(label) for label, _ in rows)
    console.print(f"[bold]{escape(title)}[/] by mean {metric} over its repeats:")
    for label, value in rows:  # long values (paths, configurations) stay on one line
        console.print(f"  {label:<{width}}  {value}", highlight=False, markup=False, soft_wrap=True)


def as_stored(spec: Any, storage: str | None, runs_dir: Path) -> tuple[Any, str]:
    """The study as the real command would find it in the store (joined with a study of the same
    name: more seeds or trials kept, a different definition refused), and where that is."""
    from trainlab.experiments import store as stores
    from trainlab.experiments.study import preview_join

    url = stores.resolve_storage_url(storage, runs_dir)
    path = stores.sqlite_path(stores.normalize_url(url))
    if path is not None and not path.is_file():
        return spec, f"a new study (the store {path} does not exist yet)"
    store = stores.open_store(url, create=False)
    joined = preview_join(store, spec)
    if joined is None:
        return spec, f"a new study in {store.display_url}"
    stored, completed = joined
    return stored, f"joins the study in {store.display_url}, {completed} run(s) completed"


def print_sweep_plan(spec: Any, where: str) -> None:
    """What a sweep would run: every configuration once (its seeds and folds are counted)."""
    from trainlab.experiments.study import sweep_plan

    entries = sweep_plan(spec)
    first = [entry for entry in entries if entry.repeat == 0 and not entry.fold]
    folds = f" × {spec.cv} folds" if spec.cv else ""
    echo(f"study {spec.name} (dry run): {len(first)} configuration(s) × {spec.repeats} seed(s)"
         f"{folds} = {len(entries)} runs, ranked by {spec.metric}; {where}; nothing stored or "
         "run")  # fmt: skip
    for number, entry in enumerate(first, 1):
        values = " ".join(f"{key}={fmt_param(value)}" for key, value in entry.overrides.items())
        echo(f"  {number:>3}  {values or '(the base configuration)'}")


def print_tune_plan(spec: Any, where: str) -> None:
    echo(f"study {spec.name} (dry run): {spec.sampler} search of {len(spec.axes)} parameter(s) "
         f"for {spec.trials} trials, pruner {spec.pruner}, {spec.direction} {spec.metric}; each "
         f"choice and bound (the others at their first) builds a valid configuration; {where}; "
         "nothing stored or run")  # fmt: skip
    for axis in spec.axes:
        echo(f"  {axis.describe()}")


def print_study_end(report: Any) -> None:
    counts = report.info.counts
    console.print(
        f"\n{report.name}: {counts['completed']} completed, {counts['pruned']} pruned, "
        f"{counts['failed']} failed, {counts['running']} running elsewhere, "
        f"{counts['waiting']} waiting, {counts['interrupted']} interrupted or lost",
        soft_wrap=True,  # one line in a log file too, not cut at 80 columns
    )
    if not report.ranked:
        unfinished = counts["running"] + counts["waiting"] + counts["interrupted"]
        if counts["failed"] and not unfinished:  # a script must not take this for success
            err_console.print(f"error: every run of {report.name} failed; `trainlab runs "
                              f"{report.name}` shows why", highlight=False, soft_wrap=True)  # fmt: skip
            raise typer.Exit(1)
        console.print(f"no completed runs in {report.name} yet")
        return
    print_ranking(report, top=10)
    console.print()
    print_best(report)


# -- commands --------------------------------------------------------------------------------


@app.command(
    epilog=(
        "**Examples**\n\n"
        "* `trainlab sweep --study lr-study --dataset mnist-5k --model cnn "
        "--grid optim.lr=5e-4,1e-4,5e-5 --grid data.batch_size=8,16,32 --repeats 3`\n\n"
        "* `trainlab sweep --study lr-cv --grid optim.lr=1e-3,1e-4 --cv 5` — 5-fold "
        "cross-validation\n\n"
        "* `trainlab sweep --study optimizers --config examples/base.yaml "
        "--grid optim.name=adam,adagrad,rmsprop,sgd,momentum --workers 2`\n\n"
        "* `trainlab sweep --study random-lr --sample optim.lr=loguniform:1e-5:1e-2 "
        "--sample model.options.dropout=uniform:0:0.5 --samples 20`\n\n"
        "* the same command again continues the study; on other machines add "
        "`--storage postgresql://user@host/db` to share it"
    )
)
@user_errors
def sweep(
    study: Annotated[str, typer.Option(help="study name (also the run folder name)")],
    grid: Annotated[
        list[str] | None,
        typer.Option(help="key=v1,v2,... : every value is tried (repeatable: a full grid)"),
    ] = None,
    sample: Annotated[
        list[str] | None,
        typer.Option(
            help="key=loguniform:1e-5:1e-2, uniform:0:0.5, int:1:8 or logint:16:256 (repeatable)"
        ),
    ] = None,
    grid_file: Annotated[
        Path | None,
        typer.Option(
            help="YAML file of `key: [values]` (a grid; model variants as lists of option mappings)"
        ),
    ] = None,
    samples: Annotated[
        int | None, typer.Option(min=1, help="random draws of the --sample keys (default 10)")
    ] = None,
    repeats: Annotated[int, typer.Option(min=1, help="seeds per configuration")] = 1,
    cv: Annotated[
        int,
        typer.Option(
            min=0,
            help="k-fold cross-validation: K runs per seed, each validating on "
            "one fold of the training data (0 = off)",
        ),
    ] = 0,
    metric: MetricOption = None,
    seed: Annotated[int | None, typer.Option(help="first seed (default: the config's)")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    dataset: Annotated[str | None, typer.Option(help="base dataset")] = None,
    model: Annotated[str | None, typer.Option(help="base model")] = None,
    epochs: Annotated[str | None, typer.Option(help="epochs per run, or auto")] = None,
    workers: WorkersOption = 1,
    threads: ThreadsOption = None,
    storage: StorageOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    device: DeviceOption = None,
    data_root: DataRootOption = None,
    offline: OfflineOption = False,
    dry_run: DryRunOption = False,
    retry_failed: RetryFailedOption = False,
) -> None:
    """Run a grid and/or random sweep with seed repeats, as one study in the store."""
    from trainlab.experiments import sweep as run_sweep
    from trainlab.experiments.space import load_grid, parse_grid, parse_samples
    from trainlab.experiments.sweep import plan_sweep

    base = base_config(config, set_, dataset=dataset, model=model, epochs=epochs)
    runtime = runtime_options(device, data_root, offline)  # a typo fails a dry run too
    samples = random_draws(samples, sample)
    axes = parse_grid(grid or [])
    if grid_file is not None:
        axes += load_grid(grid_file)  # a key in both is refused by the sweep
    if dry_run:
        _, spec = plan_sweep(study, base, grid=axes, sample=parse_samples(sample or []),
                             samples=samples, repeats=repeats, cv=cv, metric=metric, seed=seed)  # fmt: skip
        print_sweep_plan(*as_stored(spec, storage, runs_dir))
        return
    try:
        report = run_sweep(
            study, base, grid=axes, sample=parse_samples(sample or []),
            samples=samples, repeats=repeats, cv=cv, metric=metric, seed=seed, storage=storage,
            runs_dir=runs_dir, workers=workers, threads=threads,
            runtime=runtime, retry_failed=retry_failed, echo=echo,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise interrupted(study) from None
    print_study_end(report)


@app.command(
    epilog=(
        "**Examples**\n\n"
        "* `trainlab tune --study spinal-k49 --config examples/k49.yaml "
        "--space examples/k49-space.yaml --trials 50 --pruner median "
        "--metric val.balanced_accuracy`\n\n"
        "**Space file** (one line per config key):\n\n"
        "    optim.lr: loguniform:1e-4:1e-2\n\n"
        "    optim.name: [adam, sgd, rmsprop]\n\n"
        "    model.options.dropout: uniform:0:0.5\n\n"
        "    data.batch_size: [64, 128, 256]"
    )
)
@user_errors
def tune(
    study: Annotated[str, typer.Option(help="study name (also the run folder name)")],
    space: Annotated[Path, typer.Option(help="YAML search space: config key -> distribution")],
    trials: Annotated[int, typer.Option(min=1, help="trials in total, over all workers")] = 20,
    metric: MetricOption = None,
    sampler: Annotated[str, typer.Option(help="tpe, random, gp, qmc or cmaes")] = "tpe",
    pruner: Annotated[
        str,
        typer.Option(
            help="median, halving (successive halving), hyperband or none; options after a "
            "colon: median:startup=5,warmup=2 (trials before judging, epochs never judged), "
            "halving|hyperband:min_epochs=1,reduction=3"
        ),
    ] = "median",
    seed: Annotated[int | None, typer.Option(help="sampler seed (default: the config's)")] = None,
    config: ConfigOption = None,
    set_: SetOption = None,
    dataset: Annotated[str | None, typer.Option(help="base dataset")] = None,
    model: Annotated[str | None, typer.Option(help="base model")] = None,
    epochs: Annotated[str | None, typer.Option(help="epochs per trial, or auto")] = None,
    workers: WorkersOption = 1,
    threads: ThreadsOption = None,
    storage: StorageOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    device: DeviceOption = None,
    data_root: DataRootOption = None,
    offline: OfflineOption = False,
    dry_run: DryRunOption = False,
    retry_failed: RetryFailedOption = False,
) -> None:
    """Search hyperparameters with Optuna (TPE by default), pruning runs that fall behind."""
    from trainlab.experiments import tune as run_tune
    from trainlab.experiments.tune import plan_tune

    base = base_config(config, set_, dataset=dataset, model=model, epochs=epochs)
    runtime = runtime_options(device, data_root, offline)  # a typo fails a dry run too
    if dry_run:
        _, spec = plan_tune(study, base, space=space, trials=trials, metric=metric,
                            sampler=sampler, pruner=pruner, seed=seed)  # fmt: skip
        print_tune_plan(*as_stored(spec, storage, runs_dir))
        return
    try:
        report = run_tune(
            study, base, space=space, trials=trials, metric=metric, sampler=sampler,
            pruner=pruner, seed=seed, storage=storage, runs_dir=runs_dir, workers=workers,
            threads=threads, runtime=runtime, retry_failed=retry_failed, echo=echo,
        )  # fmt: skip
    except KeyboardInterrupt:
        raise interrupted(study) from None
    print_study_end(report)


@app.command()
@user_errors
def work(
    study: Annotated[str, typer.Argument(help="study to work on")],
    workers: WorkersOption = 1,
    threads: ThreadsOption = None,
    storage: StorageOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    device: DeviceOption = None,
    data_root: DataRootOption = None,
    offline: OfflineOption = False,
) -> None:
    """Join an existing study as a worker: everything it needs is in the store.

    Example, on a second machine: `trainlab work lr-study --storage postgresql://me@db/studies`
    """
    from trainlab.experiments import open_store, resolve_storage_url
    from trainlab.experiments.launch import LaunchOptions, run_workers
    from trainlab.experiments.study import open_study
    from trainlab.experiments.sweep import advise_rerun
    from trainlab.experiments.sweep import report as study_report

    store = open_store(resolve_storage_url(storage, runs_dir), create=False)
    open_study(store, study)  # a clear error for an unknown study before any worker starts
    options = LaunchOptions(workers=workers, threads=threads, runs_dir=runs_dir,
                            runtime=runtime_options(device, data_root, offline))  # fmt: skip
    try:
        codes = run_workers(store.url, study, options, echo)
    except KeyboardInterrupt:
        raise interrupted(study) from None
    result = study_report(store, study)
    advise_rerun(codes, result, echo)
    print_study_end(result)


@app.command()
@user_errors
def studies(storage: StorageOption = None, runs_dir: RunsDirOption = Path("runs")) -> None:
    """List the studies in the store with counts of their runs."""
    from trainlab.experiments import list_studies, open_store, resolve_storage_url

    store = open_store(resolve_storage_url(storage, runs_dir), create=False)
    infos = list_studies(store)
    if not infos:
        console.print(f"no studies in {store.display_url} yet; start one with `trainlab sweep`")
        return
    rows = []
    for info in infos:
        c = info.counts
        if not c:  # in the store but not a trainlab study
            rows.append([info.name, "(not a trainlab study)", *["-"] * 8])
            continue
        rows.append([info.name, info.kind, f"{c['completed']}/{info.planned or '?'}",
                     str(c["pruned"]), str(c["running"]), str(c["waiting"]),
                     str(c["interrupted"]), str(c["failed"]), info.metric,
                     fmt_metric(info.best_value, info.metric)])  # fmt: skip
    print_columns(["study", "kind", "completed", "pruned", "running", "waiting", "interrupted",
                   "failed", "metric", "best run"], rows)  # fmt: skip
    console.print(f"[dim]store {store.display_url}[/]", highlight=False, soft_wrap=True)


@app.command()
@user_errors
def runs(
    study: Annotated[str, typer.Argument(help="study name (see `trainlab studies`)")],
    all_: Annotated[
        bool, typer.Option("--all", help="also show lost attempts that were run again")
    ] = False,
    storage: StorageOption = None,
    runs_dir: RunsDirOption = Path("runs"),
) -> None:
    """One line per run: parameters, status, best epoch, validation and test metrics, folder."""
    from trainlab.experiments import open_store, resolve_storage_url
    from trainlab.experiments.results import rows_of
    from trainlab.experiments.study import open_study

    store = open_store(resolve_storage_url(storage, runs_dir), create=False)
    opened, spec = open_study(store, study)
    rows = [row for row in rows_of(opened) if all_ or not row.retried]
    if not rows:
        console.print(f"{study} has no runs yet")
        return
    keys = [axis.key for axis in spec.all_axes()]
    metric = spec.metric.split(".", 1)[1]
    folds = ["fold"] if spec.cv else []
    headers = ["#", "status", *keys, "seed", *folds, "epoch", spec.metric, f"test.{metric}",
               "seconds", "run folder / reason"]  # fmt: skip
    lines = []
    for row in rows:
        status = row.status + (f" (#{row.retry_of})" if row.retry_of is not None else "")
        where = row.run_dir or ""
        if row.state == "FAIL" and row.reason:
            where = row.reason if not row.run_dir else f"{row.reason} — {row.run_dir}"
        seconds = "-" if row.seconds is None else f"{row.seconds:.1f}"
        lines.append([str(row.number), status, *(fmt_param(row.overrides.get(k)) for k in keys),
                      fmt_value(row.seed), *(fmt_value(row.fold) for _ in folds),
                      fmt_value(row.best_epoch),
                      fmt_metric(row.val.get(metric), metric),
                      fmt_metric(row.test.get(metric), metric),
                      seconds, where])  # fmt: skip
    print_columns(headers, lines)


@app.command()
@user_errors
def best(
    study: Annotated[str, typer.Argument(help="study name (see `trainlab studies`)")],
    top: Annotated[int, typer.Option(min=1, help="configurations to rank")] = 10,
    storage: StorageOption = None,
    runs_dir: RunsDirOption = Path("runs"),
) -> None:
    """The best configuration by mean validation metric over its repeats, and its run folders."""
    from trainlab.experiments import open_store, resolve_storage_url
    from trainlab.experiments.sweep import report as study_report

    store = open_store(resolve_storage_url(storage, runs_dir), create=False)
    report = study_report(store, study)  # an unknown study is a clear error from here
    if report.ranked:
        print_ranking(report, top)
        console.print()
    print_best(report)  # or the one line saying there is nothing yet
    dashboard = store.display_url.replace("+psycopg", "")
    console.print(  # a command to copy: never broken over lines
        f"[dim]browse it: optuna-dashboard {shlex.quote(dashboard)}[/]",
        highlight=False,
        soft_wrap=True,
    )
