"""Checkpoints rebuild their own model, never unpickle, and fail loudly when damaged."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
import safetensors.torch
import torch
from torch import nn

import trainlab
from trainlab.errors import RunError
from trainlab.models import create_model
from trainlab.runs import checkpoint as checkpoint_module
from trainlab.runs.checkpoint import (
    CHECKPOINT_FORMAT_VERSION,
    Checkpoint,
    find_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

CLASS_NAMES = [f"digit {i}" for i in range(10)]
PREPROCESSING = {"mean": (0.1307,), "std": torch.tensor([0.3081]), "kind": "digits"}

MODELS = {
    "mlp": {"hidden": [32]},
    "cnn": {"channels": [4, 8], "hidden": 16, "batch_norm": True},
    "fastnet": {},
}


def _trained_like(name: str, seed: int = 0) -> nn.Module:
    """A registry model with non-default weights and BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = create_model(
        name, in_channels=1, num_classes=10, image_size=(28, 28), **MODELS.get(name, {})
    )
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.01)
        model.train()
        model(torch.randn(8, 1, 28, 28))  # moves BatchNorm running stats off their defaults
    return model.eval()


@pytest.fixture
def saved(tmp_path: Path) -> tuple[nn.Module, Path]:
    model = _trained_like("mlp")
    folder = save_checkpoint(
        tmp_path / "run" / "checkpoint",
        model,
        preprocessing=PREPROCESSING,
        class_names=CLASS_NAMES,
        metadata={"epoch": 3, "val": {"accuracy": 0.5}},
    )
    return model, folder


@pytest.mark.parametrize("name", list(MODELS))
def test_round_trip_gives_identical_outputs(tmp_path: Path, name: str) -> None:
    model = _trained_like(name)
    save_checkpoint(tmp_path, model, preprocessing=PREPROCESSING, class_names=CLASS_NAMES)
    rebuilt = load_checkpoint(tmp_path).build_model()

    assert not rebuilt.training
    assert rebuilt.trainlab_spec == model.trainlab_spec
    images = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(rebuilt(images), model(images))
    for key, value in model.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key


def test_model_json_describes_the_artifact(saved: tuple[nn.Module, Path]) -> None:
    model, folder = saved
    assert sorted(path.name for path in folder.iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((folder / "model.json").read_text())
    assert meta["format_version"] == CHECKPOINT_FORMAT_VERSION
    assert meta["trainlab_version"] == trainlab.__version__
    assert meta["architecture"] == model.trainlab_spec
    assert meta["preprocessing"] == {
        "mean": [0.1307],
        "std": [pytest.approx(0.3081)],
        "kind": "digits",
        "channels": 1,
        "image_size": [28, 28],
    }
    assert meta["class_names"] == CLASS_NAMES
    assert meta["metadata"] == {"epoch": 3, "val": {"accuracy": 0.5}}


def test_loaded_fields(saved: tuple[nn.Module, Path]) -> None:
    model, folder = saved
    checkpoint = load_checkpoint(folder)
    assert isinstance(checkpoint, Checkpoint)
    assert checkpoint.path == folder
    assert checkpoint.class_names == CLASS_NAMES
    assert checkpoint.num_classes == 10
    assert checkpoint.metadata["epoch"] == 3
    assert checkpoint.trainlab_version == trainlab.__version__
    assert checkpoint.state_dict.keys() == model.state_dict().keys()


def test_accepts_run_folder_or_either_file(saved: tuple[nn.Module, Path]) -> None:
    _, folder = saved
    for path in (folder, folder.parent, folder / "model.json", folder / "model.safetensors"):
        assert find_checkpoint(path) == folder
        assert load_checkpoint(path).class_names == CLASS_NAMES


def test_load_never_unpickles(
    saved: tuple[nn.Module, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, folder = saved

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("unpickling is not allowed")

    for module, name in [(pickle, "load"), (pickle, "loads"), (torch, "load")]:
        monkeypatch.setattr(module, name, forbidden)
    monkeypatch.setattr(torch.serialization, "load", forbidden)
    load_checkpoint(folder).build_model()


def test_overwrite_replaces_the_checkpoint(saved: tuple[nn.Module, Path]) -> None:
    _, folder = saved
    other = _trained_like("mlp", seed=1)
    save_checkpoint(folder, other, preprocessing=PREPROCESSING, class_names=CLASS_NAMES)
    images = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(load_checkpoint(folder).build_model()(images), other(images))


# --------------------------------------------------------------------------- damage


@pytest.mark.parametrize(
    "damage",
    [
        lambda data: data[: len(data) // 2],
        lambda data: data[:-1] + bytes([data[-1] ^ 0x10]),
        lambda data: b"\x00" * 8,
    ],
    ids=["truncated", "tampered", "garbage"],
)
def test_damaged_weights(saved: tuple[nn.Module, Path], damage: Any) -> None:
    _, folder = saved
    weights = folder / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    with pytest.raises(RunError, match=r"model\.safetensors"):
        load_checkpoint(folder)


def test_truncated_weights_without_checksum(saved: tuple[nn.Module, Path]) -> None:
    # A hand-edited model.json without the checksum still gets a clean error from safetensors.
    _, folder = saved
    _edit_json(folder, lambda meta: meta.pop("weights_sha256"))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])
    with pytest.raises(RunError, match="truncated or corrupt"):
        load_checkpoint(folder)


def _edit_json(folder: Path, edit: Any) -> None:
    meta = json.loads((folder / "model.json").read_text())
    edit(meta)
    (folder / "model.json").write_text(json.dumps(meta))


def test_weights_that_do_not_fit_the_architecture(saved: tuple[nn.Module, Path]) -> None:
    _, folder = saved
    _edit_json(folder, lambda meta: meta["architecture"]["options"].update(hidden=[16]))
    with pytest.raises(RunError, match=r"wrong shape.*\(32, 784\) vs \(16, 784\)"):
        load_checkpoint(folder).build_model()


def test_missing_and_unexpected_keys_are_listed(saved: tuple[nn.Module, Path]) -> None:
    _, folder = saved
    checkpoint = load_checkpoint(folder)
    first, *_ = checkpoint.state_dict
    checkpoint.state_dict["extra.weight"] = checkpoint.state_dict.pop(first)
    with pytest.raises(RunError, match=rf"missing {first}; unexpected extra\.weight") as error:
        checkpoint.build_model()
    assert "\n" not in str(error.value)


def test_missing_folder_and_files(tmp_path: Path, saved: tuple[nn.Module, Path]) -> None:
    with pytest.raises(RunError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="no checkpoint in"):
        load_checkpoint(tmp_path / "empty")

    _, folder = saved
    (folder / "model.json").unlink()
    with pytest.raises(RunError, match=r"model\.json is missing"):
        load_checkpoint(folder.parent)


def test_missing_weights(saved: tuple[nn.Module, Path]) -> None:
    _, folder = saved
    (folder / "model.safetensors").unlink()
    with pytest.raises(RunError, match="missing file"):
        load_checkpoint(folder)


def test_newer_format_asks_for_an_upgrade(saved: tuple[nn.Module, Path]) -> None:
    _, folder = saved
    _edit_json(folder, lambda meta: meta.update(format_version=CHECKPOINT_FORMAT_VERSION + 1))
    with pytest.raises(RunError, match="upgrade trainlab"):
        load_checkpoint(folder)


@pytest.mark.parametrize(
    "text", ["{", "[]", '{"format": "trainlab-checkpoint", "format_version": 1}']
)
def test_corrupt_json(saved: tuple[nn.Module, Path], text: str) -> None:
    _, folder = saved
    (folder / "model.json").write_text(text)
    with pytest.raises(RunError, match=r"model\.json"):
        load_checkpoint(folder)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(class_names=m["class_names"][:2]), "classes but 2 class names"),
        (lambda m: m.update(class_names=[]), "classes but 0 class names"),
        (lambda m: m["preprocessing"].pop("mean"), "a finite mean and std"),
        (lambda m: m["preprocessing"].update(std=[0.0]), "std must be above 0"),
        (lambda m: m["preprocessing"].update(ink_box=3), "ink_box must be a share"),
        (lambda m: m["preprocessing"].update(ink_offset="far"), "ink_offset must be a distance"),
        (lambda m: m["preprocessing"].pop("image_size"), "channels and image_size"),
        (lambda m: m["architecture"].update(options=[1, 2]), "options must be an object"),
        (lambda m: m["architecture"].update(image_size=[28]), "image_size must be two"),
    ],
)
def test_a_damaged_model_json_is_one_clear_error(saved, edit, message) -> None:
    _, folder = saved
    _edit_json(folder, edit)
    with pytest.raises(RunError, match=message):
        load_checkpoint(folder)


def test_an_architecture_edited_to_petabytes_is_refused_before_allocating(saved) -> None:
    _, folder = saved
    _edit_json(folder, lambda m: m["architecture"]["options"].update(hidden=[10**9, 10**9]))
    with pytest.raises(RunError, match="do not fit"):
        load_checkpoint(folder).build_model()  # was: an attempt to allocate 4 PB


def test_a_deeply_nested_model_json_is_one_clear_error(saved) -> None:
    _, folder = saved
    (folder / "model.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(RunError, match="corrupt checkpoint file"):
        load_checkpoint(folder)


# --------------------------------------------------------------------------- atomicity


def test_failed_save_leaves_no_model_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: Any, **kwargs: Any) -> bytes:
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save", fail)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(
            tmp_path, _trained_like("mlp"), preprocessing=PREPROCESSING, class_names=CLASS_NAMES
        )
    assert list(tmp_path.iterdir()) == []


def test_failed_write_keeps_the_previous_checkpoint(
    saved: tuple[nn.Module, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, folder = saved
    before = {path.name: path.read_bytes() for path in folder.iterdir()}

    def fail_on_rename(*args: Any, **kwargs: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail_on_rename)
    # One line naming the file the user knows, not the temporary one: "cannot write ...: disk full"
    with pytest.raises(RunError, match=rf"cannot write {re.escape(str(folder))}/.*: disk full"):
        save_checkpoint(
            folder, _trained_like("mlp", 2), preprocessing=PREPROCESSING, class_names=CLASS_NAMES
        )
    assert {path.name: path.read_bytes() for path in folder.iterdir()} == before
    load_checkpoint(folder).build_model()


def test_a_save_killed_before_its_json_keeps_the_old_checkpoint(
    saved: tuple[nn.Module, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The new weights were written beside the old ones, then the process died.
    old, folder = saved

    def die(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module, "write_json_atomic", die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(
            folder, _trained_like("mlp", 3), preprocessing=PREPROCESSING, class_names=CLASS_NAMES
        )
    loaded = load_checkpoint(folder).build_model()
    for key, value in old.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)


def test_a_save_killed_after_its_json_is_completed_on_load(
    saved: tuple[nn.Module, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # model.json names the new weights, and the process died before they were moved into place:
    # it used to leave a checkpoint that no command could load until the run was resumed.
    _, folder = saved
    new = _trained_like("mlp", 3)

    def die(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint_module, "_move_into_place", die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(folder, new, preprocessing=PREPROCESSING, class_names=CLASS_NAMES)
    monkeypatch.undo()
    loaded = load_checkpoint(folder).build_model()
    for key, value in new.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    assert not (folder / checkpoint_module.PENDING_WEIGHTS_FILE).exists()  # moved into place
    load_checkpoint(folder)  # and whole from now on


# --------------------------------------------------------------------------- save arguments


def test_save_needs_a_registry_model(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="trainlab_spec"):
        save_checkpoint(
            tmp_path, nn.Linear(2, 2), preprocessing=PREPROCESSING, class_names=["a", "b"]
        )
    assert not (tmp_path / "model.json").exists()


@pytest.mark.parametrize(
    ("preprocessing", "class_names", "match"),
    [
        (PREPROCESSING, ["a", "b"], "2 class names"),
        ({"mean": [0.5], "std": [0.5]}, CLASS_NAMES, "lacks kind"),
        ({**PREPROCESSING, "kind": "faces"}, CLASS_NAMES, "not one of"),
        ({**PREPROCESSING, "mean": [0.5, 0.5, 0.5]}, CLASS_NAMES, "mean needs 1 values"),
    ],
)
def test_save_checks_its_arguments(
    tmp_path: Path, preprocessing: dict[str, Any], class_names: list[str], match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        save_checkpoint(
            tmp_path, _trained_like("mlp"), preprocessing=preprocessing, class_names=class_names
        )
    assert list(tmp_path.iterdir()) == []


def test_tied_weights_are_saved(tmp_path: Path) -> None:
    model = _trained_like("mlp")
    # Tie a buffer to a parameter: safetensors refuses shared storage unless it is cloned.
    first = next(model.parameters())
    model.register_buffer("tied", first.detach())
    state = model.state_dict()
    assert state["tied"].untyped_storage().data_ptr() == first.untyped_storage().data_ptr()
    save_checkpoint(tmp_path, model, preprocessing=PREPROCESSING, class_names=CLASS_NAMES)
    loaded = load_checkpoint(tmp_path).state_dict
    assert torch.equal(loaded["tied"], first.detach())


def test_a_model_that_cannot_be_built_on_the_meta_device_still_loads(saved, monkeypatch) -> None:
    import trainlab.models

    model, folder = saved
    build = trainlab.models.model_from_spec

    def numpy_in_init(spec):  # as a user's model calling .numpy() in __init__ would
        if torch.empty(0).device.type == "meta":
            raise TypeError("can't convert meta device type tensor to numpy")
        return build(spec)

    monkeypatch.setattr(trainlab.models, "model_from_spec", numpy_in_init)
    loaded = load_checkpoint(folder).build_model()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())


def test_a_save_completed_by_a_reader_meanwhile_is_not_an_error(saved) -> None:
    _, folder = saved
    weights = folder / "model.safetensors"
    # The trainer's last rename finds its pending file gone: a load finished the save first.
    checkpoint_module._move_into_place(folder / checkpoint_module.PENDING_WEIGHTS_FILE, weights)
    load_checkpoint(folder)
