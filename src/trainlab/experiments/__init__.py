"""Studies: grid sweeps, seed repeats and Optuna searches, all stored as Optuna studies.

>>> from trainlab.experiments import sweep
>>> report = sweep("lr-study", {"data": {"dataset": "mnist-5k"}},
...                grid={"optim.lr": [1e-3, 3e-3]}, repeats=3, metric="val.accuracy")
>>> report.best.mean, report.best.std, report.best.n
"""

from trainlab.experiments.launch import LaunchOptions
from trainlab.experiments.results import (
    ConfigResult,
    RunRow,
    StudyInfo,
    best_run,
    list_studies,
    rank_configurations,
    study_runs,
)
from trainlab.experiments.store import Store, open_store, resolve_storage_url
from trainlab.experiments.sweep import StudyReport, sweep
from trainlab.experiments.tune import tune

__all__ = [
    "ConfigResult",
    "LaunchOptions",
    "RunRow",
    "Store",
    "StudyInfo",
    "StudyReport",
    "best_run",
    "list_studies",
    "open_store",
    "rank_configurations",
    "resolve_storage_url",
    "study_runs",
    "sweep",
    "tune",
]
