"""`trainlab report` and `trainlab compare` from the command line."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from trainlab.cli import app

runner = CliRunner()
SMALL = ["--dataset", "mnist-5k", "--model", "mlp", "--epochs", "2", "--set", "data.train_size=300",
         "--set", "data.val_size=100", "--set", "model.options.hidden=[32]"]  # fmt: skip


@pytest.fixture
def study_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAINLAB_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["sweep", "--study", "lr", *SMALL, "--grid", "optim.lr=3e-3,1e-3",
                                 "--repeats", "2"])  # fmt: skip
    assert result.exit_code == 0, result.output
    return tmp_path


def test_report_writes_markdown_then_html_in_reports(study_dir):
    result = runner.invoke(app, ["report", "lr"])
    assert result.exit_code == 0, result.output
    assert "wrote reports/lr/report.md" in result.output
    assert (study_dir / "reports/lr/results.csv").is_file()
    html = runner.invoke(app, ["report", "lr", "--format", "html", "--out", "page"])
    assert html.exit_code == 0 and (study_dir / "page/report.html").is_file()


def test_report_of_a_run_folder(study_dir):
    result = runner.invoke(app, ["report", "runs/lr/trial-0000"])
    assert result.exit_code == 0, result.output
    assert (study_dir / "reports/trial-0000/report.md").is_file()


def test_compare_prints_the_table(study_dir):
    result = runner.invoke(app, ["compare", "lr", "--by", "optim.lr"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["optim.lr", "n", "val.loss"]
    assert lines[1].split()[-1] == "best" and "(n=2)" in lines[1]
    assert "Welch" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["report", "nope"], "no study 'nope'"),
        (["report", "lr", "--format", "pdf"], "unknown report format 'pdf'"),
        (["compare", "lr", "--by", "optim.name"], "not varied in lr"),
        (["report", "runs"], "not a finished run folder"),
    ],
)
def test_mistakes_are_one_line(study_dir, args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1


@pytest.fixture
def optimizers(monkeypatch, tmp_path):
    """The hand-made optimizer study of tests/analysis/test_tables.py, as if from the store."""
    import trainlab.cli_reports as cli_reports
    from analysis.test_tables import optimizer_study

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_reports, "load_target", lambda *args: optimizer_study())


def test_compare_pivot_prints_the_two_way_table(optimizers):
    result = runner.invoke(app, ["compare", "optimizers", "--pivot", "optim.name,data.dataset"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "optim.name × data.dataset: test accuracy"
    assert lines[1].split() == ["optim.name", "mnist", "fashion-mnist"]
    assert lines[2].split() == ["adam", "95.00", "±", "1.00%", "(n=3,", "lr=0.001)", "★", "85.00",
                                "±", "1.00%", "(n=3,", "lr=0.001)", "★"]  # fmt: skip
    assert lines[3].split() == ["sgd", "94.00", "±", "1.41%", "(n=2", "of", "3,", "lr=0.01)", "☆",
                                "–"]  # fmt: skip
    assert "4 failed and 0 unfinished" in result.output
    assert "★ marks the best cell of each column by mean val.accuracy" in result.output


def test_compare_counts_interrupted_and_lost_runs_as_unfinished_not_failed(monkeypatch):
    import dataclasses

    import trainlab.cli_reports as cli_reports
    from analysis.test_tables import optimizer_study

    study = optimizer_study()  # 4 failed runs
    failed = [i for i, run in enumerate(study.runs) if run.state == "FAIL"]
    for index, status in zip(failed[:2], ["interrupted", "lost"], strict=True):
        study.runs[index] = dataclasses.replace(study.runs[index], status=status)
    monkeypatch.setattr(cli_reports, "load_target", lambda *args: study)
    result = runner.invoke(app, ["compare", "optimizers"])
    assert result.exit_code == 0, result.output
    assert "2 failed and 2 unfinished" in result.output  # the same command resumes those two


def test_report_pivot_adds_the_section(optimizers, tmp_path):
    result = runner.invoke(app, ["report", "optimizers", "--pivot", "optim.name,data.dataset"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "reports/optimizers/report.md").read_text()
    assert "## optim.name × data.dataset" in text
    assert "| optim.name | mnist | fashion-mnist |" in text
    assert (tmp_path / "reports/optimizers/pivot.csv").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["compare", "optimizers", "--pivot", "optim.momentum,optim.lr"],
         "--pivot optim.momentum: not varied in optimizers; varied: optim.name, data.dataset, "
         "optim.lr"),
        (["report", "optimizers", "--pivot", "optim.name,seed"], "--pivot seed: not varied"),
        (["compare", "optimizers", "--pivot", "optim.lr"], "give two different varied keys"),
        (["report", "optimizers", "--pivot", "optim.lr,optim.lr"], "give two different varied"),
        (["compare", "optimizers", "--pivot", "optim.name,optim.lr", "--by", "optim.lr"],
         "--by and --pivot: use one"),
    ],
)  # fmt: skip
def test_pivot_mistakes_are_one_line(optimizers, tmp_path, args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "reports").exists()


def test_a_two_key_grid_gets_its_pivot_in_the_report_by_itself(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAINLAB_STORAGE", raising=False)
    monkeypatch.chdir(tmp_path)
    small = [*SMALL[:5], "1", *SMALL[6:]]  # one epoch
    result = runner.invoke(app, ["sweep", "--study", "two", *small, "--grid", "optim.name=adam,sgd",
                                 "--grid", "optim.lr=3e-3,1e-3"])  # fmt: skip
    assert result.exit_code == 0, result.output
    pivot = runner.invoke(app, ["compare", "two", "--pivot", "optim.lr,optim.name"])
    assert pivot.exit_code == 0, pivot.output
    lines = pivot.output.splitlines()
    assert lines[0] == "optim.lr × optim.name: test accuracy"
    assert lines[1].split() == ["optim.lr", "adam", "sgd"]
    assert [line.split()[0] for line in lines[2:4]] == ["0.003", "0.001"]
    assert "(n=1)" in lines[2] and "lr=" not in lines[2]  # nothing else varied: nothing picked
    assert "".join(lines[2:4]).count("★") == 2  # one best per column
    report = runner.invoke(app, ["report", "two"])  # a full grid of two keys: added by itself
    assert report.exit_code == 0, report.output
    text = (tmp_path / "reports/two/report.md").read_text()
    assert "## optim.name × optim.lr" in text and "| optim.name | 0.003 | 0.001 |" in text
    assert (tmp_path / "reports/two/pivot.csv").is_file()


def test_compare_counts_pruned_trials_in_the_footer(monkeypatch):
    import dataclasses

    import trainlab.cli_reports as cli_reports
    from analysis.test_tables import optimizer_study

    study = optimizer_study()  # 4 failed runs; prune two completed ones, as a search would
    for index in (0, 3):
        study.runs[index] = dataclasses.replace(study.runs[index], state="PRUNED",
                                                status="pruned", value=None)  # fmt: skip
    monkeypatch.setattr(cli_reports, "load_target", lambda *args: study)
    result = runner.invoke(app, ["compare", "optimizers"])
    assert result.exit_code == 0, result.output
    assert "4 failed, 2 pruned and 0 unfinished run(s) are not in the table" in result.output


def test_compare_ranks_within_each_data_set_and_says_so(monkeypatch):
    import trainlab.cli_reports as cli_reports
    from analysis.test_tables import dataset_study

    monkeypatch.setattr(cli_reports, "load_target", lambda *args: dataset_study())
    result = runner.invoke(app, ["compare", "mix", "--by", "optim.lr"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["data.dataset", "optim.lr"]  # never pooled over data sets
    assert [line.split()[-1] for line in lines[1:5]].count("best") == 2
    assert "only against the best configuration on the same data set" in result.output
