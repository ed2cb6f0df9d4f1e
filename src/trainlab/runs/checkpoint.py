"""A checkpoint is the whole artifact: weights plus everything needed to use them.

```
checkpoint/
  model.safetensors   the model's state_dict (no pickle: loading never runs code)
  model.json          format version, trainlab version, architecture (the model's
                      trainlab_spec), preprocessing, class names, free-form metadata,
                      and the SHA-256 of model.safetensors
```

As in nanoGPT, the architecture travels with the weights, so :meth:`Checkpoint.build_model`
rebuilds the model without the config that trained it; as in timm, the preprocessing travels
too, so a server normalises uploads exactly as training did.

The weights are written first and ``model.json`` last, each atomically: a ``model.json``
means a complete checkpoint. Its checksum of the weights catches a weights file replaced by
a later, interrupted save, or damaged on the way.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

import trainlab
from trainlab._io import write_json_atomic
from trainlab.config import DataKindName
from trainlab.errors import RunError, WriteError
from trainlab.runs.state import load_tensors, save_tensors

__all__ = [
    "CHECKPOINT_FORMAT_VERSION",
    "DATA_KINDS",
    "Checkpoint",
    "find_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
]

CHECKPOINT_FORMAT_VERSION = 1
CHECKPOINT_DIR = "checkpoint"
WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
# New weights wait under this name until model.json (with their checksum) is in place: a save
# killed at any moment leaves a loadable checkpoint, the old one or the new one.
PENDING_WEIGHTS_FILE = ".model.safetensors.pending"
_FORMAT = "trainlab-checkpoint"
DATA_KINDS: tuple[str, ...] = typing.get_args(DataKindName)
_REQUIRED = ("architecture", "preprocessing", "class_names")


@dataclass
class Checkpoint:
    """A loaded checkpoint; :meth:`build_model` turns it into a ready model."""

    architecture: dict[str, Any]  # the model's trainlab_spec: name, in_channels, ... options
    preprocessing: dict[str, Any]  # mean, std (per channel), kind, channels, image_size
    class_names: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)  # e.g. epoch, validation metrics
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    path: Path | None = None  # the folder it was loaded from
    trainlab_version: str | None = None  # the version that saved it

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def build_model(self, device: str | torch.device = "cpu") -> nn.Module:
        """Rebuild the architecture, load the weights (strictly) and return it in eval mode.

        Raises :class:`RunError` if the weights do not fit the architecture, and
        :class:`~trainlab.errors.ModelError` if the architecture is unknown to this trainlab.
        """
        # Imported here: the registry imports every model family, which loading metadata
        # (e.g. for `trainlab info`) should not pay for.
        from trainlab.models import model_from_spec

        name = self.architecture.get("name", "?")
        shell = _shapes_only(self.architecture)
        if shell is not None:  # before any memory: an edited width could ask for petabytes
            _check_weights_fit(shell, self.state_dict, name, self.path)
        model = model_from_spec(self.architecture)
        _check_weights_fit(model, self.state_dict, name, self.path)
        model.load_state_dict(self.state_dict, strict=True)
        return model.to(device).eval()


def _shapes_only(architecture: dict[str, Any]) -> nn.Module | None:
    """The architecture built on the meta device (shapes, no memory), or None for a family that
    cannot be built there (``hf:`` reads its config and weights from files)."""
    from trainlab.errors import ModelError
    from trainlab.models import model_from_spec

    if str(architecture.get("name", "")).startswith("hf:"):
        return None
    try:
        with torch.device("meta"):
            return model_from_spec(architecture)
    except ModelError:
        raise
    except Exception:
        # A model computing with real values in __init__ (.numpy(), .item(), ...) cannot be
        # built there: its weights are checked after building instead.
        return None


# --------------------------------------------------------------------------- save


def save_checkpoint(
    folder: str | Path,
    model: nn.Module,
    *,
    preprocessing: dict[str, Any],
    class_names: list[str],
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Save ``model`` (made by ``trainlab.models.create_model``) as a checkpoint folder.

    ``preprocessing`` needs ``mean`` and ``std`` (one value per channel) and ``kind`` (one of
    digits, characters, natural, other); ``channels`` and ``image_size`` default to the
    architecture's. Returns the folder. Overwrites a checkpoint already there.
    """
    folder = Path(folder)
    model = getattr(model, "_orig_mod", model)  # torch.compile wraps the module
    architecture = _architecture_of(model)
    preprocessing = _normalise_preprocessing(preprocessing, architecture)
    class_names = [str(name) for name in class_names]
    if len(class_names) != architecture["num_classes"]:
        raise ValueError(
            f"{len(class_names)} class names for a model with {architecture['num_classes']} classes"
        )
    # Three steps, each atomic: the new weights beside the old, the JSON naming their checksum,
    # then the weights into place. Killed after the first, the old pair is whole; after the
    # second, loading finds the pending weights by the JSON's checksum and completes the save.
    pending = folder / PENDING_WEIGHTS_FILE
    digest = save_tensors(pending, model.state_dict(), metadata={"format": _FORMAT})
    write_json_atomic(
        folder / META_FILE,
        {
            "format": _FORMAT,
            "format_version": CHECKPOINT_FORMAT_VERSION,
            "trainlab_version": trainlab.__version__,
            "architecture": architecture,
            "preprocessing": preprocessing,
            "class_names": class_names,
            "metadata": dict(metadata or {}),
            "weights_sha256": digest,
        },
    )
    _move_into_place(pending, folder / WEIGHTS_FILE)
    return folder


def _move_into_place(pending: Path, weights: Path) -> None:
    try:
        os.replace(pending, weights)
    except FileNotFoundError:
        if not weights.is_file():
            raise WriteError(f"cannot write {weights}: its new weights vanished") from None
        # A reader loading the checkpoint just now completed this save (_completed_save).
    except OSError as error:
        raise WriteError(f"cannot write {weights}: {error.strerror or error}") from None


def _architecture_of(model: nn.Module) -> dict[str, Any]:
    spec = getattr(model, "trainlab_spec", None)
    if not isinstance(spec, dict) or not {"name", "in_channels", "num_classes"} <= spec.keys():
        raise ValueError(
            "the model has no trainlab_spec; build it with trainlab.models.create_model "
            "so the checkpoint can rebuild it"
        )
    # A JSON round-trip gives an independent copy in plain JSON types (tuples become lists).
    return json.loads(json.dumps(spec))


def _normalise_preprocessing(
    preprocessing: dict[str, Any], architecture: dict[str, Any]
) -> dict[str, Any]:
    missing = [key for key in ("mean", "std", "kind") if key not in preprocessing]
    if missing:
        raise ValueError(f"preprocessing lacks {', '.join(missing)}")
    if preprocessing["kind"] not in DATA_KINDS:
        raise ValueError(
            f"preprocessing kind {preprocessing['kind']!r} is not one of {', '.join(DATA_KINDS)}"
        )
    result = dict(preprocessing)
    # float() per element: accepts lists, tuples and tensors alike, and stores plain floats.
    result["mean"] = [float(value) for value in preprocessing["mean"]]
    result["std"] = [float(value) for value in preprocessing["std"]]
    result.setdefault("channels", architecture["in_channels"])
    if "image_size" in architecture:
        result.setdefault("image_size", list(architecture["image_size"]))
    for key in ("mean", "std"):
        if len(result[key]) != result["channels"]:
            raise ValueError(
                f"preprocessing {key} needs {result['channels']} values, one a channel"
            )
    if "image_size" in result:
        result["image_size"] = [int(side) for side in result["image_size"]]
    return result


# --------------------------------------------------------------------------- load


def find_checkpoint(path: str | Path) -> Path:
    """The checkpoint folder for ``path``: the folder itself, a run folder holding
    ``checkpoint/``, or either file of the checkpoint. Raises :class:`RunError` if none."""
    path = Path(path)
    if not path.exists():
        raise RunError(f"checkpoint not found: {path} does not exist")
    if path.is_file() and path.name in (META_FILE, WEIGHTS_FILE):
        return path.parent
    for candidate in (path, path / CHECKPOINT_DIR):
        if (candidate / META_FILE).is_file() or (candidate / WEIGHTS_FILE).is_file():
            return candidate
    raise RunError(
        f"no checkpoint in {path}: expected {META_FILE} and {WEIGHTS_FILE} there or in "
        f"{path / CHECKPOINT_DIR}"
    )


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Load a checkpoint folder, or the ``checkpoint/`` of a run folder. Never unpickles.

    Raises :class:`RunError` for a missing folder or file, a corrupt or newer-format
    ``model.json``, or weights that are damaged or from another save.
    """
    folder = find_checkpoint(path)
    meta = _read_meta(folder / META_FILE)
    digest = meta.get("weights_sha256")
    try:
        state_dict = load_tensors(folder / WEIGHTS_FILE, sha256=digest)
    except RunError:
        state_dict = _completed_save(folder, digest)
        if state_dict is None:
            raise
    return Checkpoint(
        architecture=meta["architecture"],
        preprocessing=meta["preprocessing"],
        class_names=[str(name) for name in meta["class_names"]],
        metadata=meta.get("metadata") or {},
        state_dict=state_dict,
        path=folder,
        trainlab_version=meta.get("trainlab_version"),
    )


def _completed_save(folder: Path, digest: Any) -> dict[str, torch.Tensor] | None:
    """The weights of a save killed between its JSON and its last rename: the pending file the
    JSON's checksum names, moved into place when the folder allows (None: no such file)."""
    pending = folder / PENDING_WEIGHTS_FILE
    if not isinstance(digest, str) or not pending.is_file():
        return None
    try:
        state_dict = load_tensors(pending, sha256=digest)
    except RunError:
        return None
    with contextlib.suppress(OSError):  # a read-only copy still loads
        os.replace(pending, folder / WEIGHTS_FILE)
    return state_dict


def _read_meta(meta_path: Path) -> dict[str, Any]:
    if not meta_path.is_file():
        raise RunError(
            f"incomplete checkpoint {meta_path.parent}: {META_FILE} is missing "
            "(was the save interrupted?); save the checkpoint again"
        )
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as error:
        raise RunError(f"corrupt checkpoint file {meta_path}: {error}") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise RunError(f"{meta_path} is not a trainlab checkpoint")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise RunError(f"corrupt checkpoint file {meta_path}: no format version")
    if version > CHECKPOINT_FORMAT_VERSION:
        raise RunError(
            f"{meta_path} was saved by trainlab {meta.get('trainlab_version', '?')} in checkpoint "
            f"format {version}; this trainlab ({trainlab.__version__}) reads format "
            f"{CHECKPOINT_FORMAT_VERSION} or older: upgrade trainlab"
        )
    missing = [key for key in _REQUIRED if not isinstance(meta.get(key), (dict, list))]
    if missing:
        raise RunError(f"corrupt checkpoint file {meta_path}: no valid {', '.join(missing)}")
    problem = _contents_problem(meta)
    if problem is not None:
        raise RunError(f"corrupt checkpoint file {meta_path}: {problem}")
    return meta


def _contents_problem(meta: dict[str, Any]) -> str | None:
    """What is wrong with a model.json's architecture, preprocessing and class names, if
    anything: checked on load, so a damaged or hand-edited file is one clear error instead of
    a traceback deep in a model, or predictions of NaN% under no class name."""

    def positive_ints(value: Any, count: int) -> bool:
        return (isinstance(value, list) and len(value) == count
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))  # fmt: skip

    def finite_numbers(value: Any, count: int) -> bool:
        return (isinstance(value, list) and len(value) == count
                and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                        and math.isfinite(v) for v in value))  # fmt: skip

    architecture, pre, names = meta["architecture"], meta["preprocessing"], meta["class_names"]
    if not isinstance(architecture, dict) or not isinstance(pre, dict):
        return "architecture and preprocessing must be objects"
    classes, channels = architecture.get("num_classes"), pre.get("channels")
    if not isinstance(architecture.get("name"), str):
        return "the architecture has no name"
    if not isinstance(architecture.get("options", {}), dict):
        return "the architecture's options must be an object"
    if not positive_ints([architecture.get("in_channels"), classes], 2):
        return "the architecture's in_channels and num_classes must be positive integers"
    if not positive_ints(architecture.get("image_size"), 2):
        return "the architecture's image_size must be two positive integers"
    if not isinstance(names, list) or len(names) != classes:
        return f"{classes} classes but {len(names) if isinstance(names, list) else 0} class names"
    if not all(isinstance(name, (str, int)) and not isinstance(name, bool) for name in names):
        return "class names must be strings"
    if not positive_ints([channels], 1) or not positive_ints(pre.get("image_size"), 2):
        return "preprocessing needs channels and image_size (positive integers)"
    if not finite_numbers(pre.get("mean"), channels) or not finite_numbers(
        pre.get("std"), channels
    ):
        return f"preprocessing needs a finite mean and std for each of its {channels} channel(s)"
    if any(value <= 0 for value in pre["std"]):
        return "preprocessing std must be above 0 (it divides the pixels)"
    if "ink_box" in pre and not (finite_numbers([pre["ink_box"]], 1) and 0 < pre["ink_box"] <= 1):
        return "preprocessing ink_box must be a share of the frame in (0, 1]"
    if "ink_offset" in pre and not (finite_numbers([pre["ink_offset"]], 1)
                                    and pre["ink_offset"] >= 0):  # fmt: skip
        return "preprocessing ink_offset must be a distance in pixels, 0 or more"
    return None


def _check_weights_fit(
    model: nn.Module, state_dict: dict[str, torch.Tensor], name: str, folder: Path | None
) -> None:
    """Raise RunError naming a few keys if the weights do not fit the rebuilt model."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    reshaped = [
        f"{key} {tuple(state_dict[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state_dict and state_dict[key].shape != value.shape
    ]
    problems = [
        f"{label} {_few(keys)}"
        for label, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape (saved vs model)", reshaped),
        )
        if keys
    ]
    if problems:
        where = f" in {folder}" if folder else ""
        raise RunError(
            f"the weights{where} do not fit architecture {name!r}: {'; '.join(problems)}; "
            "the checkpoint was edited or saved from a different model"
        )


def _few(items: list[str], limit: int = 3) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" (+{len(items) - limit} more)" if len(items) > limit else "")
