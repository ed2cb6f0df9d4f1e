"""Image files and uploads -> decoded, upright 8-bit images: one decoder for training's image
folders and the server's uploads, so a training image sent to the server is the same picture.

Any bit depth, colour or grey, with or without alpha, in any EXIF orientation, becomes mode L,
LA, RGB or RGBA; transparency is flattened onto paper (:func:`flatten_alpha`) by both: white,
as viewers show it, or black under light strokes, which would vanish on white.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from trainlab.errors import TrainlabError

# The formats an upload may be in. Pillow reads dozens more, but nobody sends those to classify,
# some barely check their magic number (TGA) and EPS runs Ghostscript on the client's bytes.
FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")
ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
MAX_PIXELS = 40_000_000  # decoded pixels; more is a decompression bomb or not a small image
MAX_SIDE = 16_384
PAPER = 255  # what transparent pixels become: white paper, as viewers show them...
INK_PAPER = 0  # ...unless what is drawn is light (white ink on a transparent canvas)


class InputError(TrainlabError, ValueError):
    """An image (upload or file) that is not usable; the message says what is wrong."""


def decode(data: bytes, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Bytes -> a fully decoded, upright image in mode L, LA, RGB or RGBA (8 bits a channel), or
    :class:`InputError` saying what is wrong: never another exception, a hang or a bomb."""
    if not data:
        raise InputError("the image is empty (0 bytes)")
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
        raise InputError(
            f"the image claims more than {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels "
            f"(decompression bomb?); at most {max_pixels:,} pixels and {MAX_SIDE} per side are "
            "accepted"
        ) from None
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


def flatten_alpha(image: Image.Image, background: int | None = None) -> Image.Image:
    """Transparent pixels become ``background``; by default paper that contrasts with what is
    drawn (a drawing on a transparent canvas): white, or black under light strokes."""
    if image.mode in ("RGBA", "LA"):
        rgba = image.convert("RGBA")
        paper = _contrasting_paper(rgba) if background is None else background
        base = Image.new("RGBA", rgba.size, (paper,) * 3 + (255,))
        return Image.alpha_composite(base, rgba).convert("RGB")
    return image


def _contrasting_paper(rgba: Image.Image) -> int:
    """White, unless the visible pixels are light on average (white ink on a transparent
    canvas became a blank white image): then black. Judged on a small copy (fast for 40 MP)."""
    small = rgba.copy()
    small.thumbnail((128, 128))
    grey = np.asarray(small.convert("L"), dtype=np.float64)
    alpha = np.asarray(small.getchannel("A"), dtype=np.float64)
    if alpha.sum() == 0 or alpha.min() == 255:  # nothing drawn, or nothing transparent
        return PAPER
    return INK_PAPER if (grey * alpha).sum() / alpha.sum() > 127.5 else PAPER
