"""Contract tests of a sweep, run on SQLite and on a real PostgreSQL server."""

from __future__ import annotations

import json
import math

import optuna
import pytest

from trainlab.errors import StudyError
from trainlab.experiments import open_store, rank_configurations, study_runs, sweep
from trainlab.experiments import study as s
from trainlab.runs.checkpoint import load_checkpoint
from trainlab.runs.record import read_history, read_summary


def run_sweep(store_url, tmp_path, base, lines=None, **kwargs):
    lines = [] if lines is None else lines
    return sweep(
        "grid", base, storage=store_url, runs_dir=tmp_path / "runs", echo=lines.append, **kwargs
    )


def test_a_grid_with_repeats_runs_every_run_once_and_ranks_by_mean(store_url, tmp_path, study_base):
    lines: list[str] = []
    grid = {"optim.lr": [3e-3, 3e-5]}
    report = run_sweep(
        store_url, tmp_path, study_base, lines, grid=grid, repeats=2, metric="val.accuracy"
    )
    assert report.info.counts["completed"] == 4 and report.info.planned == 4
    best, worst = report.ranked
    assert best.overrides == {"optim.lr": 3e-3} and best.n == 2 and worst.n == 2
    assert best.mean > worst.mean  # 3e-5 barely moves in two epochs
    assert best.std is not None and best.mean == pytest.approx(sum(best.values) / 2)
    rows = study_runs(open_store(store_url), "grid")
    assert sorted((r.overrides["optim.lr"], r.seed) for r in rows) == [
        (3e-5, 0),
        (3e-5, 1),
        (3e-3, 0),
        (3e-3, 1),
    ]
    assert all(
        (tmp_path / "runs" / "grid" / f"trial-{r.number:04d}" / "summary.json").is_file()
        for r in rows
    )

    # The same command again: nothing runs twice.
    again: list[str] = []
    report = run_sweep(
        store_url, tmp_path, study_base, again, grid=grid, repeats=2, metric="val.accuracy"
    )
    assert not [line for line in again if "] #" in line]
    assert "0 newly planned" in again[0] and report.info.counts["completed"] == 4
    # More seeds later: only the new ones run.
    more: list[str] = []
    run_sweep(store_url, tmp_path, study_base, more, grid=grid, repeats=3, metric="val.accuracy")
    assert len([line for line in more if "] #" in line]) == 2


def test_best_means_the_best_validation_epoch_everywhere(store_url, tmp_path, study_base):
    base = {**study_base, "epochs": 4}
    run_sweep(store_url, tmp_path, base, grid={"optim.lr": [0.05]}, metric="val.loss")
    study = optuna.load_study(study_name="grid", storage=open_store(store_url).storage)
    (trial,) = study.trials
    run_dir = trial.user_attrs[s.RUN_DIR]
    summary, history = read_summary(run_dir), read_history(run_dir)
    best_epoch = summary["best_epoch"]
    best_row = history[best_epoch - 1]
    assert best_row["val_loss"] == min(row["val_loss"] for row in history)
    # objective given to Optuna == value recorded == the epoch's history row == checkpoint
    assert (
        trial.value == pytest.approx(summary["best_value"]) == pytest.approx(best_row["val_loss"])
    )
    assert trial.intermediate_values[best_epoch] == pytest.approx(best_row["val_loss"])
    assert sorted(trial.intermediate_values) == [row["epoch"] for row in history]
    assert trial.user_attrs["val.loss"] == pytest.approx(best_row["val_loss"])
    metadata = load_checkpoint(f"{run_dir}/checkpoint").metadata
    assert metadata["epoch"] == best_epoch and metadata["value"] == pytest.approx(trial.value)
    assert trial.user_attrs[s.BEST_EPOCH] == best_epoch
    assert len(trial.user_attrs[s.HISTORY]) == len(history)


def test_errors_and_divergence_are_recorded_and_the_study_goes_on(store_url, tmp_path, study_base):
    lines: list[str] = []
    grid = {"model.options.hidden": [[16], [-5]], "optim.lr": [1e-3, 1e12]}
    report = run_sweep(
        store_url, tmp_path, {**study_base, "optim": {"name": "sgd"}}, lines, grid=grid
    )
    rows = {(json.dumps(r.overrides["model.options.hidden"]), r.overrides["optim.lr"]): r
            for r in study_runs(open_store(store_url), "grid")}  # fmt: skip
    assert rows[("[16]", 1e-3)].state == "COMPLETE"
    diverged = rows[("[16]", 1e12)]
    assert (diverged.state, diverged.status) == (
        "FAIL",
        "diverged",
    ) and "loss became" in diverged.reason
    broken = rows[("[-5]", 1e-3)]
    assert (broken.state, broken.status) == ("FAIL", "error")
    assert "hidden" in broken.reason and (tmp_path / "runs" / "grid").is_dir()
    assert report.info.counts == {"completed": 1, "pruned": 0, "running": 0, "waiting": 0,
                                  "interrupted": 0, "failed": 3, "retried": 0}  # fmt: skip
    assert len([line for line in lines if "] #" in line]) == 4
    # failed runs are not run again by the same command: they would fail again
    again: list[str] = []
    run_sweep(store_url, tmp_path, {**study_base, "optim": {"name": "sgd"}}, again, grid=grid)
    assert not [line for line in again if "] #" in line]
    # the two errors may be passing trouble; the divergence is the run's own result
    assert "2 run(s) that ended with an error not run again (--retry-failed runs them)" in again[0]
    retried: list[str] = []
    report = run_sweep(store_url, tmp_path, {**study_base, "optim": {"name": "sgd"}}, retried,
                       grid=grid, retry_failed=True)  # fmt: skip
    assert "2 run(s) that ended with an error queued again" in retried[0]
    assert len([line for line in retried if "] #" in line]) == 2  # the errors, not the divergence
    assert report.info.counts["failed"] == 3 and report.info.counts["retried"] == 2


def test_random_sampling_sweep(store_url, tmp_path, study_base):
    report = run_sweep(store_url, tmp_path, study_base, sample={"optim.lr": "loguniform:1e-4:1e-2"},
                       samples=3, metric="val.accuracy")  # fmt: skip
    assert report.info.counts["completed"] == 3
    values = [g.overrides["optim.lr"] for g in report.ranked]
    assert len(set(values)) == 3 and all(1e-4 <= v <= 1e-2 for v in values)
    study = optuna.load_study(study_name="grid", storage=open_store(store_url).storage)
    assert all(t.distributions["optim.lr"].log for t in study.trials)


def test_mistakes_fail_before_any_run(tmp_path, study_base):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    with pytest.raises(StudyError, match="--repeats"):
        run_sweep(url, tmp_path, study_base, grid={"seed": [1, 2]})
    with pytest.raises(StudyError, match="study name"):
        sweep("../escape", study_base, storage=url, runs_dir=tmp_path)
    with pytest.raises(StudyError, match="twice"):
        run_sweep(
            url, tmp_path, study_base, grid={"optim.lr": [1e-3]}, sample={"optim.lr": "uniform:0:1"}
        )
    with pytest.raises(StudyError, match="invalid"):
        run_sweep(url, tmp_path, study_base, grid={"optim.momentum": ["fast"]})
    assert not (tmp_path / "runs").exists()


def test_the_study_opens_in_optuna_dashboard(store_url, tmp_path, study_base):
    from io import BytesIO
    from wsgiref.util import setup_testing_defaults

    from optuna_dashboard import wsgi

    run_sweep(
        store_url, tmp_path, study_base, grid={"optim.lr": [1e-3, 3e-3]}, metric="val.accuracy"
    )
    app = wsgi(open_store(store_url).storage)

    def get(path: str):
        environ: dict = {"PATH_INFO": path, "REQUEST_METHOD": "GET", "wsgi.input": BytesIO()}
        setup_testing_defaults(environ)
        status: list[str] = []
        body = b"".join(app(environ, lambda code, headers, *rest: status.append(code)))
        assert status[0].startswith("200"), (path, status, body[:300])
        return json.loads(body)

    studies = get("/api/studies")["study_summaries"]
    assert [summary["study_name"] for summary in studies] == ["grid"]
    detail = get(f"/api/studies/{studies[0]['study_id']}")
    assert len(detail["trials"]) == 2
    trial = detail["trials"][0]
    assert {p["name"] for p in trial["params"]} == {"optim.lr"}
    assert trial["intermediate_values"] and trial["state"] == "Complete"
    ranked = rank_configurations(open_store(store_url), "grid")[1]
    assert math.isclose(max(t["values"][0] for t in detail["trials"]), ranked[0].mean)


def test_a_stale_run_folder_of_another_study_is_never_adopted(tmp_path, study_base):
    first = f"sqlite:///{tmp_path / 'first.db'}"
    run_sweep(first, tmp_path, study_base, grid={"optim.lr": [1e-3]})
    # A new store beside the old runs folder: same study name, another configuration.
    report = run_sweep(f"sqlite:///{tmp_path / 'second.db'}", tmp_path, study_base,
                       grid={"optim.lr": [2e-3]})  # fmt: skip
    (row,) = study_runs(open_store(f"sqlite:///{tmp_path / 'second.db'}"), "grid")
    assert row.status == "error" and "holds another run ('grid': optim.lr=0.001" in row.reason
    assert "run the same command with --retry-failed" in row.reason
    assert report.info.counts["failed"] == 1
    foreign = tmp_path / "runs" / "grid" / "trial-0000"
    assert sorted(p.name for p in foreign.iterdir()) == sorted(
        p.name for p in foreign.iterdir() if p.name != "error.txt"
    ), "nothing is written into another run's folder"
    # The advice works: with that folder moved away, --retry-failed runs it.
    foreign.rename(tmp_path / "moved")
    lines: list[str] = []
    report = run_sweep(f"sqlite:///{tmp_path / 'second.db'}", tmp_path, study_base, lines,
                       grid={"optim.lr": [2e-3]}, retry_failed=True)  # fmt: skip
    assert "1 run(s) that ended with an error queued again" in lines[0]
    assert (report.info.counts["completed"], report.info.counts["retried"]) == (1, 1)
    assert not (tmp_path / "moved" / "error.txt").exists()
    foreign = tmp_path / "runs" / "grid" / "trial-0000"  # now this study's run
    # Same grid value, another base config: still not the same run.
    third = f"sqlite:///{tmp_path / 'third.db'}"
    run_sweep(third, tmp_path, {**study_base, "epochs": 3}, grid={"optim.lr": [1e-3]})
    (row,) = study_runs(open_store(third), "grid")
    assert row.status == "error" and "holds another run" in row.reason


def test_local_workers_share_the_runs_and_report_through_echo(tmp_path, study_base):
    lines: list[str] = []
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    report = run_sweep(url, tmp_path, study_base, lines, grid={"optim.lr": [1e-3, 2e-3, 3e-3, 4e-3]},
                       workers=2, threads=1)  # fmt: skip
    assert report.info.counts["completed"] == 4
    run_lines = [line for line in lines if "] #" in line]
    assert len(run_lines) == 4 and {line[:4] for line in run_lines} == {"[w1]", "[w2]"}


def test_workers_that_cannot_start_are_an_error_not_a_silent_return(tmp_path):
    from trainlab.experiments.launch import LaunchOptions, run_workers

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    open_store(url)
    lines: list[str] = []
    with pytest.raises(StudyError, match="every worker failed"):
        run_workers(url, "no-such-study", LaunchOptions(workers=2, runs_dir=tmp_path), lines.append)
    assert sum("ended with exit code 1" in line for line in lines) == 2


def test_seed_and_runtime_keys_reach_the_runs(tmp_path, study_base):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    base = {
        **study_base,
        "device": "cpu",
        "data": {**study_base["data"], "root": str(tmp_path / "data")},
    }
    run_sweep(url, tmp_path, base, grid={"optim.lr": [1e-3]}, repeats=2, seed=100)
    from trainlab.runs.record import read_run_config

    seeds = sorted(read_run_config(r.run_dir).seed for r in study_runs(open_store(url), "grid"))
    assert seeds == [100, 101]
    config = read_run_config(study_runs(open_store(url), "grid")[0].run_dir)
    assert config.device == "cpu" and config.data.root == str((tmp_path / "data").resolve())


def test_runtime_keys_cannot_be_varied(tmp_path, study_base):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    for key in ("device", "data.root"):
        with pytest.raises(StudyError, match="where a worker"):
            run_sweep(url, tmp_path, study_base, grid={key: ["cpu", "auto"]})


def test_a_dataset_typo_fails_before_any_run(tmp_path, study_base):
    with pytest.raises(StudyError, match="unknown dataset 'mnsit'"):
        run_sweep(
            f"sqlite:///{tmp_path / 's.db'}",
            tmp_path,
            study_base,
            grid={"data.dataset": ["mnist-5k", "mnsit"]},
        )


def test_a_resumed_run_takes_this_machines_runtime_not_the_lost_workers():
    from trainlab.experiments.worker import runtime_overrides

    assert runtime_overrides({}) == ["device=auto", "data.root=null", "data.download=true"]
    assert runtime_overrides({"device": "cpu", "data.download": False})[::2] == [
        "device=cpu",
        "data.download=false",
    ]


def test_a_study_created_but_never_defined_is_adopted(tmp_path, study_base):
    import optuna

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    optuna.create_study(study_name="grid", storage=open_store(url).storage)  # killed right after
    report = run_sweep(url, tmp_path, study_base, grid={"optim.lr": [1e-3]})
    assert report.info.counts["completed"] == 1


def test_cross_validation_runs_every_fold_and_averages_over_them(tmp_path, study_base):
    from trainlab.runs.record import read_run_config

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    base = {**study_base, "data": {**study_base["data"], "val_size": None}}
    lines: list[str] = []
    report = run_sweep(url, tmp_path, base, lines, grid={"optim.lr": [3e-3, 3e-5]}, cv=3)
    assert "2 configuration(s) × 1 seed(s) × 3 folds = 6 runs" in lines[0]
    rows = study_runs(open_store(url), "grid")
    assert len(rows) == 6 and all(r.state == "COMPLETE" for r in rows)
    configs = [read_run_config(r.run_dir) for r in rows]
    assert sorted((c.optim.lr, c.data.fold) for c in configs) == sorted(
        (lr, fold) for lr in (3e-3, 3e-5) for fold in range(3))  # fmt: skip
    assert {c.data.folds for c in configs} == {3} and [r.fold for r in rows] == [0, 0, 1, 1, 2, 2]
    assert all(r.overrides.keys() == {"optim.lr"} for r in rows)  # the fold is not a configuration
    assert [g.n for g in report.ranked] == [3, 3]
    assert run_sweep(url, tmp_path, base, grid={"optim.lr": [3e-3, 3e-5]}, cv=3).info.counts[
        "completed"] == 6  # fmt: skip  # the same command again runs nothing new
    with pytest.raises(StudyError, match="use --cv K"):
        run_sweep(url, tmp_path, base, grid={"data.fold": [0, 1]})
    with pytest.raises(StudyError, match=r"drop data\.val_size"):
        run_sweep(url, tmp_path, study_base, grid={"optim.lr": [1e-3]}, cv=3)


def test_cross_validation_refuses_a_validation_size_it_would_ignore(tmp_path, study_base):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    base = {**study_base, "data": {**study_base["data"], "val_size": None}}
    with pytest.raises(StudyError, match=r"drop data\.val_fraction"):
        run_sweep(url, tmp_path, base, grid={"data.val_fraction": [0.1, 0.3]}, cv=2)
    chosen = {**base, "data": {**base["data"], "val_fraction": 0.2}}  # an 80/20 split file
    with pytest.raises(StudyError, match=r"drop data\.val_fraction"):
        run_sweep(url, tmp_path, chosen, grid={"optim.lr": [1e-3]}, cv=2)
    saved = {**base, "data": {**base["data"], "val_fraction": 0.1}}  # as config.yaml holds it
    from trainlab.experiments.sweep import plan_sweep

    assert plan_sweep("grid", saved, grid={"optim.lr": [1e-3]}, cv=2)[1].cv == 2
    assert not (tmp_path / "runs").exists()


def test_an_axis_over_the_whole_data_section_keeps_the_folds(tmp_path, study_base):
    from trainlab.experiments.sweep import plan_sweep

    base = {**study_base, "data": {**study_base["data"], "val_size": None}}
    sections = [{**base["data"], "batch_size": size} for size in (25, 50)]
    _, spec = plan_sweep("grid", base, grid={"data": sections}, cv=3)
    for entry in s.sweep_plan(spec):
        config = spec.trial_config(entry.overrides, entry.seed, fold=entry.fold)
        assert (config.data.folds, config.data.fold) == (3, entry.fold)


def test_an_axis_inside_another_axis_is_refused(tmp_path, study_base):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    grid = {"model.options.hidden": [[16], [64]],
            "model.options": [{"dropout": 0.0}, {"dropout": 0.5}]}  # fmt: skip
    with pytest.raises(StudyError, match=r"model\.options\.hidden is varied inside model\.options"):
        run_sweep(url, tmp_path, study_base, grid=grid)
    with pytest.raises(StudyError, match="give a list of values"):
        run_sweep(url, tmp_path, study_base, grid={"optim.name": "sgd"})  # not s, g, d
    with pytest.raises(StudyError, match="give a list of values"):
        run_sweep(url, tmp_path, study_base, grid={"data.batch_size": 64})
    assert not (tmp_path / "runs").exists()


def test_a_dataset_path_is_kept_absolute_for_workers_started_elsewhere(tmp_path, monkeypatch):
    import numpy as np

    from trainlab.experiments.sweep import plan_sweep

    images = np.random.default_rng(0).integers(0, 255, (40, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", x_train=images, y_train=np.arange(40) % 2,
             x_test=images[:10], y_test=np.arange(10) % 2)  # fmt: skip
    monkeypatch.chdir(tmp_path)
    _, spec = plan_sweep("grid", {"data": {"dataset": "tiny.npz"}}, grid={"optim.lr": [1e-3]})
    assert spec.base["data"]["dataset"] == str(tmp_path.resolve() / "tiny.npz")
    _, named = plan_sweep("grid", {"data": {"dataset": "mnist-5k"}}, grid={"optim.lr": [1e-3]})
    assert named.base["data"]["dataset"] == "mnist-5k"


def test_a_study_stored_with_a_relative_dataset_path_is_joined_by_its_command(tmp_path,
                                                                             monkeypatch):  # fmt: skip
    import copy

    import numpy as np

    images = np.random.default_rng(0).integers(0, 255, (60, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", x_train=images, y_train=np.arange(60) % 2,
             x_test=images[:10], y_test=np.arange(10) % 2)  # fmt: skip
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    base = {"data": {"dataset": "tiny.npz", "val_size": 12}, "model": {"name": "mlp"},
            "epochs": 1}  # fmt: skip
    sweep("old", base, grid={"optim.lr": [1e-3]}, storage=url, runs_dir="runs",
          echo=lambda line: None)  # fmt: skip
    study = optuna.load_study(study_name="old", storage=open_store(url).storage)
    stored = copy.deepcopy(study.user_attrs[s.SPEC_ATTR])  # as trainlab stored it until now
    stored["base"]["data"]["dataset"] = "tiny.npz"
    study.set_user_attr(s.SPEC_ATTR, stored)
    report = sweep("old", base, grid={"optim.lr": [1e-3]}, repeats=2, storage=url,
                   runs_dir="runs", echo=lambda line: None)  # fmt: skip
    assert report.info.counts["completed"] == 2  # joined (and its first run still its own)


def test_the_advice_to_run_again_comes_only_when_runs_are_left(tmp_path, study_base, monkeypatch):
    import importlib

    sweep_module = importlib.import_module("trainlab.experiments.sweep")  # not the function
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    run_sweep(url, tmp_path, study_base, grid={"optim.lr": [1e-3]})  # done: nothing left
    monkeypatch.setattr(sweep_module, "run_workers", lambda *args, **kwargs: [-9])
    lines: list[str] = []
    run_sweep(url, tmp_path, study_base, lines, grid={"optim.lr": [1e-3]})
    assert not any("run the same command again" in line for line in lines)
    lines.clear()
    sweep("left", study_base, grid={"optim.lr": [1e-3, 2e-3]}, storage=url,
          runs_dir=tmp_path / "runs", echo=lines.append)  # fmt: skip  # both wait
    assert any("2 run(s) of left left unfinished" in line for line in lines)


def test_the_report_says_the_mean_is_over_folds(tmp_path, study_base):
    from trainlab.analysis.collect import collect_study
    from trainlab.analysis.report import write_report

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    base = {**study_base, "data": {**study_base["data"], "val_size": None}, "epochs": 1}
    run_sweep(url, tmp_path, base, grid={"optim.lr": [3e-3]}, cv=2)
    data = collect_study(open_store(url), "grid")
    files = write_report(data, tmp_path / "report")
    assert "2-fold cross-validation" in files.main.read_text()
    assert "Nadeau and Bengio" in files.main.read_text()  # folds are not independent runs
    # The interval of the mean is widened for the folds' shared training data: 1/n + 1/(K-1).
    from scipy import stats as scipy_stats

    from trainlab.analysis.tables import build_table

    (main,) = build_table(data).main
    assert main.n == 2 and main.std is not None and main.ci_high is not None
    half = scipy_stats.t.ppf(0.975, 1) * main.std * math.sqrt(1 / 2 + 1 / 1)
    assert main.ci_high - main.mean == pytest.approx(half)
