"""The model registry: families register a builder by decorator and are created by name.

Following timm, a builder is a plain function::

    @register_model("cnn", description="the 2-conv CNN students write")
    def build(*, in_channels: int, num_classes: int, image_size: tuple[int, int],
              channels=(32, 64), hidden=128) -> nn.Module: ...

Its keyword options and their defaults are read from its signature (and their help from the
``- ``option``: text`` bullets of its docstring), so ``trainlab models``, the unknown-option
error and the saved spec never drift from the code. ``create_model`` stores the
complete build arguments on the module as ``model.trainlab_spec`` (plain JSON types), which is
what a checkpoint saves to rebuild the same architecture: ``create_model(**spec)``.

A family registered with ``source=`` is named by a prefix instead: ``hf:<model id or folder>``
builds the ``hf`` family with ``source="<model id or folder>"`` (its builder takes a keyword
``source``). A builder may record options it resolved (an ``auto`` default, or what a rebuild
needs without the original source) in ``model.trainlab_spec_options``; they replace the given
values in the spec.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainlab.errors import ModelError, did_you_mean

Builder = Callable[..., nn.Module]

# Arguments every builder takes; everything else in its signature is a model option.
SHAPE_ARGUMENTS = ("in_channels", "num_classes", "image_size")
# The extra argument of a prefixed family's builder: what follows "name:" in the model name.
SOURCE_ARGUMENT = "source"


@dataclass(frozen=True)
class ModelInfo:
    """What ``trainlab models`` shows about one registered model."""

    name: str
    description: str
    options: dict[str, Any] = field(default_factory=dict)  # option -> default value
    family: str = ""
    option_help: dict[str, str] = field(default_factory=dict)  # option -> docstring line
    builder: Builder | None = field(default=None, repr=False, compare=False)
    source: str = ""  # prefixed families: what follows "name:", e.g. "model id or folder"

    @property
    def usage(self) -> str:
        """How a model of this family is named: ``cnn``, or ``hf:<model id or folder>``."""
        return f"{self.name}:<{self.source}>" if self.source else self.name


_REGISTRY: dict[str, ModelInfo] = {}
_PREFIXED: dict[str, ModelInfo] = {}  # families named "prefix:<source>", by prefix


def _options_of(builder: Builder, name: str, prefixed: bool = False) -> dict[str, Any]:
    """Keyword options and defaults of a builder; rejects signatures create_model can't call."""
    parameters = inspect.signature(builder).parameters
    required = (*SHAPE_ARGUMENTS, SOURCE_ARGUMENT) if prefixed else SHAPE_ARGUMENTS
    missing = [arg for arg in required if arg not in parameters]
    if missing:
        raise TypeError(f"model builder {name!r} must accept keyword arguments {missing}")
    options: dict[str, Any] = {}
    for parameter in parameters.values():
        if parameter.name in required:
            continue
        if parameter.kind is not inspect.Parameter.KEYWORD_ONLY:
            raise TypeError(
                f"model builder {name!r}: option {parameter.name!r} must be keyword-only"
            )
        if parameter.default is inspect.Parameter.empty:
            raise TypeError(f"model builder {name!r}: option {parameter.name!r} needs a default")
        options[parameter.name] = parameter.default
    return options


_BULLET = re.compile(r"^- ((?:``\w+``(?:, )?)+):\s*(.*)$")


def _option_help(builder: Builder) -> dict[str, str]:
    """Option descriptions from the builder docstring's ``- ``name``: text`` bullets."""
    help_text: dict[str, str] = {}
    current: list[str] = []
    for line in inspect.cleandoc(builder.__doc__ or "").splitlines():
        line = line.strip()
        match = _BULLET.match(line)
        if match:
            current = re.findall(r"``(\w+)``", match.group(1))
            for name in current:
                help_text[name] = match.group(2)
        elif current and line and not line.startswith("-"):
            for name in current:  # a continuation line of the bullet
                help_text[name] = f"{help_text[name]} {line}"
        else:
            current = []
    return help_text


def register_model(
    name: str, *, description: str, family: str | None = None, source: str | None = None
) -> Callable[[Builder], Builder]:
    """Decorator that registers ``builder`` under ``name`` (stored lower-case).

    ``family`` defaults to ``name``; it lets later variants (e.g. ``resnet18``) share a family.
    With ``source`` (what it names, e.g. "model id or folder") the family is a prefix: models
    are named ``name:<source>`` and the builder gets the text after the colon as ``source=``.
    """
    key = name.lower()

    def decorate(builder: Builder) -> Builder:
        if key in _REGISTRY or key in _PREFIXED:
            raise ValueError(f"model {key!r} is already registered")
        if ":" in key:
            raise ValueError(f"model name {key!r} must not contain ':'")
        table = _PREFIXED if source else _REGISTRY
        table[key] = ModelInfo(
            name=key,
            description=description.strip(),
            options=_options_of(builder, key, prefixed=bool(source)),
            family=family or key,
            option_help=_option_help(builder),
            builder=builder,
            source=source or "",
        )
        return builder

    return decorate


def model_names() -> list[str]:
    """Registered names, sorted (prefixed families, such as ``hf``, are not among them)."""
    return sorted(_REGISTRY)


def list_models(*, prefixed: bool = False) -> list[ModelInfo]:
    """Every registered model, sorted by name; with ``prefixed``, then the prefixed families
    (``hf:<model id or folder>``), which cannot be built without a source."""
    models = [_REGISTRY[name] for name in model_names()]
    return models + [_PREFIXED[name] for name in sorted(_PREFIXED)] if prefixed else models


def _available() -> str:
    return ", ".join(info.usage for info in list_models(prefixed=True))


def _unknown_model(name: Any) -> ModelError:
    hint = did_you_mean(name, [*model_names(), *_PREFIXED])
    return ModelError(f"unknown model {name!r}{hint}; available: {_available()}")


def _lookup(name: str) -> tuple[ModelInfo, str | None]:
    """The family of ``name`` and, for a prefixed name such as ``hf:org/model``, its source."""
    if not isinstance(name, str):
        raise _unknown_model(name)
    key = name.lower()
    if key in _REGISTRY:
        return _REGISTRY[key], None
    prefix, colon, source = name.partition(":")
    info = _PREFIXED.get(prefix.lower())
    if info is None:
        raise _unknown_model(name)
    if colon and not source.strip():
        raise ModelError(f"model {name!r} names no {info.source}; use {info.usage}")
    return info, (source.strip() if colon else None)


def get_model_info(name: str) -> ModelInfo:
    """The :class:`ModelInfo` of ``name`` (case-insensitive), or a ModelError listing names.

    A prefixed name (``hf:org/model``) or the bare prefix (``hf``) gives its family's info.
    """
    return _lookup(name)[0]


def model_options(name: str) -> dict[str, Any]:
    """Default options of model ``name`` (a fresh dict)."""
    return dict(get_model_info(name).options)


def _image_size(value: Any) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    ok = (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
    )
    if not ok:
        raise ModelError(
            f"image_size must be (height, width) with positive integers; got {value!r}"
        )
    return int(value[0]), int(value[1])


def _positive(value: Any, what: str, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ModelError(f"{what} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def _jsonable(value: Any) -> Any:
    """Tuples become lists so the spec survives JSON/YAML and compares equal after a round-trip."""
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def check_model(name: str, options: Mapping[str, Any]) -> None:
    """Raise the ModelError :func:`create_model` would for this name and these options (unknown
    model or option, a family that needs a source), without building anything."""
    _checked(name, dict(options))


def _checked(
    name: str, options: dict[str, Any]
) -> tuple[ModelInfo, str | None, str, dict[str, Any]]:
    """Family, source, full name and the options with a nested ``options`` mapping merged."""
    info, source = _lookup(name)
    if info.source and source is None:
        raise ModelError(f"model '{info.name}' needs a {info.source}: use {info.usage}")
    full_name = f"{info.name}:{source}" if info.source else info.name
    nested = options.pop("options", None) if "options" not in info.options else None
    if nested is not None:
        if not isinstance(nested, Mapping):
            raise ModelError(f"options must be a mapping of option names to values; got {nested!r}")
        options = {**nested, **options}
    unknown = sorted(set(options) - set(info.options))
    if unknown:
        valid = ", ".join(info.options) or "(none)"
        hint = did_you_mean(unknown[0], info.options) if len(unknown) == 1 else ""
        raise ModelError(
            f"unknown option{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"for model '{full_name}'{hint}; valid options: {valid}"
        )
    return info, source, full_name, options


def create_model(
    name: str,
    *,
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    **options: Any,
) -> nn.Module:
    """Build model ``name`` for ``in_channels``×``image_size`` images and ``num_classes`` classes.

    ``options`` are the model's keyword options (see :func:`model_options`). A saved spec can be
    passed back as is: ``create_model(**model.trainlab_spec)`` (its ``options`` dict is merged).

    Raises:
        ModelError: unknown name or option, or an option value the model cannot use.
    """
    info, source, full_name, options = _checked(name, options)
    size = _image_size(image_size)
    channels = _positive(in_channels, "in_channels", 1)
    classes = _positive(num_classes, "num_classes", 2)
    resolved = {**info.options, **options}
    assert info.builder is not None
    arguments = {"in_channels": channels, "num_classes": classes, "image_size": size}
    if info.source:
        arguments[SOURCE_ARGUMENT] = source
    try:
        model = info.builder(**arguments, **resolved)
    except ModelError as error:
        raise ModelError(f"model '{full_name}': {error}") from error
    if not getattr(model, "family", ""):
        model.family = info.family
    recorded = model.__dict__.pop("trainlab_spec_options", None) or {}
    unknown = sorted(set(recorded) - set(info.options))
    if unknown:
        raise TypeError(f"model builder {info.name!r} recorded unknown options {unknown}")
    resolved.update(recorded)
    model.trainlab_spec = {
        "name": full_name,
        "in_channels": channels,
        "num_classes": classes,
        "image_size": list(size),
        "options": _jsonable(resolved),
    }
    return model


def model_from_spec(spec: Mapping[str, Any]) -> nn.Module:
    """Rebuild a model from a saved ``trainlab_spec`` (e.g. read from a checkpoint's JSON)."""
    required = ("name", *SHAPE_ARGUMENTS)
    missing = [key for key in required if key not in spec]
    if missing:
        raise ModelError(f"model spec is missing {', '.join(missing)}; was it saved by trainlab?")
    extra = sorted(set(spec) - {*required, "options"})
    if extra:
        raise ModelError(f"model spec has unknown keys {', '.join(extra)}")
    options = dict(spec.get("options") or {})
    return create_model(
        spec["name"],
        in_channels=spec["in_channels"],
        num_classes=spec["num_classes"],
        image_size=tuple(spec["image_size"]),
        **options,
    )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, in_channels: int, image_size: tuple[int, int]) -> int:
    """Multiply-accumulates of one forward pass for one image, in eval mode.

    Counted by torch's FlopCounterMode (matmuls, convolutions, attention; 1 MAC = 2 FLOPs);
    element-wise work (activations, normalisation, pooling) is not included.
    """
    from torch.utils.flop_counter import FlopCounterMode

    height, width = _image_size(image_size)
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, in_channels, height, width, device=device))
    finally:
        model.train(was_training)
    return counter.get_total_flops() // 2
