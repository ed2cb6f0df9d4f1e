"""Running workers on this machine: in this process, or as N processes sharing the cores.

Workers on other machines are the same thing started there: ``trainlab sweep``/``tune`` with
the same arguments and ``--storage postgresql://...``, or ``trainlab work STUDY --storage ...``.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import signal
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from trainlab.errors import StudyError
from trainlab.experiments.store import open_store
from trainlab.experiments.worker import (
    HEARTBEAT_SECONDS,
    LOST_AFTER_SECONDS,
    WorkerOptions,
    work,
)


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


@dataclass
class LaunchOptions:
    workers: int = 1
    threads: int | None = None  # torch threads per worker; default: the cores split evenly
    runs_dir: Path = Path("runs")
    heartbeat: float = HEARTBEAT_SECONDS
    lost_after: float = LOST_AFTER_SECONDS
    runtime: dict[str, Any] = field(default_factory=dict)  # device, data.root, data.download
    max_runs: int | None = None  # per worker

    def threads_per_worker(self) -> int | None:
        if self.threads is not None:
            return self.threads
        return None if self.workers == 1 else max(1, available_cores() // self.workers)


def _worker_options(options: LaunchOptions, name: str, echo: Callable[[str], None]):
    return WorkerOptions(runs_dir=Path(options.runs_dir), name=name, heartbeat=options.heartbeat,
                         lost_after=options.lost_after, runtime=dict(options.runtime),
                         max_runs=options.max_runs, echo=echo)  # fmt: skip


def _set_threads(threads: int | None) -> None:
    if threads is None:
        return
    import torch

    torch.set_num_threads(threads)


INTERRUPT_GRACE_S = 3.0


def run_workers(
    url: str, study_name: str, options: LaunchOptions, echo: Callable[[str], None] = print
) -> list[int]:
    """Run ``options.workers`` workers until the study has nothing left; their exit codes.

    More than one worker means processes started with ``spawn``: a script that calls
    ``sweep(..., workers=2)`` needs the usual ``if __name__ == "__main__":`` guard.
    """
    if options.workers == 1:
        import torch

        previous = torch.get_num_threads()
        _set_threads(options.threads_per_worker())
        try:
            work(open_store(url), study_name, _worker_options(options, "w1", echo))
        finally:
            torch.set_num_threads(previous)
        return [0]
    context = multiprocessing.get_context("spawn")  # no forked torch/thread state, any platform
    # One pipe per worker carries its lines to ``echo``: no lock shared between workers, so a
    # worker killed in the middle of a line cannot block the others.
    readers, processes = [], []
    for index in range(options.workers):
        reader, writer = context.Pipe(duplex=False)
        process = context.Process(target=_worker_process, name=f"trainlab-w{index + 1}",
                                  args=(url, study_name, asdict(options), index, writer))  # fmt: skip
        process.start()
        writer.close()  # the child holds its own copy; EOF then means the worker is gone
        readers.append(reader)
        processes.append(process)
    try:
        _relay(readers, echo)
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        # A terminal's Ctrl-C reaches the workers too: give them a moment to record it before
        # passing it on to those it missed (a second one in their bookkeeping is ignored, too).
        for process in processes:
            process.join(timeout=INTERRUPT_GRACE_S)
        for process in processes:
            if process.is_alive() and process.pid is not None:
                os.kill(process.pid, signal.SIGINT)
        for process in processes:
            process.join(timeout=30)
            if process.is_alive():
                process.terminate()
        raise
    codes = [process.exitcode if process.exitcode is not None else -1 for process in processes]
    _report_exits(codes, echo)
    return codes


def _relay(readers: list[Any], echo: Callable[[str], None]) -> None:
    """Pass the workers' lines on until every worker has closed its pipe."""
    open_readers = list(readers)
    while open_readers:
        for reader in wait(open_readers):
            try:
                echo(reader.recv())
            except (EOFError, OSError, pickle.UnpicklingError):
                open_readers.remove(reader)  # finished, or killed mid-line


def _report_exits(codes: list[int], echo: Callable[[str], None]) -> None:
    failed = [(index, code) for index, code in enumerate(codes) if code != 0]
    for index, code in failed:
        how = f"signal {-code}" if code < 0 else f"exit code {code}"
        echo(f"worker w{index + 1} ended with {how}")
    if failed and len(failed) == len(codes):
        raise StudyError(
            "every worker failed (see above); started from a script? `workers > 1` needs "
            '`if __name__ == "__main__":` around the call'
        )


def _worker_process(
    url: str, study_name: str, options: dict[str, Any], index: int, lines: Any
) -> None:
    launch = LaunchOptions(**{**options, "runs_dir": Path(options["runs_dir"])})
    _set_threads(launch.threads_per_worker())

    def echo(line: str) -> None:
        lines.send(line)

    try:
        work(open_store(url), study_name, _worker_options(launch, f"w{index + 1}", echo), index)
    except KeyboardInterrupt:
        sys.exit(130)
