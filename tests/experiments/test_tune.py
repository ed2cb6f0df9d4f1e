"""Contract tests of a search (tune), run on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import optuna
import pytest

from trainlab.errors import StudyError
from trainlab.experiments import open_store, study_runs, tune
from trainlab.experiments import study as s
from trainlab.runs.record import read_summary


def run_tune(store_url, tmp_path, base, lines=None, **kwargs):
    lines = [] if lines is None else lines
    kwargs.setdefault("metric", "val.accuracy")
    return tune(
        "search", base, storage=store_url, runs_dir=tmp_path / "runs", echo=lines.append, **kwargs
    )


def test_median_pruning_stops_runs_that_fall_behind(store_url, tmp_path, study_base):
    base = {**study_base, "epochs": 5}
    # Half the space cannot learn in five epochs: those runs fall below the median.
    space = {"optim.lr": [3e-3, 1e-7], "model.options.dropout": "uniform:0:0.2"}
    report = run_tune(store_url, tmp_path, base, space=space, trials=12, sampler="random",
                      pruner="median", seed=1)  # fmt: skip
    rows = study_runs(open_store(store_url), "search")
    assert len(rows) == 12
    pruned = [r for r in rows if r.state == "PRUNED"]
    # Every hopeless run after the pruner's five start-up trials is stopped; a good one may be
    # too, when its seed puts it below the median (each trial has its own seed).
    hopeless = [r for r in rows if r.overrides["optim.lr"] == 1e-7 and r.number >= 5]
    assert hopeless and all(r.state == "PRUNED" for r in hopeless)
    for row in pruned:
        summary = read_summary(row.run_dir)
        assert summary["status"] == "pruned" and summary["epochs_run"] < 5
        assert row.epochs_run == summary["epochs_run"] and row.status == "pruned"
    assert report.best.overrides["optim.lr"] == 3e-3
    study = optuna.load_study(study_name="search", storage=open_store(store_url).storage)
    assert all(len(t.intermediate_values) == t.user_attrs[s.EPOCHS_RUN] for t in study.trials)


def test_the_trial_budget_is_shared_by_invocations(store_url, tmp_path, study_base):
    space = {"optim.lr": "loguniform:1e-4:1e-2"}
    run_tune(store_url, tmp_path, study_base, space=space, trials=3, pruner="none")
    lines: list[str] = []
    report = run_tune(store_url, tmp_path, study_base, lines, space=space, trials=5, pruner="none")
    assert len([line for line in lines if "] #" in line]) == 2
    assert report.info.counts["completed"] == 5 and report.info.planned == 5
    values = {row.overrides["optim.lr"] for row in study_runs(open_store(store_url), "search")}
    assert len(values) == 5  # TPE proposes new points, never a replay


def test_search_mistakes_fail_before_any_run(tmp_path, study_base):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    with pytest.raises(StudyError, match="unknown sampler"):
        run_tune(url, tmp_path, study_base, space={"optim.lr": [1e-3]}, sampler="annealing")
    with pytest.raises(StudyError, match="unknown pruner"):
        run_tune(url, tmp_path, study_base, space={"optim.lr": [1e-3]}, pruner="asha")
    with pytest.raises(StudyError, match="invalid"):
        run_tune(url, tmp_path, study_base, space={"optim.name": ["adam", "lion"]})
    with pytest.raises(StudyError, match="validation split only"):
        run_tune(url, tmp_path, study_base, space={"optim.lr": [1e-3]}, metric="test.accuracy")
    with pytest.raises(StudyError, match="empty"):
        run_tune(url, tmp_path, study_base, space={})
    assert not (tmp_path / "runs").exists()


def test_every_choice_of_the_space_is_checked_up_front(tmp_path, study_base):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    for order in (["adam", "sgd", "rmsprop", "adamw", "lion"], ["lion", "adam", "sgd"]):
        with pytest.raises(StudyError, match="lion"):
            run_tune(url, tmp_path, study_base, space={"optim.name": order})


def test_a_point_proposed_twice_is_a_second_seed_not_a_copy(tmp_path, study_base):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    base = {**study_base, "seed": 7}
    report = run_tune(url, tmp_path, base, space={"optim.lr": [1e-3]}, trials=3, pruner="none")
    from trainlab.runs.record import read_run_config

    rows = study_runs(open_store(url), "search")
    assert sorted(read_run_config(r.run_dir).seed for r in rows) == [7, 8, 9]
    (only,) = report.ranked
    assert only.n == 3 and only.std > 0  # three real repeats, not one run counted thrice


def test_each_trial_number_has_its_own_sampler_stream(tmp_path, study_base):
    # Two machines starting together must not propose the same first points.
    from trainlab.experiments.study import make_sampler

    spec = s.StudySpec(name="x", kind="tune", base={}, metric="val.loss", sampler="random")
    seeds = {make_sampler(spec, stream=n)._rng.rng.random() for n in range(4)}
    assert len(seeds) == 4
