"""A study in the store: its definition (kind, base config, metric, axes), its sweep plan, and
the trainlab attributes every trial carries.

Everything a worker needs is in the store, not in the command line that created the study: a
worker on another machine joins with only the study name and the storage URL.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

import trainlab
from trainlab.config import (
    ConfigError,
    MonitorName,
    TrainConfig,
    build_config,
    drop_alternatives,
    ignored_setting,
    set_dotted,
)
from trainlab.errors import StudyError, did_you_mean
from trainlab.experiments.space import Axis, draw
from trainlab.experiments.store import Store

# Study attributes
SPEC_ATTR = "trainlab.spec"
# Trial attributes (user attributes: shown by optuna-dashboard)
KEY = "trainlab.key"  # identity of a planned sweep entry: configuration + repeat
REPEAT = "trainlab.repeat"
SEED = "trainlab.seed"
FOLD = "trainlab.fold"  # k-fold cross-validation: which fold validates (not part of the config)
OVERRIDES = "trainlab.overrides"  # the configuration: dotted key -> config value (no seed)
RUN_NAME = "trainlab.run_name"  # run folder name inside <runs>/<study>/
RETRY_OF = "trainlab.retry_of"  # number of the lost attempt this trial continues
STATUS = "trainlab.status"
REASON = "trainlab.reason"
RUN_DIR = "trainlab.run_dir"
HOST = "trainlab.host"
BEST_EPOCH = "trainlab.best_epoch"
EPOCHS_RUN = "trainlab.epochs_run"
SECONDS = "trainlab.seconds"
RESUMED_FROM = "trainlab.resumed_from_epoch"
HISTORY = "trainlab.history"
# Trial system attributes (bookkeeping)
WORKER = "trainlab:worker"
HEARTBEAT = "trainlab:heartbeat"

# A run that failed because its worker went away (killed, machine lost, Ctrl-C) is run again
# (resumed from its folder); one that failed on its own (an error, divergence) would fail again.
RETRYABLE = ("lost", "interrupted")


def is_resumable(state: str, status: str | None) -> bool:
    """A failed run (Optuna state name ``FAIL``) that the same command runs again: its worker
    went away; the run itself did not fail. Counted as unfinished, never as failed."""
    return state == "FAIL" and status in RETRYABLE


# Keys that say where and how a run executes, not what it computes: free to differ between
# the workers of one study.
RUNTIME_KEYS = ("device", "progress", "out", "data.root", "data.download")

SAMPLERS = ("tpe", "random", "gp", "qmc", "cmaes")
PRUNERS = ("median", "halving", "hyperband", "none")


def quiet_optuna() -> None:
    """trainlab prints one line per run; Optuna's own INFO lines would repeat them."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)


def direction_of(metric: str) -> Literal["minimize", "maximize"]:
    return "minimize" if metric.endswith("loss") else "maximize"


def check_metric(metric: str) -> str:
    """The objective is a validation metric: the test split never chooses anything."""
    valid = MonitorName.__args__  # type: ignore[attr-defined]
    if metric in valid:
        return metric
    if metric.startswith("test."):
        raise StudyError(
            f"--metric {metric}: studies select on the validation split only (the test split is "
            f"for the final report); use {metric.replace('test.', 'val.', 1)}"
        )
    raise StudyError(
        f"unknown metric {metric!r}{did_you_mean(metric, valid)}; use one of {', '.join(valid)}"
    )


def _strip_runtime(tree: dict[str, Any]) -> dict[str, Any]:
    tree = json.loads(json.dumps(tree))
    for dotted in RUNTIME_KEYS:
        *parents, leaf = dotted.split(".")
        node = tree
        for part in parents:
            node = node.get(part, {})
        node.pop(leaf, None)
    return tree


@dataclass
class StudySpec:
    """What a study is: kept in the store as one study attribute."""

    name: str
    kind: Literal["sweep", "tune"]
    base: dict[str, Any]  # base TrainConfig as plain JSON (runtime keys removed)
    metric: str
    axes: list[Axis] = field(default_factory=list)  # sweep: grid axes; tune: the search space
    sampled: list[Axis] = field(default_factory=list)  # sweep: randomly sampled axes
    samples: int = 1  # sweep: random draws of the sampled axes
    repeats: int = 1  # sweep: seeds per configuration
    cv: int = 0  # sweep: k-fold cross-validation, K runs per configuration and seed (0 = off)
    seed: int = 0  # draws of a random sweep, sampler seed of a search
    trials: int = 0  # tune: total trials
    sampler: str = "tpe"
    pruner: str = "none"

    @property
    def direction(self) -> Literal["minimize", "maximize"]:
        return direction_of(self.metric)

    def all_axes(self) -> list[Axis]:
        return [*self.axes, *self.sampled]

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "base": self.base, "metric": self.metric,
                "axes": [a.to_dict() for a in self.axes],
                "sampled": [a.to_dict() for a in self.sampled], "samples": self.samples,
                "repeats": self.repeats, "cv": self.cv, "seed": self.seed, "trials": self.trials,
                "sampler": self.sampler, "pruner": self.pruner,
                "trainlab_version": trainlab.__version__}  # fmt: skip

    @classmethod
    def from_json(cls, name: str, data: dict[str, Any]) -> StudySpec:
        return cls(
            name=name,
            kind=data["kind"],
            base=data["base"],
            metric=data["metric"],
            axes=[Axis.from_dict(a) for a in data["axes"]],
            sampled=[Axis.from_dict(a) for a in data.get("sampled", [])],
            samples=data.get("samples", 1),
            repeats=data.get("repeats", 1),
            cv=data.get("cv", 0),
            seed=data.get("seed", 0),
            trials=data.get("trials", 0),
            sampler=data.get("sampler", "tpe"),
            pruner=data.get("pruner", "none"),
        )

    def identity(self) -> dict[str, Any]:
        """What a second command must agree on to join this study (counts may grow). The
        sampler and pruner too: a search re-run without its ``--pruner none`` must not turn
        pruning on for the rest of its trials."""
        data = self.to_json()
        keys = ("kind", "base", "metric", "axes", "sampled", "seed", "cv", "sampler", "pruner")
        identity = {key: data[key] for key in keys}
        with contextlib.suppress(StudyError):  # the same pruner, however spelt: its settings
            identity["pruner"] = list(parse_pruner(self.pruner))
        return identity

    # -- configurations ------------------------------------------------------------------

    def trial_config(
        self,
        overrides: dict[str, Any],
        seed: int,
        runtime: dict[str, Any] | None = None,
        fold: int | None = None,
    ) -> TrainConfig:
        """Base config + this trial's values (+ its cross-validation fold, + this machine's
        runtime keys); the monitor is the study metric, so the epoch kept, the value recorded
        and the objective all mean the same "best"."""
        tree = json.loads(json.dumps(self.base))
        # The folds again after the values: an axis over the whole data section drops them.
        fold_key = {} if fold is None else {"data.folds": self.cv, "data.fold": fold}
        for key, value in {**overrides, **fold_key, **(runtime or {})}.items():
            set_dotted(tree, key, value)
        drop_alternatives(tree, set(overrides))  # a train_fraction axis over a base's train_size
        tree.update(seed=seed, monitor=self.metric, mode="auto", progress=False)
        return build_config(tree)


def base_tree(config: TrainConfig) -> dict[str, Any]:
    """The base config as the study keeps it: without this machine's runtime keys, and with a
    data set given as a path made absolute, so workers started from any folder find it."""
    return with_absolute_dataset(_strip_runtime(config.model_dump(mode="json")))


def with_absolute_dataset(tree: dict[str, Any]) -> dict[str, Any]:
    """``tree`` (a base config) with a data set given as a relative path made absolute, from
    this folder (also for a study stored before bases kept it absolute)."""
    from trainlab.data.registry import is_registered  # torch: only where a study is planned

    dataset = (tree.get("data") or {}).get("dataset")
    if isinstance(dataset, str) and not is_registered(dataset):
        tree["data"]["dataset"] = str(Path(dataset).expanduser().resolve())
    return tree


# -- the sweep plan --------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanEntry:
    key: str
    params: dict[str, Any]  # Optuna representation (encoded choices stay JSON text)
    overrides: dict[str, Any]  # config values
    repeat: int
    seed: int
    fold: int | None = None  # with cross-validation: the validation fold


def entry_key(params: dict[str, Any], repeat: int, fold: int | None = None) -> str:
    identity: dict[str, Any] = {"params": params, "repeat": repeat}
    if fold is not None:  # absent without cross-validation: older studies keep their keys
        identity["fold"] = fold
    text = json.dumps(identity, sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def sweep_plan(spec: StudySpec) -> list[PlanEntry]:
    """Every (configuration, repeat[, fold]) of a sweep, repeat-major: the first full table of
    all configurations arrives before the second seed (or fold) of any of them. With ``cv`` K,
    each seed runs once per fold; the folds of one seed share that seed."""
    grid_choices = [axis.distribution.choices for axis in spec.axes]
    grid_points = [dict(zip([a.key for a in spec.axes], point, strict=True))
                   for point in itertools.product(*grid_choices)]  # fmt: skip
    sample_points: list[dict[str, Any]] = [{}]
    if spec.sampled:
        sample_points = distinct_draws(spec.sampled, spec.samples, spec.seed)
    axes = {axis.key: axis for axis in spec.all_axes()}
    base_seed = spec.seed  # the first seed; repeats count up from it
    entries = []
    folds: list[int | None] = list(range(spec.cv)) if spec.cv else [None]
    for repeat, fold in itertools.product(range(spec.repeats), folds):
        for grid_point in grid_points:
            for sample_point in sample_points:
                params = {**grid_point, **sample_point}
                overrides = {key: axes[key].to_config(value) for key, value in params.items()}
                entries.append(PlanEntry(entry_key(params, repeat, fold), params, overrides,
                                         repeat, base_seed + repeat, fold))  # fmt: skip
    return entries


def distinct_draws(axes: list[Axis], count: int, seed: int) -> list[dict[str, Any]]:
    """``count`` different random points of ``axes``, drawn in sequence from ``seed``.

    A point drawn twice is skipped: two copies of one point would share their seed, and a table
    would count them as two runs of one configuration (n=2, std 0). Skipping keeps the sequence,
    so a study asked for more samples later keeps the points it has. A space with fewer points
    than asked for (``int:16:17`` has two) gives fewer: ``plan_sweep`` refuses to plan such a
    study, and one stored by an older trainlab still opens, with its distinct points.
    """
    rng = np.random.default_rng(seed)
    points: list[dict[str, Any]] = []
    seen: set[str] = set()
    budget = 1000 + 100 * count  # draws; finding the last of k values takes about k·ln k
    for _ in range(budget):
        if len(points) == count:
            break
        point = {axis.key: draw(axis, rng) for axis in axes}
        text = json.dumps(point, sort_keys=True)
        if text not in seen:
            seen.add(text)
            points.append(point)
    return points


def check_samples(spec: StudySpec) -> None:
    """A new random sweep must get the distinct points it asks for."""
    if not spec.sampled:
        return
    found = len(distinct_draws(spec.sampled, spec.samples, spec.seed))
    if found < spec.samples:
        keys = ", ".join(axis.key for axis in spec.sampled)
        raise StudyError(
            f"--samples {spec.samples}: random draws of {keys} gave only {found} different "
            f"point(s); ask for at most {found} samples, or list the values with --grid"
        )


def validate_plan(spec: StudySpec, entries: list[PlanEntry]) -> None:
    """Build every configuration before running any: a typo fails now, not after an hour
    (a misspelt model option, too, which would otherwise fail each run as it builds its model)."""
    from trainlab.models import check_model

    seen: set[str] = set()
    for entry in entries:
        text = json.dumps(entry.overrides, sort_keys=True)
        if text in seen:
            continue
        seen.add(text)
        try:
            config = spec.trial_config(entry.overrides, entry.seed, fold=entry.fold)
            check_model(config.model.name, config.model.options)
            check_dataset(config.data.dataset)
            # Varied where the optimizer ignores it: identical runs ranked as configurations.
            varied = [key for key in config.optim.ignored() if f"optim.{key}" in entry.overrides]
            if varied:
                raise ConfigError(ignored_setting(varied[0], config.optim.name))
        except trainlab.TrainlabError as error:
            where = ", ".join(f"{k}={v}" for k, v in entry.overrides.items()) or "base config"
            lines = str(error).removeprefix("invalid configuration:").strip().splitlines()
            reason = "; ".join(line.strip() for line in lines)
            raise StudyError(f"configuration {where} is invalid: {reason}") from None


def check_dataset(name: str) -> None:
    """A registered name or an existing path: a typo must not fail every run one by one."""
    from pathlib import Path

    from trainlab.data.registry import available_names, is_registered

    if is_registered(name) or Path(name).expanduser().exists():
        return
    raise StudyError(f"unknown dataset {name!r}{did_you_mean(name, available_names())}; "
                     f"registered: {', '.join(available_names())}, or give an .npz file or image "
                     "folder")  # fmt: skip


# -- creating and joining --------------------------------------------------------------------


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        found = []
        for key in sorted(set(old) | set(new)):
            found += _differences(old.get(key), new.get(key), f"{prefix}{key}.")
        return found
    return [] if old == new else [prefix.rstrip(".")]


def create_or_join(store: Store, spec: StudySpec) -> Any:
    """Create the study, or join it when it exists with the same definition."""
    import optuna

    with store.lock(spec.name):
        try:
            study = optuna.load_study(study_name=spec.name, storage=store.storage)
        except KeyError:
            study = optuna.create_study(
                study_name=spec.name, storage=store.storage, direction=spec.direction
            )
            study.set_user_attr(SPEC_ATTR, spec.to_json())
            return study
        existing = study.user_attrs.get(SPEC_ATTR)
        if existing is None and not study.get_trials(deepcopy=False):
            # Our own creation, killed before it saved its definition: finish it.
            study.set_user_attr(SPEC_ATTR, spec.to_json())
            return study
        if existing is None:
            raise _not_ours(spec, store)
        grown = joined_spec(existing, spec)
        if grown.to_json() != existing:
            study.set_user_attr(SPEC_ATTR, grown.to_json())
        return study


def _not_ours(spec: StudySpec, store: Store) -> StudyError:
    return StudyError(f"study {spec.name!r} in {store.display_url} was not made by trainlab; "
                      "choose another --study name")  # fmt: skip


def joined_spec(existing: str, spec: StudySpec) -> StudySpec:
    """The definition a stored study (``existing``, its JSON) has once ``spec`` joins it: the
    same study may ask for more seeds, samples or trials; any other difference is refused."""
    old = StudySpec.from_json(spec.name, existing)
    old.base = with_absolute_dataset(old.base)  # stored relative by an earlier trainlab
    differs = _differences(old.identity(), spec.identity())
    if differs:
        shown = ", ".join(d.replace("base.", "") for d in differs[:6])
        raise StudyError(
            f"study {spec.name!r} already exists with a different definition "
            f"(differs in: {shown}); re-run it with the same settings, or choose a new --study"
        )
    # The stored base stays as it was (relative, for a study that old): it is part of every
    # run's identity, so a run it started is still recognised as its own.
    grown = StudySpec.from_json(spec.name, existing)
    grown.repeats, grown.samples = max(old.repeats, spec.repeats), max(old.samples, spec.samples)
    grown.trials = max(old.trials, spec.trials)
    return grown


def preview_join(store: Store, spec: StudySpec) -> tuple[StudySpec, int] | None:
    """What ``create_or_join`` would make of ``spec``, changing nothing: None for a new study,
    else the joined definition and how many of its runs have completed. Refuses what it would."""
    import optuna

    try:
        study = optuna.load_study(study_name=spec.name, storage=store.storage)
    except KeyError:
        return None
    existing = study.user_attrs.get(SPEC_ATTR)
    trials = study.get_trials(deepcopy=False)
    if existing is None and not trials:
        return None  # left by a killed creation: the real command takes it over
    if existing is None:
        raise _not_ours(spec, store)
    completed = sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    return joined_spec(existing, spec), completed


def load_spec(study: Any) -> StudySpec:
    data = study.user_attrs.get(SPEC_ATTR)
    if data is None:
        raise StudyError(f"study {study.study_name!r} was not made by trainlab")
    return StudySpec.from_json(study.study_name, data)


def open_study(store: Store, name: str, *, worker_index: int = 0) -> tuple[Any, StudySpec]:
    """Load a study with the sampler and pruner its definition names."""
    import optuna

    try:
        summary_names = optuna.get_all_study_names(storage=store.storage)
    except optuna.exceptions.StorageInternalError as error:
        raise StudyError(f"cannot read {store.display_url}: {error.__cause__ or error}") from None
    if name not in summary_names:
        known = ", ".join(sorted(summary_names)) or "none yet"
        raise StudyError(f"no study {name!r} in {store.display_url}; studies: {known}")
    study = optuna.load_study(study_name=name, storage=store.storage)
    spec = load_spec(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature notices are not for users
        # A search reseeds per trial number (worker.execute); this one only starts the study.
        study.sampler = make_sampler(spec, worker_index)
        study.pruner = make_pruner(spec)
    return study, spec


def make_sampler(spec: StudySpec, stream: int = 0) -> Any:
    import optuna

    if spec.kind == "sweep":
        return optuna.samplers.RandomSampler(seed=spec.seed)  # unused: every trial is planned
    # Each worker its own stream, or two workers starting together would propose the same point.
    seed = (spec.seed + 7919 * stream) % 2**32
    name = spec.sampler
    if name == "tpe":
        # constant_liar: running trials count as bad guesses, so parallel workers spread out.
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    needs = {"gp": ("scipy",), "qmc": ("scipy",), "cmaes": ("cmaes",)}
    missing = [m for m in needs.get(name, ()) if not _importable(m)]
    if missing:
        raise StudyError(f"sampler {name!r} needs {', '.join(missing)}: pip install {missing[0]}")
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    if name == "qmc":
        return optuna.samplers.QMCSampler(seed=seed)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed)
    raise StudyError(
        f"unknown sampler {name!r}{did_you_mean(name, SAMPLERS)}; use one of {', '.join(SAMPLERS)}"
    )


# Each pruner's options as written after its name (``median:warmup=4,startup=10``): default
# (None: Optuna's own) and the smallest sensible value. Median: five full trials before judging,
# and no trial judged in its first two epochs (early epochs of a good configuration are often
# worse than a fast-starting bad one).
PRUNER_OPTIONS: dict[str, dict[str, tuple[int | None, int]]] = {
    "median": {"startup": (5, 0), "warmup": (2, 0)},
    "halving": {"min_epochs": (None, 1), "reduction": (None, 2)},
    "hyperband": {"min_epochs": (1, 1), "reduction": (None, 2)},
    "none": {},
}


def parse_pruner(text: str) -> tuple[str, dict[str, int]]:
    """``"median:warmup=4,startup=10"`` -> ``("median", {"startup": 10, "warmup": 4})``: the
    options given, over trainlab's defaults (an option left to Optuna's default is absent).
    Anything else is a clear :class:`StudyError`."""
    name, _, rest = text.strip().partition(":")
    name = name.strip().lower()
    if name not in PRUNER_OPTIONS:
        raise StudyError(
            f"unknown pruner {name!r}{did_you_mean(name, PRUNERS)}; use one of {', '.join(PRUNERS)}"
        )
    allowed = PRUNER_OPTIONS[name]
    given: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in rest.split(","))):
        key, sep, value = (piece.strip() for piece in item.partition("="))
        if key not in allowed:
            known = ", ".join(allowed) or "none"
            raise StudyError(f"pruner {name} has no option {key!r}; its options: {known}")
        if key in given:
            raise StudyError(f"pruner option {key} is given twice in {text!r}")
        default, minimum = allowed[key]
        if not sep or not (value.isascii() and value.isdecimal()) or int(value) < minimum:
            raise StudyError(
                f"pruner option {key} needs a whole number ≥ {minimum}, e.g. {name}:{key}="
                f"{max(minimum, default or 0) + 1}; got {item!r}"
            )
        given[key] = int(value)
    defaults = {key: default for key, (default, _) in allowed.items() if default is not None}
    return name, defaults | given


def make_pruner(spec: StudySpec) -> Any:
    import optuna

    name, options = parse_pruner(spec.pruner) if spec.kind == "tune" else ("none", {})
    if name == "median":
        # Trials report epoch numbers from 1 and Optuna judges from step n_warmup_steps on, so
        # "warmup=W epochs never judged" is n_warmup_steps=W+1.
        return optuna.pruners.MedianPruner(
            n_startup_trials=options["startup"], n_warmup_steps=options["warmup"] + 1
        )
    # Only the options given (or defaulted by trainlab); the rest stay Optuna's.
    rungs = {optuna_key: options[key] for key, optuna_key in
             (("min_epochs", "min_resource"), ("reduction", "reduction_factor"))
             if key in options}  # fmt: skip
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner(**rungs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**rungs)
    return optuna.pruners.NopPruner()


def _importable(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def enqueue_plan(store: Store, study: Any, entries: list[PlanEntry]) -> int:
    """Queue the planned entries that are not in the study yet (call inside the study lock).

    Idempotent: a worker killed half-way through planning leaves a prefix that the next one
    completes; entries are recognised by their key, whatever state their trials are in.
    """
    from optuna.trial import TrialState, create_trial

    present = {t.user_attrs.get(KEY) for t in study.get_trials(deepcopy=False)}
    study_id = store.study_id(study)
    added = 0
    for entry in entries:
        if entry.key in present:
            continue
        present.add(entry.key)  # a plan never lists a key twice; this keeps it so regardless
        template = create_trial(
            state=TrialState.WAITING,
            system_attrs={"fixed_params": entry.params},
            user_attrs={
                KEY: entry.key,
                REPEAT: entry.repeat,
                SEED: entry.seed,
                OVERRIDES: entry.overrides,
                **({} if entry.fold is None else {FOLD: entry.fold}),
            },
        )
        store.storage.create_new_trial(study_id, template_trial=template)
        added += 1
    return added
