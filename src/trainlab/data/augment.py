"""Batch-wise image augmentation on the data's own device.

Every operation works on a whole batch ``x`` (float, ``[B, C, H, W]``, pixel values in [0, 1])
with per-sample random parameters drawn from one ``torch.Generator``: no per-sample Python, and
a run is reproducible and resumable from the generator state alone. Parameters are drawn on the
generator's device (a CPU generator is fine) and the few small parameter tensors are then moved
to the data device.

Order of operations (each skipped when its setting is zero, so the identity config costs nothing):

1. one combined affine per sample (rotation, translation, zoom, shear): a single ``grid_sample``
2. random crop after padding by ``crop`` pixels (integer shifts, no interpolation blur)
3. horizontal flip of a random half of the batch
4. cutout: a ``cutout`` x ``cutout`` square at a random centre (clipped at the border)
5. random erasing: with probability ``erasing`` a random rectangle is replaced by noise
6. mixup or cutmix with a partner from the same batch (targets become soft)

Pixels from outside the image (affine, crop) follow ``config.fill``: ``zero`` (black), ``reflect``
(mirror at the border: no black corners after a rotation) or ``edge`` (repeat the border pixel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from trainlab.config import AugmentConfig, ConfigError, FillMode, parse_key_values
from trainlab.data.types import DataKind

__all__ = [
    "BatchAugmenter",
    "affine_matrices",
    "default_augment",
    "parse_augment",
    "resolve_augment",
    "warp",
]

# grid_sample's names for our fill modes.
_PADDING_MODE: dict[str, str] = {"zero": "zeros", "reflect": "reflection", "edge": "border"}

# Random erasing (Zhong et al. 2017): erased area 2%..33% of the image, aspect ratio 0.3..3.3.
_ERASE_AREA = (0.02, 1.0 / 3.0)
_ERASE_LOG_RATIO = (math.log(0.3), math.log(1.0 / 0.3))

_OFF_WORDS = {"none", "off", "identity", "no", "false", "0"}


# ---------------------------------------------------------------------------------------------
# Parsing and defaults
# ---------------------------------------------------------------------------------------------


def parse_augment(text: str) -> AugmentConfig | Literal["auto"]:
    """Read an ``--augment`` flag.

    ``"auto"`` -> ``"auto"`` (defaults that fit the dataset, see :func:`default_augment`);
    ``"none"`` / ``"off"`` / ``""`` -> the identity ``AugmentConfig()``;
    ``"rotate=15,translate=0.1,hflip"`` -> ``AugmentConfig(rotate=15, translate=0.1, hflip=True)``
    (a bare switch name such as ``hflip`` means ``hflip=true``).
    Unknown keys and invalid values raise :class:`ConfigError` with a one-line reason.
    """
    stripped = text.strip()
    if stripped.lower() == "auto":
        return "auto"
    if stripped.lower() in _OFF_WORDS or not stripped:
        return AugmentConfig()
    switches = {
        name for name, info in AugmentConfig.model_fields.items() if info.annotation is bool
    }
    items = [part.strip() for part in stripped.split(",") if part.strip()]
    items = [f"{item}=true" if item.replace("-", "_") in switches else item for item in items]
    values = parse_key_values(",".join(items), "augment")
    valid = list(AugmentConfig.model_fields)
    unknown = [key for key in values if key not in valid]
    if unknown:
        raise ConfigError(
            f"augment: unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))};"
            f" valid keys: {', '.join(valid)} (or 'auto' / 'none')"
        )
    try:
        return AugmentConfig(**values)
    except ValidationError as error:
        reasons = "; ".join(_reason(problem) for problem in error.errors())
        raise ConfigError(f"augment: {reasons}") from None


def _reason(problem: Any) -> str:
    """``rotate: Input should be ...``; a check of the whole config has no field to name."""
    where = ".".join(str(part) for part in problem["loc"])
    message = str(problem["msg"]).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def default_augment(
    kind: DataKind, image_shape: Sequence[int], background: str = "dark"
) -> AugmentConfig:
    """Augmentation that fits the data; ``image_shape`` is ``(C, H, W)``, ``background`` the
    training images' ``"dark"`` or ``"light"`` (``batches.background_of``).

    - digits / characters: small rotation, shift and zoom; never flips (a mirrored 2 or a
      mirrored kana is a different or an invalid symbol). Zero fill on a dark background (black
      is the background, and a stroke touching the edge is not smeared outwards); edge fill on
      a light one (dark ink on white paper), where zero fill would draw black corners and bars.
    - natural (CIFAR-like): the classic recipe, random crop after reflect-padding by 1/8 of the
      side (4 px at 32 px) plus horizontal flips (a mirrored cat is still a cat).
    - other: known content that is neither, e.g. Fashion-MNIST. Flips keep the label for
      clothes and most objects, so we flip; a small integer shift (crop by ~1/14 of the side,
      2 px at 28 px) instead of rotation keeps the images sharp. For grey images the fill of
      digits (an object on a black background, or on white), reflect fill for colour images
      (photos have no black border).
    - unknown: user data that does not say what it is (see :data:`DataKind`). Only what is safe
      for any content: the same small integer shift, and nothing else. No flips (the images may
      be digits, text or arrows, where a mirror changes the label), no rotation or zoom (they
      blur, and orientation may be the label). Grey images get edge fill: the repeated border
      pixel is the background whether that is black (digits) or white (scans), where zero fill
      would draw a black bar into white-background images. Colour images get reflect fill, as
      for photos.
    """
    channels, height, width = (int(v) for v in image_shape[-3:])
    side = min(height, width)
    colour = channels == 3
    ink_fill = "edge" if background == "light" else "zero"
    if kind in ("digits", "characters"):
        return AugmentConfig(rotate=10, translate=0.1, scale=0.1, fill=ink_fill)
    if kind == "natural":
        return AugmentConfig(crop=min(16, max(1, round(side / 8))), hflip=True, fill="reflect")
    shift = min(16, max(1, side // 14))  # pixels: 2 at 28-32 px, 4 at 64 px
    if kind == "other":
        return AugmentConfig(crop=shift, hflip=True, fill="reflect" if colour else ink_fill)
    # "unknown", and any kind this function does not know: the defaults safe for any content.
    return AugmentConfig(crop=shift, fill="reflect" if colour else "edge")


def resolve_augment(
    value: AugmentConfig | Literal["auto"],
    kind: DataKind,
    image_shape: Sequence[int],
    background: str = "dark",
) -> AugmentConfig:
    """``"auto"`` -> :func:`default_augment` for the data; an explicit config is kept as is."""
    return default_augment(kind, image_shape, background) if value == "auto" else value


# ---------------------------------------------------------------------------------------------
# Building blocks (public so tests and previews can use known parameters)
# ---------------------------------------------------------------------------------------------


def affine_matrices(
    angle: torch.Tensor,
    shift_x: torch.Tensor,
    shift_y: torch.Tensor,
    zoom: torch.Tensor,
    shear: torch.Tensor,
    height: int,
    width: int,
) -> torch.Tensor:
    """``theta`` ``[B, 2, 3]`` for ``F.affine_grid`` (``align_corners=False``) from per-sample
    parameters: ``angle`` and ``shear`` in degrees, ``shift_x``/``shift_y`` in pixels (positive
    moves the content right/down), ``zoom`` as a factor (>1 enlarges).

    The forward map acts in centred pixel coordinates, so rotations stay rotations on non-square
    images: ``p_out = R(angle) @ Shear(shear) @ zoom * p_in + shift``. ``affine_grid`` wants the
    inverse (output -> input) in normalised coordinates ``n = p / (W/2, H/2)``.
    float32 throughout (MPS has no float64; the error is far below a pixel).
    """
    rad = torch.deg2rad(angle.float())
    cos, sin = torch.cos(rad), torch.sin(rad)
    tan = torch.tan(torch.deg2rad(shear.float()))
    zoom = zoom.float()
    # R @ Shear @ zoom with R = [[cos, -sin], [sin, cos]], Shear = [[1, tan], [0, 1]].
    a = zoom * cos
    b = zoom * (cos * tan - sin)
    c = zoom * sin
    d = zoom * (sin * tan + cos)
    det = a * d - b * c  # = zoom², never 0 for zoom in (0, 2)
    inv = torch.stack([torch.stack([d, -b], -1), torch.stack([-c, a], -1)], -2) / det[:, None, None]
    half = torch.tensor([width / 2.0, height / 2.0], dtype=torch.float32, device=angle.device)
    # Normalised-coordinate linear part: D^-1 A^-1 D with D = diag(W/2, H/2).
    linear = inv * half[None, None, :] / half[None, :, None]
    shift = torch.stack([shift_x.float(), shift_y.float()], -1)  # pixels
    offset = -(inv @ shift[:, :, None])[:, :, 0] / half  # -D^-1 A^-1 t
    return torch.cat([linear, offset[:, :, None]], dim=2)


def warp(x: torch.Tensor, theta: torch.Tensor, fill: FillMode = "zero") -> torch.Tensor:
    """Resample ``x`` ``[B, C, H, W]`` through ``theta`` ``[B, 2, 3]`` with bilinear interpolation."""
    theta = to_device(theta, x.device).to(x.dtype)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(
        x, grid, mode="bilinear", padding_mode=_PADDING_MODE[fill], align_corners=False
    )


def _source_index(
    index: torch.Tensor, size: int, fill: FillMode
) -> tuple[torch.Tensor, torch.Tensor]:
    """Map possibly out-of-range integer pixel indices into ``[0, size)``; also return which were
    inside (only used for zero fill). ``reflect`` mirrors without repeating the edge pixel, like
    ``F.pad(mode="reflect")``."""
    inside = (index >= 0) & (index < size)
    if fill == "reflect" and size > 1:
        period = 2 * (size - 1)
        index = torch.remainder(index, period)
        index = torch.where(index >= size, period - index, index)
    return index.clamp(0, size - 1), inside


def _box_mask(
    top: torch.Tensor, left: torch.Tensor, bottom: torch.Tensor, right: torch.Tensor, h: int, w: int
) -> torch.Tensor:
    """Boolean ``[B, 1, H, W]``: pixels with ``top <= row < bottom`` and ``left <= col < right``."""
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_rows = (rows[None, :] >= top[:, None]) & (rows[None, :] < bottom[:, None])
    in_cols = (cols[None, :] >= left[:, None]) & (cols[None, :] < right[:, None])
    return (in_rows[:, :, None] & in_cols[:, None, :])[:, None]


def _sample_beta(alpha: float, generator: torch.Generator | None) -> float:
    """One draw of Beta(alpha, alpha), reproducible from ``generator``.

    torch's Beta distribution takes no generator, so we seed numpy from it (one int64 draw).
    """
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=_gen_device(generator)))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` (random parameters drawn on the CPU generator) on the data's ``device``
    without making the host wait: a plain CPU→CUDA copy synchronises the stream, so the host
    would wait for the previous step to finish on every batch. From pinned memory the copy is
    queued like a kernel (the caching host allocator keeps the buffer until it is done)."""
    if device.type != "cuda" or tensor.device.type != "cpu":
        return tensor.to(device)  # MPS: a non-blocking copy of a temporary can corrupt it
    return tensor.pin_memory().to(device, non_blocking=True)


def _gen_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


# ---------------------------------------------------------------------------------------------
# The augmenter
# ---------------------------------------------------------------------------------------------


class BatchAugmenter:
    """Callable ``(x, y, generator) -> (x_aug, targets)`` for one batch.

    ``x``: float ``[B, C, H, W]`` in [0, 1] (augmentation happens before normalisation);
    ``y``: int64 ``[B]``. ``targets`` is ``y`` itself unless mixup or cutmix is on; then it is
    float ``[B, num_classes]`` of probabilities (rows sum to 1), which ``F.cross_entropy``
    accepts, also with ``label_smoothing``. ``soft_targets`` says which one you get.

    ``mean``: per-channel dataset mean in [0, 1] units, used as the cutout fill. The cutout
    paper erased *normalised* images with 0, i.e. with the mean colour, which carries no
    information after normalisation; without ``mean`` cutout fills black (0), which for
    digit-like data is the background anyway.
    """

    def __init__(
        self, config: AugmentConfig, num_classes: int, *, mean: Sequence[float] | None = None
    ) -> None:
        self.config = config
        self.num_classes = int(num_classes)
        self.mean = None if mean is None else [float(m) for m in mean]
        c = config
        self.uses_affine = bool(c.rotate or c.translate or c.scale or c.shear)
        self.soft_targets = bool(c.mixup or c.cutmix)
        self.is_identity = c.is_identity()
        self._fills: dict[tuple[torch.device, torch.dtype, int], torch.Tensor] = {}

    def __repr__(self) -> str:
        return f"BatchAugmenter({self.config!r}, num_classes={self.num_classes})"

    def __call__(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if self.is_identity:
            return x, y
        c = self.config
        if self.uses_affine:
            x = self.affine(x, generator)
        if c.crop:
            x = self.crop(x, generator)
        if c.hflip:
            x = self.hflip(x, generator)
        if c.cutout:
            x = self.cutout(x, generator)
        if c.erasing:
            x = self.erase(x, generator)
        if self.soft_targets:
            return self.mix(x, y, generator)
        return x, y

    # -- per-sample geometric ops --------------------------------------------------------------

    def affine(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Rotation ±rotate°, shift ±translate·size, zoom 1±scale, x-shear ±shear° in one warp."""
        c = self.config
        batch, _, height, width = x.shape
        # One draw for all five parameters keeps the random stream simple; u in [-1, 1).
        u = torch.rand(batch, 5, generator=generator, device=_gen_device(generator)) * 2 - 1
        theta = affine_matrices(
            angle=u[:, 0] * c.rotate,
            shift_x=u[:, 1] * c.translate * width,
            shift_y=u[:, 2] * c.translate * height,
            zoom=1 + u[:, 3] * c.scale,
            shear=u[:, 4] * c.shear,
            height=height,
            width=width,
        )
        return warp(x, theta, c.fill)

    def crop(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Random crop of the original size from the image padded by ``crop`` px on every side.

        Equivalent to a random integer shift of -crop..+crop pixels per axis; done as one gather
        with per-sample index grids instead of materialising the padded batch.
        """
        pad = self.config.crop
        batch, channels, height, width = x.shape
        shifts = torch.randint(
            0, 2 * pad + 1, (batch, 2), generator=generator, device=_gen_device(generator)
        )
        shifts = to_device(shifts, x.device)
        rows = torch.arange(height, device=x.device)[None, :] + shifts[:, :1] - pad  # [B, H]
        cols = torch.arange(width, device=x.device)[None, :] + shifts[:, 1:] - pad  # [B, W]
        rows, rows_inside = _source_index(rows, height, self.config.fill)
        cols, cols_inside = _source_index(cols, width, self.config.fill)
        flat = (rows[:, :, None] * width + cols[:, None, :]).reshape(batch, 1, height * width)
        out = x.reshape(batch, channels, height * width).gather(
            2, flat.expand(batch, channels, height * width)
        )
        out = out.reshape(batch, channels, height, width)
        if self.config.fill == "zero":
            inside = rows_inside[:, :, None] & cols_inside[:, None, :]
            out = out * inside[:, None].to(out.dtype)
        return out

    def hflip(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Mirror left-right a random half (each sample with probability 0.5)."""
        flip = torch.rand(x.shape[0], generator=generator, device=_gen_device(generator)) < 0.5
        return torch.where(to_device(flip, x.device)[:, None, None, None], x.flip(3), x)

    # -- occlusion ------------------------------------------------------------------------------

    def cutout(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Fill a ``cutout``-pixel square centred at a uniform random pixel (clipped at the
        border, as in DeVries & Taylor 2017) with the mean colour (black without ``mean``)."""
        side = self.config.cutout
        batch, _channels, height, width = x.shape
        u = to_device(torch.rand(batch, 2, generator=generator, device=_gen_device(generator)),
                      x.device)  # fmt: skip
        centre_y = (u[:, 0] * height).long()
        centre_x = (u[:, 1] * width).long()
        top, left = centre_y - side // 2, centre_x - side // 2
        mask = _box_mask(top, left, top + side, left + side, height, width)
        return torch.where(mask, self._fill_value(x), x)

    def erase(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Random erasing (Zhong et al.): with probability ``erasing`` per sample, a rectangle of
        2%..33% of the area and aspect ratio 0.3..3.3 is replaced by uniform noise (the paper's
        best fill: it cannot be learned as a cue, unlike a constant colour)."""
        batch, _channels, height, width = x.shape
        device = _gen_device(generator)
        u = torch.rand(batch, 5, generator=generator, device=device)
        area = (_ERASE_AREA[0] + u[:, 0] * (_ERASE_AREA[1] - _ERASE_AREA[0])) * height * width
        ratio = torch.exp(
            _ERASE_LOG_RATIO[0] + u[:, 1] * (_ERASE_LOG_RATIO[1] - _ERASE_LOG_RATIO[0])
        )
        # Too tall/wide boxes are clipped to the image instead of re-drawn (vectorised).
        box_h = torch.sqrt(area * ratio).round().clamp(1, height).long()
        box_w = torch.sqrt(area / ratio).round().clamp(1, width).long()
        top = (u[:, 2] * (height - box_h + 1)).long()
        left = (u[:, 3] * (width - box_w + 1)).long()
        # Chosen on the generator's device: with a CPU generator, no GPU sync here.
        chosen = torch.nonzero(u[:, 4] < self.config.erasing).flatten()
        if len(chosen) == 0:
            return x
        # Noise (one value per pixel: the costly part) only for the chosen samples.
        shape = (len(chosen), *x.shape[1:])
        noise = to_device(torch.rand(shape, generator=generator, device=device), x.device)
        params = to_device(torch.stack([top, left, top + box_h, left + box_w])[:, chosen], x.device)
        mask = _box_mask(*params, height, width)
        index = to_device(chosen, x.device)
        erased = torch.where(mask, noise.to(x.dtype), x.index_select(0, index))
        return x.index_copy(0, index, erased)

    def _fill_value(self, x: torch.Tensor) -> torch.Tensor | float:
        if self.mean is None:
            return 0.0
        key = (x.device, x.dtype, x.shape[1])
        if key not in self._fills:  # made once: building it from a list each batch is a copy
            mean = to_device(torch.tensor(self.mean, dtype=x.dtype), x.device)
            self._fills[key] = mean.expand(x.shape[1]).reshape(1, -1, 1, 1)
        return self._fills[key]

    # -- mixing ---------------------------------------------------------------------------------

    def mix(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mixup or cutmix (50/50 per batch when both are on) with a random partner permutation.

        One ``lam ~ Beta(alpha, alpha)`` per batch, as in both papers; targets are
        ``lam * onehot(y) + (1 - lam) * onehot(y[partner])``.
        """
        c = self.config
        device = _gen_device(generator)
        use_cutmix = bool(c.cutmix) and (
            not c.mixup or bool(torch.rand(1, generator=generator, device=device) < 0.5)
        )
        partner = to_device(torch.randperm(x.shape[0], generator=generator, device=device),
                            x.device)  # fmt: skip
        if use_cutmix:
            x, lam = self._cutmix(x, partner, generator)
        else:
            lam = _sample_beta(c.mixup, generator)
            x = x * lam + x[partner] * (1 - lam)
        onehot = F.one_hot(y, self.num_classes).to(torch.float32)
        return x, onehot * lam + onehot[partner] * (1 - lam)

    def _cutmix(
        self, x: torch.Tensor, partner: torch.Tensor, generator: torch.Generator | None
    ) -> tuple[torch.Tensor, float]:
        """Paste one box of the partner image (area ≈ 1 - lam); lam is corrected for clipping."""
        _, _, height, width = x.shape
        lam = _sample_beta(self.config.cutmix, generator)
        cut = math.sqrt(1.0 - lam)
        box_h, box_w = int(height * cut), int(width * cut)
        u = torch.rand(2, generator=generator, device=_gen_device(generator)).tolist()
        centre_y, centre_x = int(u[0] * height), int(u[1] * width)
        top, bottom = max(centre_y - box_h // 2, 0), min(centre_y + box_h - box_h // 2, height)
        left, right = max(centre_x - box_w // 2, 0), min(centre_x + box_w - box_w // 2, width)
        out = x.clone()
        out[:, :, top:bottom, left:right] = x[partner, :, top:bottom, left:right]
        lam = 1.0 - (bottom - top) * (right - left) / (height * width)
        return out, lam
