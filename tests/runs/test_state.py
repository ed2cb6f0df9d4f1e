"""Nested training state round-trips exactly through safetensors + JSON, without pickle."""

from __future__ import annotations

import json
import math
import pickle
from collections import OrderedDict, namedtuple
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from torch import nn

from trainlab.errors import RunError
from trainlab.runs.state import (
    flatten_state,
    load_state,
    prepare_tensors,
    save_state,
    state_paths,
    unflatten_state,
)


def _assert_same(a: object, b: object) -> None:
    """Structural equality that also compares types, tensors bitwise and nan as equal."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.equal(a, b) or torch.equal(a.isnan(), b.isnan())
    elif isinstance(a, dict):
        assert list(a) == list(b)
        assert [type(key) for key in a] == [type(key) for key in b]
        for key in a:
            _assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _assert_same(x, y)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    else:
        assert a == b


NESTED = {
    "ints": {0: "zero", 1: [1, 2], -5: None, 10**30: "big"},
    "mixed_keys": {"a": 1, 2: "b"},
    "tuple": (0.9, 0.999),
    "nested_tuple": ((1, 2), [3, (4,)], ()),
    "floats": [math.nan, math.inf, -math.inf, -0.0, 0.1, 1e-310, 1.7976931348623157e308],
    "scalars": [None, True, False, 0, -1, "", "ünïcode"],
    "tag_lookalike": {"__tensor__": "0"},
    "tag_lookalike_long": {"__tuple__": [1], "other": 2},
    "empty": [{}, [], ()],
    "tensors": [torch.arange(6, dtype=torch.int64).reshape(2, 3), torch.tensor(True)],
    "float_tensors": {
        name: torch.tensor([1.5, math.nan, -math.inf], dtype=getattr(torch, name))
        for name in ("float16", "bfloat16", "float32", "float64")
    },
    "uint8": torch.tensor([0, 255], dtype=torch.uint8),
    "scalar_tensor": torch.tensor(3.0),
    "empty_tensor": torch.empty(0, 4),
}


def test_flatten_unflatten_is_exact_and_json_safe() -> None:
    tensors, skeleton = flatten_state(NESTED)
    text = json.dumps(skeleton, allow_nan=False)  # strict JSON: no bare NaN/Infinity
    assert all(isinstance(value, torch.Tensor) for value in tensors.values())
    _assert_same(unflatten_state(tensors, json.loads(text)), NESTED)


def test_save_load_nested(tmp_path: Path) -> None:
    json_path = save_state(tmp_path / "state", NESTED)
    assert json_path == tmp_path / "state.json"
    assert tensor_file(tmp_path, "state").is_file()
    _assert_same(load_state(tmp_path / "state"), NESTED)
    json.loads(json_path.read_text(), parse_constant=_reject_constant)


def _reject_constant(name: str) -> None:
    raise AssertionError(f"non-standard JSON constant {name}")


def test_a_tensor_met_twice_is_stored_once_and_stays_one_object(tmp_path: Path) -> None:
    shared = torch.randn(3)
    obj = {"a": shared, "b": [shared]}
    tensors, _ = flatten_state(obj)
    assert len(tensors) == 1
    save_state(tmp_path / "s", obj)
    back = load_state(tmp_path / "s")
    assert back["a"] is back["b"][0]


def test_views_of_one_buffer_are_saved_separately(tmp_path: Path) -> None:
    buffer = torch.arange(10.0)
    obj = {"whole": buffer, "view": buffer[2:5], "strided": buffer[::2]}
    save_state(tmp_path / "views", obj)
    _assert_same(load_state(tmp_path / "views"), obj)


def test_prepare_tensors_detaches_and_clones_shared() -> None:
    weight = nn.Parameter(torch.randn(2, 2))
    prepared = prepare_tensors({"w": weight, "tied": weight, "t": weight.t()})
    assert not any(value.requires_grad for value in prepared.values())
    pointers = {value.untyped_storage().data_ptr() for value in prepared.values()}
    assert len(pointers) == 3
    assert all(value.is_contiguous() for value in prepared.values())


def test_ordered_dicts_and_named_tuples_come_back_equal() -> None:
    Pair = namedtuple("Pair", "first second")
    obj = OrderedDict(a=1, b=Pair(2, 3))
    back = unflatten_state(*flatten_state(obj))
    assert back == obj and type(back) is dict and type(back["b"]) is tuple


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({"x": object()}, r"object at \['x'\]"),
        ({(1, 2): 3}, "keys must be str or int"),
        ([1, {1.5: 2}], "keys must be str or int"),
        ({1, 2}, "set at the top level"),
    ],
)
def test_unsupported_values_are_named(obj: object, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        flatten_state(obj)


def test_generator_state_round_trip(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(1234)
    torch.rand(7, generator=gen)
    save_state(tmp_path / "rng", {"cpu": gen.get_state()})
    expected = torch.rand(5, generator=gen)

    fresh = torch.Generator()
    fresh.set_state(load_state(tmp_path / "rng")["cpu"])
    assert torch.equal(torch.rand(5, generator=fresh), expected)


# --------------------------------------------------------------------------- optimizers


def _make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))


def _train(model: nn.Module, optimizer: torch.optim.Optimizer, steps: range) -> None:
    for step in steps:
        gen = torch.Generator().manual_seed(step)
        inputs, targets = (
            torch.randn(16, 4, generator=gen),
            torch.randint(0, 3, (16,), generator=gen),
        )
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(inputs), targets).backward()
        optimizer.step()


OPTIMIZERS: list[Callable[[nn.Module], torch.optim.Optimizer]] = [
    lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1),
    lambda m: torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9, nesterov=True),
]


@pytest.mark.parametrize("make_optimizer", OPTIMIZERS, ids=["adamw", "sgd-momentum"])
def test_optimizer_resume_is_bit_identical(
    tmp_path: Path, make_optimizer: Callable[[nn.Module], torch.optim.Optimizer]
) -> None:
    # Uninterrupted run: 8 steps.
    reference = _make_model()
    reference_opt = make_optimizer(reference)
    _train(reference, reference_opt, range(8))

    # Interrupted run: 3 steps, save, rebuild everything fresh, load, 5 more steps.
    model = _make_model()
    optimizer = make_optimizer(model)
    _train(model, optimizer, range(3))
    save_state(tmp_path / "resume", {"model": model.state_dict(), "optim": optimizer.state_dict()})
    del model, optimizer

    state = load_state(tmp_path / "resume")
    assert isinstance(next(iter(state["optim"]["state"])), int)
    resumed = _make_model()
    resumed.load_state_dict(state["model"])
    resumed_opt = make_optimizer(resumed)
    resumed_opt.load_state_dict(state["optim"])
    _train(resumed, resumed_opt, range(3, 8))

    for got, expected in zip(resumed.parameters(), reference.parameters(), strict=True):
        assert torch.equal(got, expected)


def test_adam_state_dict_round_trips_exactly(tmp_path: Path) -> None:
    model = _make_model()
    optimizer = torch.optim.Adam(model.parameters(), betas=(0.9, 0.999), amsgrad=True)
    _train(model, optimizer, range(2))
    save_state(tmp_path / "adam", optimizer.state_dict())
    _assert_same(load_state(tmp_path / "adam"), optimizer.state_dict())


# --------------------------------------------------------------------------- files and errors


def test_state_paths_accept_stem_file_or_folder(tmp_path: Path) -> None:
    expected = (tmp_path / "epoch.3.safetensors", tmp_path / "epoch.3.json")
    assert state_paths(tmp_path / "epoch.3") == expected
    assert state_paths(tmp_path / "epoch.3.json") == expected
    assert state_paths(tmp_path / "epoch.3.safetensors") == expected
    assert state_paths(tmp_path) == (tmp_path / "state.safetensors", tmp_path / "state.json")


def test_load_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_state(tmp_path / "s", NESTED)

    def forbidden(*args: object, **kwargs: object) -> None:
        raise AssertionError("unpickling is not allowed")

    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    _assert_same(load_state(tmp_path / "s"), NESTED)


def test_map_location(tmp_path: Path) -> None:
    save_state(tmp_path / "s", {"x": torch.ones(2)})
    assert load_state(tmp_path / "s", map_location="meta")["x"].device.type == "meta"


def test_missing_files(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="missing state file"):
        load_state(tmp_path / "nothing")
    save_state(tmp_path / "s", {"x": torch.ones(2)})
    tensor_file(tmp_path, "s").unlink()
    with pytest.raises(RunError, match="missing file"):
        load_state(tmp_path / "s")


@pytest.mark.parametrize(
    "content",
    ["{not json", "[1, 2]", '{"format": "other"}', '{"format": "trainlab-state"}', "\xff"],
)
def test_corrupt_json(tmp_path: Path, content: str) -> None:
    save_state(tmp_path / "s", {"x": torch.ones(2)})
    (tmp_path / "s.json").write_text(content, encoding="latin-1")
    with pytest.raises(RunError, match=r"s\.json"):
        load_state(tmp_path / "s")


def test_corrupt_skeleton(tmp_path: Path) -> None:
    json_path = save_state(tmp_path / "s", {"x": torch.ones(2)})
    document = json.loads(json_path.read_text())
    document["skeleton"] = {"x": {"__tensor__": "99"}}
    json_path.write_text(json.dumps(document))
    with pytest.raises(RunError, match=r"corrupt state file.*'99'"):
        load_state(tmp_path / "s")


def test_newer_format(tmp_path: Path) -> None:
    json_path = save_state(tmp_path / "s", {"x": 1})
    document = json.loads(json_path.read_text())
    document["format_version"] = 99
    json_path.write_text(json.dumps(document))
    with pytest.raises(RunError, match="upgrade trainlab"):
        load_state(tmp_path / "s")


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: data[:-1] + bytes([data[-1] ^ 1]),  # one flipped bit in the tensor data
        lambda data: b"",
    ],
    ids=["truncated", "bit-flip", "empty"],
)
def test_damaged_tensor_file(tmp_path: Path, damage: Callable[[bytes], bytes]) -> None:
    save_state(tmp_path / "s", {"x": torch.arange(100.0)})
    path = tensor_file(tmp_path, "s")
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(RunError, match=r"s\.[0-9a-f]{16}\.safetensors"):
        load_state(tmp_path / "s")


def tensor_file(folder: Path, name: str) -> Path:
    (path,) = folder.glob(f"{name}.*.safetensors")
    return path


def test_a_save_killed_before_its_json_leaves_the_previous_state(tmp_path: Path) -> None:
    save_state(tmp_path / "s", {"x": torch.zeros(3)})
    old_json = (tmp_path / "s.json").read_text()
    old_tensors = tensor_file(tmp_path, "s").read_bytes()
    save_state(tmp_path / "s", {"x": torch.ones(3)})
    # The moment before the JSON commit: the new tensor file exists, the old JSON is in place.
    (tmp_path / "s.json").write_text(old_json)
    (tmp_path / json.loads(old_json)["tensors_file"]).write_bytes(old_tensors)
    assert torch.equal(load_state(tmp_path / "s")["x"], torch.zeros(3))
    save_state(tmp_path / "s", {"x": torch.full((3,), 2.0)})  # the next save tidies up
    assert len(list(tmp_path.glob("s.*.safetensors"))) == 1


def test_states_saved_with_one_plain_tensor_file_still_load(tmp_path: Path) -> None:
    save_state(tmp_path / "s", {"x": torch.ones(3)})
    document = json.loads((tmp_path / "s.json").read_text())
    tensor_file(tmp_path, "s").rename(tmp_path / "s.safetensors")
    del document["tensors_file"]
    (tmp_path / "s.json").write_text(json.dumps(document))
    assert torch.equal(load_state(tmp_path / "s")["x"], torch.ones(3))


def test_json_from_another_save_is_detected(tmp_path: Path) -> None:
    # Files copied together by hand from two saves: the JSON's checksum tells.
    save_state(tmp_path / "s", {"x": torch.zeros(3)})
    old_json = (tmp_path / "s.json").read_text()
    save_state(tmp_path / "s", {"x": torch.ones(3)})
    (tmp_path / "s.json").write_text(old_json)
    tensor_file(tmp_path, "s").rename(tmp_path / json.loads(old_json)["tensors_file"])
    with pytest.raises(RunError, match="different"):
        load_state(tmp_path / "s")


def test_unsavable_state_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(TypeError):
        save_state(tmp_path / "s", {"x": torch.ones(1), "bad": object()})
    assert list(tmp_path.iterdir()) == []
