"""Workers killed with SIGKILL, for real: separate processes, a real PostgreSQL server and the
SQLite store; the study is resumed by running the same command again."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest

from postgres_server import wait_for
from trainlab.experiments import open_store
from trainlab.experiments import study as s

pytestmark = pytest.mark.integration


def sweep_command(
    url: str, runs: Path, study: str, lrs: str, budget: float, *extra: str
) -> list[str]:
    return [sys.executable, "-m", "trainlab", "sweep", "--study", study, "--storage", url,
            "--runs-dir", str(runs), "--dataset", "mnist-5k", "--model", "mlp",
            "--set", "data.train_size=300", "--set", "data.val_size=100",
            "--set", "model.options.hidden=[32]", "--set", f"budget={budget}",
            "--grid", f"optim.lr={lrs}", "--metric", "val.accuracy", *extra]  # fmt: skip


def start(command: list[str], log: Path) -> subprocess.Popen:
    handle = log.open("ab")
    return subprocess.Popen(
        command, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
    )


def trials_of(store, study: str) -> list:
    try:
        return optuna.load_study(study_name=study, storage=store.storage).get_trials()
    except KeyError:
        return []


def check_invariants(store, study: str, keys: int) -> list:
    trials = trials_of(store, study)
    states = Counter(t.state.name for t in trials)
    assert states["RUNNING"] == 0 and states["WAITING"] == 0, states
    completed = [t for t in trials if t.state.name == "COMPLETE"]
    per_key = Counter(t.user_attrs[s.KEY] for t in completed)
    assert len(per_key) == keys and set(per_key.values()) == {1}, per_key  # each exactly once
    for trial in trials:
        if trial.state.name == "FAIL":  # only lost or interrupted attempts, each continued once
            assert trial.user_attrs[s.STATUS] in s.RETRYABLE, trial.user_attrs
            retries = [t for t in trials if t.user_attrs.get(s.RETRY_OF) == trial.number]
            assert len(retries) == 1
            assert retries[0].user_attrs[s.RUN_NAME] == trial.user_attrs.get(
                s.RUN_NAME, f"trial-{trial.number:04d}"
            )
    return completed


@pytest.mark.slow
def test_two_workers_on_postgres_survive_a_killed_worker(postgres_url, tmp_path):
    runs, log = tmp_path / "runs", tmp_path / "log.txt"
    command = sweep_command(
        postgres_url, runs, "shared", "1e-3,2e-3,3e-3,4e-3", 3.0, "--workers", "2"
    )
    parent = start(command, log)
    store = open_store(postgres_url)

    def a_run_with_a_saved_epoch():
        for trial in trials_of(store, "shared"):
            name = trial.user_attrs.get(s.RUN_NAME)
            running = trial.state.name == "RUNNING" and s.WORKER in trial.system_attrs
            if running and name and (runs / "shared" / name / "resume" / "state.json").is_file():
                return trial
        return None

    try:
        victim = wait_for(a_run_with_a_saved_epoch, timeout=120, what="a run with a saved epoch")
        os.kill(victim.system_attrs[s.WORKER]["pid"], signal.SIGKILL)
        parent.wait(timeout=180)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    output = log.read_text()
    assert parent.returncode == 0, output
    assert "ended with signal 9" in output

    completed = check_invariants(store, "shared", keys=4)
    lost = next(t for t in trials_of(store, "shared") if t.number == victim.number)
    assert lost.state.name == "FAIL" and "stopped without finishing" in lost.user_attrs[s.REASON]
    retry = next(t for t in completed if t.user_attrs.get(s.RETRY_OF) == victim.number)
    assert retry.user_attrs[s.RESUMED_FROM] >= 1  # continued from its saved epochs
    assert retry.user_attrs[s.RUN_DIR] == str(
        (runs / "shared" / victim.user_attrs[s.RUN_NAME]).resolve()
    )
    epochs = [row["epoch"] for row in retry.user_attrs[s.HISTORY]]
    assert epochs == list(range(1, len(epochs) + 1))  # one unbroken history across the kill
    workers = {t.system_attrs[s.WORKER]["name"] for t in trials_of(store, "shared")}
    assert workers == {"w1", "w2"}  # both workers took runs

    # The same command again: the study is complete, nothing runs.
    again = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert "0 newly planned" in again.stdout and "] #" not in again.stdout
    assert len(check_invariants(store, "shared", keys=4)) == 4


@pytest.mark.slow
def test_kill_at_any_moment_then_the_same_command_finishes(store_url, tmp_path):
    runs, log = tmp_path / "runs", tmp_path / "log.txt"
    # An int for a float field and `auto` values: what the folder holds is normalised.
    command = sweep_command(store_url, runs, "crashy", "1e-3,2e-3,3e-3", 1.5,
                            "--grid", "optim.weight_decay=0", "--set", "data.augment=auto")  # fmt: skip
    store = open_store(store_url)
    finished: dict[str, float] = {}
    # Kills during start-up, planning, training, and between runs.
    for delay in (0.5, 2.5, 3.5, 5.0, 6.5):
        process = start(command, log)
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        for summary in runs.glob("crashy/*/summary.json"):
            finished.setdefault(str(summary), summary.stat().st_mtime_ns)
    final = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    completed = check_invariants(store, "crashy", keys=3)
    # No finished run was trained again: its summary was never rewritten.
    for path, mtime in finished.items():
        assert Path(path).stat().st_mtime_ns == mtime, path
    folders = sorted(p.name for p in (runs / "crashy").iterdir())
    assert len(folders) == 3  # retries continue their folder, never a new one
    assert sorted(Path(t.user_attrs[s.RUN_DIR]).name for t in completed) == folders
    if store_url.startswith("sqlite"):
        database = store_url.removeprefix("sqlite:///")
        assert sqlite3.connect(database).execute("PRAGMA integrity_check").fetchone() == ("ok",)


def test_ctrl_c_records_the_run_as_interrupted_and_the_next_command_resumes_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs' / 'studies.db'}"
    runs, log = tmp_path / "runs", tmp_path / "log.txt"
    command = sweep_command(url, runs, "ctrl-c", "2e-3", 3.0)
    process = start(command, log)
    state = runs / "ctrl-c" / "trial-0000" / "resume" / "state.json"
    try:
        wait_for(state.is_file, timeout=120, what="the first saved epoch")
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 130
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert "run the same command again to continue" in log.read_text()
    store = open_store(url)
    (first,) = trials_of(store, "ctrl-c")
    assert (first.state.name, first.user_attrs[s.STATUS]) == ("FAIL", "interrupted")
    final = subprocess.run(command, capture_output=True, text=True, timeout=180)
    assert final.returncode == 0, final.stdout + final.stderr
    assert "queued again" in final.stdout and "resumed after epoch" in final.stdout
    check_invariants(store, "ctrl-c", keys=1)
