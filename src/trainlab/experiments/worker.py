"""A worker: take the next configuration nobody has taken, run it, record it, repeat.

Every step that decides who runs what happens inside the study's lock (see ``store.py``):

1. runs whose worker is gone are marked ``lost`` (same machine: its process is dead; another
   machine: no heartbeat for ``lost_after`` seconds) and queued again with the same parameters
   and the same run folder, so the retry resumes from the last saved epoch;
2. the first waiting trial is claimed (sweeps plan all their trials up front; a search asks its
   sampler for a new one while its trial budget lasts).

Training itself runs outside the lock. A heartbeat thread keeps the claim alive; the result is
recorded as user attributes and then told to Optuna, so a worker killed between the two leaves
a finished run folder that the retry adopts without training again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import signal
import socket
import threading
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainlab._io import write_json_atomic
from trainlab.engine.callbacks import Callback
from trainlab.errors import StudyError, TrainlabError
from trainlab.experiments import study as s
from trainlab.experiments.store import Store
from trainlab.units import format_metric

HEARTBEAT_SECONDS = 10.0
LOST_AFTER_SECONDS = 60.0  # no heartbeat this long from another machine: its worker is gone
POLL_SECONDS = 0.5  # an idle worker re-checks for lost runs this often (one cheap query)
TRAINING_STATUS_TO_STATE = {"completed": "COMPLETE", "early_stopped": "COMPLETE",
                            "budget_exhausted": "COMPLETE", "pruned": "PRUNED"}  # fmt: skip
ERROR_FILE = "error.txt"


# -- who is running what -----------------------------------------------------------------------


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _process_start(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot): tells a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else None


def process_alive(pid: int, started: str | None = None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return True  # no /proc (macOS): the signal check is all we have
    if state in ("Z", "X"):  # killed, not yet reaped by its parent
        return False
    return started is None or _process_start(pid) == started


def worker_identity(name: str) -> dict[str, Any]:
    pid = os.getpid()
    return {"name": name, "host": socket.gethostname(), "boot": _boot_id(), "pid": pid,
            "started": _process_start(pid), "pidns": _pid_namespace()}  # fmt: skip


def _pid_namespace() -> str:
    """This process's process-ID namespace (``pid:[4026531836]``), or "" where unknown."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def same_machine(worker: dict[str, Any]) -> bool:
    """Whether the worker's pid can be checked from here: same host name, same boot and same
    process-ID namespace. Containers can share the host's name and boot but not its pids; and
    without a boot id (no /proc, as on macOS) a reused pid cannot be told apart: those are
    judged by their heartbeat instead."""
    boot = _boot_id()
    return (
        bool(boot)
        and worker.get("host") == socket.gethostname()
        and worker.get("boot") == boot
        and worker.get("pidns", "") == _pid_namespace()
    )


class Liveness:
    """Decides whether the worker of a RUNNING trial is gone.

    Same machine: its process is dead. Another machine: its heartbeat has not *changed* for
    ``lost_after`` seconds of this worker's own clock, so clocks that disagree between
    machines cannot make a live worker look dead (nor a dead one alive).
    """

    def __init__(self, lost_after: float, clock: Callable[[], float] = time.monotonic):
        self.lost_after, self.clock = lost_after, clock
        self._seen: dict[int, tuple[Any, float]] = {}  # trial id -> (heartbeat, first seen)

    def reason(self, trial: Any) -> str | None:
        """Why the trial's worker is considered gone, or None while it is alive."""
        worker = trial.system_attrs.get(s.WORKER) or {}
        if worker and same_machine(worker):
            if process_alive(int(worker["pid"]), worker.get("started")):
                return None
            return (
                f"worker {worker.get('name', '?')} (pid {worker['pid']}) stopped without finishing"
            )
        beat = trial.system_attrs.get(s.HEARTBEAT, str(trial.datetime_start))
        now = self.clock()
        seen = self._seen.get(trial._trial_id)
        if seen is None or seen[0] != beat:
            self._seen[trial._trial_id] = (beat, now)
            return None
        if now - seen[1] <= self.lost_after:
            return None
        host = worker.get("host", "an unknown machine")
        return f"no heartbeat from {host} for more than {self.lost_after:.0f} s"


class Heartbeat:
    """Writes a timestamp into the trial every ``interval`` seconds while a run trains."""

    def __init__(self, storage: Any, trial_id: int, interval: float,
                 evicted: threading.Event | None = None):  # fmt: skip
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self.evicted = evicted or threading.Event()  # set when another worker declared us lost
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="trainlab-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """No more beats (idempotent): the trial's last writes then have the store to themselves."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.interval + 5)

    def _beat(self) -> None:
        while not self._stop.is_set():
            # A missed beat (database busy, connection dropped) is retried; the run goes on.
            with contextlib.suppress(Exception):
                if self.storage.get_trial(self.trial_id).state.is_finished():
                    self.evicted.set()
                    return
                self.storage.set_trial_system_attr(self.trial_id, s.HEARTBEAT, time.time())
            self._stop.wait(self.interval)


# -- recovery and claims (inside the study lock) -----------------------------------------------


def recover_lost(store: Store, study: Any, liveness: Liveness) -> list[str]:
    """Fail runs whose worker is gone and queue them again; returns one message per recovery."""
    import optuna
    from optuna.trial import TrialState

    storage, messages = store.storage, []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        reason = liveness.reason(trial)
        if reason is None:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, s.STATUS, "lost")
            storage.set_trial_user_attr(trial._trial_id, s.REASON, reason)
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # it finished after all
        messages.append(f"run #{trial.number} lost: {reason}")
    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs.get(s.RETRY_OF) for t in trials}
    for trial in trials:
        if (s.is_resumable(trial.state.name, trial.user_attrs.get(s.STATUS))
                and trial.number not in continued):  # fmt: skip
            number = requeue(store, study, trial)
            messages.append(f"run #{trial.number} queued again as #{number}, resuming its folder")
    return messages


def requeue(store: Store, study: Any, trial: Any) -> int:
    from optuna.trial import TrialState, create_trial

    carried = (s.KEY, s.REPEAT, s.SEED, s.FOLD, s.OVERRIDES, s.RUN_NAME)
    user_attrs = {key: trial.user_attrs[key] for key in carried if key in trial.user_attrs}
    user_attrs.setdefault(s.RUN_NAME, run_name(trial.number))
    user_attrs[s.RETRY_OF] = trial.number
    params = trial.system_attrs.get("fixed_params") or trial.params
    template = create_trial(state=TrialState.WAITING, system_attrs={"fixed_params": params},
                            user_attrs=user_attrs)  # fmt: skip
    storage = store.storage
    trial_id = storage.create_new_trial(store.study_id(study), template_trial=template)
    return storage.get_trial_number_from_id(trial_id)


def failed_for_good(study: Any) -> list[Any]:
    """Runs that ended with an error (an exception: out of memory, a full disk, a folder of
    another study) and have no retry yet. A divergence or a budget too short for one epoch is
    the run's own result: its folder holds it, and running it again would adopt it unchanged."""
    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs.get(s.RETRY_OF) for t in trials}
    return [t for t in trials if t.state.name == "FAIL" and t.number not in continued
            and t.user_attrs.get(s.STATUS) == "error"]  # fmt: skip


def retry_failed(store: Store, study: Any, name: str, wanted: bool) -> str:
    """With ``wanted`` (``--retry-failed``), queue every run that failed for good again: once
    its cause is gone (memory freed, a foreign folder moved away) it runs, continuing its folder
    where it has one, and the failed attempt counts as retried. Either way, what to tell."""
    with store.lock(name):
        failed = failed_for_good(study)
        if not failed:
            return ""
        if not wanted:
            return (f", {len(failed)} run(s) that ended with an error not run again "
                    f"({RETRY_FLAG} runs them)")  # fmt: skip
        for trial in failed:
            requeue(store, study, trial)
    return f", {len(failed)} run(s) that ended with an error queued again"


def effective_trials(study: Any) -> int:
    """Trials that count against a search's budget: a lost attempt and its retry count once."""
    trials = study.get_trials(deepcopy=False)
    continued = {t.user_attrs.get(s.RETRY_OF) for t in trials}
    return sum(1 for t in trials if t.number not in continued)


def claim(store: Store, study: Any, spec: s.StudySpec, me: dict[str, Any]) -> Any | None:
    """The next trial for this worker, already RUNNING and marked as ours; None when done."""
    import optuna
    from optuna.trial import TrialState, create_trial

    storage = store.storage
    for waiting in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        # Mark it ours before it turns RUNNING: a RUNNING trial always names its worker.
        storage.set_trial_system_attr(waiting._trial_id, s.WORKER, me)
        storage.set_trial_system_attr(waiting._trial_id, s.HEARTBEAT, time.time())
        if storage.set_trial_state_values(waiting._trial_id, TrialState.RUNNING):
            return optuna.Trial(study, waiting._trial_id)
    if spec.kind == "tune" and effective_trials(study) < spec.trials:
        template = create_trial(state=TrialState.RUNNING,
                                system_attrs={s.WORKER: me, s.HEARTBEAT: time.time()})  # fmt: skip
        return optuna.Trial(study, storage.create_new_trial(store.study_id(study), template))
    return None


def alive_elsewhere(study: Any) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))


# -- running one trial ------------------------------------------------------------------------


def run_name(number: int) -> str:
    return f"trial-{number:04d}"


class Evicted(Exception):
    """Another worker declared this run lost (no heartbeat seen) and continues its folder."""


def retrying(action: Callable[[], Any], attempts: int = 5, delay: float = 0.5) -> Any:
    """Run a store operation, retrying transient failures (a busy database, a dropped or
    restarting server) with exponential backoff; a finished trial means we were evicted."""
    import optuna

    for attempt in range(attempts):
        try:
            return action()
        except optuna.exceptions.UpdateFinishedTrialError:
            raise Evicted() from None
        except optuna.exceptions.StorageInternalError:
            if attempt == attempts - 1:
                raise
            time.sleep(delay * 2**attempt)
    return None


class TrialReporter(Callback):
    """Reports the monitored validation metric after every epoch (Optuna intermediate values,
    which pruners read) and stops the run when the pruner says so."""

    def __init__(self, trial: Any, prune: bool, evicted: threading.Event | None = None):
        self.trial, self.prune = trial, prune
        self.evicted = evicted or threading.Event()
        self.resumed_from = 0  # epochs the run already had when this trial took it over

    def on_batch_end(self, trainer: Any) -> None:
        if self.evicted.is_set():
            raise Evicted()

    def on_fit_start(self, trainer: Any) -> None:
        self.resumed_from = trainer.state.epoch
        for record in trainer.state.history:  # a resumed run: epochs done before the loss
            self.report(record, trainer.monitor_key)

    def on_epoch_end(self, trainer: Any, record: dict[str, float]) -> None:
        self.report(record, trainer.monitor_key)
        if self.prune and trainer.state.status == "running" and retrying(self.trial.should_prune):
            trainer.request_stop("pruned", f"pruned after epoch {trainer.state.epoch}")

    def report(self, record: dict[str, float], column: str) -> None:
        value = record.get(column)
        if value is not None and math.isfinite(value):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a step reported twice is ignored, fine
                retrying(lambda: self.trial.report(float(value), step=int(record["epoch"])))


@dataclass
class TrialOutcome:
    number: int
    status: str  # completed, early_stopped, budget_exhausted, pruned, diverged, error, lost...
    reason: str | None = None
    value: float | None = None
    attrs: dict[str, Any] = field(default_factory=dict)


def _scalars(metrics: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {f"{prefix}.{k}": v for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}  # fmt: skip


def _rounded(history: list[dict[str, float]]) -> list[dict[str, Any]]:
    return [{k: (None if isinstance(v, float) and not math.isfinite(v) else
                 float(f"{v:.6g}") if isinstance(v, float) else v) for k, v in row.items()}
            for row in history]  # fmt: skip


def outcome_from_summary(number: int, summary: dict[str, Any], history: list, run_dir: Path,
                         resumed_from: int | None) -> TrialOutcome:  # fmt: skip
    status = summary["status"]
    value = summary.get("best_value")
    reason = summary.get("stop_reason")
    if status == "diverged" or (value is not None and not math.isfinite(value)):
        status, reason, value = "diverged", reason or "no finite validation value", None
    elif value is None:  # e.g. a budget too short for one epoch: nothing diverged
        status, reason = "no_result", "no validation epoch finished (budget too short?)"
    attrs = {
        s.STATUS: status,
        s.REASON: reason,
        s.BEST_EPOCH: summary.get("best_epoch"),
        s.EPOCHS_RUN: summary.get("epochs_run"),
        s.SECONDS: summary.get("train_seconds"),
        s.RUN_DIR: str(run_dir.resolve()),
        s.HOST: socket.gethostname(),
        s.HISTORY: _rounded(history),
        **_scalars(summary.get("val") or {}, "val"),
        **_scalars(summary.get("test") or {}, "test"),
    }
    if resumed_from:
        attrs[s.RESUMED_FROM] = resumed_from
    return TrialOutcome(number, status, reason, value, attrs)


MARKER_FILE = "trial.json"  # which study/configuration a run folder belongs to
RUNTIME_DEFAULTS = {"device": "auto", "data.root": None, "data.download": True}


def fingerprint(spec: s.StudySpec, overrides: dict[str, Any], seed: int,
                fold: int | None = None) -> str:  # fmt: skip
    """Identity of a run: the study's definition, this configuration, its seed (and fold)."""
    identity: dict[str, Any] = {"study": spec.identity(), "overrides": overrides, "seed": seed}
    if fold is not None:
        identity["fold"] = fold
    text = json.dumps(identity, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class FolderMarker(Callback):
    """Writes ``trial.json`` as the run starts (after train() has created the folder)."""

    def __init__(self, run_dir: Path, marker: dict[str, Any]):
        self.run_dir, self.marker = run_dir, marker

    def on_fit_start(self, trainer: Any) -> None:
        path = self.run_dir / MARKER_FILE
        if not path.is_file():
            write_json_atomic(path, self.marker)


RETRY_FLAG = "--retry-failed"


class ForeignRunFolder(TrainlabError):
    """The run's folder holds another run: it is never continued, adopted or written into."""


def folder_state(run_dir: Path, marker: dict[str, Any]) -> str:
    """``new`` (absent, or nothing worth keeping) or ``ours`` (continue or adopt it).

    A folder is continued only when its ``trial.json`` names this very run: a store
    recreated beside an old runs folder must not pass off another run as this one.
    """
    from trainlab.runs.record import RESUME_STATE, SUMMARY_FILE, read_run_json

    if not run_dir.exists():
        return "new"
    path = run_dir / MARKER_FILE
    if path.is_file():
        found = read_run_json(path)
        if found.get("fingerprint") == marker["fingerprint"]:
            return "ours"
        raise ForeignRunFolder(
            f"{run_dir} holds another run ({found.get('study')!r}: "
            f"{found.get('configuration')}); was the study store replaced? Move that folder "
            f"away and run the same command with {RETRY_FLAG}"
        )
    worked = (run_dir / SUMMARY_FILE).is_file() or (run_dir / (RESUME_STATE + ".json")).is_file()
    if worked:
        raise ForeignRunFolder(f"{run_dir} holds a run that is not this study's (no {MARKER_FILE}); "
                               f"move that folder away and run the same command with {RETRY_FLAG}")  # fmt: skip
    return "new"  # killed before its first epoch: nothing to keep


def runtime_overrides(runtime: dict[str, Any]) -> list[str]:
    """This machine's runtime keys for a resumed run, defaults included: a run continued on
    another machine must not inherit the lost worker's device or data folder."""

    def text(value: Any) -> str:
        return (
            "null"
            if value is None
            else str(value).lower()
            if isinstance(value, bool)
            else str(value)
        )

    return [f"{key}={text(value)}" for key, value in {**RUNTIME_DEFAULTS, **runtime}.items()]


def execute(trial: Any, spec: s.StudySpec, options: WorkerOptions,
            evicted: threading.Event | None = None) -> TrialOutcome:  # fmt: skip
    """Run (or resume, or adopt) the trial's run folder and describe what came of it."""
    from trainlab.runs.record import CONFIG_FILE, read_history, read_run_config, read_summary
    from trainlab.training import train

    if spec.kind == "tune":
        # One sampler seed per trial number: workers on several machines, started together,
        # still propose different points, and a single worker stays reproducible.
        trial.study.sampler = s.make_sampler(spec, stream=trial.number)
    overrides = suggest(trial, spec)
    seed = int(trial.user_attrs.get(s.SEED, default_seed(spec, trial.number)))
    fold = trial.user_attrs.get(s.FOLD)
    name = trial.user_attrs.get(s.RUN_NAME) or run_name(trial.number)
    trial.set_user_attr(s.OVERRIDES, overrides)
    trial.set_user_attr(s.SEED, seed)
    trial.set_user_attr(s.RUN_NAME, name)
    run_dir = Path(options.runs_dir) / spec.name / name
    marker = {"study": spec.name, "configuration": describe(overrides, seed, fold),
              "fingerprint": fingerprint(spec, overrides, seed, fold)}  # fmt: skip
    prune = spec.kind == "tune" and s.parse_pruner(spec.pruner)[0] != "none"
    reporter = TrialReporter(trial, prune=prune, evicted=evicted)
    callbacks = [reporter, FolderMarker(run_dir, marker)]

    if folder_state(run_dir, marker) == "ours":
        summary = read_summary(run_dir)
        if summary is not None and summary.get("status") not in (None, "running"):
            # Finished before its worker was lost: adopt it, train nothing.
            history = read_history(run_dir)
            column = read_run_config(run_dir).monitor.replace(".", "_")
            for record in history:
                reporter.report(record, column)
            return outcome_from_summary(trial.number, summary, history, run_dir, None)
        if (run_dir / CONFIG_FILE).is_file():
            result = train(resume=run_dir, callbacks=callbacks,
                           runtime_overrides=runtime_overrides(options.runtime))  # fmt: skip
            return outcome_from_summary(trial.number, result.summary, result.history, run_dir,
                                        reporter.resumed_from)  # fmt: skip
    if run_dir.exists():
        _clear(run_dir)
    config = spec.trial_config(overrides, seed, options.runtime, fold=fold)
    config.out = str(run_dir)
    result = train(config, callbacks=callbacks)
    return outcome_from_summary(trial.number, result.summary, result.history, run_dir,
                                reporter.resumed_from)  # fmt: skip


def _clear(run_dir: Path) -> None:
    import shutil

    shutil.rmtree(run_dir)


def default_seed(spec: s.StudySpec, number: int) -> int:
    """The training seed of a run the plan gave none (a search's trials): the base seed plus the
    trial number, so a point the sampler proposes twice is a second seed of it, a real repeat,
    and not a copy that would pass for one (n=2, std 0) in the ranking and the report's tests."""
    base = int(spec.base.get("seed", 0))
    return base + number if spec.kind == "tune" else base


def suggest(trial: Any, spec: s.StudySpec) -> dict[str, Any]:
    """Config values of this trial: planned (sweeps, retries) or chosen by the sampler now."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    overrides = {}
    for axis in spec.all_axes():
        d = axis.distribution
        if isinstance(d, CategoricalDistribution):
            param = trial.suggest_categorical(axis.key, d.choices)
        elif isinstance(d, FloatDistribution):
            param = trial.suggest_float(axis.key, d.low, d.high, log=d.log, step=d.step)
        else:
            param = trial.suggest_int(axis.key, d.low, d.high, log=d.log, step=d.step)
        overrides[axis.key] = axis.to_config(param)
    return overrides


def record(store: Store, study: Any, trial: Any, outcome: TrialOutcome) -> bool:
    """Attributes first, then the state: a kill between the two leaves a run to adopt.
    False when another worker already declared this run lost (its retry adopts our folder)."""
    import optuna

    storage = store.storage
    try:
        with store.lock(study.study_name):  # never interleaved with a recovery of this trial
            retrying(lambda: _write_outcome(store, study, trial, outcome))
    except Evicted:
        return False
    except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError):
        # Finished by someone else meanwhile (declared lost): not an error of ours.
        if storage.get_trial(trial._trial_id).state.is_finished():
            return False
        raise
    return True


def _write_outcome(store: Store, study: Any, trial: Any, outcome: TrialOutcome) -> None:
    from optuna.trial import TrialState

    storage = store.storage
    if storage.get_trial(trial._trial_id).state.is_finished():
        raise Evicted()
    for key, value in outcome.attrs.items():
        storage.set_trial_user_attr(trial._trial_id, key, value)
    state = TRAINING_STATUS_TO_STATE.get(outcome.status)
    if state == "COMPLETE":
        study.tell(trial, outcome.value)
    elif state == "PRUNED":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)


# -- the worker loop --------------------------------------------------------------------------


@dataclass
class WorkerOptions:
    runs_dir: Path = Path("runs")
    name: str = "w1"
    heartbeat: float = HEARTBEAT_SECONDS
    lost_after: float = LOST_AFTER_SECONDS
    poll: float = POLL_SECONDS
    max_runs: int | None = None  # stop after this many runs (None: until the study is done)
    wait_for_others: bool = True  # when idle, wait for runs of other workers (they may be lost)
    runtime: dict[str, Any] = field(default_factory=dict)  # this machine's device, data.root...
    echo: Callable[[str], None] = print


def describe(overrides: dict[str, Any], seed: int | None = None, fold: int | None = None) -> str:
    parts = [f"{key}={value:.4g}" if isinstance(value, float) else f"{key}={value}"
             for key, value in overrides.items()]  # fmt: skip
    if seed is not None:
        parts.append(f"seed={seed}")
    if fold is not None:
        parts.append(f"fold={fold}")
    return " ".join(parts) or "base config"


def work(store: Store, study_name: str, options: WorkerOptions, worker_index: int = 0) -> list[int]:
    """Run trials of ``study_name`` until none is left; returns the numbers of the trials run."""
    import optuna

    s.quiet_optuna()
    study, spec = s.open_study(store, study_name, worker_index=worker_index)
    me = worker_identity(options.name)
    liveness = Liveness(options.lost_after)
    done: list[int] = []
    waiting_said = False
    try:
        while options.max_runs is None or len(done) < options.max_runs:
            with store.lock(study_name):
                for message in retrying(lambda: recover_lost(store, study, liveness)):
                    options.echo(f"[{options.name}] {message}")
                trial = retrying(lambda: claim(store, study, spec, me))
                others = alive_elsewhere(study) if trial is None else 0
            if trial is None:
                if not others or not options.wait_for_others:
                    break
                if not waiting_said:
                    options.echo(f"[{options.name}] waiting for {others} run(s) of other workers")
                    waiting_said = True
                time.sleep(options.poll)
                continue
            waiting_said = False
            done.append(trial.number)
            run_one(store, study, spec, trial, options)
    except optuna.exceptions.StorageInternalError as error:
        cause = error.__cause__ or error
        reason = str(getattr(cause, "orig", None) or cause).strip().splitlines()[0]
        raise StudyError(
            f"lost the study store {store.display_url} ({reason}); a run left unfinished is "
            "resumed by the next worker: run the same command again"
        ) from None
    return done


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """Ctrl-C pressed twice must not cut short the bookkeeping of the first: the run would
    stay claimed, and be taken for lost (a dead worker) instead of interrupted."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals are delivered to the main thread only; nothing to hold off here
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_one(
    store: Store, study: Any, spec: s.StudySpec, trial: Any, options: WorkerOptions
) -> TrialOutcome | None:
    import optuna
    from optuna.trial import TrialState

    tag = f"[{options.name}] #{trial.number:04d}"
    evicted = threading.Event()
    with Heartbeat(store.storage, trial._trial_id, options.heartbeat, evicted) as beat:
        try:
            outcome = execute(trial, spec, options, evicted)
        except (Evicted, optuna.exceptions.UpdateFinishedTrialError):
            options.echo(f"{tag} stopped: another worker declared it lost and continues its "
                         "run folder")  # fmt: skip
            return None
        except KeyboardInterrupt:
            # Marked so that the next `trainlab sweep`/`tune` continues this run folder. The
            # heartbeat stops first (a busy SQLite store must not refuse the last writes), and
            # each write is retried; should all fail, the next command finds the run lost.
            with sigint_ignored(), contextlib.suppress(Exception):
                beat.stop()
                retrying(lambda: trial.set_user_attr(s.STATUS, "interrupted"))
                retrying(lambda: trial.set_user_attr(s.REASON, "interrupted (Ctrl-C)"))
                retrying(lambda: study.tell(trial, state=TrialState.FAIL))
            raise
        except Exception as error:  # one broken run must not stop the study
            if isinstance(error, optuna.exceptions.StorageInternalError):
                raise  # the store, not the run: the run stays to be resumed
            outcome = error_outcome(trial, spec, options, error)
    attrs = trial.user_attrs
    recorded = record(store, study, trial, outcome)
    options.echo(f"{tag} {describe(attrs.get(s.OVERRIDES, {}), attrs.get(s.SEED), attrs.get(s.FOLD))}: "
                 + summary_line(spec, outcome)
                 + ("" if recorded else " (already declared lost; its retry adopts this folder)"))  # fmt: skip
    return outcome


def error_outcome(trial: Any, spec: s.StudySpec, options: WorkerOptions,
                  error: Exception) -> TrialOutcome:  # fmt: skip
    name = trial.user_attrs.get(s.RUN_NAME) or run_name(trial.number)
    run_dir = Path(options.runs_dir) / spec.name / name
    reason = str(error) if isinstance(error, TrainlabError) else f"{type(error).__name__}: {error}"
    attrs: dict[str, Any] = {s.STATUS: "error", s.REASON: reason, s.HOST: socket.gethostname()}
    from trainlab.runs.record import SUMMARY_FILE

    if isinstance(error, ForeignRunFolder) or (run_dir / SUMMARY_FILE).is_file():
        return TrialOutcome(trial.number, "error", reason, None, attrs)  # not ours to write into
    # The traceback goes beside the run, for whoever debugs it; the store keeps the reason.
    with contextlib.suppress(OSError):
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / ERROR_FILE).write_text(traceback.format_exc(), encoding="utf-8")
        attrs[s.RUN_DIR] = str(run_dir.resolve())
    return TrialOutcome(trial.number, "error", reason, None, attrs)


def summary_line(spec: s.StudySpec, outcome: TrialOutcome) -> str:
    attrs = outcome.attrs
    if outcome.value is None:
        where = f" → {attrs[s.RUN_DIR]}" if attrs.get(s.RUN_DIR) else ""
        return f"{outcome.status} ({outcome.reason}){where}"
    test_key = "test." + spec.metric.split(".", 1)[1]
    parts = [
        f"{outcome.status}, {spec.metric} {format_metric(outcome.value, spec.metric)} "
        f"(epoch {attrs.get(s.BEST_EPOCH)})"
    ]
    if test_key in attrs:
        parts.append(f"{test_key} {format_metric(attrs[test_key], test_key)}")
    if attrs.get(s.SECONDS) is not None:
        parts.append(f"{attrs[s.SECONDS]:.1f} s")
    if attrs.get(s.RESUMED_FROM):
        parts.append(f"resumed after epoch {attrs[s.RESUMED_FROM]}")
    return ", ".join(parts) + f" → {attrs.get(s.RUN_DIR)}"
