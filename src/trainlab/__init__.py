"""trainlab: train, tune, compare and serve small image classifiers.

>>> import trainlab
>>> result = trainlab.train()                      # the default recipe on offline MNIST digits
>>> result.test["accuracy"], result.run_dir

Public names are imported lazily so that ``import trainlab`` (and the CLI's start-up) stays fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "train": "trainlab.training",
    "RunResult": "trainlab.training",
    "TrainConfig": "trainlab.config",
    "load_config": "trainlab.config",
    "Checkpoint": "trainlab.runs.checkpoint",
    "load_checkpoint": "trainlab.runs.checkpoint",
    "create_model": "trainlab.models",
    "list_models": "trainlab.models",
    "load_dataset": "trainlab.data",
    "list_datasets": "trainlab.data",
    "TrainlabError": "trainlab.errors",
}

__all__ = [
    "Checkpoint",
    "RunResult",
    "TrainConfig",
    "TrainlabError",
    "__version__",
    "create_model",
    "list_datasets",
    "list_models",
    "load_checkpoint",
    "load_config",
    "load_dataset",
    "train",
]

if TYPE_CHECKING:
    from trainlab.config import TrainConfig, load_config
    from trainlab.data import list_datasets, load_dataset
    from trainlab.errors import TrainlabError
    from trainlab.models import create_model, list_models
    from trainlab.runs.checkpoint import Checkpoint, load_checkpoint
    from trainlab.training import RunResult, train


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'trainlab' has no attribute {name!r}")
