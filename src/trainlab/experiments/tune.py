"""``trainlab.tune``: an Optuna search (TPE by default) with pruning on the validation metric."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trainlab.config import TrainConfig
from trainlab.errors import StudyError
from trainlab.experiments import study as s
from trainlab.experiments import worker
from trainlab.experiments.space import Axis, load_space, parse_distribution
from trainlab.experiments.store import open_store, resolve_storage_url
from trainlab.experiments.sweep import (
    StudyReport,
    as_base_config,
    check_axis_keys,
    check_study_name,
    launch,
)


def space_axes(space: str | Path | Mapping[str, Any] | list[Axis]) -> list[Axis]:
    if isinstance(space, (str, Path)):
        return load_space(space)
    if isinstance(space, Mapping):
        return [parse_distribution(key, spec) for key, spec in space.items()]
    return list(space)


def plan_tune(
    study: str,
    config: TrainConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    space: str | Path | Mapping[str, Any] | list[Axis],
    trials: int = 20,
    metric: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int | None = None,
) -> tuple[TrainConfig, s.StudySpec]:
    """The base config and the search that ``tune`` with these arguments runs, with the space's
    corners built and checked, the sampler and pruner made; nothing is stored or run."""
    base = as_base_config(config)
    axes = space_axes(space)
    if not axes:
        raise StudyError("the search space is empty")
    check_axis_keys(axes)
    if trials < 1:
        raise StudyError("--trials must be at least 1")
    spec = s.StudySpec(
        name=check_study_name(study),
        kind="tune",
        base=s.base_tree(base),
        metric=s.check_metric(metric or base.monitor),
        axes=axes,
        trials=trials,
        seed=base.seed if seed is None else seed,
        sampler=sampler,
        pruner=pruner,
    )
    s.make_sampler(spec)  # unknown names and missing packages fail before anything runs
    s.make_pruner(spec)
    check_space_fits(spec)
    return base, spec


def tune(
    study: str,
    config: TrainConfig | Mapping[str, Any] | str | Path | None = None,
    *,
    space: str | Path | Mapping[str, Any] | list[Axis],
    trials: int = 20,
    metric: str | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    seed: int | None = None,
    storage: str | None = None,
    runs_dir: str | Path = "runs",
    workers: int = 1,
    threads: int | None = None,
    runtime: Mapping[str, Any] | None = None,
    retry_failed: bool = False,
    echo: Callable[[str], None] = print,
) -> StudyReport:
    """Search ``space`` for ``trials`` trials in total (over all workers and all invocations),
    maximising or minimising the validation ``metric`` at each run's best epoch; unpromising
    runs are pruned on their per-epoch validation values."""
    s.quiet_optuna()
    base, spec = plan_tune(study, config, space=space, trials=trials, metric=metric,
                           sampler=sampler, pruner=pruner, seed=seed)  # fmt: skip
    store = open_store(resolve_storage_url(storage, runs_dir))
    optuna_study = s.create_or_join(store, spec)
    stored = s.load_spec(optuna_study)  # a joined search keeps its larger trial count
    failed = worker.retry_failed(store, optuna_study, spec.name, retry_failed)
    echo(
        f"study {spec.name}: {spec.sampler} search of {len(spec.axes)} parameter(s) for "
        f"{stored.trials} trials, pruner {spec.pruner}, {spec.direction} {spec.metric}{failed}; "
        f"store {store.display_url}"
    )
    return launch(store, spec, base, runs_dir=runs_dir, workers=workers, threads=threads,
                  runtime=runtime, echo=echo)  # fmt: skip


def check_space_fits(spec: s.StudySpec) -> None:
    """Every choice and both bounds of every axis must make a valid configuration (with the
    other axes at their first choice / low bound): a typo fails now, not in trial 37."""

    def extremes(axis: Axis) -> list[Any]:
        d = axis.distribution
        return list(d.choices) if hasattr(d, "choices") else [d.low, d.high]

    corner = {a.key: extremes(a)[0] for a in spec.axes}
    points = [{**corner, axis.key: value} for axis in spec.axes for value in extremes(axis)]
    axes = {a.key: a for a in spec.axes}
    entries = [s.PlanEntry("", {}, {k: axes[k].to_config(v) for k, v in point.items()}, 0,
                           int(spec.base.get("seed", 0))) for point in points]  # fmt: skip
    s.validate_plan(spec, entries)
