"""Any uploaded image -> exactly what the model was trained on.

Uploads arrive as PNG/JPEG/WebP (or GIF, BMP, TIFF) of any size and bit depth, colour or grey,
with or without alpha, in any EXIF orientation. They become a uint8 ``[C, H, W]`` tensor with
the checkpoint's channels and size, which then goes through ``data.batches.normalize_uint8``
with the checkpoint's mean/std — the very function training and evaluation use, so a training
image sent to the server is classified exactly as in-process.

Handwriting (``kind`` digits or characters, like MNIST/KMNIST/K49) is normalised the way those
datasets were made: light ink on a dark background (a drawing in dark ink is inverted), cropped
to its ink, scaled so its longer side fills ``INK_BOX`` of the ``SIZE`` frame, and centred by
its centre of mass. An upload that already is a training-format image (the model's size, dark
background) passes through unchanged. Other kinds are resized to cover the frame and
centre-cropped.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from trainlab.errors import TrainlabError

HANDWRITING = ("digits", "characters")
# The formats an upload may be in. Pillow reads dozens more, but nobody sends those to classify,
# some barely check their magic number (TGA) and EPS runs Ghostscript on the client's bytes.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
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
    """Bytes -> a fully decoded, upright image in mode L, LA, RGB or RGBA (8 bits a channel), or
    :class:`InputError` saying what is wrong: never another exception, a hang or a bomb."""
    if not data:
        raise InputError("the upload is empty")
    # No warnings.catch_warnings() to turn Pillow's DecompressionBombWarning into an error: it is
    # not thread-safe (decode runs on worker threads), and our limit is below Pillow's anyway.
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
        width, height = image.size
        if width > MAX_SIDE or height > MAX_SIDE or width * height > max_pixels:
            raise InputError(
                f"the image is {width}×{height} pixels; at most {max_pixels:,} pixels and "
                f"{MAX_SIDE} per side are accepted"
            )
        image.load()  # decode now: a truncated file fails here, not later
        return _standard_mode(_upright(image))
    except InputError:
        raise
    except Image.DecompressionBombError:  # Pillow's own limit, beyond ours (it checks first)
        raise InputError("the image claims too many pixels (decompression bomb?)") from None
    except UnidentifiedImageError:
        raise InputError(
            f"not an image in a format the server reads ({', '.join(FORMATS)})"
        ) from None
    except Exception as error:
        # Pillow's decoders report broken data as OSError, ValueError, SyntaxError, EOFError,
        # struct.error, IndexError, ...: whatever they raise on client bytes is a broken file.
        raise InputError(f"the image is damaged or truncated ({error})") from None


def _upright(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (a phone photo stored sideways)."""
    try:
        return ImageOps.exif_transpose(image) or image
    except Exception:  # unreadable EXIF (e.g. a WebP's EXIF chunk with a bad TIFF header, which
        return image  # raises SyntaxError): the pixels are fine, so keep them as stored


def _standard_mode(image: Image.Image) -> Image.Image:
    """Any mode Pillow decodes -> L, LA, RGB or RGBA, with transparency as an alpha channel."""
    if image.mode.startswith("I") or image.mode == "F":  # I;16, I;16B, I (32-bit), F (float)
        return _grey_8bit(image)
    if image.mode in ALPHA_MODES or "transparency" in image.info:  # incl. P, L, RGB with tRNS
        return image.convert("LA" if image.mode in ("L", "LA") else "RGBA")
    return image if image.mode in ("L", "RGB") else image.convert("RGB")  # 1, P, CMYK, LAB, ...


def _grey_8bit(image: Image.Image) -> Image.Image:
    """16- and 32-bit grey -> L. Pillow's own ``convert("L")`` clips at 255, which turns a 16-bit
    PNG almost white, so scale by the bit depth: 65535 -> 255. 32-bit integers and floats carry
    no depth: values beyond 255 are taken as 16-bit, floats within [0, 1] as fractions."""
    values = np.array(image, dtype=np.float32)  # a copy, then worked on in place: 4 bytes a pixel
    np.nan_to_num(values, copy=False)
    np.maximum(values, 0, out=values)  # below zero is black (and -inf * 255 would overflow)
    top = float(values.max(initial=0))
    if image.mode.startswith("I;16") or top > 255:
        values /= 257
    elif image.mode == "F" and top <= 1:
        values *= 255
    np.clip(np.round(values, out=values), 0, 255, out=values)
    return Image.fromarray(values.astype(np.uint8))


def _flatten_alpha(image: Image.Image, background: int) -> Image.Image:
    """Transparent pixels become ``background`` (a drawing on a transparent canvas)."""
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        base = Image.new("RGBA", rgba.size, (background,) * 3 + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return image


def to_model_input(image: Image.Image, target: Target) -> torch.Tensor:
    """An image from :func:`decode` (mode L, LA, RGB or RGBA) -> uint8 ``[C, H, W]`` as the model
    was trained on."""
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
    # The ink's bounding box from per-row/column flags: np.nonzero(mask) would hold two int64
    # indices a pixel (640 MB for a 40-megapixel upload that is all ink).
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return np.zeros((height, width), dtype=np.uint8)  # nothing drawn
    cropped = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
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


SMALL_PIXELS = 512 * 512  # an image this small is preprocessed faster than a thread hand-off


def is_small_image(data: bytes) -> bool:
    """Whether the header declares at most ``SMALL_PIXELS`` pixels (nothing is decoded).
    A few hundred bytes can declare 40 million pixels, so the byte count alone says nothing."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception:  # anything unreadable goes the careful way, where errors are reported
        return False
    return width * height <= SMALL_PIXELS


def preprocess_upload(data: bytes, preprocessing: dict[str, Any], *,
                      max_pixels: int = MAX_PIXELS) -> torch.Tensor:  # fmt: skip
    """Upload bytes -> uint8 ``[C, H, W]`` for a model with this checkpoint preprocessing."""
    return to_model_input(decode(data, max_pixels=max_pixels),
                          Target.from_preprocessing(preprocessing))  # fmt: skip
