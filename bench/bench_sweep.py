"""Sweep throughput: one worker using every core against one worker per core, median of repeats.

The same small study (a grid of learning rates × seed repeats of short mnist-5k runs) is run
whole, from an empty store, by ``trainlab.experiments.sweep`` in two ways:

* ``1 worker``:  ``workers=1, threads=CORES`` — one run at a time, torch using every core;
* ``N workers``: ``workers=CORES, threads=1`` — CORES runs at a time, one core each.

Each measurement gets a fresh temporary runs folder and SQLite store, so it plans, claims, trains
and records every run; wall time is for the whole ``sweep()`` call (worker start-up included).
Measurements are interleaved (the order alternates per repeat) so machine noise hits both
alike. Small convolutional nets on a few thousand images use two cores poorly, which is what
parallel workers are for; this measures how much that buys.

    python bench/bench_sweep.py                         # 4 lrs × 2 seeds = 8 runs, 3 repeats
    python bench/bench_sweep.py --configs 2 --seeds 1 --repeats 1 --epochs 2   # a quick check
    python bench/bench_sweep.py --model fastnet --train-size 2000
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from procstat import machine_busy_seconds, own_seconds
from trainlab.experiments import open_store, study_runs, sweep
from trainlab.experiments.launch import available_cores


def learning_rates(count: int) -> list[float]:
    """``count`` learning rates log-spaced from 3e-3 down to 3e-4 (two significant digits)."""
    if count == 1:
        return [1e-3]
    return [float(f"{3e-3 * 0.1 ** (i / (count - 1)):.2g}") for i in range(count)]


def base_config(args: argparse.Namespace) -> dict[str, Any]:
    epochs: int | str = int(args.epochs) if args.epochs != "auto" else "auto"
    return {
        "data": {"dataset": args.dataset, "train_size": args.train_size, "val_size": args.val_size},
        "model": {"name": args.model},
        "epochs": epochs,
        "device": "cpu",
    }


def measure(args: argparse.Namespace, workers: int, threads: int) -> dict[str, float]:
    """Run the whole sweep once from an empty store; wall time and what the runs took."""
    lrs = learning_rates(args.configs)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as folder:
        url = f"sqlite:///{Path(folder) / 'studies.db'}"
        busy, own = machine_busy_seconds(), own_seconds()
        started = time.perf_counter()
        report = sweep(
            "bench", base_config(args), grid={"optim.lr": lrs}, repeats=args.seeds,
            storage=url, runs_dir=Path(folder) / "runs", workers=workers, threads=threads,
            echo=print if args.verbose else (lambda line: None),  # workers' lines come here too
        )  # fmt: skip
        seconds = time.perf_counter() - started
        own = own_seconds() - own
        busy_after = machine_busy_seconds()
        rows = study_runs(open_store(url), "bench")
    planned = len(lrs) * args.seeds
    completed = report.info.counts["completed"]
    if completed != planned:
        failed = [f"#{r.number} {r.status}: {r.reason}" for r in rows if r.state != "COMPLETE"]
        raise SystemExit(f"only {completed} of {planned} runs completed: {'; '.join(failed)}")
    train_seconds = [r.seconds for r in rows if r.seconds is not None]
    return {
        "seconds": seconds,
        "runs_per_minute": 60 * completed / seconds,
        "run_seconds": statistics.fmean(train_seconds),  # training time of one run, mean
        "best": report.best.mean,  # same runs either way: a check, not a result
        # Cores kept busy by other processes meanwhile: a benchmark taken beside other work is
        # not a measurement of this machine (the single worker suffers more: it needs every core).
        "others": max(0.0, (busy_after - busy - own) / seconds) if busy is not None else 0.0,
    }


def warm_up(args: argparse.Namespace) -> None:
    """One unmeasured run: the first run in a process pays for lazy imports and caches, which
    would otherwise count against whichever arm happens to go first."""
    import trainlab

    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as folder:
        config = base_config(args) | {"epochs": 1, "progress": False, "out": f"{folder}/run"}
        trainlab.train(config)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3, help="measurements per arm")
    parser.add_argument("--configs", type=int, default=4, help="learning rates in the grid")
    parser.add_argument("--seeds", type=int, default=2, help="sweep repeats per learning rate")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--train-size", type=int, default=1000)
    parser.add_argument("--val-size", type=int, default=500)
    parser.add_argument("--epochs", default="auto", help="epochs per run, or auto (11 at 1000)")
    parser.add_argument("--cores", type=int, default=available_cores(),
                        help="cores to use: 1 worker × CORES threads vs CORES workers × 1 thread")  # fmt: skip
    parser.add_argument("--verbose", action="store_true", help="show the workers' run lines")
    args = parser.parse_args()

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cores = args.cores
    runs = args.configs * args.seeds
    print(f"torch {torch.__version__}, Python {platform.python_version()}, "
          f"{os.cpu_count()} logical cores ({available_cores()} usable), using {cores}; "
          f"{args.dataset} train {args.train_size} / val {args.val_size}, model {args.model}, "
          f"epochs {args.epochs}; lr {learning_rates(args.configs)} × {args.seeds} seeds "
          f"= {runs} runs; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    arms = {
        f"1 worker × {cores} threads": (1, cores),
        f"{cores} workers × 1 thread": (cores, 1),
    }
    warm_up(args)
    results: dict[str, list[dict[str, float]]] = {name: [] for name in arms}
    for repeat in range(args.repeats):
        # Interleaved, and the order alternates, so that machine noise hits both alike.
        order = list(arms) if repeat % 2 == 0 else list(reversed(arms))
        for name in order:
            outcome = measure(args, *arms[name])
            results[name].append(outcome)
            print(f"  repeat {repeat} {name:22s} {outcome['seconds']:6.1f} s  "
                  f"{outcome['runs_per_minute']:5.1f} runs/min  "
                  f"{outcome['run_seconds']:4.1f} s training per run  "
                  f"best val {outcome['best']:.4f}  other processes {outcome['others']:.2f} cores")  # fmt: skip

    print(f"\n| median of {args.repeats}, {runs} runs ({cores}-core CPU) | wall seconds | runs/min "
          "| training seconds per run | cores busy with other work |")  # fmt: skip
    print("|---|---|---|---|---|")
    medians = {}
    for name, outcomes in results.items():
        medians[name] = {key: statistics.median(o[key] for o in outcomes) for key in outcomes[0]}
        m = medians[name]
        print(f"| {name} | {m['seconds']:.1f} | {m['runs_per_minute']:.1f} "
              f"| {m['run_seconds']:.1f} | {m['others']:.2f} |")  # fmt: skip
    single, parallel = (medians[name] for name in arms)
    ratio = parallel["runs_per_minute"] / single["runs_per_minute"]
    print(f"\n{cores} workers × 1 thread / 1 worker × {cores} threads: {ratio:.2f}x the runs per "
          f"minute (median runs/min {parallel['runs_per_minute']:.1f} vs "
          f"{single['runs_per_minute']:.1f})")  # fmt: skip
    # Training alone, without starting processes or planning: what a long sweep tends to.
    training = (cores / parallel["run_seconds"]) / (1 / single["run_seconds"])
    print(f"training alone (runs per second of training, no start-up): {training:.2f}x")
    worst = max(o["others"] for outcomes in results.values() for o in outcomes)
    if worst > 0.2:
        print(
            f"warning: other processes kept up to {worst:.2f} cores busy during a measurement; "
            "run again on a quiet machine"
        )


if __name__ == "__main__":  # required: parallel workers are spawned processes
    main()
