"""``trainlab serve --study``: the best run of a study, chosen on validation, never on test."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from trainlab.cli import app
from trainlab.cli_serve import resolve_model
from trainlab.errors import TrainlabError
from trainlab.experiments import best_run, open_store, study_runs, sweep


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    folder = tmp_path_factory.mktemp("serve-study")
    url = f"sqlite:///{folder / 'studies.db'}"
    base = {"data": {"dataset": "mnist-5k", "train_size": 300, "val_size": 100, "batch_size": 50},
            "model": {"name": "mlp", "options": {"hidden": [32]}}, "epochs": 2,
            "monitor": "val.accuracy"}  # fmt: skip
    sweep("lr", base, grid={"optim.lr": [3e-3, 1e-5]}, repeats=2, storage=url,
          runs_dir=folder / "runs", echo=lambda line: None)  # fmt: skip
    return url, folder


def test_the_best_run_is_the_best_repeat_of_the_best_configuration(study):
    url, _ = study
    store = open_store(url, create=False)
    rows = [r for r in study_runs(store, "lr") if r.state == "COMPLETE"]
    by_lr: dict[float, list] = {}
    for row in rows:
        by_lr.setdefault(row.overrides["optim.lr"], []).append(row)
    means = {lr: sum(r.value for r in group) / len(group) for lr, group in by_lr.items()}
    best_lr = max(means, key=means.__getitem__)
    expected = max(by_lr[best_lr], key=lambda r: r.value)
    assert best_run(store, "lr").number == expected.number
    assert resolve_model(None, "lr", url, Path("unused")) == Path(expected.run_dir)


def test_model_or_study_but_not_both_and_clear_errors(study):
    url, folder = study
    with pytest.raises(TrainlabError, match="one of them"):
        resolve_model(None, None, url, folder)
    with pytest.raises(TrainlabError, match="one of them"):
        resolve_model(folder, "lr", url, folder)
    result = CliRunner().invoke(app, ["serve", "--study", "nope", "--storage", url])
    assert result.exit_code == 2 and "nope" in result.output and "Traceback" not in result.output


@pytest.mark.integration
def test_trainlab_serve_study_serves_that_run(study):
    from postgres_server import free_port, wait_for

    url, _ = study
    expected = best_run(open_store(url, create=False), "lr")
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "trainlab", "serve", "--study", "lr",
                                "--storage", url, "--port", str(port), "--device", "cpu"],
                               stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:

        def model_info() -> dict | None:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/model", timeout=1).json()
            except httpx.HTTPError:
                return None

        wait_for(lambda: model_info() is not None, timeout=60, interval=0.2, what="the server")
        run = model_info()["run"]
        assert run["name"] == Path(expected.run_dir).name
        assert str(Path(expected.run_dir).parent) not in json.dumps(run)  # no server paths
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert f"trial {expected.number}" in output


def test_a_study_over_several_data_sets_has_a_best_per_data_set(tmp_path):
    """The optimizer study's shape: accuracies of different data sets are not comparable, so
    `best` shows each one's best and `serve --study` asks which to serve."""
    import numpy as np

    from trainlab.data import load_dataset

    digits = load_dataset("mnist-5k")
    other = tmp_path / "other.npz"  # inverted digits: another data set, another validation set
    np.savez(other, x_train=255 - digits.train.images[::10, 0].numpy(),
             y_train=digits.train.labels[::10].numpy(), x_test=255 - digits.test.images[::10, 0].numpy(),
             y_test=digits.test.labels[::10].numpy())  # fmt: skip
    url = f"sqlite:///{tmp_path / 'studies.db'}"
    base = {"data": {"train_size": 300, "val_size": 100, "batch_size": 50},
            "model": {"name": "mlp", "options": {"hidden": [16]}}, "epochs": 1,
            "monitor": "val.accuracy"}  # fmt: skip
    sweep("two", base, grid={"data.dataset": ["mnist-5k", str(other)], "optim.lr": [3e-3, 1e-5]},
          storage=url, runs_dir=tmp_path / "runs", echo=lambda line: None)  # fmt: skip
    store = open_store(url, create=False)
    with pytest.raises(
        TrainlabError, match=r"compares data sets \(.*mnist-5k\), each with its own best: pick one"
    ):
        best_run(store, "two")
    rows = [r for r in study_runs(store, "two") if r.state == "COMPLETE"]
    for dataset in ("mnist-5k", str(other)):
        mine = [r for r in rows if r.overrides["data.dataset"] == dataset]
        assert best_run(store, "two", dataset).number == max(mine, key=lambda r: r.value).number
    with pytest.raises(TrainlabError, match="its data sets are"):
        best_run(store, "two", "fashion-mnist")
    with pytest.raises(TrainlabError, match="picks the data set of a --study"):
        resolve_model(tmp_path, None, url, tmp_path, dataset="mnist-5k")
    result = CliRunner().invoke(app, ["best", "two", "--storage", url], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "compares 2 data sets" in result.output
    assert "best on mnist-5k" in result.output and f"best on {other}" in result.output
