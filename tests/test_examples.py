"""Every example config in examples/ validates and names a registered dataset and model."""

from pathlib import Path

import pytest

from trainlab.config import load_config
from trainlab.data.registry import available_names
from trainlab.models import create_model, model_options

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_is_valid(path):
    config = load_config(path)
    assert config.data.dataset in available_names()
    unknown = set(config.model.options) - set(model_options(config.model.name))
    assert not unknown, f"unknown model options {unknown}"
    create_model(
        config.model.name,
        in_channels=3,
        num_classes=10,
        image_size=(32, 32),
        **config.model.options,
    )
