"""Typed, validated run configuration.

Layering is defaults < config file < command-line flags: :func:`load_config` starts from the
pydantic defaults, merges a YAML file, then applies dotted ``key=value`` overrides such as
``optim.lr=0.05``. The fully resolved config is saved with every run (``config.yaml``).
"""

from __future__ import annotations

import copy
import re
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainlab.errors import TrainlabError, did_you_mean


class ConfigError(TrainlabError, ValueError):
    """A user mistake in a config file or flag; the message says what to fix."""


class _Strict(BaseModel):
    # Unknown keys are typos more often than not: reject them instead of ignoring them.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


FillMode = Literal["zero", "reflect", "edge"]


class AugmentConfig(_Strict):
    """Batch-wise augmentation; every field at its zero value means 'off'."""

    rotate: float = Field(0.0, ge=0, le=180, description="max rotation, degrees (±)")
    translate: float = Field(0.0, ge=0, le=0.5, description="max shift, fraction of image size")
    scale: float = Field(0.0, ge=0, lt=1, description="max zoom change, e.g. 0.1 -> 0.9..1.1")
    shear: float = Field(0.0, ge=0, le=45, description="max shear, degrees (±)")
    crop: int = Field(0, ge=0, le=16, description="random crop after padding by this many pixels")
    hflip: bool = Field(False, description="random horizontal flip (never for digits/characters)")
    cutout: int = Field(0, ge=0, description="side of a square erased at a random place, pixels")
    erasing: float = Field(0.0, ge=0, le=1, description="probability of random erasing")
    mixup: float = Field(0.0, ge=0, description="mixup Beta(alpha, alpha); 0 = off")
    cutmix: float = Field(0.0, ge=0, description="cutmix Beta(alpha, alpha); 0 = off")
    fill: FillMode = Field("zero", description="how pixels outside the image are filled")

    @model_validator(mode="after")
    def _fill_needs_an_operation(self) -> AugmentConfig:
        # `--set data.augment.fill=reflect` over the default `auto` builds this: it would train
        # with no augmentation at all, silently. Setting any field of augment replaces auto.
        # (A saved config.yaml sets every field: only a fill given alone is refused.)
        if self.model_fields_set == {"fill"}:
            raise ValueError(
                f"fill={self.fill} with no operation on augments nothing (setting a field of "
                "augment replaces `auto`): name the operations too, e.g. --augment "
                f"rotate=10,translate=0.1,fill={self.fill} (`trainlab augment-preview` prints "
                "what auto picks for your data)"
            )
        return self

    def is_identity(self) -> bool:
        return self.model_dump(exclude={"fill"}) == _NO_AUGMENTATION


_NO_AUGMENTATION = AugmentConfig().model_dump(exclude={"fill"})

# What the images are (mirrors trainlab.data.types.DataKind, kept here so config stays torch-free).
DataKindName = Literal["digits", "characters", "natural", "other", "unknown"]


class DataConfig(_Strict):
    dataset: str = Field("mnist-5k", description="registry name, .npz file or image folder")
    kind: DataKindName | None = Field(
        None,
        description="override what the images are (digits, characters, natural, other, unknown); "
        "picks default augmentation. None = what the dataset says",
    )
    root: str | None = Field(
        None, description="data cache folder (default TRAINLAB_DATA or ~/.cache/trainlab)"
    )
    download: bool = True
    val_fraction: float = Field(0.1, gt=0, lt=1, description="validation share of training data")
    val_size: int | None = Field(None, gt=0, description="validation size; overrides val_fraction")
    split_seed: int = Field(0, description="seed of the train/val split (fixed across run seeds)")
    folds: int | None = Field(
        None,
        ge=2,
        le=100,
        description="k-fold cross-validation: validate on fold `fold` of a stratified k-way "
        "partition of the training data (replaces val_fraction); sweeps set it with --cv K",
    )
    fold: int = Field(0, ge=0, description="which fold validates when `folds` is set")
    train_fraction: float | None = Field(
        None, gt=0, le=1, description="stratified subsample of train"
    )
    train_size: int | None = Field(None, gt=0, description="stratified subsample size of train")
    batch_size: int = Field(128, gt=0)
    eval_batch_size: int = Field(1000, gt=0)
    augment: AugmentConfig | Literal["auto"] = Field(
        "auto", description="'auto' picks defaults that fit the dataset"
    )

    @model_validator(mode="after")
    def _one_subsample(self) -> DataConfig:
        if self.train_fraction is not None and self.train_size is not None:
            raise ValueError("give train_fraction or train_size, not both")
        if self.folds is not None and self.val_size is not None:
            raise ValueError("give folds (k-fold validation) or val_size, not both")
        if self.folds is not None and self.fold >= self.folds:
            raise ValueError(
                f"fold {self.fold} does not exist with {self.folds} folds (0..{self.folds - 1})"
            )
        return self


class ModelConfig(_Strict):
    name: str = Field("fastnet", description="registry name, see `trainlab models`")
    options: dict[str, Any] = Field(
        default_factory=dict, description="keyword options of the model"
    )


OptimizerName = Literal["sgd", "momentum", "nesterov", "adam", "adamw", "rmsprop", "adagrad"]


class OptimConfig(_Strict):
    name: OptimizerName = "adamw"
    lr: float = Field(2e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1, description="for the momentum and nesterov optimizers")
    weight_decay: float = Field(5e-4, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)
    grad_clip: float | None = Field(None, gt=0, description="max global gradient norm")

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimConfig:
        if self.name == "nesterov" and self.momentum == 0:
            raise ValueError("nesterov needs a momentum above 0 (with 0 it is plain sgd)")
        return self

    def ignored(self) -> list[str]:
        """Its settings off their default that this optimizer does not use (a momentum given
        to adam): saved in config.yaml as if used, though they change nothing."""
        return [key for key, users in OPTIMIZER_SETTINGS.items()
                if self.name not in users
                and getattr(self, key) != type(self).model_fields[key].default]  # fmt: skip


# Which optimizers use a setting; the others ignore it.
OPTIMIZER_SETTINGS = {"momentum": ("momentum", "nesterov"), "betas": ("adam", "adamw")}


def ignored_setting(key: str, optimizer: str) -> str:
    """The message for a setting ``optimizer`` ignores."""
    users = OPTIMIZER_SETTINGS[key]
    return (f"optim.{key} applies to the {' and '.join(users)} optimizers, not {optimizer}: it "
            f"would change nothing; choose one of those (--optimizer {users[0]}) or leave "
            f"{key} out")  # fmt: skip


ScheduleName = Literal["constant", "step", "exponential", "cosine", "onecycle", "plateau"]


class ScheduleConfig(_Strict):
    name: ScheduleName = "onecycle"
    warmup_epochs: float = Field(0.0, ge=0, description="linear warmup from ~0, epochs")
    step_size: float = Field(10, gt=0, description="step: epochs between decays")
    gamma: float = Field(
        0.1, gt=0, le=1, description="step/plateau: factor; exponential: per epoch"
    )
    min_lr_ratio: float = Field(0.0, ge=0, le=1, description="cosine/onecycle: final lr / peak lr")
    pct_start: float = Field(0.25, gt=0, lt=1, description="onecycle: share of training rising")
    start_ratio: float = Field(0.04, gt=0, le=1, description="onecycle: first lr / peak lr")
    plateau_patience: int = Field(2, ge=0, description="plateau: epochs without improvement")


MonitorName = Literal["val.loss", "val.accuracy", "val.balanced_accuracy", "val.macro_f1"]


class EarlyStoppingConfig(_Strict):
    enabled: bool = False
    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)


def known_device(name: str) -> bool:
    """The device names trainlab accepts: auto, cpu, mps, cuda and cuda:N."""
    return re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", name) is not None


class TrainConfig(_Strict):
    """Everything that defines a run; saved as ``config.yaml`` in the run folder."""

    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    early_stopping: EarlyStoppingConfig = Field(default_factory=EarlyStoppingConfig)
    monitor: MonitorName = Field(
        "val.loss", description="metric that picks the best epoch (weights kept, early stopping)"
    )
    mode: Literal["auto", "min", "max"] = Field("auto", description="auto: min for loss, else max")
    epochs: int | Literal["auto"] = Field(
        "auto", description="epochs; auto scales with training-set size (see auto_epochs)"
    )
    budget: float | None = Field(
        None,
        gt=0,
        description="wall-clock budget in seconds: training runs until it is spent (epochs is "
        "then ignored), with the schedule fitted to it",
    )
    seed: int = 0
    deterministic: bool = False
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, mps")
    amp: bool | Literal["auto"] = Field("auto", description="mixed precision; auto = on for CUDA")
    channels_last: bool | Literal["auto"] = Field(
        "auto",
        description="NHWC memory layout; auto = on for convolutional models (faster on CPU and GPU)",
    )
    label_smoothing: float = Field(0.1, ge=0, lt=1)
    class_weights: Literal["none", "balanced"] = Field(
        "none",
        description="balanced: weight the training loss of each class by n / (classes × count) "
        "on the training split, for imbalanced data such as K49; validation loss is unweighted",
    )
    ema_decay: float | None = Field(None, gt=0, lt=1, description="EMA of weights, e.g. 0.999")
    out: str | None = Field(
        None, description="run folder; default runs/<timestamp>-<dataset>-<model>"
    )
    progress: bool = True

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if known_device(value):
            return value
        raise ValueError(f"unknown device {value!r}; use auto, cpu, cuda, cuda:N or mps")

    @field_validator("epochs")
    @classmethod
    def _positive_epochs(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value <= 0:
            raise ValueError("epochs must be a positive number or 'auto'")
        return value

    @model_validator(mode="after")
    def _mode_fits_monitor(self) -> TrainConfig:
        expected = "min" if self.monitor.endswith("loss") else "max"
        if self.mode not in ("auto", expected):
            raise ValueError(
                f"mode {self.mode!r} with monitor {self.monitor!r} would keep the worst epoch; "
                f"use mode {expected} (or auto)"
            )
        return self

    def resolved_mode(self) -> Literal["min", "max"]:
        if self.mode != "auto":
            return self.mode
        return "min" if self.monitor.endswith("loss") else "max"


# ---------------------------------------------------------------------------------------------
# Layering: defaults < file < flags
# ---------------------------------------------------------------------------------------------


def auto_epochs(train_size: int) -> int:
    """Epochs for ``epochs: auto``: 8 at ~4,000 training images, 5 at ~54,000 (MNIST-sized).

    Bigger datasets give more optimizer steps per epoch, so fewer epochs reach the same loss.
    Chosen with bench/bench_train.py and seed repeats on mnist-5k (3,600 and 1,000 images):
    8 epochs keep 98.9% test accuracy at 6.5 s, where 10 gain <0.1 points for 25% more time.
    """
    return max(3, min(30, round(8 * (4000 / max(train_size, 1)) ** 0.2)))


class _YamlLoader(yaml.SafeLoader):
    """A safe loader that reads ``1e-3`` as a float and refuses a key given twice.

    PyYAML follows YAML 1.1, where a float needs a dot (``1.0e-3``), so the way everybody writes
    learning rates would arrive as the string ``"1e-3"``. And it lets a second ``optim:`` section
    replace the first one silently, with every key of the first lost.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *base` may repeat keys
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping", node.start_mark,
                    f"the key {key!r} is given twice (the second would replace the first)",
                    key_node.start_mark,
                )  # fmt: skip
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
        |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+]?[0-9]+)?
        |[-+]?\.(?:inf|Inf|INF)
        |\.(?:nan|NaN|NAN))$""",
        re.VERBOSE,
    ),
    list("-+0123456789."),
)


# Values a config may expand to. Aliases (``*name``) share, not copy, what they name, so nine
# nested ones in a few hundred bytes ("billion laughs") stand for 10⁹ values: cheap to load,
# gigabytes once anything (validation, an error message) walks them.
MAX_YAML_VALUES = 100_000


def load_yaml(text: str) -> Any:
    """Parse YAML safely (no arbitrary objects), with ``1e-3`` read as a float; a document
    whose aliases expand it past ``MAX_YAML_VALUES`` values is refused."""
    data = yaml.load(text, Loader=_YamlLoader)
    if _expanded_size(data, {}) > MAX_YAML_VALUES:
        raise yaml.YAMLError(f"the document expands to more than {MAX_YAML_VALUES:,} values "
                             "through its aliases (*name): write the values out")  # fmt: skip
    return data


def _expanded_size(value: Any, seen: dict[int, int]) -> int:
    """How many values ``value`` stands for with every alias expanded (memoised by identity,
    so the walk itself stays as small as the document)."""
    if not isinstance(value, (dict, list)):
        return 1
    key = id(value)
    if key not in seen:
        seen[key] = 0  # a cycle (an alias inside what it names) counts once
        children = value.values() if isinstance(value, dict) else value
        seen[key] = 1 + sum(_expanded_size(child, seen) for child in children)
    return seen[key]


def parse_value(text: str) -> Any:
    """Read a flag value the way YAML would: ``0.05`` -> float, ``true`` -> bool, ``[1,2]`` -> list."""
    try:
        return load_yaml(text) if text.strip() else ""
    except yaml.YAMLError:
        return text


def split_top_level(text: str) -> list[str]:
    """Split at commas that are not inside brackets: ``"a=1,b=[2,3]"`` -> ``["a=1", "b=[2,3]"]``."""
    parts, depth, current, quote = [], 0, [], ""
    for char in text:
        if quote:  # inside quotes nothing is structure: 'smile :)' and "a,b" are one value
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[{(":
            depth += 1
        elif char in "]})":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"{text!r}: a closing {char!r} without its opening bracket")
        if char == "," and depth == 0 and not quote:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth:
        raise ConfigError(f"{text!r}: a bracket is not closed")
    parts.append("".join(current))
    stripped = [part.strip() for part in parts]
    if len(stripped) > 1 and not stripped[-1]:
        stripped.pop()  # one trailing comma, as people type in lists
    if not any(stripped):
        return []
    if not all(stripped):  # "0.1,,0.2": a value was lost, not meant
        raise ConfigError(f"{text!r}: an empty value between commas; remove the extra comma")
    return stripped


def parse_key_values(text: str, what: str) -> dict[str, Any]:
    """``"rotate=15,hidden=[64,32]"`` -> ``{"rotate": 15, "hidden": [64, 32]}``."""
    result: dict[str, Any] = {}
    for item in split_top_level(text):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{what}: expected key=value[,key=value...], got {item!r}")
        result[key.strip().replace("-", "_")] = parse_value(value.strip())
    return result


def set_dotted(tree: dict[str, Any], dotted_key: str, value: Any) -> None:
    """Set ``tree["optim"]["lr"]`` from ``"optim.lr"``, creating nested dicts as needed."""
    *parents, leaf = dotted_key.split(".")
    node = tree
    for part in parents:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {} if child is None or isinstance(child, str) else child
            if not isinstance(child, dict):
                raise ConfigError(f"cannot set {dotted_key!r}: {part!r} is not a section")
            node[part] = child
        node = child
    node[leaf] = value


# Keys that say one thing two ways: the later layer's choice replaces what an earlier layer set
# (a file's `val_size: 500` must not outlive `--val-fraction 0.2`, nor refuse `--train-fraction`).
ALTERNATIVES = (("data.val_fraction", "data.val_size"), ("data.train_fraction", "data.train_size"))


def drop_alternatives(tree: dict[str, Any], chosen: set[str]) -> None:
    """Remove from ``tree`` the alternatives of the dotted keys in ``chosen`` that this layer
    did not set itself (two of one group in the same layer stay: that is the user's conflict)."""
    for group in ALTERNATIVES:
        if chosen & set(group):
            for key in set(group) - chosen:
                *parents, leaf = key.split(".")
                node: Any = tree
                for part in parents:
                    node = node.get(part) if isinstance(node, dict) else None
                if isinstance(node, dict):
                    node.pop(leaf, None)


def dotted_keys(tree: dict[str, Any], prefix: str = "") -> set[str]:
    """Every leaf of a nested config dict as a dotted key."""
    keys: set[str] = set()
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        keys |= dotted_keys(value, dotted + ".") if isinstance(value, dict) else {dotted}
    return keys


def apply_overrides(tree: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` strings (``--set``) to a plain config dict, returning a copy."""
    tree = copy.deepcopy(tree)
    chosen: set[str] = set()
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects key=value, got {override!r} (e.g. optim.lr=0.05)")
        key = key.strip()
        set_dotted(tree, key, text_value(value) if key in TEXT_KEYS else parse_value(value))
        chosen.add(key)
    drop_alternatives(tree, chosen)
    return tree


# Names and paths stay text: YAML would read `hf:` as a mapping and `2024` as a number.
TEXT_KEYS = frozenset({"model.name", "data.dataset", "data.root", "out", "device"})


def text_value(text: str) -> str | None:
    """A name or path given on the command line: ``null``, ``~`` or nothing mean no value (as
    in YAML, and as a resumed study run passes a default), one pair of quotes is taken off."""
    text = text.strip()
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict) and key != "options":
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def read_yaml_file(path: str | Path, what: str = "config file") -> Any:
    """A YAML file the user gave (or a run folder holds): any way it cannot be read, from a
    folder in its place to a binary file, is a ConfigError naming it, never a traceback."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{what} {path} is a folder; give the YAML file")
    if not path.is_file():
        raise ConfigError(f"{what} not found: {path}")
    try:
        return load_yaml(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not UTF-8 text; is it the right file?") from None
    except OSError as error:
        raise ConfigError(f"cannot read {what} {path}: {error.strerror or error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(error)}") from None


def yaml_problem(error: yaml.YAMLError) -> str:
    """PyYAML's several-line message as one line: what and where (``line 3, column 1``)."""
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    mark = getattr(error, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(error, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")


def read_config_file(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    content = read_yaml_file(path)
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (data:, model:, optim: ...)")
    return content


def _field_path(location: tuple[Any, ...]) -> str:
    """``('epochs', "literal['auto']")`` -> ``epochs``: drop the union-member tags pydantic adds."""
    parts = [
        str(part)
        for part in location
        if isinstance(part, int)
        or not ("[" in str(part) or str(part)[:1].isupper() or part in _TYPE_TAGS)
    ]
    return ".".join(parts) or "config"


_TYPE_TAGS = {"int", "float", "bool", "str", "dict", "list", "tuple", "none"}


def _most_specific(messages: list[str]) -> list[str]:
    """A union's type mismatches ("Input should be 'auto'") beside a check of the member the
    value did match (a dict that is a wrong AugmentConfig) only hide the real problem."""
    checks = [m for m in messages if not m.startswith("Input should be")]
    return checks or messages


def _section_class(annotation: Any) -> type[BaseModel] | None:
    """The config class inside a field's annotation (``AugmentConfig | Literal['auto']``)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for member in typing.get_args(annotation):
        found = _section_class(member)
        if found is not None:
            return found
    return None


def _unknown_key(location: tuple[Any, ...]) -> str:
    """An unknown key's message, with the near miss among its section's keys (``optim.lrr``
    -> ``lr``): a typo in a flag is the usual cause."""
    section: type[BaseModel] | None = TrainConfig
    for part in location[:-1]:
        field = section.model_fields.get(str(part)) if section is not None else None
        if field is not None:
            section = _section_class(field.annotation)
    keys = list(section.model_fields) if section is not None else []
    return f"unknown key{did_you_mean(location[-1], keys)}; valid: {', '.join(keys)}"


def build_config(tree: dict[str, Any]) -> TrainConfig:
    """Validate a plain dict into a :class:`TrainConfig`: one line per wrong field."""
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as error:
        problems: dict[str, list[str]] = {}
        for problem in error.errors():
            message = problem["msg"].removeprefix("Value error, ")
            if problem["type"] == "extra_forbidden":
                message = _unknown_key(problem["loc"])
            messages = problems.setdefault(_field_path(problem["loc"]), [])
            if message not in messages:
                messages.append(message)
        # A union's other members report on the parent ("should be 'auto'"): when a field
        # inside it is wrong, that field is the useful line.
        specific = {
            w: m for w, m in problems.items() if not any(o.startswith(w + ".") for o in problems)
        }
        lines = [f"  {where}: {' — or: '.join(_most_specific(messages))}"
                 for where, messages in specific.items()]  # fmt: skip
        raise ConfigError("invalid configuration:\n" + "\n".join(lines)) from None


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
) -> TrainConfig:
    """Defaults < ``base`` < file at ``path`` < dotted ``overrides``."""
    tree: dict[str, Any] = dict(base or {})
    if path is not None:
        from_file = read_config_file(path)
        tree = deep_merge(tree, from_file)
        drop_alternatives(tree, dotted_keys(from_file))
    tree = apply_overrides(tree, overrides or [])
    return build_config(tree)


def config_to_yaml(config: TrainConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
