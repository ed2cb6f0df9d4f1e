"""Shared fixtures: small, fast configurations over the real offline MNIST digits."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainlab.config import TrainConfig, build_config


@pytest.fixture
def tiny_config(tmp_path: Path):
    """A config that trains in about a second: 300 real digits, a small MLP, 2 epochs."""

    def make(**overrides) -> TrainConfig:
        tree = {
            "data": {"dataset": "mnist-5k", "train_size": 300, "val_size": 100, "batch_size": 50},
            "model": {"name": "mlp", "options": {"hidden": [32]}},
            "epochs": 2,
            "progress": False,
            "out": str(tmp_path / "run"),
        }
        for dotted, value in overrides.items():
            node = tree
            *parents, leaf = dotted.split("__")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return build_config(tree)

    return make
