from __future__ import annotations

import pytest

from trainlab.config import build_config
from trainlab.errors import StudyError
from trainlab.experiments import study as s
from trainlab.experiments.space import categorical, parse_distribution
from trainlab.experiments.store import open_store


def spec_of(base: dict, **fields) -> s.StudySpec:
    fields.setdefault("kind", "sweep")
    return s.StudySpec(name="demo", base=s.base_tree(build_config(base)), metric="val.accuracy",
                       **fields)  # fmt: skip


def test_plan_is_the_full_grid_times_repeats_repeat_major(study_base):
    spec = spec_of(study_base, axes=[categorical("optim.lr", [1e-3, 1e-4]),
                                     categorical("data.batch_size", [8, 16, 32])], repeats=3)  # fmt: skip
    plan = s.sweep_plan(spec)
    assert len(plan) == 2 * 3 * 3
    assert len({entry.key for entry in plan}) == len(plan)
    # every configuration once before any second seed
    assert [entry.repeat for entry in plan] == [0] * 6 + [1] * 6 + [2] * 6
    assert [entry.seed for entry in plan[:6]] == [0] * 6 and plan[6].seed == 1
    assert plan[0].overrides == {"optim.lr": 1e-3, "data.batch_size": 8}
    assert s.sweep_plan(spec) == plan  # deterministic: the same command plans the same keys


def test_random_samples_are_drawn_once_from_the_seed(study_base):
    axis = parse_distribution("optim.lr", "loguniform:1e-5:1e-2")
    ten = s.sweep_plan(spec_of(study_base, sampled=[axis], samples=10, seed=3))
    twenty = s.sweep_plan(spec_of(study_base, sampled=[axis], samples=20, seed=3))
    assert [e.key for e in twenty[:10]] == [e.key for e in ten]  # more samples extend the plan
    assert len({e.params["optim.lr"] for e in ten}) == 10
    other_seed = s.sweep_plan(spec_of(study_base, sampled=[axis], samples=10, seed=4))
    assert other_seed[0].params != ten[0].params


def test_a_point_drawn_twice_is_planned_once(study_base):
    # Two values only: copies of a point would share seed 0 and pass for two runs (n=2, std 0).
    axis = parse_distribution("data.batch_size", "int:16:17")
    plan = s.sweep_plan(spec_of(study_base, sampled=[axis], samples=2, seed=3))
    assert sorted(e.params["data.batch_size"] for e in plan) == [16, 17]
    assert len({e.key for e in plan}) == 2
    choice = parse_distribution("optim.name", "choice:adam,sgd,rmsprop,adagrad")
    three = s.sweep_plan(spec_of(study_base, sampled=[choice], samples=3, seed=5))
    four = s.sweep_plan(spec_of(study_base, sampled=[choice], samples=4, seed=5))
    assert [e.key for e in four[:3]] == [e.key for e in three]  # skipping keeps the sequence
    # A new study asking for more points than the space has is refused; one stored by an older
    # trainlab (which drew copies) still opens with its distinct points.
    too_many = spec_of(study_base, sampled=[axis], samples=3)
    with pytest.raises(
        StudyError, match=r"--samples 3: .*only 2 different point\(s\); ask for at most 2"
    ):
        s.check_samples(too_many)
    assert len(s.sweep_plan(too_many)) == 2


def test_grid_and_samples_combine(study_base):
    spec = spec_of(study_base, axes=[categorical("optim.name", ["adam", "sgd"])],
                   sampled=[parse_distribution("optim.lr", "uniform:0.01:0.1")], samples=3,
                   repeats=2)  # fmt: skip
    assert len(s.sweep_plan(spec)) == 2 * 3 * 2


def test_trial_config_uses_the_study_metric_as_monitor(study_base):
    spec = spec_of(study_base, axes=[categorical("optim.lr", [0.01])])
    config = spec.trial_config({"optim.lr": 0.01}, seed=7, runtime={"device": "cpu"})
    assert (config.optim.lr, config.seed, config.monitor, config.device) == (
        0.01,
        7,
        "val.accuracy",
        "cpu",
    )
    assert config.progress is False


def test_a_train_fraction_axis_replaces_the_base_train_size(study_base):
    """A data-scaling grid over a base config with train_size: 300 (the GRU study's shape)."""
    spec = spec_of(study_base, axes=[categorical("data.train_fraction", [0.5, 1.0])])
    config = spec.trial_config({"data.train_fraction": 0.5}, seed=0)
    assert config.data.train_fraction == 0.5 and config.data.train_size is None
    assert config.data.val_size == 100  # not an alternative of what the axis sets: kept


def test_runtime_keys_are_not_part_of_a_study(study_base):
    here = s.base_tree(
        build_config({**study_base, "device": "cpu", "data": {**study_base["data"], "root": "/a"}})
    )
    there = s.base_tree(
        build_config({**study_base, "device": "cuda", "data": {**study_base["data"], "root": "/b"}})
    )
    assert here == there


def test_metrics_are_validation_metrics():
    assert s.check_metric("val.balanced_accuracy") == "val.balanced_accuracy"
    with pytest.raises(StudyError, match=r"validation split only.*val.accuracy"):
        s.check_metric("test.accuracy")
    with pytest.raises(StudyError, match="unknown metric"):
        s.check_metric("accuracy")
    with pytest.raises(StudyError, match=r"unknown metric 'val.acc' \(did you mean 'val.accuracy'"):
        s.check_metric("val.acc")
    assert s.direction_of("val.loss") == "minimize" and s.direction_of("val.macro_f1") == "maximize"


def test_invalid_configurations_fail_before_anything_runs(study_base):
    spec = spec_of(study_base, axes=[categorical("optim.name", ["adam", "adamm"])])
    with pytest.raises(StudyError, match=r"optim.name=adamm is invalid"):
        s.validate_plan(spec, s.sweep_plan(spec))
    spec = spec_of(study_base, axes=[categorical("model.name", ["mlp", "vgg19"])])
    with pytest.raises(StudyError, match="vgg19"):
        s.validate_plan(spec, s.sweep_plan(spec))
    # A misspelt model option would otherwise fail each run when it builds its model.
    spec = spec_of(study_base, axes=[categorical("model.options.hiden", [32, 64])])
    with pytest.raises(StudyError, match=r"hiden=32 is invalid: unknown option 'hiden' for model "
                                         r"'mlp' \(did you mean 'hidden'\?\); valid options: hidden"):  # fmt: skip
        s.validate_plan(spec, s.sweep_plan(spec))
    # ... but options given as one nested mapping are merged, as create_model does.
    spec = spec_of(study_base, axes=[categorical("model.options.options", [{"hidden": [8]}])])
    s.validate_plan(spec, s.sweep_plan(spec))
    spec = spec_of(study_base, axes=[categorical("model.name", ["hf"])])  # names no model id
    with pytest.raises(StudyError, match=r"model\.name=hf is invalid: model 'hf' needs a"):
        s.validate_plan(spec, s.sweep_plan(spec))


def test_joining_a_study_needs_the_same_definition(tmp_path, study_base):
    store = open_store(f"sqlite:///{tmp_path / 'studies.db'}")
    spec = spec_of(study_base, axes=[categorical("optim.lr", [1e-3, 1e-4])], repeats=2)
    s.create_or_join(store, spec)
    same_more_repeats = spec_of(study_base, axes=[categorical("optim.lr", [1e-3, 1e-4])], repeats=3)
    study = s.create_or_join(store, same_more_repeats)
    assert s.load_spec(study).repeats == 3
    other_grid = spec_of(study_base, axes=[categorical("optim.lr", [1e-2])])
    with pytest.raises(StudyError, match=r"different definition.*axes"):
        s.create_or_join(store, other_grid)
    other_base = spec_of({**study_base, "epochs": 5}, axes=[categorical("optim.lr", [1e-3, 1e-4])])
    with pytest.raises(StudyError, match="differs in: epochs"):
        s.create_or_join(store, other_base)


def test_the_same_pruner_spelt_another_way_joins(tmp_path, study_base):
    store = open_store(f"sqlite:///{tmp_path / 'studies.db'}")
    search = dict(kind="tune", axes=[categorical("optim.lr", [1e-3, 1e-4])], trials=4)
    s.create_or_join(store, spec_of(study_base, **search, pruner="median:startup=5,warmup=2"))
    same = spec_of(study_base, **search, pruner="median:warmup=2,startup=5")
    assert s.load_spec(s.create_or_join(store, same)).pruner == "median:startup=5,warmup=2"
    with pytest.raises(StudyError, match=r"differs in: pruner"):
        s.create_or_join(store, spec_of(study_base, **search, pruner="median:warmup=3"))


def test_a_search_joined_without_its_pruner_is_refused(tmp_path, study_base):
    # The CLI's default pruner is median: re-running a `--pruner none` search without the flag
    # must not turn pruning on for its remaining trials.
    store = open_store(f"sqlite:///{tmp_path / 'studies.db'}")
    search = dict(kind="tune", axes=[categorical("optim.lr", [1e-3, 1e-4])], trials=4)
    s.create_or_join(store, spec_of(study_base, **search, sampler="random", pruner="none"))
    for key, value in (("sampler", "tpe"), ("pruner", "median")):
        changed = {"sampler": "random", "pruner": "none", key: value}
        with pytest.raises(StudyError, match=rf"differs in: {key}\)"):
            s.create_or_join(store, spec_of(study_base, **{**search, "trials": 8}, **changed))
    joined = s.create_or_join(store, spec_of(study_base, **{**search, "trials": 8},
                                             sampler="random", pruner=" None "))  # fmt: skip
    stored = s.load_spec(joined)
    assert (stored.trials, stored.sampler, stored.pruner) == (8, "random", "none")


def test_planning_is_idempotent(tmp_path, study_base):
    store = open_store(f"sqlite:///{tmp_path / 'studies.db'}")
    spec = spec_of(study_base, axes=[categorical("optim.lr", [1e-3, 1e-4])], repeats=2)
    study = s.create_or_join(store, spec)
    plan = s.sweep_plan(spec)
    assert s.enqueue_plan(store, study, plan[:1]) == 1  # a planner killed after one entry
    assert s.enqueue_plan(store, study, plan) == 3
    assert s.enqueue_plan(store, study, plan) == 0
    trials = study.get_trials()
    assert sorted(t.user_attrs[s.KEY] for t in trials) == sorted(e.key for e in plan)
    assert all(t.state.name == "WAITING" for t in trials)


def test_unknown_study_lists_the_known_ones(tmp_path, study_base):
    store = open_store(f"sqlite:///{tmp_path / 'studies.db'}")
    s.create_or_join(store, spec_of(study_base))
    with pytest.raises(StudyError, match=r"no study 'nope'.*studies: demo"):
        s.open_study(store, "nope")


def test_samplers_and_pruners_by_name(study_base):
    import optuna

    spec = spec_of(study_base)
    spec.kind = "tune"
    for name, cls in [
        ("tpe", optuna.samplers.TPESampler),
        ("random", optuna.samplers.RandomSampler),
    ]:
        spec.sampler = name
        assert isinstance(s.make_sampler(spec), cls)
    spec.sampler = "annealing"
    with pytest.raises(StudyError, match=r"unknown sampler.*tpe"):
        s.make_sampler(spec)
    for name, cls in [("median", optuna.pruners.MedianPruner),
                      ("halving", optuna.pruners.SuccessiveHalvingPruner),
                      ("hyperband", optuna.pruners.HyperbandPruner),
                      ("none", optuna.pruners.NopPruner)]:  # fmt: skip
        spec.pruner = name
        assert isinstance(s.make_pruner(spec), cls)
    spec.pruner = "asha"
    with pytest.raises(StudyError, match="unknown pruner"):
        s.make_pruner(spec)
    spec.pruner = "medain"
    with pytest.raises(StudyError, match=r"unknown pruner 'medain' \(did you mean 'median'\?\)"):
        s.make_pruner(spec)


def test_pruner_options_reach_optuna_and_mistakes_are_explained(study_base):
    spec = spec_of(study_base)
    spec.kind = "tune"
    spec.pruner = "median:warmup=5, startup=10"
    median = s.make_pruner(spec)
    assert (median._n_warmup_steps, median._n_startup_trials) == (6, 10)  # epochs count from 1
    spec.pruner = "halving:min_epochs=3,reduction=2"
    halving = s.make_pruner(spec)
    assert (halving._min_resource, halving._reduction_factor) == (3, 2)
    spec.pruner = "halving"  # bare: Optuna's own defaults, as before options existed
    halving = s.make_pruner(spec)
    assert (halving._min_resource, halving._reduction_factor) == (None, 4)  # None: "auto"
    assert s.parse_pruner("Hyperband") == ("hyperband", {"min_epochs": 1})
    assert s.parse_pruner("median") == ("median", {"startup": 5, "warmup": 2})
    for text, message in [
        ("median:patience=3", r"pruner median has no option 'patience'; its options: startup, warmup"),
        ("median:warmup=-1", r"warmup needs a whole number ≥ 0, e.g. median:warmup=3; got 'warmup=-1'"),
        ("median:warmup=²", r"warmup needs a whole number"),
        ("median:warmup", r"warmup needs a whole number"),
        ("median:startup=1,startup=9", r"startup is given twice"),
        ("halving:reduction=1", r"reduction needs a whole number ≥ 2, e.g. halving:reduction=3"),
        ("none:startup=1", r"pruner none has no option 'startup'; its options: none"),
    ]:  # fmt: skip
        with pytest.raises(StudyError, match=message):
            s.parse_pruner(text)
    spec.kind = "sweep"  # a sweep never prunes, whatever the spec says
    assert s.make_pruner(spec).__class__.__name__ == "NopPruner"


@pytest.mark.parametrize("warmup", [0, 2])
def test_median_warmup_is_the_number_of_epochs_never_judged(study_base, warmup):
    import optuna

    spec = spec_of(study_base)
    spec.kind, spec.pruner = "tune", f"median:startup=2,warmup={warmup}"
    study = optuna.create_study(direction="maximize", pruner=s.make_pruner(spec))
    for _ in range(2):  # two strong finished trials make the median
        strong = study.ask()
        for epoch in (1, 2, 3, 4):  # trials report epochs numbered from 1, as the engine does
            strong.report(0.9, epoch)
        study.tell(strong, 0.9)
    weak = study.ask()
    judged = []
    for epoch in (1, 2, 3, 4):
        weak.report(0.1, epoch)
        judged.append(weak.should_prune())
    assert judged == [epoch > warmup for epoch in (1, 2, 3, 4)]
