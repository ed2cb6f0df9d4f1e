"""Liveness, recovery and claims: the rules that keep two workers off one configuration."""

from __future__ import annotations

import datetime
import multiprocessing
import os
import subprocess
import sys
import time
from types import SimpleNamespace

from trainlab.config import build_config
from trainlab.experiments import study as s
from trainlab.experiments.space import categorical
from trainlab.experiments.store import open_store
from trainlab.experiments.worker import (
    Liveness,
    claim,
    process_alive,
    recover_lost,
    worker_identity,
)


def test_process_alive_tells_dead_zombie_and_reused_pids():
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    started = worker_identity("x")["started"]
    assert process_alive(os.getpid(), started)
    time.sleep(0.5)  # exited but not reaped yet: a zombie, which is not alive
    assert not process_alive(child.pid)
    child.wait()
    assert not process_alive(child.pid)
    assert not process_alive(os.getpid(), started="1")  # same pid, another process start


def fake_trial(worker=None, heartbeat=None, started=None, trial_id=0):
    system_attrs = {}
    if worker is not None:
        system_attrs[s.WORKER] = worker
    if heartbeat is not None:
        system_attrs[s.HEARTBEAT] = heartbeat
    return SimpleNamespace(system_attrs=system_attrs, datetime_start=started, _trial_id=trial_id)


def test_liveness_on_this_machine_follows_the_process():
    liveness = Liveness(lost_after=60)
    me = worker_identity("w1")
    assert liveness.reason(fake_trial(me, heartbeat=0.0)) is None  # alive wins, beat or not
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    dead = {**me, "pid": child.pid, "started": None}
    assert "stopped without finishing" in liveness.reason(fake_trial(dead, time.time()))


def test_a_worker_in_another_pid_namespace_is_judged_by_its_heartbeat():
    # A container sharing this host's name and boot has pids of its own: a pid that is dead
    # here says nothing about it, nor about a worker on a system without a boot id (macOS).
    clock = [0.0]
    liveness = Liveness(lost_after=60, clock=lambda: clock[0])
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    for trial_id, other in enumerate(({"pidns": "pid:[1]"}, {"boot": ""}, {"pidns": None})):
        elsewhere = {**worker_identity("w2"), "pid": child.pid, **other}
        assert liveness.reason(fake_trial(elsewhere, 5.0, trial_id=trial_id)) is None
        clock[0] += 61
        assert "no heartbeat" in liveness.reason(fake_trial(elsewhere, 5.0, trial_id=trial_id))


def test_liveness_on_another_machine_needs_a_heartbeat_that_stops_changing():
    clock = [1000.0]
    liveness = Liveness(lost_after=60, clock=lambda: clock[0])
    remote = {"name": "w1", "host": "elsewhere", "boot": "x", "pid": 1, "started": None}
    # Its clock may be hours off: only whether the value changes counts.
    assert liveness.reason(fake_trial(remote, heartbeat=5.0)) is None
    clock[0] += 50
    assert liveness.reason(fake_trial(remote, heartbeat=5.0)) is None
    clock[0] += 50
    assert liveness.reason(fake_trial(remote, heartbeat=7.0)) is None  # it beat: alive again
    clock[0] += 61
    assert "no heartbeat from elsewhere" in liveness.reason(fake_trial(remote, heartbeat=7.0))
    never = fake_trial(started=datetime.datetime(2026, 1, 1))
    assert liveness.reason(never) is None
    clock[0] += 61
    assert liveness.reason(never) is not None  # claimed, then never heard of


def make_study(store, study_base, n_lr=2, repeats=1, kind="sweep"):
    spec = s.StudySpec(name="w", kind=kind, base=s.base_tree(build_config(study_base)),
                       metric="val.accuracy", repeats=repeats, trials=n_lr,
                       axes=[categorical("optim.lr", [10.0 ** -k for k in range(1, n_lr + 1)])])  # fmt: skip
    study = s.create_or_join(store, spec)
    if kind == "sweep":
        with store.lock("w"):
            s.enqueue_plan(store, study, s.sweep_plan(spec))
    return study, spec


def test_a_dead_workers_run_is_failed_as_lost_and_queued_again(store_url, study_base):
    store = open_store(store_url)
    study, spec = make_study(store, study_base)
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    ghost = {**worker_identity("w9"), "pid": child.pid, "started": None}
    with store.lock("w"):
        trial = claim(store, study, spec, ghost)
        trial.set_user_attr(s.RUN_NAME, "trial-0000")
        messages = recover_lost(store, study, Liveness(60))
        assert recover_lost(store, study, Liveness(60)) == []  # idempotent
    assert [m.split(":")[0] for m in messages] == [
        "run #0 lost",
        "run #0 queued again as #2, resuming its folder",
    ]
    first, _, retry = study.get_trials()
    assert first.state.name == "FAIL" and first.user_attrs[s.STATUS] == "lost"
    assert retry.state.name == "WAITING"
    assert retry.user_attrs[s.RETRY_OF] == 0
    assert retry.user_attrs[s.KEY] == first.user_attrs[s.KEY]
    assert retry.user_attrs[s.RUN_NAME] == "trial-0000"  # the retry resumes the same folder
    assert retry.system_attrs["fixed_params"] == first.system_attrs["fixed_params"]


def _claim_all(url: str, results, worker: int, ready) -> None:
    store = open_store(url)
    study, spec = s.open_study(store, "w")
    me = worker_identity(f"w{worker}")
    # Start claiming together: on a busy machine the first process spawned could otherwise
    # claim everything before the others have imported torch, and nothing would be contended.
    ready.wait(timeout=120)
    while True:
        with store.lock("w"):
            trial = claim(store, study, spec, me)
        if trial is None:
            return
        results.put((worker, trial.number))
        study.tell(trial, 0.5)


def test_concurrent_claims_never_hand_out_a_trial_twice(store_url, study_base):
    store = open_store(store_url)
    make_study(store, study_base, n_lr=6, repeats=4)  # 24 waiting trials
    context = multiprocessing.get_context("spawn")
    results, ready = context.Queue(), context.Barrier(4)
    processes = [
        context.Process(target=_claim_all, args=(store_url, results, i, ready)) for i in range(4)
    ]
    for process in processes:
        process.start()
    claimed = [results.get(timeout=120) for _ in range(24)]
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    numbers = [number for _, number in claimed]
    assert sorted(numbers) == list(range(24))  # each exactly once
    assert len({worker for worker, _ in claimed}) > 1  # and the work was shared


def test_a_search_stops_at_its_trial_budget(store_url, study_base):
    store = open_store(store_url)
    study, spec = make_study(store, study_base, n_lr=3, kind="tune")
    me = worker_identity("w1")
    numbers = []
    for _ in range(5):
        with store.lock("w"):
            trial = claim(store, study, spec, me)
        if trial is None:
            break
        numbers.append(trial.number)
        study.tell(trial, 0.1)
    assert numbers == [0, 1, 2]


def test_the_heartbeat_thread_keeps_writing_until_stopped(tmp_path, study_base):
    from trainlab.experiments.worker import Heartbeat

    store = open_store(f"sqlite:///{tmp_path / 'studies.db'}")
    study, spec = make_study(store, study_base)
    with store.lock("w"):
        trial = claim(store, study, spec, worker_identity("w1"))

    def beat():
        return store.storage.get_trial(trial._trial_id).system_attrs[s.HEARTBEAT]

    first = beat()
    with Heartbeat(store.storage, trial._trial_id, interval=0.05):
        time.sleep(0.4)
    # Sampled after the block, which joins the thread: a beat between a sample taken inside
    # the block and the stop is legitimate (it made this test flaky under load).
    stopped = beat()
    time.sleep(0.2)
    assert first < stopped == beat()  # it beat while running and stopped afterwards


def test_a_silent_worker_on_another_machine_is_recovered_after_the_grace_period(
    store_url, study_base
):
    store = open_store(store_url)
    study, spec = make_study(store, study_base)
    remote = {"name": "w1", "host": "other-machine", "boot": "b", "pid": 1, "started": None}
    with store.lock("w"):
        claim(store, study, spec, remote)
        clock = [0.0]
        liveness = Liveness(lost_after=30, clock=lambda: clock[0])
        assert recover_lost(store, study, liveness) == []  # first sight: alive
        clock[0] = 31.0  # ...and its heartbeat has not changed since
        messages = recover_lost(store, study, liveness)
    assert "no heartbeat from other-machine for more than 30 s" in messages[0]
    assert [t.state.name for t in study.get_trials()] == ["FAIL", "WAITING", "WAITING"]


def test_a_worker_declared_lost_stops_and_leaves_the_folder_to_the_retry(tmp_path, study_base):
    from optuna.trial import TrialState

    from trainlab.experiments.worker import WorkerOptions, run_one

    store = open_store(f"sqlite:///{tmp_path / 'studies.db'}")
    study, spec = make_study(store, study_base)
    with store.lock("w"):
        trial = claim(store, study, spec, worker_identity("w1"))
    # Another worker saw no heartbeat and declared it lost.
    store.storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    lines: list[str] = []
    options = WorkerOptions(runs_dir=tmp_path / "runs", heartbeat=0.01, echo=lines.append)
    assert run_one(store, study, spec, trial, options) is None
    assert "another worker declared it lost" in lines[0]
    assert not list((tmp_path / "runs").rglob("error.txt"))
    assert store.storage.get_trial(trial._trial_id).user_attrs.get(s.STATUS) is None
