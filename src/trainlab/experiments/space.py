"""Search spaces: what a sweep varies and what a tuner may choose, as Optuna distributions.

One syntax everywhere (``--sample``, ``--grid``, a ``--space`` YAML file)::

    optim.lr: loguniform:1e-5:1e-2        # float on a log scale
    model.options.dropout: uniform:0:0.5  # float, linear
    data.batch_size: logint:16:256        # integer on a log scale (int:a:b[:step] for linear)
    optim.name: [adam, sgd, rmsprop]      # a list is a categorical choice
    model.options.widths: [[16, 32], [32, 64]]   # choices may be lists themselves

Parameters are recorded in the store under their dotted config key, so optuna-dashboard, the
importance analysis and ``trainlab runs`` all show ``optim.lr`` rather than an alias.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainlab.config import ConfigError, parse_value, read_yaml_file, split_top_level

SCALARS = (type(None), bool, int, float, str)
FORMS = "loguniform:LOW:HIGH, uniform:LOW:HIGH, int:LOW:HIGH[:STEP], logint:LOW:HIGH or a list"


@dataclass(frozen=True)
class Axis:
    """One varied config key and its Optuna distribution.

    Optuna's categorical choices must be scalars; a list-valued choice (layer widths) is stored
    as its JSON text and decoded back when the config is built (``encoded``).
    """

    key: str
    distribution: Any  # optuna.distributions.BaseDistribution
    encoded: bool = False

    def to_param(self, value: Any) -> Any:
        return json.dumps(value) if self.encoded else value

    def to_config(self, param: Any) -> Any:
        return json.loads(param) if self.encoded else param

    def describe(self) -> str:
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        d = self.distribution
        if isinstance(d, CategoricalDistribution):
            return f"{self.key} in {[self.to_config(c) for c in d.choices]}"
        kind = "float" if isinstance(d, FloatDistribution) else "int"
        scale = " (log)" if d.log else ""
        return f"{self.key}: {kind} {d.low:g}..{d.high:g}{scale}"

    def to_dict(self) -> dict[str, Any]:
        from optuna.distributions import distribution_to_json

        return {"key": self.key, "distribution": distribution_to_json(self.distribution),
                "encoded": self.encoded}  # fmt: skip

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Axis:
        from optuna.distributions import json_to_distribution

        return cls(data["key"], json_to_distribution(data["distribution"]), data["encoded"])


def categorical(key: str, choices: list[Any]) -> Axis:
    from optuna.distributions import CategoricalDistribution

    if not choices:
        raise ConfigError(f"{key}: give at least one value")
    encoded = not all(isinstance(choice, SCALARS) for choice in choices)
    params = [json.dumps(c) if encoded else c for c in choices]
    if len({_same_value(c) for c in choices}) != len(choices):  # 16 and 16.0 are one value
        raise ConfigError(f"{key}: values repeat in {choices}")
    return Axis(key, CategoricalDistribution(params), encoded)


def _same_value(value: Any) -> str:
    """What makes two values one configuration: numbers by value (``16`` = ``16.0``; a bool is
    not a number here), anything else by its JSON text."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(float(value))
    return json.dumps(value, sort_keys=True)


def _number(text: str, key: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"{key}: {text!r} is not a number (forms: {FORMS})") from None
    if not math.isfinite(value):
        raise ConfigError(f"{key}: bounds must be finite, got {text!r}")
    return value


def parse_distribution(key: str, spec: Any) -> Axis:
    """``"loguniform:1e-5:1e-2"``, a list of choices, or ``{type: float, low, high, log}``."""
    from optuna.distributions import FloatDistribution, IntDistribution

    if isinstance(spec, list):
        return categorical(key, spec)
    if isinstance(spec, dict):
        return _distribution_from_mapping(key, spec)
    if not isinstance(spec, str) or ":" not in spec:
        raise ConfigError(f"{key}: expected one of {FORMS}; got {spec!r}")
    kind, *bounds = spec.split(":")
    kind = kind.strip().lower()
    if kind == "choice":
        return categorical(key, [parse_value(v) for v in split_top_level(":".join(bounds))])
    if kind not in ("uniform", "loguniform", "int", "logint") or len(bounds) not in (2, 3):
        raise ConfigError(f"{key}: unknown distribution {spec!r}; use {FORMS}")
    low, high = (_number(b, key) for b in bounds[:2])
    step = _number(bounds[2], key) if len(bounds) == 3 else None
    log = kind.startswith("log")
    if low >= high:
        raise ConfigError(f"{key}: low must be below high in {spec!r}")
    if log and low <= 0:
        raise ConfigError(f"{key}: a log scale needs a positive low bound, got {spec!r}")
    if log and step is not None:
        raise ConfigError(f"{key}: a step cannot be combined with a log scale ({spec!r})")
    if step is not None and step <= 0:  # Optuna would ignore it, or never stop stepping
        raise ConfigError(f"{key}: the step must be positive ({spec!r})")
    if kind in ("int", "logint"):
        if low != int(low) or high != int(high):
            raise ConfigError(f"{key}: integer bounds expected in {spec!r}")
        return Axis(key, IntDistribution(int(low), int(high), log=log, step=int(step or 1)))
    return Axis(key, FloatDistribution(low, high, log=log, step=step))


def _distribution_from_mapping(key: str, spec: dict[str, Any]) -> Axis:
    kind = str(spec.get("type", "")).lower()
    if kind == "categorical":
        return categorical(key, list(spec.get("choices") or []))
    if kind not in ("float", "int") or "low" not in spec or "high" not in spec:
        raise ConfigError(
            f"{key}: expected {{type: float|int|categorical, low, high[, log, step]}}, got {spec}"
        )
    text = ("log" if spec.get("log") else "") + ("int" if kind == "int" else "uniform")
    parts = [text, str(spec["low"]), str(spec["high"])]
    if spec.get("step") is not None:
        parts.append(str(spec["step"]))
    return parse_distribution(key, ":".join(parts))


def parse_assignment(text: str, flag: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise ConfigError(f"{flag} expects key=value, got {text!r} (e.g. {flag} optim.lr=...)")
    return key.strip(), value.strip()


def parse_grid(items: list[str]) -> list[Axis]:
    """``--grid optim.lr=5e-4,1e-4 --grid data.batch_size=8,16`` -> one categorical per key."""
    axes: dict[str, Axis] = {}
    for item in items:
        key, values = parse_assignment(item, "--grid")
        if key in axes:
            raise ConfigError(f"--grid {key} is given twice; list all its values in one flag")
        axes[key] = categorical(key, [parse_value(v) for v in split_top_level(values)])
    return list(axes.values())


def parse_samples(items: list[str]) -> list[Axis]:
    """``--sample optim.lr=loguniform:1e-5:1e-2`` (repeatable)."""
    axes: dict[str, Axis] = {}
    for item in items:
        key, spec = parse_assignment(item, "--sample")
        if key in axes:
            raise ConfigError(f"--sample {key} is given twice")
        axes[key] = parse_distribution(key, spec)
    return list(axes.values())


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"optim": {"lr": x}}`` -> ``{"optim.lr": x}``; a key given both flat and nested
    (``optim.lr:`` and ``optim: {lr:}``) is refused, not one copy silently dropped."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        found = (_flatten(value, dotted + ".") if isinstance(value, dict) and "type" not in value
                 else {dotted: value})  # fmt: skip
        for name, leaf in found.items():
            if name in flat:
                raise ConfigError(f"{name} is given twice (flat and nested?); give it once")
            flat[name] = leaf
    return flat


def load_space(path: str | Path) -> list[Axis]:
    """A search space file: ``key: distribution`` lines, flat (``optim.lr:``) or nested."""
    path = Path(path)
    tree = read_yaml_file(path, "search space file")
    if not isinstance(tree, dict) or not tree:
        raise ConfigError(f"{path}: expected a mapping of config keys to distributions ({FORMS})")
    return [parse_distribution(key, spec) for key, spec in _flatten(tree).items()]


def load_grid(path: str | Path) -> list[Axis]:
    """A grid file for sweeps: ``key: [value, value, ...]`` per line (every value is run)."""
    from optuna.distributions import CategoricalDistribution

    axes = load_space(path)
    sampled = [a.key for a in axes if not isinstance(a.distribution, CategoricalDistribution)]
    if sampled:
        raise ConfigError(f"{path}: a grid file lists values; {', '.join(sampled)} "
                          "has a distribution (use it with --sample or trainlab tune)")  # fmt: skip
    return axes


def format_param(value: Any) -> str:
    """A configuration value as people write it: 0.003, 3e-05, adam, [32,16]."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def draw(axis: Axis, rng: np.random.Generator) -> Any:
    """One random value of ``axis`` in its parameter representation (for pre-drawn sweeps)."""
    from optuna.distributions import CategoricalDistribution, IntDistribution

    d = axis.distribution
    if isinstance(d, CategoricalDistribution):
        return d.choices[int(rng.integers(len(d.choices)))]
    if d.log:
        value = math.exp(rng.uniform(math.log(d.low), math.log(d.high)))
    else:
        value = rng.uniform(d.low, d.high)
    if isinstance(d, IntDistribution):
        steps = round((value - d.low) / d.step)
        return int(min(d.high, max(d.low, d.low + steps * d.step)))
    if d.step is not None:
        value = d.low + round((value - d.low) / d.step) * d.step
    # Six significant digits read well in tables; clamp again in case rounding crossed a bound.
    return min(d.high, max(d.low, float(f"{value:.6g}")))
