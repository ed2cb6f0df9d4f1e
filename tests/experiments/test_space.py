from __future__ import annotations

import numpy as np
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

from trainlab.config import ConfigError
from trainlab.experiments.space import (
    Axis,
    categorical,
    draw,
    load_space,
    parse_distribution,
    parse_grid,
    parse_samples,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("loguniform:1e-5:1e-2", FloatDistribution(1e-5, 1e-2, log=True)),
        ("uniform:0:0.5", FloatDistribution(0.0, 0.5)),
        ("uniform:0:1:0.25", FloatDistribution(0.0, 1.0, step=0.25)),
        ("int:1:9", IntDistribution(1, 9)),
        ("int:0:64:16", IntDistribution(0, 64, step=16)),
        ("logint:16:256", IntDistribution(16, 256, log=True)),
        ("choice:adam,sgd", CategoricalDistribution(["adam", "sgd"])),
        ([8, 16, 32], CategoricalDistribution([8, 16, 32])),
        ({"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
         FloatDistribution(1e-4, 1e-1, log=True)),
        ({"type": "int", "low": 1, "high": 4}, IntDistribution(1, 4)),
        ({"type": "categorical", "choices": ["a", "b"]}, CategoricalDistribution(["a", "b"])),
    ],
)  # fmt: skip
def test_distribution_forms(spec, expected):
    assert parse_distribution("k", spec).distribution == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("gaussian:0:1", "unknown distribution"),
        ("uniform:1:0", "low must be below high"),
        ("loguniform:0:1", "positive low bound"),
        ("uniform:a:1", "not a number"),
        ("int:0.5:3", "integer bounds"),
        ("logint:1:8:2", "step cannot be combined"),
        ("int:8:64:0", "step must be positive"),
        ("uniform:0:1:-0.1", "step must be positive"),
        ("uniform:0:inf", "finite"),
        (42, "expected one of"),
        ({"type": "float", "low": 1}, "expected {type"),
        ([], "at least one value"),
        ([1, 1], "repeat"),
        ([16, 16.0], "repeat"),  # one value, typed twice: one configuration, not two
    ],
)
def test_bad_distributions_say_what_is_wrong(spec, message):
    with pytest.raises(ConfigError, match=message):
        parse_distribution("optim.lr", spec)


def test_list_choices_are_stored_as_json_and_decoded_back():
    axis = categorical("model.options.hidden", [[16], [32, 16]])
    assert axis.encoded
    assert axis.distribution.choices == ("[16]", "[32, 16]")
    assert axis.to_config(axis.to_param([32, 16])) == [32, 16]
    assert Axis.from_dict(axis.to_dict()) == axis


def test_grid_and_sample_flags():
    grid = parse_grid(
        ["optim.lr=5e-4,1e-4", "optim.name=adam,sgd", "model.options.hidden=[8],[16]"]
    )
    assert [a.key for a in grid] == ["optim.lr", "optim.name", "model.options.hidden"]
    assert grid[0].distribution.choices == (5e-4, 1e-4)  # read as floats, not strings
    assert grid[2].encoded
    with pytest.raises(ConfigError, match="given twice"):
        parse_grid(["optim.lr=1", "optim.lr=2"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_grid(["optim.lr"])
    # a value must not be lost or half-read silently
    with pytest.raises(ConfigError, match="a bracket is not closed"):
        parse_grid(["model.options.widths=[16,32],[8"])
    with pytest.raises(ConfigError, match="a closing ']' without its opening bracket"):
        parse_grid(["model.options.widths=16],[8]"])
    with pytest.raises(ConfigError, match="an empty value between commas"):
        parse_grid(["optim.lr=0.1,,0.2"])
    (trailing,) = parse_grid(["optim.lr=0.1,0.2,"])  # one trailing comma, as people type
    assert trailing.distribution.choices == (0.1, 0.2)
    (axis,) = parse_samples(["optim.lr=loguniform:1e-5:1e-2"])
    assert axis.distribution.log


def test_space_file_flat_and_nested(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "optim.lr: loguniform:1e-4:1e-1\n"
        "optim:\n  name: [adam, sgd]\n"
        "model.options.dropout: {type: float, low: 0, high: 0.5}\n"
    )
    axes = {axis.key: axis for axis in load_space(path)}
    assert set(axes) == {"optim.lr", "optim.name", "model.options.dropout"}
    with pytest.raises(ConfigError, match="not found"):
        load_space(tmp_path / "missing.yaml")
    (tmp_path / "twice.yaml").write_text("optim.lr: [0.001, 0.003]\noptim:\n  lr: [0.1]\n")
    with pytest.raises(ConfigError, match=r"optim\.lr is given twice"):
        load_space(tmp_path / "twice.yaml")  # one copy used to vanish silently
    (tmp_path / "bad.yaml").write_text("- just a list\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_space(tmp_path / "bad.yaml")


@pytest.mark.parametrize(
    "spec",
    ["loguniform:1e-5:1e-2", "uniform:0:0.5", "int:0:64:16", "logint:16:256", [1, "a", None]],
)
def test_draws_stay_inside_the_distribution(spec):
    axis = parse_distribution("k", spec)
    rng = np.random.default_rng(0)
    values = [draw(axis, rng) for _ in range(200)]
    assert all(axis.distribution._contains(axis.distribution.to_internal_repr(v)) for v in values)
    assert len(set(map(repr, values))) > 1
