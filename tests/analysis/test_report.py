"""Reports of real studies (SQLite and PostgreSQL) and of a single run folder."""

from __future__ import annotations

import csv
import re

import pytest

from trainlab.analysis.collect import collect_run, collect_study
from trainlab.analysis.report import write_report
from trainlab.analysis.tables import build_table
from trainlab.errors import StudyError
from trainlab.experiments import open_store, sweep, tune


@pytest.fixture
def study(store_url, tmp_path, study_base):
    """Two learning rates × 2 seeds, plus a configuration that fails."""
    base = {**study_base, "epochs": 3, "optim": {"name": "sgd"}}
    sweep("rep", base, grid={"optim.lr": [0.05, 0.01, 1e12]}, repeats=2, metric="val.accuracy",
          storage=store_url, runs_dir=tmp_path / "runs", echo=lambda line: None)  # fmt: skip
    return collect_study(open_store(store_url), "rep")


def test_the_study_table(study):
    table = build_table(study)
    assert [g.overrides["optim.lr"] for g in table.groups] == [0.05, 0.01]  # best first
    headers = table.headers()
    assert headers[:3] == ["optim.lr", "n", "val.accuracy [95% CI]"]
    assert "test macro F1" in headers and headers[-1] == "vs. best"
    rows = table.rows()
    assert rows[0][-1] == "best" and rows[0][1] == "2"
    interval = r"\[-?\d+\.\d\d%, \d+\.\d\d%\]"  # the metric is a share: in percent
    assert re.fullmatch(rf"\d+\.\d\d ± \d+\.\d\d% \(n=2\) {interval}", rows[0][2])
    assert rows[1][-1].startswith(("worse", "not distinguishable"))
    best = table.main[0]
    values = table.groups[0].main_values()
    assert best.mean == pytest.approx(sum(values) / 2) and best.n == 2


def test_markdown_report_with_figures_csv_and_the_failed_runs(study, tmp_path):
    files = write_report(study, tmp_path / "out")
    text = files.main.read_text()
    assert files.main.name == "report.md"
    for heading in ("## Results", "## Failed, pruned and unfinished runs", "## Learning curves",
                    "## Overfitting diagnostics", "## Validation loss versus accuracy",
                    "## The best configuration", "## Parameter effects", "## Environment",
                    "## How the diagnostics are decided"):  # fmt: skip
        assert heading in text, heading
    assert "2 run(s) failed" in text and "diverged" in text
    assert "only 2 completed runs: a t-test on 2 values has 1 degree(s) of freedom" in text
    bounds = [b for m in build_table(study).main for b in (m.ci_low, m.ci_high)]
    assert ("can reach past 0–100%" in text) == any(not 0 <= b <= 1 for b in bounds)
    assert "Welch" in text and "Holm" in text
    assert re.search(r"ρ = -?\d\.\d{3}", text)
    for link in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
        assert (tmp_path / "out" / link).is_file(), link
    assert {p.name for p in files.figures} >= {"curves-loss.png", "confusion.png", "mistakes.png",
                                                 "effect-0.png", "loss-vs-accuracy.png"}  # fmt: skip
    rows = list(csv.reader(files.csv.open()))
    assert rows[0][:3] == ["optim.lr", "n", "val.accuracy_mean"] and len(rows) == 3
    assert "Python 3" in text and "torch 2" in text


def test_html_report_is_one_self_contained_file(study, tmp_path):
    files = write_report(study, tmp_path / "out", fmt="html")
    page = files.main.read_text()
    assert page.startswith("<!DOCTYPE html>")
    assert page.count('<img src="data:image/png;base64,') == len(files.figures) >= 5
    assert 'src="figures/' not in page and "<table>" in page


def test_compare_by_one_key_pools_the_others(tmp_path, study_base):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    sweep("grid2", study_base, grid={"optim.lr": [3e-3, 1e-3], "data.batch_size": [25, 50]},
          storage=url, runs_dir=tmp_path / "runs", echo=lambda line: None)  # fmt: skip
    data = collect_study(open_store(url), "grid2")
    table = build_table(data, by=["optim.lr"])
    assert table.keys == ["optim.lr"] and [len(g.runs) for g in table.groups] == [2, 2]
    with pytest.raises(
        StudyError, match=r"--by optim.name: not varied in grid2; varied: optim.lr, data.batch_size"
    ):
        build_table(data, by=["optim.name"])


def test_a_search_report_has_history_and_importances(tmp_path, study_base):
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    tune("search", study_base, space={"optim.lr": "loguniform:1e-4:1e-2", "model.options.dropout": "uniform:0:0.3"},
         trials=4, pruner="none", storage=url, runs_dir=tmp_path / "runs", echo=lambda line: None)  # fmt: skip
    files = write_report(collect_study(open_store(url), "search"), tmp_path / "out")
    names = {p.name for p in files.figures}
    assert {"history.png", "importances.png"} <= names
    text = files.main.read_text()  # one run per trial: nothing tested, and how to test it
    assert "a single completed run: no test can compare them" in text
    assert "sweep the leading configurations with seeds" in text


def test_a_single_run_folder_report(tmp_path, tiny_config):
    import trainlab

    result = trainlab.train(tiny_config(epochs=3))
    data = collect_run(result.run_dir)
    files = write_report(data, tmp_path / "out")
    text = files.main.read_text()
    assert text.startswith("# Run run") and "## Learning curves" in text and "## Results" in text
    assert "mistakes.png" in {p.name for p in files.figures}
    # One run: its values, not means over seeds with intervals and a test against itself.
    accuracy = f"{100 * result.test['accuracy']:.2f}%"
    assert (
        f"| test accuracy | {accuracy} |" in text
        and f"| best epoch | {result.summary['best_epoch']} |" in text
    )
    assert "vs. best" not in text and "over seeds" not in text and "95% CI" not in text
    assert "On the run's curves" in text


def test_an_unfinished_study_says_so(tmp_path, study_base):
    from trainlab.config import build_config
    from trainlab.experiments import study as s
    from trainlab.experiments.space import categorical

    store = open_store(f"sqlite:///{tmp_path / 'studies.db'}")
    spec = s.StudySpec(name="later", kind="sweep", base=s.base_tree(build_config(study_base)),
                       metric="val.accuracy", axes=[categorical("optim.lr", [1e-3, 2e-3])])  # fmt: skip
    study = s.create_or_join(store, spec)
    with store.lock("later"):
        s.enqueue_plan(store, study, s.sweep_plan(spec))  # planned, no worker yet
    text = write_report(collect_study(store, "later"), tmp_path / "out").main.read_text()
    assert "2 run(s) are still running, waiting or interrupted" in text
    assert "No completed runs yet" in text and "| #0 | waiting |" in text


def test_many_configurations_are_all_drawn(tmp_path, study_base):
    from trainlab.analysis import report as report_module

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    sweep("wide", study_base, grid={"optim.lr": [1e-3, 2e-3, 3e-3]}, storage=url,
          runs_dir=tmp_path / "runs", echo=lambda line: None)  # fmt: skip
    original = report_module.MAX_CURVES
    report_module.MAX_CURVES = 2
    try:
        files = write_report(collect_study(open_store(url), "wide"), tmp_path / "out")
    finally:
        report_module.MAX_CURVES = original
    names = {p.name for p in files.figures}
    assert {"curves-loss-1.png", "curves-loss-2.png", "curves-accuracy-2.png"} <= names


def test_a_study_where_every_run_failed(tmp_path, study_base):
    from typer.testing import CliRunner

    from trainlab.cli import app

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    sweep("allf", {**study_base, "optim": {"name": "sgd"}}, grid={"optim.lr": [1e12]}, repeats=2,
          storage=url, runs_dir=tmp_path / "runs", echo=lambda line: None)  # fmt: skip
    files = write_report(collect_study(open_store(url), "allf"), tmp_path / "out", fmt="html")
    page = files.main.read_text()
    assert "2 run(s) failed" in page and "No completed runs yet" in page
    assert "Python 3" in page  # the environment comes from a failed run's folder
    assert "<ol><li><strong>diverged</strong>" in page  # the rules render as lists
    result = CliRunner().invoke(app, ["compare", "allf", "--storage", url])
    assert result.exit_code == 0 and "2 failed and 0 unfinished" in result.output


def test_the_gallery_never_downloads(tmp_path, study_base, monkeypatch):
    import trainlab.data.sources as sources

    def no_network(*args, **kwargs):
        raise AssertionError("a report must not download")

    monkeypatch.setattr(sources, "download_file", no_network, raising=False)
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    sweep("g", study_base, grid={"optim.lr": [3e-3]}, storage=url, runs_dir=tmp_path / "runs",
          echo=lambda line: None)  # fmt: skip
    data = collect_study(open_store(url), "g")
    config = data.runs[0].run_dir / "config.yaml"
    config.write_text(config.read_text().replace("dataset: mnist-5k", "dataset: fashion-mnist"))
    text = write_report(data, tmp_path / "out", root=str(tmp_path / "empty")).main.read_text()
    assert "No gallery of mistakes: the test data is not available here" in text


def test_the_two_way_table_follows_the_results(tmp_path):
    from analysis.test_tables import optimizer_study

    study = optimizer_study()  # hand-made runs: three keys, so no pivot unless asked
    files = write_report(study, tmp_path / "out", pivot=("optim.name", "data.dataset"))
    text = files.main.read_text()
    assert text.index("## Results") < text.index("## optim.name × data.dataset")
    assert text.index("## optim.name × data.dataset") < text.index("## Failed, pruned")
    assert ("| optim.name | mnist | fashion-mnist |\n|---|---|---|\n"
            "| adam | **95.00 ± 1.00%** (n=3, lr=0.001) ★ | **85.00 ± 1.00%** (n=3, lr=0.001) ★ |\n"
            "| sgd | **94.00 ± 1.41%** (n=2 of 3, lr=0.01) ☆ | – |\n"
            "| momentum | 51.00 ± 1.00% (n=3, lr=0.01) | 69.00% (n=1, lr=0.001) |\n") in text  # fmt: skip
    assert "Rows: `optim.name`; columns: `data.dataset`. Each cell: test accuracy" in text
    assert "★ marks the best cell of each column" in text and "`pivot.csv`" in text
    rows = list(csv.reader(files.pivot_csv.open()))
    assert rows[0][:3] == ["optim.name", "data.dataset", "optim.lr"] and len(rows) == 7
    assert float(rows[1][rows[0].index("test_accuracy_mean")]) == pytest.approx(0.95)

    page = write_report(study, tmp_path / "page", fmt="html", pivot=("optim.name", "data.dataset"))
    html = page.main.read_text()
    assert "<h2>optim.name × data.dataset</h2>" in html
    assert "<td><strong>95.00 ± 1.00%</strong> (n=3, lr=0.001) ★</td>" in html

    # Effects are drawn per data set: one figure per key and data set, none for the data set.
    assert "`val.accuracy` versus `optim.name` on mnist" in text
    assert "`val.accuracy` versus `optim.name` on fashion-mnist" in text
    assert "versus `data.dataset`" not in text

    again = write_report(study, tmp_path / "out")  # the same folder, no pivot asked this time
    assert again.pivot_csv is None and not (tmp_path / "out" / "pivot.csv").exists()
    assert "× data.dataset" not in again.main.read_text()


def test_an_unknown_pivot_key_fails_before_anything_is_written(tmp_path):
    from analysis.test_tables import optimizer_study

    with pytest.raises(StudyError, match=r"--pivot optim\.momentum: not varied in optimizers"):
        write_report(optimizer_study(), tmp_path / "out", pivot=("optim.momentum", "optim.lr"))
    assert not (tmp_path / "out").exists()


def test_a_damaged_checkpoint_is_named_and_the_report_still_written(small_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    weights = run / "checkpoint" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short, as by a full disk
    text = write_report(collect_run(run), tmp_path / "out").main.read_text()
    assert "No gallery of mistakes: the run's checkpoint cannot be used" in text
    assert "## Learning curves" in text  # the rest of the report stands


def _history(val_accuracy: float) -> list[dict[str, float]]:
    """Three epochs; with label smoothing the train loss stays above the val loss."""
    return [{"epoch": float(e), "train_loss": 0.9 - 0.1 * e, "val_loss": 0.5 - 0.1 * e,
             "train_accuracy": val_accuracy, "val_accuracy": val_accuracy} for e in (1, 2, 3)]  # fmt: skip


def test_a_study_over_two_data_sets_is_compared_within_each(tmp_path):
    from analysis.test_tables import dataset_study

    study = dataset_study()
    for run in study.runs:
        run.history = _history(run.value)
    text = write_report(study, tmp_path / "out").main.read_text()
    assert "vs. best of its data set" in text
    assert "only against the best configuration on the same data set" in text
    # The automatic two-way table puts the data sets across, one best per column.
    assert "## optim.lr × data.dataset" in text and "Each column is one data set" in text
    assert "| optim.lr | /data/a/imb.npz | mnist-5k |" in text
    assert "## The best configuration on `/data/a/imb.npz`" in text
    assert "## The best configuration on `mnist-5k`" in text
    assert text.count("| best |") == 2


def test_the_report_names_the_same_best_as_the_table_on_a_tie(tmp_path):
    from analysis.test_tables import tie_study

    text = write_report(tie_study(), tmp_path / "out").main.read_text()
    first, second = text.split("## Results")[1].splitlines()[4:6]  # the table's rows
    assert first.startswith("| 0.01 | 3 |") and first.endswith("| best |")
    assert second.startswith("| 0.001 | 3 |") and second.endswith("| not distinguishable (p=1) |")
    assert "**optim.lr=0.01** — its best seed" in text


def test_a_reused_report_folder_keeps_no_stale_results_csv(tmp_path):
    from analysis.test_tables import make_run, tie_study

    study = tie_study()
    first = write_report(study, tmp_path / "out")
    assert first.csv is not None and first.csv.is_file()
    study.runs = [make_run(0, {"optim.lr": 0.01}, None, state="FAIL")]  # nothing completed
    again = write_report(study, tmp_path / "out")
    assert again.csv is None and not (tmp_path / "out" / "results.csv").exists()
    assert "No completed runs yet" in again.main.read_text()


def test_a_report_interrupted_halfway_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    from analysis.test_tables import optimizer_study, tie_study
    from trainlab.analysis import report as report_module

    first = write_report(tie_study(), tmp_path / "out")
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out").rglob("*")
              if p.is_file()}  # fmt: skip
    assert first.figures and all(path.is_file() for path in first.figures)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C once the second report's figures are drawn

    monkeypatch.setattr(report_module, "render_markdown", interrupted)  # figures all drawn
    with pytest.raises(KeyboardInterrupt):
        write_report(optimizer_study(), tmp_path / "out")
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "out").rglob("*")
             if p.is_file()}  # fmt: skip
    assert after == before  # was: the old report.md pointing at deleted figures
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


def test_a_loss_gap_under_label_smoothing_is_marked_as_such(tmp_path):
    from analysis.test_tables import tie_study

    study = tie_study()
    for run in study.runs:
        run.history = _history(run.value)
    text = write_report(study, tmp_path / "plain").main.read_text()
    assert "label smoothing (" not in text and "-0.4000 |" in text  # smoothing not known: no mark
    for run in study.runs:
        run.label_smoothing = 0.1
    text = write_report(study, tmp_path / "smoothed").main.read_text()
    diagnostics = text.split("## Overfitting diagnostics")[1].split("## ")[0]
    assert "| -0.4000 † |" in diagnostics
    assert "† These runs trained with label smoothing (0.1)" in diagnostics
    assert (
        "biased low, negative by design" in diagnostics and "no verdict here uses it" in diagnostics
    )
    assert "With label smoothing ε > 0" in text  # and the rules at the end say so


def test_label_smoothing_is_read_from_the_study_and_the_run_folder(study, small_run):
    assert {run.label_smoothing for run in study.runs} == {0.1}  # the default
    assert collect_run(small_run).runs[0].label_smoothing == 0.1
