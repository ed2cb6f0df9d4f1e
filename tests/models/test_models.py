"""Behaviour every registered model must have, plus per-family architecture checks.

The contract tests are parametrised over ``list_models()``, so a newly registered model is
tested the day it is registered. ``CHEAP`` holds small options for families whose defaults are
too slow for a unit test; a model missing from it is tested at its defaults.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainlab.errors import ModelError
from trainlab.models import (
    count_macs,
    count_parameters,
    create_model,
    list_models,
    model_from_spec,
    model_options,
)

NAMES = [info.name for info in list_models()]

CHEAP: dict[str, dict[str, Any]] = {
    "mlp": {"hidden": (64, 32)},
    "cnn": {"channels": (8, 16), "hidden": 32},
    "vgg": {"stages": (8, 16), "dense": (32,)},
    "spinalvgg": {"stages": (8, 16), "convs_per_stage": 1, "spinal_width": 8},
    "resnet": {"depth": 10, "width": 8},
    "fastnet": {},
    "vit": {"dim": 32, "depth": 2, "heads": 2},
    "gru": {"hidden": 32, "embedding": 16},
}
# (channels, height, width, classes): grey digits, CIFAR-100, an odd size with K49's classes.
SHAPES = [(1, 28, 28, 10), (3, 32, 32, 100), (1, 20, 24, 49)]


def cheap(name: str, **overrides: Any) -> dict[str, Any]:
    return {**CHEAP.get(name, {}), **overrides}


def build(name: str, shape: tuple[int, int, int, int] = SHAPES[0], **options: Any) -> nn.Module:
    channels, height, width, classes = shape
    torch.manual_seed(0)
    return create_model(
        name,
        in_channels=channels,
        num_classes=classes,
        image_size=(height, width),
        **cheap(name, **options),
    )


def images(shape: tuple[int, int, int, int], batch: int = 4) -> torch.Tensor:
    channels, height, width, _ = shape
    return torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(1))


def dropout_off(name: str) -> dict[str, Any]:
    """Options that switch dropout off, for tests that need deterministic training steps."""
    return {"dropout": 0.0} if "dropout" in model_options(name) else {}


# ---------------------------------------------------------------------------------------------
# The contract, for every registered model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("name", NAMES)
def test_forward_and_features_shapes(name: str, shape: tuple[int, int, int, int]) -> None:
    model = build(name, shape).eval()
    x = images(shape)
    with torch.no_grad():
        logits = model(x)
        features = model.forward_features(x)
        assert logits.shape == (4, shape[3])
        assert features.ndim == 2 and features.shape[0] == 4
        assert features.shape[1] == model.embedding_dim
        torch.testing.assert_close(model.classifier(features), logits)
    assert model.family == name


@pytest.mark.parametrize("name", NAMES)
def test_defaults_build_and_run(name: str) -> None:
    model = create_model(name, in_channels=1, num_classes=10, image_size=(28, 28)).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.parametrize("name", NAMES)
def test_one_training_step_changes_parameters(name: str) -> None:
    model = build(name).train()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x, y = images(SHAPES[0], batch=8), torch.arange(8) % 10
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    changed = [not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True)]
    assert sum(changed) >= len(changed) // 2


@pytest.mark.parametrize("name", NAMES)
def test_overfits_a_tiny_batch(name: str) -> None:
    model = build(name, **dropout_off(name)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    x, y = images(SHAPES[0], batch=16), torch.arange(16) % 10
    losses = []
    for _ in range(30):
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses


@pytest.mark.parametrize("name", NAMES)
def test_spec_round_trip_rebuilds_the_same_model(name: str) -> None:
    shape = SHAPES[2]
    model = build(name, shape).eval()
    spec = json.loads(json.dumps(model.trainlab_spec))  # as a checkpoint stores it
    assert spec == model.trainlab_spec
    assert spec["name"] == name
    assert spec["image_size"] == [shape[1], shape[2]]
    assert set(spec["options"]) == set(next(i for i in list_models() if i.name == name).options)
    for rebuilt in (create_model(**spec), model_from_spec(spec)):
        rebuilt.load_state_dict(model.state_dict(), strict=True)
        x = images(shape)
        with torch.no_grad():
            torch.testing.assert_close(rebuilt.eval()(x), model(x))
        assert rebuilt.trainlab_spec == spec


@pytest.mark.parametrize("name", NAMES)
def test_channels_last_gives_the_same_logits(name: str) -> None:
    shape = SHAPES[1]
    model = build(name, shape).eval()
    x = images(shape)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        actual = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", NAMES)
def test_trains_under_bf16_autocast(name: str) -> None:
    model = build(name).train()
    x, y = images(SHAPES[0], batch=4), torch.arange(4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
        loss = F.cross_entropy(logits.float(), y)
    loss.backward()
    assert logits.shape == (4, 10) and torch.isfinite(loss)


# ---------------------------------------------------------------------------------------------
# Per-family architecture
# ---------------------------------------------------------------------------------------------


def test_cnn_matches_the_documented_architecture() -> None:
    model = create_model("cnn", in_channels=1, num_classes=10, image_size=(28, 28))
    conv1 = 1 * 32 * 3 * 3 + 32
    conv2 = 32 * 64 * 3 * 3 + 64
    fc1 = 64 * 7 * 7 * 128 + 128  # two 2×2 pools: 28 → 14 → 7
    fc2 = 128 * 10 + 10
    assert count_parameters(model) == conv1 + conv2 + fc1 + fc2 == 421_642
    kinds = [type(m).__name__ for m in model.modules() if not list(m.children())]
    stage = ["Conv2d", "ReLU", "MaxPool2d"]
    assert kinds == [*stage, *stage, "Flatten", "Linear", "ReLU", "Head"]
    assert model.classifier.dropout == 0.25
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())


def test_cnn_too_small_image_is_a_model_error() -> None:
    with pytest.raises(ModelError, match="too small"):
        create_model("cnn", in_channels=1, num_classes=10, image_size=(6, 6), channels=(8, 8, 8))


def test_mlp_without_hidden_layers_is_logistic_regression() -> None:
    model = create_model("mlp", in_channels=1, num_classes=10, image_size=(28, 28), hidden=[])
    assert count_parameters(model) == 784 * 10 + 10
    assert model.embedding_dim == 784


@pytest.mark.parametrize("depth", [11, 13, 16, 19])
def test_vgg_named_depths_fit_small_images(depth: int) -> None:
    model = create_model(
        "vgg", in_channels=1, num_classes=49, image_size=(20, 24), depth=depth, width=0.125
    )
    convs = sum(isinstance(m, nn.Conv2d) for m in model.modules())
    assert convs == depth - 3  # the paper's depth counts weight layers: convs + 3 FC layers
    assert model(torch.randn(2, 1, 20, 24)).shape == (2, 49)


def test_vgg_options_shape_the_network() -> None:
    model = create_model(
        "vgg",
        in_channels=3,
        num_classes=10,
        image_size=(32, 32),
        stages=[8, 16, 32],
        convs_per_stage=[1, 2, 1],
        kernel_sizes=[3, 5, 7],
        global_pool=False,
        dense=[],
        activation="leaky_relu",
        negative_slope=0.2,
    )
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.kernel_size[0] for c in convs] == [3, 5, 5, 7]
    assert [c.out_channels for c in convs] == [8, 16, 16, 32]
    assert model.embedding_dim == 32 * 4 * 4  # flatten after three pools: 32 → 4
    assert any(isinstance(m, nn.LeakyReLU) and m.negative_slope == 0.2 for m in model.modules())


def test_spinal_head_follows_the_reference() -> None:
    model = create_model(
        "spinalvgg",
        in_channels=1,
        num_classes=10,
        image_size=(28, 28),
        stages=(8, 15),  # odd feature width: halves of 7 and 8
        convs_per_stage=1,
        spinal_width=6,
        spinal_layers=4,
    )
    layers = [layer[1] for layer in model.spinal.layers]
    assert [layer.in_features for layer in layers] == [7, 8 + 6, 7 + 6, 8 + 6]
    assert all(layer.out_features == 6 for layer in layers)
    assert model.embedding_dim == 6 * 4
    assert model.classifier.dropout == 0.5


def test_spinalvgg_defaults_are_the_papers_mnist_net() -> None:
    model = create_model("spinalvgg", in_channels=1, num_classes=10, image_size=(28, 28))
    convs = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert convs == [64, 64, 128, 128, 256, 256, 256, 256, 256, 256]
    assert model.spinal.halves == (128, 128)
    assert model.embedding_dim == 4 * 128


@pytest.mark.parametrize(("options", "blocks"), [({}, 8), ({"depth": 34}, 16), ({"depth": 10}, 4)])
def test_resnet_depths(options: dict[str, Any], blocks: int) -> None:
    model = create_model(
        "resnet", in_channels=3, num_classes=10, image_size=(32, 32), width=4, **options
    )
    assert sum(type(m).__name__ == "PreActBlock" for m in model.modules()) == blocks
    assert model.embedding_dim == 4 * 8


def test_resnet18_default_is_preact_resnet18() -> None:
    def block(cin: int, cout: int) -> int:  # BN, conv3×3, BN, conv3×3 [+ 1×1 projection]
        return (
            2 * cin
            + 9 * cin * cout
            + 2 * cout
            + 9 * cout * cout
            + (cin * cout if cin != cout else 0)
        )

    stages = sum(block(c // 2 if c > 64 else 64, c) + block(c, c) for c in (64, 128, 256, 512))
    expected = 3 * 64 * 9 + stages + 2 * 512 + 512 * 10 + 10  # stem, blocks, final BN, fc
    model = create_model("resnet", in_channels=3, num_classes=10, image_size=(32, 32))
    assert count_parameters(model) == expected  # 11.17 M


def test_resnet_custom_blocks_double_the_width_per_stage() -> None:
    model = create_model(
        "resnet", in_channels=1, num_classes=10, image_size=(28, 28), blocks=[1, 1, 1], width=8
    )
    assert model.embedding_dim == 32


def test_fastnet_default_is_cheap() -> None:
    model = create_model("fastnet", in_channels=1, num_classes=10, image_size=(28, 28))
    macs = count_macs(model, 1, (28, 28))
    assert 2e6 <= macs <= 6e6, macs
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)] == [
        8,
        16,
        16,
        32,
        32,
        128,
        128,
    ]
    assert model.classifier.bias is None and model.classifier.scale == pytest.approx(1 / 9)


def test_fastnet_convs_start_as_identities() -> None:
    model = create_model("fastnet", in_channels=1, num_classes=10, image_size=(28, 28))
    conv = model.blocks[0].conv2
    x = torch.randn(2, conv.in_channels, 9, 9)
    torch.testing.assert_close(conv(x), x)


def test_fastnet_whitening_init_whitens_patches() -> None:
    model = create_model("fastnet", in_channels=3, num_classes=10, image_size=(16, 16))
    x = torch.randn(64, 3, 16, 16)
    x = x + 0.9 * x.roll(1, dims=3)  # neighbouring pixels correlate, as in real images
    model.init_whitening(x)
    out = model.stem[0](x)[:, :12]  # the first half: eigenvector filters
    flat = out.permute(0, 2, 3, 1).reshape(-1, 12)
    torch.testing.assert_close(flat.T @ flat / len(flat), torch.eye(12), atol=0.05, rtol=0)


def test_vit_auto_patch_and_padding() -> None:
    for size, tokens in [((28, 28), 49), ((32, 32), 64), ((20, 24), 30), ((8, 8), 64)]:
        model = create_model("vit", in_channels=1, num_classes=10, image_size=size, **CHEAP["vit"])
        assert model.pos_embed.shape[1] == tokens
    model = create_model(
        "vit", in_channels=1, num_classes=10, image_size=(28, 28), patch_size=8, **CHEAP["vit"]
    )
    assert model.padding == (0, 4, 0, 4) and model.pos_embed.shape[1] == 16
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert create_model("vit", in_channels=1, num_classes=10, image_size=(28, 28),
                        patch_size="Auto", **CHEAP["vit"]).pos_embed.shape[1] == 49  # fmt: skip


def test_checkpoints_record_what_auto_and_null_options_chose() -> None:
    """A later default for "auto" or null must not change the shapes of a saved model."""
    vit = create_model("vit", in_channels=1, num_classes=10, image_size=(28, 28), **CHEAP["vit"])
    assert vit.trainlab_spec["options"]["patch_size"] == 4  # was: "auto"
    fastnet = create_model("fastnet", in_channels=3, num_classes=10, image_size=(32, 32))
    assert fastnet.trainlab_spec["options"]["stem_width"] == 24  # was: null


def test_vit_cls_pooling_adds_a_token() -> None:
    model = build("vit", pool="cls")
    assert model.cls_token is not None and model.pos_embed.shape[1] == 50


@pytest.mark.parametrize(
    "options",
    [{"bidirectional": True}, {"pool": "mean"}, {"embedding": 0}, {"layers": 2, "dropout": 0.1}],
)
def test_gru_variants(options: dict[str, Any]) -> None:
    model = build("gru", SHAPES[1], **options).eval()
    assert model(images(SHAPES[1])).shape == (4, 100)
    directions = 2 if options.get("bidirectional") else 1
    assert model.embedding_dim == 32 * directions


# ---------------------------------------------------------------------------------------------
# Bad option values are ModelErrors that say what is wrong
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "message"),
    [
        ("mlp", {"hidden": [64, -1]}, "'hidden' must be a list of integers >= 1"),
        ("mlp", {"activation": "tanh"}, "'activation' must be one of relu, leaky_relu"),
        ("cnn", {"dropout": 1.5}, "'dropout' must be a probability"),
        ("cnn", {"hidden": 0}, "'hidden' must be an integer >= 1"),
        ("vgg", {"width": -1}, "'width' must be a number > 0"),
        ("vgg", {"depth": 12}, "'depth' must be one of 11, 13, 16, 19"),
        ("vgg", {"depth": 16, "stages": [8]}, "not both"),
        ("vgg", {"kernel_sizes": [3, 5]}, "one value per stage (3)"),
        ("spinalvgg", {"spinal_layers": 0}, "'spinal_layers' must be an integer >= 1"),
        ("resnet", {"depth": 50}, "'depth' must be one of 10, 18, 34"),
        ("resnet", {"blocks": "2,2"}, "'blocks' must be a list of integers"),
        ("fastnet", {"pool": "sum"}, "'pool' must be one of max, avg"),
        ("fastnet", {"bn_momentum": 0}, "'bn_momentum' must be a number > 0"),
        ("vit", {"dim": 30, "heads": 4}, "divisible by 'heads'"),
        ("vit", {"patch_size": 64}, "larger than the 28×28 image"),
        ("vit", {"patch_size": "big"}, "'patch_size' must be an integer >= 1 or 'auto'"),
        ("gru", {"pool": "max"}, "'pool' must be one of last, mean"),
        ("gru", {"bidirectional": "yes"}, "'bidirectional' must be true or false"),
    ],
)
def test_bad_option_values_raise_model_error(
    name: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ModelError) as caught:
        create_model(name, in_channels=1, num_classes=10, image_size=(28, 28), **options)
    assert str(caught.value).startswith(f"model '{name}': ")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_fastnet_rejects_an_image_too_small_for_its_stem() -> None:
    with pytest.raises(ModelError, match="too small"):
        create_model("fastnet", in_channels=1, num_classes=10, image_size=(1, 5))
