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
