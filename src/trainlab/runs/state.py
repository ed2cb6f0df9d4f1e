"""Pickle-free saving of nested training state: tensors to safetensors, the rest to JSON.

Resuming a run exactly needs the optimizer and schedule state, EMA weights, RNG states,
early-stopping counters and history: nested dicts, lists and tuples of tensors and scalars.
``torch.save`` would pickle them, and unpickling runs arbitrary code, so we never do it.
Instead :func:`flatten_state` moves every tensor into a flat ``{key: tensor}`` dict and
leaves a JSON *skeleton* in which each tensor is replaced by a reference.

The skeleton must round-trip exactly, so what JSON cannot say is written as a one-key tag:

=======================  ============================================================
``{"__tensor__": "3"}``  the tensor stored under key ``"3"``
``{"__tuple__": [...]}`` a tuple (Adam's ``betas``)
``{"__dict__": [[k, v], ...]}``  a dict whose keys are not all strings (optimizer
                         state is keyed by parameter index), or whose key could be
                         mistaken for a tag
``{"__float__": "nan"}`` ``nan``, ``inf`` or ``-inf`` (JSON has no such numbers)
=======================  ============================================================

Finite floats are exact already: ``json`` writes the shortest ``repr`` that reads back to
the same double. Dict, list and tuple subclasses (``OrderedDict``, named tuples) come back
as the plain type; they compare equal.

On disk a state is a JSON file ``<name>.json`` and the tensor file it names,
``<name>.<digest>.safetensors``. Each save writes a new tensor file first and then replaces
the JSON atomically: the JSON is the commit point, so a process killed at any moment leaves
either the previous pair or the new one, never a mix (older tensor files are removed after the
commit). The JSON also holds the SHA-256 of its tensor file, so a damaged or swapped file is
detected instead of silently mixing states. States written before this scheme, with a plain
``<name>.safetensors``, still load.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from safetensors import SafetensorError

from trainlab._io import write_bytes_atomic, write_json_atomic
from trainlab.errors import RunError

__all__ = [
    "STATE_FORMAT_VERSION",
    "flatten_state",
    "load_state",
    "load_tensors",
    "prepare_tensors",
    "save_state",
    "save_tensors",
    "unflatten_state",
]

STATE_FORMAT_VERSION = 1

_TENSOR, _TUPLE, _DICT, _FLOAT = "__tensor__", "__tuple__", "__dict__", "__float__"
_TAGS = frozenset({_TENSOR, _TUPLE, _DICT, _FLOAT})
_NON_FINITE = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}


# --------------------------------------------------------------------------- flatten / unflatten


def flatten_state(obj: Any) -> tuple[dict[str, torch.Tensor], Any]:
    """Split ``obj`` into ``(tensors, skeleton)``: a flat dict of tensors and a JSON-able value.

    Accepts nested dicts (str or int keys), lists, tuples, tensors and JSON scalars (``None``,
    bool, int, float including nan/inf, str). A tensor object met twice is stored once and
    comes back as one object. Raises ``TypeError`` naming the path of anything else.
    """
    tensors: dict[str, torch.Tensor] = {}
    keys_by_id: dict[int, str] = {}

    def walk(value: Any, path: str) -> Any:
        if isinstance(value, torch.Tensor):
            key = keys_by_id.get(id(value))
            if key is None:
                key = keys_by_id[id(value)] = str(len(tensors))
                tensors[key] = value
            return {_TENSOR: key}
        if value is None or isinstance(value, (bool, int, str)):
            return value
        if isinstance(value, float):
            return value if math.isfinite(value) else {_FLOAT: repr(float(value))}
        if isinstance(value, tuple):
            return {_TUPLE: [walk(item, f"{path}[{i}]") for i, item in enumerate(value)]}
        if isinstance(value, list):
            return [walk(item, f"{path}[{i}]") for i, item in enumerate(value)]
        if isinstance(value, Mapping):
            return walk_mapping(value, path)
        raise TypeError(
            f"cannot save {type(value).__name__} at {path or 'the top level'}: state may hold only "
            "dicts, lists, tuples, tensors, None, bool, int, float and str"
        )

    def walk_mapping(mapping: Mapping[Any, Any], path: str) -> Any:
        for key in mapping:
            if not isinstance(key, (str, int)):
                where = path or "the top level"
                raise TypeError(f"cannot save dict key {key!r} at {where}: keys must be str or int")
        items = [(key, walk(item, f"{path}[{key!r}]")) for key, item in mapping.items()]
        # A JSON object keeps only string keys, and a one-key object named like a tag would be
        # read back as that tag; anything else is written as a list of [key, value] pairs.
        if all(type(key) is str for key in mapping) and not _is_tag(mapping):
            return dict(items)
        return {_DICT: [[key, item] for key, item in items]}

    skeleton = walk(obj, "")
    return tensors, skeleton


def _is_tag(mapping: Mapping[Any, Any]) -> bool:
    return len(mapping) == 1 and next(iter(mapping)) in _TAGS


def unflatten_state(tensors: Mapping[str, torch.Tensor], skeleton: Any) -> Any:
    """Rebuild the object that :func:`flatten_state` split; its exact inverse.

    Raises ``ValueError`` if the skeleton is malformed or names a tensor that is missing.
    """

    def build(node: Any) -> Any:
        if node is None or isinstance(node, (bool, int, float, str)):
            return node
        if isinstance(node, list):
            return [build(item) for item in node]
        if not isinstance(node, dict):
            raise ValueError(f"unexpected {type(node).__name__} in state skeleton")
        if not _is_tag(node):
            return {key: build(item) for key, item in node.items()}
        tag, payload = next(iter(node.items()))
        if tag == _TENSOR:
            if payload not in tensors:
                raise ValueError(f"state skeleton names tensor {payload!r}, which is missing")
            return tensors[payload]
        if tag == _TUPLE:
            return tuple(build(item) for item in _expect_list(payload, tag))
        if tag == _FLOAT:
            if payload not in _NON_FINITE:
                raise ValueError(f"bad non-finite float {payload!r} in state skeleton")
            return _NON_FINITE[payload]
        pairs = _expect_list(payload, tag)
        if not all(isinstance(pair, list) and len(pair) == 2 for pair in pairs):
            raise ValueError("bad key/value pairs in state skeleton")
        return {key: build(item) for key, item in pairs}

    return build(skeleton)


def _expect_list(payload: Any, tag: str) -> list[Any]:
    if not isinstance(payload, list):
        raise ValueError(f"{tag} in state skeleton must hold a list")
    return payload


# --------------------------------------------------------------------------- tensor files


def prepare_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Make tensors savable by safetensors: detached, on CPU, contiguous, no shared storage.

    safetensors refuses tensors that share memory (tied weights, views of one buffer); those
    are cloned so each is stored on its own.
    """
    for key, value in tensors.items():
        if value.layout != torch.strided:
            raise TypeError(f"cannot save {value.layout} tensor {key!r}; convert it to dense")
    prepared = {key: value.detach().cpu().contiguous() for key, value in tensors.items()}
    seen: set[tuple[torch.device, int]] = set()
    for key, value in prepared.items():
        storage = value.untyped_storage()
        if storage.nbytes() == 0:
            continue  # empty tensors have no memory to share
        identity = (value.device, storage.data_ptr())
        if identity in seen:
            prepared[key] = value.clone()
        else:
            seen.add(identity)
    return prepared


def save_tensors(
    path: str | Path, tensors: Mapping[str, torch.Tensor], *, metadata: dict[str, str] | None = None
) -> str:
    """Write ``tensors`` to a safetensors file atomically; return the file's SHA-256 (hex).

    The digest goes into the companion JSON, so a reader can tell a file that was modified,
    truncated, or written by a different save (see :func:`load_tensors`).
    """
    data = safetensors.torch.save(prepare_tensors(tensors), metadata=metadata)
    write_bytes_atomic(path, data)
    return hashlib.sha256(data).hexdigest()


def load_tensors(
    path: str | Path, *, sha256: str | None = None, device: str | torch.device | None = None
) -> dict[str, torch.Tensor]:
    """Read a safetensors file, checking its SHA-256 when given. Never unpickles.

    Raises :class:`RunError` if the file is missing, truncated, corrupt or not the one the
    digest describes.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as error:
        raise RunError(f"missing file {path}") from error
    except OSError as error:
        raise RunError(f"cannot read {path}: {error}") from error
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256:
        raise RunError(
            f"{path} does not match the checksum in its JSON: it was modified, truncated, or "
            "written by a different (interrupted?) save; save it again or use another copy"
        )
    try:
        tensors = safetensors.torch.load(data)
    except (SafetensorError, ValueError, RuntimeError) as error:
        raise RunError(
            f"cannot read {path}: the file is truncated or corrupt ({error}); "
            "save it again or use another copy"
        ) from error
    if device is not None and torch.device(device) != torch.device("cpu"):
        tensors = {key: value.to(device) for key, value in tensors.items()}
    return tensors


# --------------------------------------------------------------------------- save / load


def state_paths(path: str | Path) -> tuple[Path, Path]:
    """``(tensors_file, json_file)`` for ``path``: a stem (``resume/state``), either file of the
    pair (``resume/state.json``), or an existing folder (then ``<folder>/state.*``)."""
    stem = Path(path)
    if stem.is_dir():
        stem = stem / "state"
    elif stem.suffix in (".json", ".safetensors"):
        stem = stem.with_suffix("")
    # Concatenate rather than with_suffix(): a stem like "epoch.3" has a dot of its own.
    return stem.with_name(stem.name + ".safetensors"), stem.with_name(stem.name + ".json")


def save_state(path: str | Path, obj: Any) -> Path:
    """Save nested state as ``<name>.json`` + the tensor file it names; returns the JSON path.

    A new tensor file is written first, then the JSON replaces the old one atomically, then
    tensor files of earlier saves are removed: an existing JSON always names a complete file.
    Raises ``TypeError`` for values that cannot be saved (before writing anything).
    """
    canonical, json_path = state_paths(path)
    tensors, skeleton = flatten_state(obj)
    data = safetensors.torch.save(prepare_tensors(tensors))
    digest = hashlib.sha256(data).hexdigest()
    tensor_path = _generation_path(canonical, digest)
    write_bytes_atomic(tensor_path, data)
    document = {
        "format": "trainlab-state",
        "format_version": STATE_FORMAT_VERSION,
        "tensors_file": tensor_path.name,
        "tensors_sha256": digest,
        "skeleton": skeleton,
    }
    write_json_atomic(json_path, document)
    for stale in (canonical, *canonical.parent.glob(canonical.stem + ".*.safetensors")):
        if stale != tensor_path:
            stale.unlink(missing_ok=True)
    return json_path


def _generation_path(canonical: Path, digest: str) -> Path:
    """``resume/state.safetensors`` -> ``resume/state.<first 16 hex of the digest>.safetensors``."""
    return canonical.with_name(f"{canonical.stem}.{digest[:16]}.safetensors")


def load_state(
    path: str | Path,
    *,
    device: str | torch.device | None = None,
    map_location: str | torch.device | None = None,
) -> Any:
    """Load what :func:`save_state` wrote. Never unpickles.

    Tensors are loaded on the CPU, or moved to ``device`` (``map_location`` is an alias, as in
    ``torch.load``). For a training resume the CPU is usually right: ``load_state_dict`` of
    modules and optimizers moves tensors to their parameters' device, and RNG states must
    stay on the CPU anyway.

    Raises :class:`RunError` if a file is missing, corrupt, from a newer format, or the two
    files come from different saves.
    """
    if device is not None and map_location is not None and device != map_location:
        raise ValueError("give device or map_location, not both")
    device = device if device is not None else map_location
    tensor_path, json_path = state_paths(path)
    document = _read_state_json(json_path)
    named = document.get("tensors_file")
    if named is not None:
        if not isinstance(named, str) or Path(named).name != named:
            raise RunError(f"corrupt state file {json_path}: bad tensors_file {named!r}")
        tensor_path = json_path.with_name(named)
    digest = document.get("tensors_sha256")
    tensors = load_tensors(tensor_path, sha256=digest, device=device)
    try:
        return unflatten_state(tensors, document["skeleton"])
    except (ValueError, KeyError, TypeError) as error:
        raise RunError(f"corrupt state file {json_path}: {error}") from error


def _read_state_json(json_path: Path) -> dict[str, Any]:
    if not json_path.is_file():
        raise RunError(f"missing state file {json_path}; was the state saved?")
    try:
        document = json.loads(json_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"corrupt state file {json_path}: {error}") from error
    if not isinstance(document, dict) or document.get("format") != "trainlab-state":
        raise RunError(f"{json_path} is not a trainlab state file")
    version = document.get("format_version")
    if not isinstance(version, int) or "skeleton" not in document:
        raise RunError(f"corrupt state file {json_path}: no format version or skeleton")
    if version > STATE_FORMAT_VERSION:
        raise RunError(
            f"{json_path} has state format {version!r}, newer than this trainlab reads "
            f"({STATE_FORMAT_VERSION}); upgrade trainlab"
        )
    return document
