"""Batch augmentation: parsing, defaults, and the known properties of every operation."""

from __future__ import annotations

import math
from typing import get_args

import pytest
import torch
import torch.nn.functional as F

from trainlab.config import AugmentConfig, ConfigError
from trainlab.data.augment import (
    BatchAugmenter,
    affine_matrices,
    default_augment,
    parse_augment,
    resolve_augment,
    warp,
)
from trainlab.data.types import DataKind


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def augment(config: AugmentConfig, x: torch.Tensor, seed: int = 0, num_classes: int = 10, **kw):
    y = torch.arange(len(x)) % num_classes
    return BatchAugmenter(config, num_classes, **kw)(x, y, gen(seed))


def centre_of_mass(x: torch.Tensor) -> torch.Tensor:
    """``[B, 2]`` (row, col) centroid of ``[B, 1, H, W]`` masses."""
    _, _, height, width = x.shape
    rows = torch.arange(height, dtype=x.dtype)[:, None]
    cols = torch.arange(width, dtype=x.dtype)[None, :]
    mass = x[:, 0].sum(dim=(1, 2))
    return torch.stack(
        [(x[:, 0] * rows).sum(dim=(1, 2)) / mass, (x[:, 0] * cols).sum(dim=(1, 2)) / mass], 1
    )


def dot_image(batch: int, height: int, width: int, row: int, col: int) -> torch.Tensor:
    x = torch.zeros(batch, 1, height, width)
    x[:, :, row, col] = 1.0
    return x


def zero_box(image: torch.Tensor) -> tuple[int, int, int, int, int]:
    """Bounding box (top, bottom, left, right) of the zeros of ``[H, W]`` and their count."""
    rows, cols = torch.nonzero(image == 0, as_tuple=True)
    if len(rows) == 0:
        return 0, 0, 0, 0, 0
    top, bottom = int(rows.min()), int(rows.max()) + 1
    left, right = int(cols.min()), int(cols.max()) + 1
    return top, bottom, left, right, len(rows)


# ---------------------------------------------------------------------------------------------
# parse / defaults
# ---------------------------------------------------------------------------------------------


def test_parse_key_values() -> None:
    assert parse_augment("rotate=15,translate=0.1") == AugmentConfig(rotate=15, translate=0.1)
    assert parse_augment(" crop=4, fill=reflect, hflip ") == AugmentConfig(
        crop=4, hflip=True, fill="reflect"
    )
    assert parse_augment("hflip=false,mixup=0.2") == AugmentConfig(mixup=0.2)


@pytest.mark.parametrize("text", ["none", "off", "OFF", "", "  "])
def test_parse_off_is_identity(text: str) -> None:
    assert parse_augment(text) == AugmentConfig()
    assert parse_augment(text).is_identity()


def test_parse_auto() -> None:
    assert parse_augment("auto") == "auto"
    assert parse_augment(" Auto ") == "auto"


def test_parse_unknown_key_lists_valid_keys() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'rotat'.*valid keys: rotate, translate"):
        parse_augment("rotat=15")


def test_parse_invalid_value_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        parse_augment("rotate=500,fill=mirror")
    message = str(info.value)
    assert "\n" not in message
    assert "rotate" in message and "180" in message and "fill" in message


def test_parse_not_key_value() -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_augment("rotate")


def test_default_augment_digits_never_flip() -> None:
    for kind in ("digits", "characters"):
        config = default_augment(kind, (1, 28, 28))
        assert not config.hflip and config.rotate > 0 and config.translate > 0


def test_default_augment_fills_with_the_background_of_the_images() -> None:
    for kind in ("digits", "characters", "other"):
        assert default_augment(kind, (1, 28, 28)).fill == "zero"  # MNIST: black background
        assert default_augment(kind, (1, 28, 28), background="light").fill == "edge"  # scans


def test_default_augment_natural_is_crop_and_flip() -> None:
    assert default_augment("natural", (3, 32, 32)) == AugmentConfig(
        crop=4, hflip=True, fill="reflect"
    )


def test_default_augment_other() -> None:
    grey = default_augment("other", (1, 28, 28))
    assert grey.hflip and grey.crop == 2 and grey.fill == "zero"
    assert default_augment("other", (3, 64, 48)).fill == "reflect"


@pytest.mark.parametrize(
    "shape", [(1, 28, 28), (3, 32, 32), (1, 5, 5), (3, 64, 48), (1, 13, 200), (3, 500, 500)]
)
def test_default_augment_unknown_is_a_small_shift_only(shape: tuple[int, int, int]) -> None:
    """User data that does not say what it is: nothing that could change a label."""
    config = default_augment("unknown", shape)
    assert not config.hflip  # a mirrored digit, letter or arrow is another class
    assert config.rotate == config.scale == config.shear == config.translate == 0
    assert config.cutout == config.erasing == config.mixup == config.cutmix == 0
    assert 1 <= config.crop <= max(1, min(shape[1:]) // 14)
    assert config.fill == ("reflect" if shape[0] == 3 else "edge")


def test_default_augment_unknown_at_mnist_size() -> None:
    assert default_augment("unknown", (1, 28, 28)) == AugmentConfig(crop=2, fill="edge")


def test_only_natural_and_other_flip_by_default() -> None:
    flips = {kind for kind in get_args(DataKind) if default_augment(kind, (1, 28, 28)).hflip}
    assert flips == {"natural", "other"}
    # A kind added later without a rule here gets the safe defaults, not flips.
    assert default_augment("future-kind", (1, 28, 28)) == default_augment("unknown", (1, 28, 28))  # type: ignore[arg-type]


def test_unknown_edge_fill_keeps_a_white_background_white() -> None:
    """Zero fill would draw a black bar into white-background scans; edge fill does not."""
    x = torch.ones(64, 1, 28, 28)
    x[:, :, 10:18, 12:16] = 0.0  # dark ink on white paper, away from the border
    out, _ = augment(default_augment("unknown", (1, 28, 28)), x)
    assert out.sum(dim=(1, 2, 3)).eq(x[0].sum()).all()  # only shifted: same amount of ink


def test_resolve_augment() -> None:
    explicit = AugmentConfig(rotate=5)
    assert resolve_augment(explicit, "natural", (3, 32, 32)) is explicit
    assert resolve_augment("auto", "digits", (1, 28, 28)) == default_augment("digits", (1, 28, 28))
    assert resolve_augment("auto", "unknown", (1, 28, 28)) == default_augment(
        "unknown", (1, 28, 28)
    )


# ---------------------------------------------------------------------------------------------
# identity and general properties
# ---------------------------------------------------------------------------------------------


def test_identity_returns_input_and_draws_nothing() -> None:
    x, y = torch.rand(4, 1, 8, 8), torch.arange(4)
    generator = gen(3)
    state = generator.get_state()
    out, targets = BatchAugmenter(AugmentConfig(), 10)(x, y, generator)
    assert out is x and targets is y
    assert torch.equal(generator.get_state(), state)


EVERYTHING = AugmentConfig(
    rotate=20, translate=0.1, scale=0.1, shear=10, crop=2, hflip=True, cutout=3, erasing=0.5,
    mixup=0.4, cutmix=1.0, fill="reflect",
)  # fmt: skip


@pytest.mark.parametrize("shape", [(1, 1, 28, 28), (5, 3, 32, 32), (3, 1, 12, 20), (2, 3, 17, 9)])
@pytest.mark.parametrize("config", [EVERYTHING, EVERYTHING.model_copy(update={"fill": "zero"})])
def test_shapes_channels_and_range(shape: tuple[int, ...], config: AugmentConfig) -> None:
    x = torch.rand(shape)
    out, targets = augment(config, x, num_classes=4)
    assert out.shape == x.shape and out.dtype == x.dtype
    assert out.min() >= 0 and out.max() <= 1
    assert targets.shape == (shape[0], 4)
    assert torch.allclose(targets.sum(1), torch.ones(shape[0]))


def test_deterministic_given_seed() -> None:
    x = torch.rand(16, 3, 16, 16)
    config = EVERYTHING.model_copy(update={"mixup": 0.0})  # a cutmix batch changes pixels visibly
    first, t1 = augment(config, x, seed=7)
    again, t2 = augment(config, x, seed=7)
    other, _ = augment(config, x, seed=8)
    assert torch.equal(first, again) and torch.equal(t1, t2)
    assert not torch.equal(first, other)


def test_global_generator_when_none() -> None:
    out, targets = BatchAugmenter(AugmentConfig(rotate=10), 10)(
        torch.rand(2, 1, 8, 8), torch.arange(2)
    )
    assert out.shape == (2, 1, 8, 8) and targets.dtype == torch.int64


def test_big_batch_is_vectorised() -> None:
    """512x1x28x28 with rotate+translate: one warp, no per-sample Python (just runs)."""
    x = torch.rand(512, 1, 28, 28)
    out, _ = augment(AugmentConfig(rotate=15, translate=0.1), x)
    assert out.shape == x.shape


# ---------------------------------------------------------------------------------------------
# affine
# ---------------------------------------------------------------------------------------------


def test_affine_zero_parameters_is_exact_identity() -> None:
    x = torch.rand(3, 2, 10, 14)
    zeros = torch.zeros(3)
    theta = affine_matrices(zeros, zeros, zeros, torch.ones(3), zeros, 10, 14)
    assert torch.allclose(theta, torch.tensor([[1.0, 0, 0], [0, 1, 0]]).expand(3, 2, 3))
    assert torch.allclose(warp(x, theta), x, atol=1e-6)


def test_affine_translate_moves_centre_of_mass_exactly() -> None:
    x = dot_image(1, 20, 30, row=8, col=10)  # non-square
    zeros = torch.zeros(1)
    theta = affine_matrices(
        zeros, torch.tensor([3.0]), torch.tensor([-2.0]), torch.ones(1), zeros, 20, 30
    )
    out = warp(x, theta)
    assert torch.allclose(centre_of_mass(out), torch.tensor([[6.0, 13.0]]), atol=1e-4)
    assert out.sum().item() == pytest.approx(1.0, abs=1e-5)


def test_affine_rotate_90_maps_pixels() -> None:
    # In centred pixel coordinates a +90° rotation maps (x, y) -> (-y, x) (y points down).
    x = dot_image(1, 16, 16, row=7, col=12)  # centre 7.5: (x, y) = (4.5, -0.5)
    zeros = torch.zeros(1)
    theta = affine_matrices(torch.tensor([90.0]), zeros, zeros, torch.ones(1), zeros, 16, 16)
    out = warp(x, theta)
    # (x, y) = (0.5, 4.5) -> col 8, row 12
    assert torch.allclose(centre_of_mass(out), torch.tensor([[12.0, 8.0]]), atol=1e-4)


def test_random_rotation_keeps_distance_on_non_square_images() -> None:
    """Rotation is done in pixel units, so a dot stays at the same distance from the centre
    (a rotation in normalised coordinates would stretch it on a 32x48 image)."""
    height, width = 32, 48
    x = torch.zeros(64, 1, height, width)
    x[:, :, 15:17, 29:31] = 1.0  # 2x2 blob centred at 6 px right of the centre (15.5, 23.5)
    out, _ = augment(AugmentConfig(rotate=180), x, seed=1)
    centre = torch.tensor([(height - 1) / 2, (width - 1) / 2])
    distance = (centre_of_mass(out) - centre).norm(dim=1)
    assert torch.allclose(distance, torch.full((64,), 6.0), atol=0.25)
    assert torch.allclose(out.sum(dim=(1, 2, 3)), torch.full((64,), 4.0), atol=0.2)  # mass ≈ kept


def test_random_translate_within_bounds() -> None:
    x = dot_image(100, 28, 28, row=14, col=14)
    out, _ = augment(AugmentConfig(translate=0.1), x, seed=2)
    shift = centre_of_mass(out) - torch.tensor([14.0, 14.0])
    assert shift.abs().max() <= 0.1 * 28 + 1e-3
    assert shift.abs().max() > 1.0  # something moved
    assert shift[:, 0].std() > 0.5 and shift[:, 1].std() > 0.5  # both axes, independently


def test_random_scale_changes_size_within_bounds() -> None:
    x = torch.zeros(50, 1, 32, 32)
    x[:, :, 12:20, 12:20] = 1.0  # 64 px of mass, centred
    out, _ = augment(AugmentConfig(scale=0.2), x, seed=4)
    ratio = out.sum(dim=(1, 2, 3)) / 64  # area scales with zoom²
    assert ratio.min() >= 0.8**2 - 0.05 and ratio.max() <= 1.2**2 + 0.05
    assert ratio.max() - ratio.min() > 0.3


@pytest.mark.parametrize("fill", ["reflect", "edge"])
def test_rotation_with_reflect_or_edge_fill_has_no_black_corners(fill: str) -> None:
    x = torch.ones(8, 3, 20, 28)
    out, _ = augment(AugmentConfig(rotate=45, scale=0.3, shear=20, translate=0.3, fill=fill), x)
    assert out.min() > 0.999


def test_rotation_with_zero_fill_has_black_corners() -> None:
    x = torch.ones(8, 1, 20, 20)
    config = AugmentConfig(rotate=45)
    out, _ = augment(config, x)
    rotated_a_lot = (out[:, 0, 0, 0] < 0.5).sum()
    assert rotated_a_lot > 0


# ---------------------------------------------------------------------------------------------
# crop, flip
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("fill", "pad_mode"), [("zero", "constant"), ("reflect", "reflect"), ("edge", "replicate")])  # fmt: skip
@pytest.mark.parametrize("size", [(12, 12), (9, 14)])
def test_crop_is_a_window_of_the_padded_image(
    fill: str, pad_mode: str, size: tuple[int, int]
) -> None:
    pad, (height, width) = 3, size
    x = torch.rand(24, 2, height, width)
    out, _ = augment(AugmentConfig(crop=pad, fill=fill), x, seed=5)
    padded = F.pad(x, (pad, pad, pad, pad), mode=pad_mode)
    offsets = set()
    for i in range(len(x)):
        matches = [
            (dy, dx)
            for dy in range(2 * pad + 1)
            for dx in range(2 * pad + 1)
            if torch.equal(out[i], padded[i, :, dy : dy + height, dx : dx + width])
        ]
        assert matches, f"sample {i} is not a crop of the padded image"
        offsets.add(matches[0])
    assert len(offsets) > 5  # offsets are random per sample


def test_hflip_flips_about_half_and_twice_is_identity() -> None:
    x = torch.rand(64, 3, 6, 9)
    config = AugmentConfig(hflip=True)
    once, _ = augment(config, x, seed=11)
    flipped = torch.tensor([torch.equal(once[i], x[i].flip(2)) for i in range(64)])
    kept = torch.tensor([torch.equal(once[i], x[i]) for i in range(64)])
    assert bool((flipped | kept).all())
    assert 16 < int(flipped.sum()) < 48
    twice, _ = augment(config, once, seed=11)  # same draws flip the same samples back
    assert torch.equal(twice, x)


# ---------------------------------------------------------------------------------------------
# cutout, erasing
# ---------------------------------------------------------------------------------------------


def test_cutout_zeroes_a_square() -> None:
    side, size = 6, 40
    x = torch.ones(64, 1, size, size)
    out, _ = augment(AugmentConfig(cutout=side), x, seed=3)
    inside = 0
    for image in out[:, 0]:
        top, bottom, left, right, zeros = zero_box(image)
        assert zeros == (bottom - top) * (right - left)  # one solid rectangle
        assert zeros <= side * side
        if top > 0 and bottom < size and left > 0 and right < size:
            assert (bottom - top, right - left) == (side, side)
            inside += 1
    assert inside > 32


def test_cutout_fills_with_mean_when_given() -> None:
    x = torch.ones(16, 3, 20, 20)
    out, _ = augment(AugmentConfig(cutout=8), x, mean=[0.25, 0.5, 0.75])
    for channel, value in enumerate([0.25, 0.5, 0.75]):
        assert set(out[:, channel].unique().tolist()) == {value, 1.0}


def test_erasing_replaces_one_rectangle_of_2_to_33_percent() -> None:
    x = torch.ones(200, 1, 30, 40)
    out, _ = augment(AugmentConfig(erasing=1.0), x, seed=9)
    changed = (out < 1)[:, 0]
    for mask in changed:
        rows, cols = torch.nonzero(mask, as_tuple=True)
        height = int(rows.max() - rows.min()) + 1
        width = int(cols.max() - cols.min()) + 1
        area = height * width
        # noise < 1 almost everywhere, so the changed pixels fill their bounding box
        assert int(mask.sum()) >= 0.97 * area
        assert 0.015 * 1200 <= area <= 0.4 * 1200


def test_erasing_probability() -> None:
    x = torch.ones(400, 1, 16, 16)
    out, _ = augment(AugmentConfig(erasing=0.25), x, seed=10)
    erased = int((out < 1).flatten(1).any(1).sum())
    assert 60 < erased < 140


# ---------------------------------------------------------------------------------------------
# mixup / cutmix
# ---------------------------------------------------------------------------------------------


def constant_images(batch: int, channels: int = 1, size: int = 8) -> torch.Tensor:
    """Image i is the constant i / batch: a pixel value tells which images were mixed."""
    values = torch.arange(batch, dtype=torch.float32) / batch
    return values[:, None, None, None].expand(batch, channels, size, size).clone()


@pytest.mark.parametrize(
    "config",
    [AugmentConfig(mixup=0.4), AugmentConfig(cutmix=1.0), AugmentConfig(mixup=1.0, cutmix=1.0)],
)
def test_mixing_targets_match_the_mixed_images(config: AugmentConfig) -> None:
    batch = 12
    x = constant_images(batch)
    y = torch.arange(batch)  # one class per image, so targets show the mixing weights
    augmenter = BatchAugmenter(config, num_classes=batch)
    assert augmenter.soft_targets
    generator = gen(0)
    for _ in range(6):
        out, targets = augmenter(x, y, generator)
        assert targets.dtype == torch.float32 and targets.shape == (batch, batch)
        assert (targets >= 0).all()
        assert torch.allclose(targets.sum(1), torch.ones(batch))
        assert ((targets > 0).sum(1) <= 2).all()  # a convex combination of two one-hots
        # mean pixel value = sum_k weight_k * value_k (mixup per pixel, cutmix by area)
        expected = targets @ (torch.arange(batch, dtype=torch.float32) / batch)
        assert torch.allclose(out.mean(dim=(1, 2, 3)), expected, atol=1e-5)


def test_mixup_pixels_are_the_mix() -> None:
    x = torch.rand(10, 3, 5, 7)
    y = torch.arange(10)
    out, targets = BatchAugmenter(AugmentConfig(mixup=1.0), 10)(x, y, gen(1))
    mixed = torch.einsum("ik,kchw->ichw", targets, x)
    assert torch.allclose(out, mixed, atol=1e-6)


def test_both_mixers_are_used() -> None:
    x, y = constant_images(8, size=16), torch.arange(8)
    augmenter = BatchAugmenter(AugmentConfig(mixup=1.0, cutmix=1.0), 8)
    generator, kinds = gen(2), set()
    for _ in range(20):
        out, targets = augmenter(x, y, generator)
        if (targets.max(1).values < 1).any():
            # cutmix keeps original pixel values; mixup makes new ones
            pixels_original = torch.isin(out, x).all().item()
            kinds.add("cutmix" if pixels_original else "mixup")
    assert kinds == {"cutmix", "mixup"}


def test_soft_targets_work_with_cross_entropy_and_label_smoothing() -> None:
    x, y = torch.rand(6, 1, 8, 8), torch.tensor([0, 1, 2, 0, 1, 2])
    _out, targets = BatchAugmenter(AugmentConfig(mixup=0.2), 3)(x, y, gen(0))
    logits = torch.randn(6, 3)
    loss = F.cross_entropy(logits, targets, label_smoothing=0.1)
    assert math.isfinite(loss.item())


def test_batch_of_one_mixes_with_itself() -> None:
    x, y = torch.rand(1, 1, 8, 8), torch.tensor([2])
    out, targets = BatchAugmenter(AugmentConfig(mixup=1.0, cutmix=1.0), 3)(x, y, gen(0))
    assert torch.allclose(out, x) and torch.equal(targets, torch.tensor([[0.0, 0.0, 1.0]]))


def test_config_kind_names_match_the_data_kinds() -> None:
    """config.py keeps a torch-free copy of DataKind for data.kind; the two must not drift."""
    from trainlab.config import DataKindName

    assert get_args(DataKindName) == get_args(DataKind)


class _HostToDeviceCopies(torch.overrides.TorchFunctionMode):
    """Records copies from the CPU to another device made anywhere but in ``to_device`` (the one
    place that makes them without a host sync on CUDA: pinned memory, non_blocking)."""

    def __init__(self) -> None:
        super().__init__()
        self.elsewhere: list[str] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        import sys

        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        source = args[0] if args and isinstance(args[0], torch.Tensor) else None
        if (func is torch.Tensor.to and source is not None and source.device.type == "cpu"
                and isinstance(out, torch.Tensor) and out.device.type != "cpu"):  # fmt: skip
            caller = sys._getframe(1).f_code.co_name
            if caller != "to_device":
                self.elsewhere.append(f"{caller}: {tuple(source.shape)}")
        return out


def everything_on(device: str) -> tuple[BatchAugmenter, torch.Tensor, torch.Tensor]:
    """An augmenter with every operation on, and a colour batch for it on ``device``."""
    augmenter = BatchAugmenter(EVERYTHING, 10, mean=[0.5, 0.5, 0.5])
    x = torch.rand(16, 3, 32, 32, device=device)
    return augmenter, x, torch.zeros(16, dtype=torch.long, device=device)


def test_random_parameters_reach_the_device_without_stalling_the_host():
    # The meta device stands in for a GPU (no GPU here): every random parameter is drawn on
    # the CPU generator; a plain copy of it to a GPU makes the host wait for the last step.
    augmenter, x, y = everything_on("meta")
    generator = gen()
    with _HostToDeviceCopies() as copies:
        for _ in range(4):  # mixup and cutmix alternate at random
            augmenter(x, y, generator)
    assert copies.elsewhere == []


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augmentation_on_cuda_never_synchronises():
    augmenter, x, y = everything_on("cuda")
    generator = gen()
    augmenter(x, y, generator)  # the first call builds the cached fill
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(4):
            augmenter(x, y, generator)
    finally:
        torch.cuda.set_sync_debug_mode("default")
