"""The registry: names, options, errors and specs, independent of any one family."""

from __future__ import annotations

import inspect
import json

import pytest
from torch import nn

from trainlab.errors import ModelError, TrainlabError
from trainlab.models import (
    create_model,
    get_model_info,
    list_models,
    model_from_spec,
    model_names,
    model_options,
    register_model,
    registry,
)
from trainlab.models.layers import Classifier, Head

BUILT_IN = ["cnn", "fastnet", "gru", "mlp", "resnet", "spinalvgg", "vgg", "vit"]
SHAPE = {"in_channels": 1, "num_classes": 10, "image_size": (28, 28)}


@pytest.fixture
def scratch_registry(monkeypatch: pytest.MonkeyPatch) -> dict:
    """A copy of the registry that test registrations cannot leak out of."""
    table = dict(registry._REGISTRY)
    monkeypatch.setattr(registry, "_REGISTRY", table)
    return table


def test_built_in_models_are_registered_in_order() -> None:
    assert model_names() == BUILT_IN
    assert [info.name for info in list_models()] == BUILT_IN


def test_list_models_has_one_line_descriptions_and_signature_defaults() -> None:
    for info in list_models():
        assert info.description and "\n" not in info.description
        assert info.family == info.name
        parameters = inspect.signature(info.builder).parameters
        expected = {
            n: p.default for n, p in parameters.items() if n not in registry.SHAPE_ARGUMENTS
        }
        assert info.options == expected and info.options


def test_every_option_is_documented_in_its_builder_docstring() -> None:
    for info in list_models():
        assert set(info.option_help) == set(info.options), info.name
        assert all(text.strip() for text in info.option_help.values()), info.name


def test_model_options_returns_a_fresh_copy() -> None:
    options = model_options("cnn")
    assert options == {
        "channels": (32, 64),
        "hidden": 128,
        "dropout": 0.25,
        "kernel_size": 3,
        "batch_norm": False,
    }
    options["hidden"] = 1
    assert model_options("cnn")["hidden"] == 128


def test_unknown_model_lists_the_available_names() -> None:
    with pytest.raises(ModelError) as caught:
        create_model("vgg19", **SHAPE)
    expected = (
        "unknown model 'vgg19' (did you mean 'vgg'?); available: cnn, fastnet, gru, mlp, resnet, spinalvgg, vgg, vit, "
        "hf:<model id or folder>"
    )
    assert str(caught.value) == expected
    assert isinstance(caught.value, TrainlabError)
    with pytest.raises(ModelError, match=r"unknown model 'nope'; available"):  # nothing near
        model_options("nope")
    with pytest.raises(ModelError, match=r"unknown model 'MLPS' \(did you mean 'mlp'\?\)"):
        model_options("MLPS")


def test_unknown_option_lists_the_valid_options() -> None:
    with pytest.raises(ModelError) as caught:
        create_model("cnn", **SHAPE, hiden=64)
    assert str(caught.value) == (
        "unknown option 'hiden' for model 'cnn' (did you mean 'hidden'?); "
        "valid options: channels, hidden, dropout, kernel_size, batch_norm"
    )
    with pytest.raises(ModelError, match="unknown options 'a', 'b' for model 'mlp'"):
        create_model("mlp", **SHAPE, a=1, b=2)


def test_names_are_case_insensitive() -> None:
    model = create_model("CNN", **SHAPE)
    assert model.trainlab_spec["name"] == "cnn"
    assert model_options("FastNet") == model_options("fastnet")
    assert get_model_info("ViT").name == "vit"


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ({"in_channels": 0}, "in_channels must be an integer >= 1"),
        ({"num_classes": 1}, "num_classes must be an integer >= 2"),
        ({"image_size": (28,)}, "image_size must be (height, width)"),
        ({"image_size": (0, 28)}, "image_size must be (height, width)"),
    ],
)
def test_bad_shapes_raise_model_error(shape: dict, message: str) -> None:
    with pytest.raises(ModelError) as caught:
        create_model("mlp", **{**SHAPE, **shape})
    assert message in str(caught.value)


def test_square_image_size_may_be_one_integer() -> None:
    model = create_model("mlp", in_channels=1, num_classes=10, image_size=28)
    assert model.trainlab_spec["image_size"] == [28, 28]


def test_spec_holds_every_option_as_json_types() -> None:
    model = create_model("mlp", **SHAPE, hidden=[64, 32])  # a list, as YAML gives it
    spec = model.trainlab_spec
    assert spec == {
        "name": "mlp",
        "in_channels": 1,
        "num_classes": 10,
        "image_size": [28, 28],
        "options": {
            "hidden": [64, 32],
            "dropout": 0.0,
            "activation": "relu",
            "batch_norm": False,
            "negative_slope": 0.01,
        },
    }
    assert json.loads(json.dumps(spec)) == spec


def test_explicit_options_override_the_spec_options() -> None:
    spec = create_model("mlp", **SHAPE, hidden=[64]).trainlab_spec
    model = create_model(**spec, dropout=0.5)
    assert model.trainlab_spec["options"]["hidden"] == [64]
    assert model.trainlab_spec["options"]["dropout"] == 0.5


def test_model_from_spec_rejects_incomplete_specs() -> None:
    with pytest.raises(ModelError, match="missing num_classes"):
        model_from_spec({"name": "mlp", "in_channels": 1, "image_size": [28, 28]})
    with pytest.raises(ModelError, match="unknown keys weights"):
        model_from_spec({"name": "mlp", **SHAPE, "weights": 1})


class _Tiny(Classifier):
    def __init__(self, in_features: int, num_classes: int):
        super().__init__()
        self.classifier = Head(in_features, num_classes)

    def forward_features(self, x):
        return x.flatten(1)


def test_a_new_model_is_created_by_name(scratch_registry: dict) -> None:
    @register_model("Tiny", description="flatten and a linear layer")
    def build(*, in_channels: int, num_classes: int, image_size: tuple[int, int], scale: int = 1):
        return _Tiny(in_channels * image_size[0] * image_size[1], num_classes)

    assert "tiny" in model_names()
    model = create_model("tiny", in_channels=1, num_classes=3, image_size=(2, 2), scale=2)
    assert model.family == "tiny"
    assert model.trainlab_spec["options"] == {"scale": 2}


def test_registration_mistakes_are_caught_at_import(scratch_registry: dict) -> None:
    with pytest.raises(ValueError, match="already registered"):
        register_model("cnn", description="again")(lambda **kw: nn.Identity())

    with pytest.raises(TypeError, match="needs a default"):

        @register_model("nodefault", description="x")
        def build(*, in_channels, num_classes, image_size, width):  # pragma: no cover
            return nn.Identity()

    with pytest.raises(TypeError, match="must accept keyword arguments"):

        @register_model("noshape", description="x")
        def build2(*, width=1):  # pragma: no cover
            return nn.Identity()
