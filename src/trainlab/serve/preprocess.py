"""Any uploaded image -> exactly what the model was trained on.

Uploads arrive as PNG/JPEG/WebP (or GIF, BMP, TIFF) of any size and bit depth, colour or grey,
with or without alpha, in any EXIF orientation, and are decoded as training decodes image
folders (``data.pictures``; transparency becomes white paper). They become a uint8
``[C, H, W]`` tensor with the checkpoint's channels and size, which then goes through
``data.batches.normalize_uint8`` with the checkpoint's mean/std — the very function training
and evaluation use, so a training image sent to the server is classified exactly as in-process.

Handwriting (``kind`` digits or characters, like MNIST/KMNIST/K49) is normalised the way those
datasets were made: light ink on a dark background (a drawing in dark ink is inverted), cropped
to its ink, scaled so its longer side fills the share of the frame the training images' ink
does (recorded at training; MNIST: 20 of 28 pixels), and centred by its centre of mass. An
upload that already is a training-format image (the model's size, the training images'
background, its ink in that box and centred) passes through unchanged. Other kinds are resized
to cover the frame and centre-cropped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps

# decode, its limits and its error are shared with training's image folders (data.pictures)
from trainlab.data.batches import (
    INK_THRESHOLD,
    MNIST_INK_BOX,
    MNIST_INK_OFFSET,
    background_of_border,
    ink_geometry,
)
from trainlab.data.pictures import MAX_PIXELS, MAX_SIDE, InputError, decode, flatten_alpha
from trainlab.data.types import HANDWRITING_KINDS

__all__ = [
    "MAX_PIXELS",
    "MAX_SIDE",
    "InputError",
    "Target",
    "declared_pixels",
    "decode",
    "handwriting",
    "preprocess_upload",
    "to_model_input",
]

MIN_OFFSET_SLACK = 2.0  # px: an upload this close to centred counts as centred
MIN_CONTRAST = 32  # ink this close to its paper's level is noise, not a stroke


@dataclass(frozen=True)
class Target:
    """What the model expects (from the checkpoint's preprocessing)."""

    channels: int
    height: int
    width: int
    kind: str
    background: str = "dark"  # of the training images; checkpoints before it was saved: MNIST's
    # How the training handwriting sits in its frame (data.batches.ink_layout); checkpoints
    # saved before it was recorded: MNIST's.
    ink_box: float = MNIST_INK_BOX
    ink_offset: float = MNIST_INK_OFFSET

    @classmethod
    def from_preprocessing(cls, preprocessing: dict[str, Any]) -> Target:
        height, width = preprocessing["image_size"]
        return cls(int(preprocessing["channels"]), int(height), int(width),
                   str(preprocessing.get("kind", "other")),
                   str(preprocessing.get("background", "dark")),
                   float(preprocessing.get("ink_box", MNIST_INK_BOX)),
                   float(preprocessing.get("ink_offset", MNIST_INK_OFFSET)))  # fmt: skip


def to_model_input(image: Image.Image, target: Target) -> torch.Tensor:
    """An image from :func:`decode` (mode L, LA, RGB or RGBA) -> uint8 ``[C, H, W]`` as the model
    was trained on."""
    if target.kind in HANDWRITING_KINDS:
        grey = np.asarray(flatten_alpha(image).convert("L"), dtype=np.uint8)
        pixels = handwriting(
            grey,
            target.height,
            target.width,
            background=target.background,
            ink_box=target.ink_box,
            ink_offset=target.ink_offset,
        )
        array = np.repeat(pixels[None], target.channels, axis=0)
    else:
        rgb = flatten_alpha(image).convert("RGB" if target.channels == 3 else "L")
        fitted = ImageOps.fit(rgb, (target.width, target.height), Image.Resampling.BILINEAR)
        array = np.asarray(fitted, dtype=np.uint8)
        array = array.transpose(2, 0, 1) if array.ndim == 3 else array[None]
        if array.shape[0] != target.channels:
            array = np.repeat(array[:1], target.channels, axis=0)
    return torch.from_numpy(np.ascontiguousarray(array))


def handwriting(
    grey: np.ndarray,
    height: int,
    width: int,
    *,
    background: str = "dark",
    ink_box: float = MNIST_INK_BOX,
    ink_offset: float = MNIST_INK_OFFSET,
) -> np.ndarray:
    """MNIST-style normalisation of one grey image (uint8 ``[H, W]``) -> uint8 ``[height, width]``,
    on a ``background`` like the training images' (``"dark"``: light ink, as MNIST), the ink's
    longer side ``ink_box`` of the frame; an image of the model's size laid out like that (its
    centre of mass within ``ink_offset`` px, or 2 px, of the centre) passes unchanged."""
    dark = _dark_background(grey)
    ink = grey if dark else 255 - grey  # dark ink on white paper -> light ink on black
    box = max(1, round(ink_box * min(height, width)))
    laid_out = _laid_out(ink, box, max(MIN_OFFSET_SLACK, ink_offset + 0.5))
    if grey.shape == (height, width) and dark == (background == "dark") and laid_out:
        return grey.copy()  # already a training-format image: leave it exactly as it is
    glyph = _normalised_glyph(_without_paper(ink), height, width, box)
    return glyph if background == "dark" else 255 - glyph


def _laid_out(ink: np.ndarray, box: int, max_offset: float) -> bool:
    """Whether light-on-dark ``ink`` sits as the training images do: its ink's box no longer
    than ``box`` (+1 px) and its centre of mass within ``max_offset`` px of the centre. A
    28×28 digit filling its frame, or off-centre, is normalised instead (as is, it lost 20
    points of accuracy)."""
    if not (ink > INK_THRESHOLD * 255).any():
        return False
    side, offset = ink_geometry(torch.tensor(ink)[None])  # a copy: decoded images are read-only
    return int(side) <= box + 1 and float(offset) <= max_offset


def _without_paper(ink: np.ndarray) -> np.ndarray:
    """Light ink on a background that may not be black (a photo of grey paper): the border's
    level becomes 0 and the ink is stretched to full strength, as MNIST's strokes are."""
    level = float(np.median(_border(ink)))
    top = float(ink.max(initial=0))
    if level == 0 and top == 255:
        return ink  # clean already (the drawing page, a scan on white): unchanged
    if top - level < MIN_CONTRAST:  # paper and nothing on it
        return np.zeros_like(ink)
    stretched = (ink.astype(np.float32) - level) * (255 / (top - level))
    return np.clip(np.round(stretched), 0, 255).astype(np.uint8)


def _normalised_glyph(ink: np.ndarray, height: int, width: int, box: int) -> np.ndarray:
    """Light ink on black -> cropped to the ink, scaled into the ink box, centred by mass."""
    mask = ink > INK_THRESHOLD * 255
    # The ink's bounding box from per-row/column flags: np.nonzero(mask) would hold two int64
    # indices a pixel (640 MB for a 40-megapixel upload that is all ink).
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return np.zeros((height, width), dtype=np.uint8)  # nothing drawn
    cropped = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = box / max(cropped.shape)
    new_h = max(1, round(cropped.shape[0] * scale))
    new_w = max(1, round(cropped.shape[1] * scale))
    scaled = np.asarray(Image.fromarray(cropped).resize((new_w, new_h), Image.Resampling.LANCZOS))
    return _centre_by_mass(scaled, height, width)


def _border(grey: np.ndarray) -> np.ndarray:
    return np.concatenate([grey[0], grey[-1], grey[:, 0], grey[:, -1]])


def _dark_background(grey: np.ndarray) -> bool:
    """The border decides, by the rule training recorded the checkpoint's background with."""
    return background_of_border(torch.from_numpy(_border(grey))) == "dark"


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


def declared_pixels(data: bytes) -> int | None:
    """The pixel count the image's header declares (nothing is decoded), None if unreadable.
    A few hundred bytes can declare 40 million pixels, so the byte count alone says nothing."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:  # unreadable: decode() will say why, at once and without decoding
        return None
    return width * height


def preprocess_upload(data: bytes, preprocessing: dict[str, Any], *,
                      max_pixels: int = MAX_PIXELS) -> torch.Tensor:  # fmt: skip
    """Upload bytes -> uint8 ``[C, H, W]`` for a model with this checkpoint preprocessing."""
    return to_model_input(decode(data, max_pixels=max_pixels),
                          Target.from_preprocessing(preprocessing))  # fmt: skip
