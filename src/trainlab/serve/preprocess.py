"""Any uploaded image -> exactly what the model was trained on.

Uploads arrive as PNG/JPEG/WebP of any size, colour or grey, with or without alpha. They become
a uint8 ``[C, H, W]`` tensor with the checkpoint's channels and size, which then goes through
``data.batches.normalize_uint8`` with the checkpoint's mean/std — the very function training
and evaluation use, so a training image sent to the server is classified exactly as in-process.

Handwriting (``kind`` digits or characters, like MNIST/KMNIST/K49) is normalised the way those
datasets were made: light ink on a dark background (a drawing in dark ink is inverted), cropped
to its ink, scaled so its longer side fills ``INK_BOX`` of the ``SIZE`` frame, and centred by
its centre of mass. An upload that already is a training-format image (the model's size, dark
background) passes through unchanged. Other kinds are resized to cover the frame and
centre-cropped.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from trainlab.errors import TrainlabError

HANDWRITING = ("digits", "characters")
MAX_PIXELS = 40_000_000  # decoded pixels; more is a decompression bomb or not a small image
MAX_SIDE = 16_384
INK_FRACTION = 20 / 28  # MNIST: the digit's box is 20x20 inside 28x28
INK_THRESHOLD = 0.2  # share of full intensity that counts as ink when cropping


class InputError(TrainlabError, ValueError):
    """An upload that is not a usable image; the message says what is wrong."""


@dataclass(frozen=True)
class Target:
    """What the model expects (from the checkpoint's preprocessing)."""

    channels: int
    height: int
    width: int
    kind: str

    @classmethod
    def from_preprocessing(cls, preprocessing: dict[str, Any]) -> Target:
        height, width = preprocessing["image_size"]
        return cls(int(preprocessing["channels"]), int(height), int(width),
                   str(preprocessing.get("kind", "other")))  # fmt: skip


def decode(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Bytes -> a fully decoded PIL image, or :class:`InputError` (never a hang or a bomb)."""
    if not data:
        raise InputError("the upload is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width > MAX_SIDE or height > MAX_SIDE or width * height > max_pixels:
                raise InputError(
                    f"the image is {width}×{height} pixels; at most {max_pixels:,} pixels and "
                    f"{MAX_SIDE} per side are accepted"
                )
            image.load()  # decode now: a truncated file fails here, not later
    except InputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InputError("the image claims too many pixels (decompression bomb?)") from None
    except UnidentifiedImageError:
        raise InputError("not an image PIL can read (PNG, JPEG, WebP, ...)") from None
    except (OSError, ValueError, SyntaxError) as error:
        raise InputError(f"the image is damaged or truncated ({error})") from None
    return ImageOps.exif_transpose(image) or image


def _flatten_alpha(image: Image.Image, background: int) -> Image.Image:
    """Transparent pixels become ``background`` (a drawing on a transparent canvas)."""
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (background,) * 3 + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return image


def to_model_input(image: Image.Image, target: Target) -> torch.Tensor:
    """A decoded image -> uint8 ``[C, H, W]`` as the model was trained on."""
    if target.kind in HANDWRITING:
        grey = np.asarray(_flatten_alpha(image, 255).convert("L"), dtype=np.uint8)
        pixels = handwriting(grey, target.height, target.width)
        array = np.repeat(pixels[None], target.channels, axis=0)
    else:
        rgb = _flatten_alpha(image, 0).convert("RGB" if target.channels == 3 else "L")
        fitted = ImageOps.fit(rgb, (target.width, target.height), Image.Resampling.BILINEAR)
        array = np.asarray(fitted, dtype=np.uint8)
        array = array.transpose(2, 0, 1) if array.ndim == 3 else array[None]
        if array.shape[0] != target.channels:
            array = np.repeat(array[:1], target.channels, axis=0)
    return torch.from_numpy(np.ascontiguousarray(array))


def handwriting(grey: np.ndarray, height: int, width: int) -> np.ndarray:
    """MNIST-style normalisation of one grey image (uint8 ``[H, W]``) -> uint8 ``[height, width]``."""
    dark = _dark_background(grey)
    ink = grey if dark else 255 - grey  # dark ink on white paper -> light ink on black
    if dark and ink.shape == (height, width):
        return ink.copy()  # already a training-format image: leave it exactly as it is
    mask = ink > INK_THRESHOLD * 255
    if not mask.any():
        return np.zeros((height, width), dtype=np.uint8)  # nothing drawn
    rows, cols = np.nonzero(mask)
    cropped = ink[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    box = max(1, round(INK_FRACTION * min(height, width)))
    scale = box / max(cropped.shape)
    new_h = max(1, round(cropped.shape[0] * scale))
    new_w = max(1, round(cropped.shape[1] * scale))
    scaled = np.asarray(Image.fromarray(cropped).resize((new_w, new_h), Image.Resampling.LANCZOS))
    return _centre_by_mass(scaled, height, width)


def _dark_background(grey: np.ndarray) -> bool:
    """The border decides: a drawing's background touches the edges, its ink mostly not."""
    border = np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])
    return float(np.median(border)) < 128


def _centre_by_mass(glyph: np.ndarray, height: int, width: int) -> np.ndarray:
    """Place ``glyph`` so its centre of mass sits at the centre of the frame (as in MNIST)."""
    frame = np.zeros((height, width), dtype=np.float64)
    weights = glyph.astype(np.float64)
    total = weights.sum()
    if total == 0:
        return frame.astype(np.uint8)
    ys, xs = np.indices(glyph.shape)
    cy, cx = (ys * weights).sum() / total, (xs * weights).sum() / total
    top = round(float((height - 1) / 2 - cy))
    left = round(float((width - 1) / 2 - cx))
    # Clip the glyph where centring pushes it past the frame (a very lopsided stroke).
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + glyph.shape[0], height), min(left + glyph.shape[1], width)
    frame[y0:y1, x0:x1] = weights[y0 - top : y1 - top, x0 - left : x1 - left]
    return np.clip(frame, 0, 255).astype(np.uint8)


def preprocess_upload(data: bytes, preprocessing: dict[str, Any], *,
                      max_pixels: int = MAX_PIXELS) -> torch.Tensor:  # fmt: skip
    """Upload bytes -> uint8 ``[C, H, W]`` for a model with this checkpoint preprocessing."""
    return to_model_input(decode(data, max_pixels=max_pixels),
                          Target.from_preprocessing(preprocessing))  # fmt: skip
