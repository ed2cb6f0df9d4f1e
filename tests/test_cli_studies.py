"""The study commands from the command line: output people read, and one-line errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from trainlab.cli import app

runner = CliRunner()
EXAMPLES = Path(__file__).parents[1] / "examples"


@pytest.fixture
def where(tmp_path, monkeypatch):
    monkeypatch.delenv("TRAINLAB_STORAGE", raising=False)
    return ["--runs-dir", str(tmp_path / "runs")]


SMALL = ["--dataset", "mnist-5k", "--model", "mlp", "--epochs", "2", "--set", "data.train_size=300",
         "--set", "data.val_size=100", "--set", "model.options.hidden=[32]"]  # fmt: skip


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_sweep_then_studies_runs_and_best(where, tmp_path):
    result = invoke("sweep", "--study", "lr-study", *SMALL, "--grid", "optim.lr=3e-3,3e-5",
                    "--repeats", "2", "--metric", "val.accuracy", *where)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "2 configuration(s) × 2 seed(s) = 4 runs" in result.output
    assert result.output.count("] #") == 4
    assert "best of lr-study by mean val.accuracy over its repeats" in result.output
    assert "(n=2)" in result.output
    # The end line stays one line in a log (CliRunner's console is 80 columns, like a pipe's).
    assert re.search(r"^lr-study: 4 completed, .* 0 interrupted or lost$", result.output, re.M)

    studies = invoke("studies", *where)
    assert studies.exit_code == 0
    line = next(line for line in studies.output.splitlines() if line.startswith("lr-study"))
    assert line.split()[:3] == ["lr-study", "sweep", "4/4"]

    runs = invoke("runs", "lr-study", *where)
    lines = runs.output.strip().splitlines()
    assert lines[0].split()[:4] == ["#", "status", "optim.lr", "seed"]
    assert len(lines) == 5 and all(
        str(tmp_path / "runs" / "lr-study") in line for line in lines[1:]
    )
    assert {line.split()[2] for line in lines[1:]} == {"0.003", "3e-05"}

    best = invoke("best", "lr-study", *where)
    assert best.exit_code == 0
    assert re.search(r"^  configuration +optim\.lr=0\.003$", best.output, re.MULTILINE)
    assert best.output.count("run folder") == 2
    assert "optuna-dashboard sqlite:///" in best.output


def test_tune_from_a_space_file(where, tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text("optim.lr: loguniform:1e-4:1e-2\nmodel.options.dropout: uniform:0:0.3\n")
    result = invoke("tune", "--study", "search", *SMALL, "--space", str(space), "--trials", "3",
                    "--metric", "val.balanced_accuracy", "--pruner", "none", *where)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "tpe search of 2 parameter(s) for 3 trials" in result.output
    assert result.output.count("] #") == 3
    work = invoke("work", "search", *where)  # nothing left for a late worker
    assert work.exit_code == 0 and "] #" not in work.output


def test_dry_run_shows_the_plan_and_stores_nothing(where, tmp_path):
    result = invoke("sweep", "--study", "plan", *SMALL, "--grid", "optim.name=adam,sgd",
                    "--grid", "optim.lr=1e-2,1e-3", "--repeats", "3", "--dry-run", *where)  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    store = tmp_path / "runs" / "studies.db"
    assert lines[0] == ("study plan (dry run): 4 configuration(s) × 3 seed(s) = 12 runs, ranked "
                        f"by val.loss; a new study (the store {store} does not exist yet); "
                        "nothing stored or run")  # fmt: skip
    assert [line.split()[1:] for line in lines[1:]] == [
        ["optim.name=adam", "optim.lr=0.01"], ["optim.name=adam", "optim.lr=0.001"],
        ["optim.name=sgd", "optim.lr=0.01"], ["optim.name=sgd", "optim.lr=0.001"],
    ]  # fmt: skip
    folds = invoke("sweep", "--study", "plan", "--dataset", "mnist-5k", "--model", "mlp", "--cv",
                   "3", "--dry-run", *where)  # fmt: skip
    assert "1 configuration(s) × 1 seed(s) × 3 folds = 3 runs" in folds.output
    assert "(the base configuration)" in folds.output

    tuned = invoke("tune", "--study", "plan", *SMALL, "--space", str(EXAMPLES / "k49-space.yaml"),
                   "--trials", "7", "--dry-run", *where)  # fmt: skip
    assert tuned.exit_code == 0, tuned.output
    assert "tpe search of 5 parameter(s) for 7 trials, pruner median" in tuned.output
    assert "  optim.lr: float 0.0001..0.003 (log)" in tuned.output
    assert not (tmp_path / "runs").exists()  # no store, no run folder

    # A mistake is still one line and exit 2, before anything would run.
    bad = runner.invoke(app, ["sweep", "--study", "plan", *SMALL, "--grid",
                              "model.options.hiden=8,16", "--dry-run", *where])  # fmt: skip
    assert (
        bad.exit_code == 2
        and "unknown option 'hiden' for model 'mlp' (did you mean 'hidden'?)" in bad.output
    )


def test_dry_run_reads_the_study_it_would_join(where, tmp_path):
    # The real command joins a study of the same name: the dry run shows the plan as joined
    # (more seeds kept) and refuses what the real command would refuse.
    args = ["sweep", "--study", "joined", *SMALL, "--epochs", "1", "--grid", "optim.lr=3e-3,3e-5"]
    assert invoke(*args, "--repeats", "2", *where).exit_code == 0
    again = invoke(*args, "--dry-run", *where)
    assert again.exit_code == 0, again.output
    assert ("2 configuration(s) × 2 seed(s) = 4 runs, ranked by val.loss; joins the study in "
            "sqlite:///") in again.output and "4 run(s) completed" in again.output  # fmt: skip
    other = runner.invoke(app, [*args[:-1], "optim.lr=1e-1", "--dry-run", *where])
    assert other.exit_code == 2 and "already exists with a different definition" in other.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["runs", "nope"], "no study store at"),
        (["best", "nope"], "no study store at"),
        (["sweep", "--study", "x", "--grid", "optim.lr"], "--grid expects key=value"),
        (["sweep", "--study", "x", "--grid", "optim.lr=1e-3", "--metric", "test.accuracy"],
         "validation split only"),
        (["sweep", "--study", "x", "--grid", "optim.name=adam,lion"], "optim.name=lion is invalid"),
        (["sweep", "--study", "x", "--sample", "optim.lr=normal:0:1"], "unknown distribution"),
        (["sweep", "--study", "x", "--storage", "mysql://me:pw@h/d"], "unsupported storage"),
        (["tune", "--study", "x", "--space", "missing.yaml"], "search space file not found"),
        (["tune", "--study", "x", "--space", str(EXAMPLES / "k49-space.yaml"), "--dataset", "mnist-5k",
          "--sampler", "nope"], "unknown sampler 'nope'"),
        (["sweep", "--study", "x", "--grid", "optim.lr=1e-3", "--device", "foo", "--dry-run"],
         "unknown device 'foo'"),  # was: a plan, and the real command refused
        (["tune", "--study", "x", "--space", str(EXAMPLES / "k49-space.yaml"), "--device", "foo",
          "--dry-run"], "unknown device 'foo'"),
        (["sweep", "--study", "x", "--grid", "optim.lr=1e-3", "--samples", "7"],
         "--samples counts random draws of --sample keys"),  # was: ignored
        (["sweep", "--study", "x", "--grid", "optim.name=sgd", "--grid", "optim.momentum=0.5,0.9"],
         "optim.momentum applies to the momentum and nesterov optimizers, not sgd"),
    ],
)  # fmt: skip
def test_mistakes_are_one_line_and_exit_2(where, args, message):
    result = runner.invoke(app, [*args, *where])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_a_ranking_over_several_data_sets_ranks_within_each():
    from types import SimpleNamespace

    from trainlab.cli_studies import within_datasets

    ranked = [SimpleNamespace(overrides={"data.dataset": name, "optim.name": optimizer})
              for name, optimizer in [("mnist", "adam"), ("fashion", "adam"), ("mnist", "sgd"),
                                      ("fashion", "sgd")]]  # fmt: skip
    shown = [(rank, g.overrides["data.dataset"], g.overrides["optim.name"])
             for rank, g in within_datasets(ranked)]  # fmt: skip
    assert shown == [(1, "mnist", "adam"), (2, "mnist", "sgd"), (1, "fashion", "adam"),
                     (2, "fashion", "sgd")]  # fmt: skip
