"""Every example in examples/ is valid: configs name a registered dataset and model, and each
search space (``*-space.yaml``) makes valid configurations of the config it goes with."""

import copy
from pathlib import Path

import numpy as np
import pytest

from trainlab.config import load_config, set_dotted
from trainlab.data.registry import available_names
from trainlab.experiments.space import draw, load_grid, load_space
from trainlab.models import create_model, get_model_info, model_options

FOLDER = Path(__file__).parents[1] / "examples"
SPACES = sorted(FOLDER.glob("*-space.yaml"))
GRIDS = sorted(FOLDER.glob("*-grid.yaml"))
CONFIGS = sorted(set(FOLDER.glob("*.yaml")) - set(SPACES) - set(GRIDS))


def test_there_are_examples():
    assert CONFIGS and SPACES


def check_config(config):
    assert config.data.dataset in available_names()
    unknown = set(config.model.options) - set(model_options(config.model.name))
    assert not unknown, f"unknown model options {unknown}"
    if get_model_info(config.model.name).source:
        return  # hf:<id>: building needs the downloaded weights; tests/models/test_hf.py trains it
    create_model(
        config.model.name,
        in_channels=3,
        num_classes=10,
        image_size=(32, 32),
        **config.model.options,
    )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_is_valid(path):
    check_config(load_config(path))


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_example_search_space_fits_its_config(path):
    config_path = path.with_name(path.name.removesuffix("-space.yaml") + ".yaml")
    assert config_path.is_file(), f"{path.name} goes with {config_path.name}"
    base = load_config(config_path).model_dump(mode="json")
    rng = np.random.default_rng(0)
    for _ in range(5):  # random points of the space make valid configurations
        tree = copy.deepcopy(base)
        for axis in load_space(path):
            set_dotted(tree, axis.key, axis.to_config(draw(axis, rng)))
        check_config(load_config(base=tree))


@pytest.mark.parametrize("path", GRIDS, ids=lambda p: p.name)
def test_example_grid_fits_its_config(path):
    import itertools

    config_path = path.with_name(path.name.removesuffix("-grid.yaml") + ".yaml")
    assert config_path.is_file(), f"{path.name} goes with {config_path.name}"
    base = load_config(config_path).model_dump(mode="json")
    axes = load_grid(path)
    for point in itertools.product(*(axis.distribution.choices for axis in axes)):
        tree = copy.deepcopy(base)
        for axis, value in zip(axes, point, strict=True):
            set_dotted(tree, axis.key, axis.to_config(value))
        check_config(load_config(base=tree))
