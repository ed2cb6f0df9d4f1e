"""``trainlab.sweep``: a grid and/or random sweep with seed repeats, as one Optuna study."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainlab.config import TrainConfig
from trainlab.errors import StudyError
from trainlab.experiments import study as s
from trainlab.experiments import worker
from trainlab.experiments.launch import LaunchOptions, run_workers
from trainlab.experiments.results import ConfigResult, StudyInfo, rank_rows, rows_of, study_info
from trainlab.experiments.space import Axis, categorical, parse_distribution
from trainlab.experiments.store import Store, open_store, resolve_storage_url

# Keys a study sets itself: the seed comes from --repeats, the monitor from --metric.
RESERVED_KEYS = {
    "seed": "use --repeats N for seeds",
    "device": "it is where a worker runs (--device), not part of a study",
    "data.root": "it is where a worker finds its data (--data-root, --offline)",
    "data.download": "it is where a worker finds its data (--data-root, --offline)",
    "monitor": "use --metric",
    "mode": "use --metric",
    "out": "run folders are <runs>/<study>/trial-NNNN",
    "progress": "workers print one line per run",
    "data.folds": "use --cv K for k-fold cross-validation",
    "data.fold": "use --cv K: every fold runs",
}


@dataclass
class StudyReport:
    """Where a study stands after a command: counts and the configurations ranked."""

    name: str
    storage: str  # URL without password
    info: StudyInfo
    ranked: list[ConfigResult]

    @property
    def best(self) -> ConfigResult | None:
        return self.ranked[0] if self.ranked else None


def as_base_config(config: TrainConfig | Mapping[str, Any] | str | Path | None) -> TrainConfig:
    from trainlab.training import _as_config

    return _as_config(config if not isinstance(config, Mapping) else dict(config))


def check_axis_keys(axes: Sequence[Axis]) -> None:
    seen: set[str] = set()
    for axis in axes:
        reserved = next((k for k in (axis.key, axis.key.split(".")[0]) if k in RESERVED_KEYS), None)
        if reserved is not None:
            raise StudyError(f"{axis.key} cannot be varied by a study: {RESERVED_KEYS[reserved]}")
        if axis.key in seen:
            raise StudyError(f"{axis.key} is varied twice (in --grid and --sample?); give it once")
        seen.add(axis.key)
    for inner in seen:  # one axis sets a whole section, another a key in it: one of them is lost
        outer = next((key for key in seen if inner.startswith(key + ".")), None)
        if outer is not None:
            raise StudyError(f"{inner} is varied inside {outer}, which another axis sets as a "
                             f"whole: vary {outer}'s keys one by one, or give {inner} in its "
                             "values")  # fmt: skip


def check_cv_fits(base: TrainConfig, axes: Sequence[Axis]) -> None:
    """``--cv K`` validates on each fold in turn (a K-th of the training data): a validation
    size or share, set in the base or varied, would be ignored."""
    data = base.data
    default_fraction = type(data).model_fields["val_fraction"].default
    chosen = []
    if data.val_size is not None:
        chosen.append("data.val_size")
    if "val_fraction" in data.model_fields_set and data.val_fraction != default_fraction:
        chosen.append("data.val_fraction")  # a saved config.yaml holds the default: that is fine
    varied = [axis.key for axis in axes if axis.key in ("data.val_size", "data.val_fraction")]
    if chosen or varied:
        raise StudyError(f"--cv K validates on each fold in turn (1/K of the training data): "
                         f"drop {' and '.join(dict.fromkeys([*varied, *chosen]))}")  # fmt: skip


def grid_axes(grid: Mapping[str, Sequence[Any]] | Sequence[Axis] | None) -> list[Axis]:
    if grid is None:
        return []
    if isinstance(grid, Mapping):
        return [categorical(key, _value_list(key, values)) for key, values in grid.items()]
    return list(grid)


def _value_list(key: str, values: Any) -> list[Any]:
    """A grid axis's values: a list or tuple (a string would become its letters)."""
    if not isinstance(values, (list, tuple)):
        raise StudyError(f"grid {key}: give a list of values, e.g. {{{key!r}: [{values!r}]}}, "
                         f"not {type(values).__name__} {values!r}")  # fmt: skip
    return list(values)


def sample_axes(sample: Mapping[str, Any] | Sequence[Axis] | None) -> list[Axis]:
    if sample is None:
        return []
    if isinstance(sample, Mapping):
        return [parse_distribution(key, spec) for key, spec in sample.items()]
    return list(sample)


def base_runtime(config: TrainConfig, runtime: Mapping[str, Any] | None) -> dict[str, Any]:
    """Runtime keys set in the base config (file or --set) travel with this command's
    workers, not with the study; flags (``runtime``) win."""
    found: dict[str, Any] = {}
    if config.device != "auto":
        found["device"] = config.device
    if config.data.root is not None:
        found["data.root"] = str(Path(config.data.root).expanduser().resolve())
    if not config.data.download:
        found["data.download"] = False
    return {**found, **(runtime or {})}


def report(store: Store, name: str) -> StudyReport:
    """The study's counts and ranking, from one read of its trials."""
    study, spec = s.open_study(store, name)
    rows = rows_of(study)
    return StudyReport(name, store.display_url, study_info(name, spec, rows),
                       rank_rows(spec, rows))  # fmt: skip


def launch(store: Store, spec: s.StudySpec, base: TrainConfig, *, runs_dir: str | Path,
           workers: int, threads: int | None, runtime: Mapping[str, Any] | None,
           echo: Callable[[str], None]) -> StudyReport:  # fmt: skip
    """Run this machine's workers on a created study until it is done; its report."""
    options = LaunchOptions(workers=workers, threads=threads, runs_dir=Path(runs_dir),
                            runtime=base_runtime(base, runtime))  # fmt: skip
    codes = run_workers(store.url, spec.name, options, echo)
    result = report(store, spec.name)
    advise_rerun(codes, result, echo)
    return result


def advise_rerun(codes: Sequence[int], result: StudyReport, echo: Callable[[str], None]) -> None:
    """After workers that ended abnormally: what they left unfinished, if anything (the other
    workers take over what they can)."""
    counts = result.info.counts
    left = counts["interrupted"] + counts["running"] + counts["waiting"]
    if any(codes) and left:
        echo(f"{left} run(s) of {result.name} left unfinished by the worker(s) that ended: run "
             "the same command again to resume them")  # fmt: skip


def plan_sweep(
    study: str,
    config: TrainConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    grid: Mapping[str, Sequence[Any]] | Sequence[Axis] | None = None,
    sample: Mapping[str, Any] | Sequence[Axis] | None = None,
    samples: int = 1,
    repeats: int = 1,
    cv: int = 0,
    metric: str | None = None,
    seed: int | None = None,
) -> tuple[TrainConfig, s.StudySpec]:
    """The base config and the study that ``sweep`` with these arguments runs, with every
    configuration built and checked; nothing is stored or run."""
    base = as_base_config(config)
    axes, sampled = grid_axes(grid), sample_axes(sample)
    check_axis_keys([*axes, *sampled])
    if repeats < 1 or samples < 1:
        raise StudyError("--repeats and --samples must be at least 1")
    if cv:
        if cv < 2:
            raise StudyError("--cv K needs K >= 2 folds (0 = a single validation split)")
        check_cv_fits(base, [*axes, *sampled])
        base = base.model_copy(update={"data": base.data.model_copy(update={"folds": cv})})
    spec = s.StudySpec(
        name=check_study_name(study),
        kind="sweep",
        base=s.base_tree(base),
        metric=s.check_metric(metric or base.monitor),
        axes=axes,
        sampled=sampled,
        samples=samples if sampled else 1,
        repeats=repeats,
        cv=cv,
        seed=base.seed if seed is None else seed,
    )
    s.check_samples(spec)
    s.validate_plan(spec, s.sweep_plan(spec))
    return base, spec


def sweep(
    study: str,
    config: TrainConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    grid: Mapping[str, Sequence[Any]] | Sequence[Axis] | None = None,
    sample: Mapping[str, Any] | Sequence[Axis] | None = None,
    samples: int = 1,
    repeats: int = 1,
    cv: int = 0,
    metric: str | None = None,
    seed: int | None = None,
    storage: str | None = None,
    runs_dir: str | Path = "runs",
    workers: int = 1,
    threads: int | None = None,
    runtime: Mapping[str, Any] | None = None,
    retry_failed: bool = False,
    echo: Callable[[str], None] = print,
) -> StudyReport:
    """Run every configuration of ``grid`` × ``samples`` random draws of ``sample``, each
    ``repeats`` times with seeds ``seed, seed+1, ...``; returns the study ranked by the mean
    validation ``metric`` (default: the config's monitor). ``cv=K`` runs each of those K times,
    validating on each fold of a stratified K-fold partition of the training data in turn; the
    mean is then over seeds × folds.

    The same call again continues the study: finished runs are kept, lost ones resumed, and
    only missing ones run; runs that failed on their own run again only with ``retry_failed``.
    ``grid={"optim.lr": [1e-3, 1e-4]}``;
    ``sample={"optim.lr": "loguniform:1e-5:1e-2"}``.
    """
    s.quiet_optuna()
    base, spec = plan_sweep(study, config, grid=grid, sample=sample, samples=samples,
                            repeats=repeats, cv=cv, metric=metric, seed=seed)  # fmt: skip
    store = open_store(resolve_storage_url(storage, runs_dir))
    optuna_study = s.create_or_join(store, spec)
    stored = s.load_spec(optuna_study)  # the study as it now stands (it may have grown before)
    planned = s.sweep_plan(stored)
    with store.lock(spec.name):
        added = s.enqueue_plan(store, optuna_study, planned)
    failed = worker.retry_failed(store, optuna_study, spec.name, retry_failed)
    configurations = len(planned) // (stored.repeats * max(stored.cv, 1))
    folds = f" × {stored.cv} folds" if stored.cv else ""
    echo(
        f"study {spec.name}: {configurations} configuration(s) × {stored.repeats} seed(s){folds} "
        f"= {len(planned)} runs, {added} newly planned{failed}; store {store.display_url}"
    )
    return launch(store, spec, base, runs_dir=runs_dir, workers=workers, threads=threads,
                  runtime=runtime, echo=echo)  # fmt: skip


def check_study_name(name: str) -> str:
    """A study name is also a folder name under the runs folder."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}", name or ""):
        raise StudyError(
            f"study name {name!r}: use letters, digits, '.', '_' and '-' (it names a folder)"
        )
    return name
