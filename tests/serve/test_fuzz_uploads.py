"""Property tests of uploads: whatever bytes arrive, preprocessing gives a tensor of exactly the
model's input shape or an :class:`InputError`, and the server answers a 2xx or 4xx JSON body,
never a 5xx, a crash or a hang.

Hypothesis runs derandomized (each test seeded from a hash of itself) and without an example
database, so every run tries the same inputs (until Hypothesis or the test changes): the suite
cannot flake on a new random draw, and a failure is reproduced by running the test again. To
search wider, set ``TRAINLAB_FUZZ=explore``: fresh random inputs and ten times as many (a
failure prints the ``@reproduce_failure`` line that replays it).
"""

from __future__ import annotations

import io
import json
import math
import os
import time
import zlib

import httpx
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, event, given, note, settings
from hypothesis import strategies as st
from PIL import Image

from live import uvicorn_thread
from trainlab.serve.app import ServeSettings, create_app
from trainlab.serve.model import ServedModel
from trainlab.serve.preprocess import (
    MAX_PIXELS,
    MAX_SIDE,
    InputError,
    decode,
    preprocess_upload,
)

EXPLORE = os.environ.get("TRAINLAB_FUZZ") == "explore"


def fuzz(examples: int) -> settings:
    """Hypothesis settings for one test: ``examples`` inputs, reproducible unless exploring."""
    return settings(max_examples=examples * (10 if EXPLORE else 1), derandomize=not EXPLORE,
                    database=None, deadline=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.data_too_large])  # fmt: skip


# Pillow warns about the broken files this module feeds it on purpose (corrupt EXIF, bombs).
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning"),
              pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")]  # fmt: skip

# Preprocessing as checkpoints store it: MNIST-like handwriting, CIFAR-like colour, and a
# non-square handwriting frame (catches height/width mix-ups).
DIGITS = {"channels": 1, "image_size": [28, 28], "kind": "digits", "mean": [0.13], "std": [0.31]}
NATURAL = {"channels": 3, "image_size": [32, 32], "kind": "natural", "mean": [0.5] * 3,
           "std": [0.25] * 3}  # fmt: skip
CHARACTERS = {"channels": 1, "image_size": [32, 24], "kind": "characters", "mean": [0.2],
              "std": [0.3]}  # fmt: skip
PREPROCESSINGS = (DIGITS, NATURAL, CHARACTERS)


def input_shape(preprocessing: dict) -> tuple[int, int, int]:
    return (preprocessing["channels"], *preprocessing["image_size"])


def model_input_or_error(data: bytes, preprocessing: dict, **kwargs) -> torch.Tensor | None:
    """The property every upload must have: the model's input or an InputError saying what is
    wrong (None). Any other exception propagates and fails the test."""
    try:
        tensor = preprocess_upload(data, preprocessing, **kwargs)
    except InputError as error:
        assert str(error), "an InputError must say what is wrong"
        return None
    assert tensor.dtype == torch.uint8 and tuple(tensor.shape) == input_shape(preprocessing)
    return tensor


# -- images PIL writes -----------------------------------------------------------------------

# mode -> the formats PIL writes it in (WebP and GIF convert on the way; still valid images).
WRITABLE = {
    "1": ("PNG", "BMP", "TIFF", "GIF", "JPEG"),
    "L": ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"),
    "LA": ("PNG", "TIFF", "WEBP", "GIF"),
    "P": ("PNG", "GIF", "BMP", "TIFF", "WEBP"),
    "P+transparency": ("PNG", "GIF"),
    "RGB": ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF"),
    "RGBA": ("PNG", "WEBP", "TIFF", "GIF", "BMP"),
    "I;16": ("PNG", "TIFF"),
    "I": ("TIFF",),
    "F": ("TIFF",),
    "CMYK": ("JPEG", "TIFF"),
    "YCbCr": ("TIFF",),
    "LAB": ("TIFF",),
    "PA": ("TIFF",),
}
TIFF_COMPRESSIONS = (None, "tiff_lzw", "tiff_deflate", "packbits")
SIZES = st.one_of(
    st.tuples(st.integers(1, 300), st.integers(1, 300)),  # (width, height)
    st.sampled_from([(1, 1), (1, 500), (500, 1), (2, 400), (400, 3), (28, 28), (32, 32)]),
)
ALPHAS = st.sampled_from(["opaque", "transparent", "noise"])


def grey_pixels(content: str, size: tuple[int, int], seed: int) -> np.ndarray:
    """uint8 ``[H, W]``: a drawing, a photo-like gradient, noise, or a blank/all-ink page."""
    width, height = size
    rng = np.random.default_rng(seed)
    if content == "noise":
        return rng.integers(0, 256, (height, width), dtype=np.uint8)
    if content in ("white", "black"):
        return np.full((height, width), 255 if content == "white" else 0, dtype=np.uint8)
    if content == "gradient":
        return np.broadcast_to(np.linspace(0, 255, width).astype(np.uint8), (height, width)).copy()
    page = np.full((height, width), 255, dtype=np.uint8)  # a dark stroke on white paper
    top, left = int(rng.integers(0, height)), int(rng.integers(0, width))
    page[top : top + max(1, height // 3), left : left + max(1, width // 8)] = 0
    return page


GREYS = st.builds(grey_pixels, st.sampled_from(["noise", "white", "black", "gradient", "stroke"]),
                  SIZES, st.integers(0, 2**32 - 1))  # fmt: skip


def build_image(mode: str, grey: np.ndarray, alpha: str) -> Image.Image:
    """``grey`` in ``mode``: colour modes get a tinted copy, alpha modes the chosen alpha."""
    rgb = np.dstack([grey, np.roll(grey, 1, axis=1), grey[:, ::-1]])
    noise = np.random.default_rng(int(grey.sum())).integers(0, 256, grey.shape, dtype=np.uint8)
    alphas = {"opaque": np.full_like(grey, 255), "transparent": np.zeros_like(grey), "noise": noise}
    if mode == "1":
        return Image.fromarray(grey).convert("1")
    if mode == "L":
        return Image.fromarray(grey)
    if mode == "LA":
        return Image.fromarray(np.dstack([grey, alphas[alpha]]))
    if mode.startswith("P"):
        palette = Image.fromarray(rgb).quantize(16)
        return palette.convert("PA") if mode == "PA" else palette
    if mode == "RGB":
        return Image.fromarray(rgb)
    if mode == "RGBA":
        return Image.fromarray(np.dstack([rgb, alphas[alpha]]))
    if mode == "I;16":
        return Image.fromarray(grey.astype(np.uint16) * 257)
    if mode == "I":
        return Image.fromarray(grey.astype(np.int32) * 257)
    if mode == "F":
        return Image.fromarray(grey.astype(np.float32) / 255)
    return Image.fromarray(rgb).convert(mode)  # CMYK, YCbCr, LAB


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


@st.composite
def valid_images(draw, greys=GREYS) -> bytes:
    """An image of any mode, size and content, in a format PIL writes that mode in."""
    mode = draw(st.sampled_from(sorted(WRITABLE)))
    fmt = draw(st.sampled_from(WRITABLE[mode]))
    image = build_image(mode, draw(greys), draw(ALPHAS))
    options: dict = {}
    if mode == "P+transparency":
        options["transparency"] = draw(st.integers(0, 15))
    if fmt == "TIFF":
        options["compression"] = draw(st.sampled_from(TIFF_COMPRESSIONS))
    if fmt == "WEBP":
        options["lossless"] = draw(st.booleans())
    if fmt in ("PNG", "JPEG", "WEBP", "TIFF") and draw(st.booleans()):
        exif = Image.Exif()
        exif[0x0112] = draw(st.integers(1, 8))  # orientation
        options["exif"] = exif
    note(f"{mode} {image.size} as {fmt} {options}")
    return encode(image, fmt, **options)


# -- 1. any bytes: the model's input or an InputError ---------------------------------------


@fuzz(200)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes(data):
    for preprocessing in PREPROCESSINGS:
        model_input_or_error(data, preprocessing)


# Magic numbers of the accepted formats and of others Pillow knows, so the fuzzing reaches
# each format's parser.
MAGICS = (b"\x89PNG\r\n\x1a\n", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", b"\xff\xd8\xff\xe0",
          b"\xff\xd8\xff\xe1", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
          b"RIFF\x00\x00\x00\x00WEBPVP8 ", b"RIFF\x00\x00\x00\x00WEBPVP8L",
          b"RIFF\x00\x00\x00\x00WEBPVP8X", b"%!PS-Adobe-3.0 EPSF-3.0\n", b"%PDF-1.4\n",
          b"\x00\x00\x01\x00", b"P5\n1 1\n255\n", b"8BPS", b"\x00\x00\x01\x01", b"<svg ")  # fmt: skip


@fuzz(150)
@given(st.sampled_from(MAGICS), st.binary(max_size=1024))
def test_bytes_behind_a_magic_number(magic, rest):
    for preprocessing in PREPROCESSINGS:
        model_input_or_error(magic + rest, preprocessing)


@pytest.mark.parametrize("fmt", ["PPM", "ICO", "TGA", "PCX", "EPS", "SGI"])
def test_formats_beyond_the_accepted_ones_are_refused(fmt):
    """Pillow reads these, but the server does not: nobody classifies them, TGA has no magic
    number to tell it from noise, and opening an EPS runs Ghostscript on the client's bytes."""
    data = encode(Image.new("RGB", (16, 16), (255, 255, 255)), fmt)
    with pytest.raises(InputError, match="not an image"):
        decode(data)


SMALL_GREYS = st.builds(grey_pixels, st.sampled_from(["noise", "stroke", "gradient"]),
                        st.tuples(st.integers(1, 48), st.integers(1, 48)),
                        st.integers(0, 2**32 - 1))  # fmt: skip


@st.composite
def mutated_images(draw) -> bytes:
    """A small valid image, truncated, bit-flipped, overwritten, spliced or with garbage."""
    data = bytearray(draw(valid_images(SMALL_GREYS)))
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "append"]))
        if kind == "truncate":
            del data[at:]
        elif kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "overwrite":
            junk = draw(st.binary(min_size=1, max_size=16))
            data[at : at + len(junk)] = junk
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            data += draw(st.binary(min_size=1, max_size=256))
        note(f"{kind} at {at}")
    return bytes(data)


@fuzz(250)
@given(mutated_images())
def test_damaged_images(data):
    for preprocessing in PREPROCESSINGS:
        model_input_or_error(data, preprocessing)


@st.composite
def claimed_sizes(draw) -> tuple[bytes, int, int]:
    """A tiny PNG, GIF or BMP whose header claims another size (a decompression bomb's trick)."""
    fmt = draw(st.sampled_from(["PNG", "GIF", "BMP"]))
    data = bytearray(encode(Image.fromarray(np.full((2, 2), 9, dtype=np.uint8)), fmt))
    width = draw(st.one_of(st.integers(1, 70_000), st.sampled_from([MAX_SIDE, MAX_SIDE + 1])))
    height = draw(st.one_of(st.integers(1, 70_000), st.sampled_from([MAX_SIDE, 2441, 2442])))
    if fmt == "PNG":  # big-endian uint32 in the IHDR chunk, with its checksum
        width = draw(st.sampled_from([width, 2**31 - 1]))
        ihdr = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + data[24:29]
        data[12:33] = ihdr + zlib.crc32(ihdr).to_bytes(4, "big")
    elif fmt == "GIF":  # the logical screen: two little-endian uint16
        width, height = width % 65_536 or 1, height % 65_536 or 1
        data[6:10] = width.to_bytes(2, "little") + height.to_bytes(2, "little")
    else:  # BMP: signed int32; a negative height means rows stored top-down
        height = draw(st.sampled_from([height, -height, -(2**31)]))
        data[18:26] = width.to_bytes(4, "little") + height.to_bytes(4, "little", signed=True)
    return bytes(data), width, abs(height)


@fuzz(80)
@given(claimed_sizes(), st.sampled_from([None, 1_000_000]))
def test_claimed_sizes_are_refused_before_decoding(claim, max_pixels):
    data, width, height = claim
    limit = {} if max_pixels is None else {"max_pixels": max_pixels}
    start = time.perf_counter()
    result = model_input_or_error(data, DIGITS, **limit)
    if width * height > (max_pixels or MAX_PIXELS) or max(width, height) > MAX_SIDE:
        assert result is None
    # A bomb is refused from its header, not by decoding (generous bound: a loaded machine).
    assert time.perf_counter() - start < 10


# -- 2. valid images always give the model's input -------------------------------------------


def test_a_corrupt_exif_block_is_ignored():
    """A WebP whose EXIF chunk has a broken TIFF header (Pillow raises SyntaxError reading it):
    the pixels are fine, so the image is used as stored."""
    exif = Image.Exif()
    exif[0x0112] = 6
    data = encode(Image.new("RGB", (10, 4), (0, 0, 0)), "WEBP", exif=exif)
    assert b"MM\x00*" in data
    broken = data.replace(b"MM\x00*", b"ML\x00*")
    assert decode(broken).size == (10, 4)
    for preprocessing in PREPROCESSINGS:
        assert tuple(preprocess_upload(broken, preprocessing).shape) == input_shape(preprocessing)


@fuzz(150)
@given(valid_images())
def test_every_valid_image_becomes_the_model_input(data):
    for preprocessing in PREPROCESSINGS:
        first = preprocess_upload(data, preprocessing)  # a valid image is never refused
        assert first.dtype == torch.uint8 and tuple(first.shape) == input_shape(preprocessing)
        assert torch.equal(first, preprocess_upload(data, preprocessing))  # deterministic


def lossless_encodings(grey: np.ndarray) -> dict[str, bytes]:
    """One grey picture in every lossless way PIL stores it: 8, 16 and 32 bits, float, colour
    with R=G=B, opaque alpha, palette, and each format."""
    rgb = np.dstack([grey] * 3)
    opaque = np.full_like(grey, 255)
    return {
        "L PNG": encode(Image.fromarray(grey), "PNG"),
        "L TIFF": encode(Image.fromarray(grey), "TIFF", compression="tiff_lzw"),
        "L BMP": encode(Image.fromarray(grey), "BMP"),
        "L GIF": encode(Image.fromarray(grey), "GIF"),
        "L WebP": encode(Image.fromarray(grey), "WEBP", lossless=True),
        "P PNG": encode(Image.fromarray(grey).convert("P"), "PNG"),
        "LA PNG": encode(Image.fromarray(np.dstack([grey, opaque])), "PNG"),
        "RGB PNG": encode(Image.fromarray(rgb), "PNG"),
        "RGBA PNG": encode(Image.fromarray(np.dstack([rgb, opaque])), "PNG"),
        "16-bit PNG": encode(Image.fromarray(grey.astype(np.uint16) * 257), "PNG"),
        "16-bit TIFF": encode(Image.fromarray(grey.astype(np.uint16) * 257), "TIFF"),
        "32-bit TIFF": encode(Image.fromarray(grey.astype(np.int32)), "TIFF"),
        "float TIFF": encode(Image.fromarray(grey.astype(np.float32) / 255), "TIFF"),
    }


@fuzz(60)
@given(GREYS)
def test_the_same_picture_in_any_mode_and_format_is_the_same_input(grey):
    encodings = lossless_encodings(grey)
    for preprocessing in PREPROCESSINGS:
        expected = preprocess_upload(encodings["L PNG"], preprocessing)
        for name, data in encodings.items():
            assert torch.equal(preprocess_upload(data, preprocessing), expected), name


@fuzz(40)
@given(SIZES, st.sampled_from(["LA PNG", "RGBA PNG", "RGBA WebP", "RGBA TIFF", "P GIF"]))
def test_a_fully_transparent_image_is_blank_paper(size, how):
    """Transparency is white paper, as training composites image folders: a blank white picture
    for photo-like kinds, nothing drawn (all 0) for handwriting, whose ink is light on dark."""
    mode, fmt = how.split()
    grey = np.random.default_rng(size[0] * 1000 + size[1]).integers(0, 256, size[::-1],
                                                                    dtype=np.uint8)  # fmt: skip
    if mode == "P":  # every pixel the transparent palette entry
        data = encode(Image.fromarray(np.zeros_like(grey)).convert("P"), fmt, transparency=0)
    else:
        data = encode(build_image(mode, grey, "transparent"), fmt, lossless=True)
    for preprocessing in PREPROCESSINGS:
        blank = 0 if preprocessing["kind"] in ("digits", "characters") else 255
        assert set(preprocess_upload(data, preprocessing).unique().tolist()) == {blank}


@fuzz(40)
@given(SIZES, st.integers(1, 8), st.sampled_from(["PNG", "JPEG", "WEBP", "TIFF"]))
def test_exif_orientation_turns_the_image_upright(size, orientation, fmt):
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = encode(Image.new("RGB", size, (200, 30, 30)), fmt, exif=exif)
    width, height = size
    assert decode(data).size == ((height, width) if orientation >= 5 else (width, height))
    for preprocessing in PREPROCESSINGS:
        assert tuple(preprocess_upload(data, preprocessing).shape) == input_shape(preprocessing)


@fuzz(60)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["PNG", "TIFF", "BMP", "WEBP", "16-bit PNG"]))
def test_a_training_format_digit_passes_unchanged(seed, how):
    """28×28 grey laid out as in MNIST (dark background, the ink within the central 20×20 box
    and centred by mass): the model sees exactly these pixels."""
    rng = np.random.default_rng(seed)
    digit = rng.integers(0, 40, (28, 28), dtype=np.uint8)  # a dark background, below ink level
    digit[4:24, 4:24] = rng.integers(0, 256, (20, 20), dtype=np.uint8)
    if how == "16-bit PNG":
        data = encode(Image.fromarray(digit.astype(np.uint16) * 257), "PNG")
    else:
        data = encode(Image.fromarray(digit), how, **({"lossless": True} if how == "WEBP" else {}))
    assert torch.equal(preprocess_upload(data, DIGITS), torch.from_numpy(digit)[None])


@fuzz(30)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["PNG", "TIFF", "BMP", "WEBP"]))
def test_a_training_format_colour_image_passes_unchanged(seed, fmt):
    """32×32 RGB, as in CIFAR: the model sees exactly these pixels."""
    rgb = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    data = encode(Image.fromarray(rgb), fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    expected = torch.from_numpy(rgb.transpose(2, 0, 1).copy())
    assert torch.equal(preprocess_upload(data, NATURAL), expected)


# -- 3. the HTTP API under real uvicorn ------------------------------------------------------

SETTINGS = ServeSettings(max_upload_bytes=200_000, max_files=8, max_delay_ms=5)


class Api:
    """The server under test, as the tests see it (with a short repr for Hypothesis' reports)."""

    def __init__(self, client: httpx.Client, served: ServedModel):
        self.client, self.served = client, served

    def __repr__(self) -> str:
        return f"Api({self.client.base_url})"


@pytest.fixture(scope="module")
def api(small_run):
    served = ServedModel.load(small_run, device="cpu")
    with (
        uvicorn_thread(create_app(served, SETTINGS)) as url,
        httpx.Client(base_url=url, timeout=30) as client,
    ):
        yield Api(client, served)


def small_image(fmt: str, mode: str = "L") -> bytes:
    grey = grey_pixels("stroke", (40, 30), 1)
    return encode(build_image(mode, grey, "opaque"), fmt)


VALID_UPLOADS = [small_image("PNG"), small_image("JPEG", "RGB"), small_image("WEBP", "RGBA"),
                 small_image("GIF"), small_image("BMP"), small_image("TIFF", "I;16")]  # fmt: skip


def png_claiming(width: int, height: int) -> bytes:
    """A 1×1 PNG whose header claims ``width``×``height`` (with a valid checksum)."""
    data = bytearray(encode(Image.new("L", (1, 1)), "PNG"))
    ihdr = b"IHDR" + width.to_bytes(4, "big") + height.to_bytes(4, "big") + data[24:29]
    data[12:33] = ihdr + zlib.crc32(ihdr).to_bytes(4, "big")
    return bytes(data)


# Empty, not an image, truncated, too large, and bombs beyond our limit and beyond Pillow's.
BAD_UPLOADS = [b"", b"not an image", small_image("PNG")[:60], b"\x89PNG" + b"0" * 200_001,
               png_claiming(10_000, 5_000), png_claiming(16_000, 16_000),
               png_claiming(100_000, 100_000)]  # fmt: skip
FIELD_NAMES = st.one_of(st.sampled_from(["file", "file", "files", "files", "File", "files[]",
                                         "image", ""]), st.text(max_size=12))  # fmt: skip
REAL_FILENAMES = st.one_of(
    st.sampled_from(["d.png", "../../etc/passwd", "C:\\Users\\x\\d.png", "a/b/c.jpg", "x" * 3000,
                     "ünïcødé 数字.png", "emoji 😀.webp", 'quote".png', "semi;c=1",
                     "new\r\nline.png", "nul\x00.png"]),
    st.text(min_size=1, max_size=40),
)  # fmt: skip
# An empty name or none at all: httpx then sends the part as a plain form field, not a file.
FILENAMES = st.one_of(REAL_FILENAMES, st.sampled_from(["", None]))
PART_TYPES = st.one_of(
    st.sampled_from(["image/png", "image/jpeg", "application/octet-stream", "text/plain",
                     "application/json", "multipart/form-data", ""]),
    st.text(st.characters(exclude_categories=("Cs", "Cc")), max_size=30),
)  # fmt: skip
CONTENTS = st.one_of(st.sampled_from(VALID_UPLOADS), st.sampled_from(BAD_UPLOADS),
                     st.binary(max_size=300), mutated_images())  # fmt: skip
# top_k as a client may send it: valid, out of range, not a number (None: not sent).
TOP_KS = st.sampled_from([None, "1", "3", "10", "1000", "0", "-1", "1001", "9" * 40, "abc",
                          "1.5", "", "NaN", "1e3"])  # fmt: skip


def valid_top_k(value: str) -> bool:
    return value.isdigit() and 1 <= int(value) <= 1000


def check_predictions(predictions: list, classes: list[str], k: int) -> None:
    assert len(predictions) == min(k, len(classes))
    probabilities = [p["probability"] for p in predictions]
    assert all(0 <= p <= 1 for p in probabilities) and sum(probabilities) <= 1 + 1e-4
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(classes[p["index"]] == p["label"] for p in predictions)


def check_answer(response: httpx.Response, endpoint: str, count: int | None, k: int,
                 classes: list[str]) -> None:  # fmt: skip
    """Every answer: 2xx or 4xx, JSON (a PNG from /preview), an ``error`` string when 4xx, and
    the documented shape when 2xx (``count`` images, where known)."""
    note(f"{response.status_code} {response.text[:300]}")
    event(f"{endpoint} {response.status_code}")  # the mix: pytest --hypothesis-show-statistics
    assert 200 <= response.status_code < 300 or 400 <= response.status_code < 500
    if endpoint == "/preview" and response.status_code == 200:
        assert response.headers["content-type"] == "image/png"
        assert Image.open(io.BytesIO(response.content)).size == (28, 28)
        return
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    if response.status_code >= 400:
        assert isinstance(body.get("error"), str) and body["error"]
    elif endpoint == "/predict":
        check_predictions(body["predictions"], classes, k)
    elif endpoint == "/predict_batch":
        assert len(body["results"]) == (count or len(body["results"])) and body["results"]
        for result in body["results"]:
            check_predictions(result["predictions"], classes, k)
    else:  # /embed
        rows = body["embeddings"]
        assert len(rows) == (count or len(rows)) and rows and body["dimensions"] == 32
        assert all(len(row) == 32 and all(map(math.isfinite, row)) for row in rows)


def should_succeed(served, endpoint: str, parts: list, top_k: str | None) -> bool:
    """The server's contract, independently: does this request deserve a 2xx?"""
    if endpoint in ("/predict", "/predict_batch") and top_k is not None and not valid_top_k(top_k):
        return False
    field = "file" if endpoint in ("/predict", "/preview") else "files"
    named = [(filename, data) for name, filename, _, data in parts if name == field]
    if endpoint in ("/predict", "/preview") and len(named) > 1:
        return False  # one image per request there: which one would be meant?
    if not named or len(named) > SETTINGS.max_files:
        return False
    for _, data in named:  # a part without a file name counts too (curl -F 'file=<d.png')
        if len(data) > SETTINGS.max_upload_bytes:
            return False
        if model_input_or_error(data, served.preprocessing) is None:
            return False
    return True


@st.composite
def upload_requests(draw, endpoint: str) -> tuple[list, str | None, dict]:
    """(parts as (field, filename, content type, bytes), top_k, query parameters): good
    requests, nearly good ones (the right field and filenames, any content, top_k and number of
    files) and wild ones, so that the answers include successes."""
    field = "file" if endpoint in ("/predict", "/preview") else "files"
    flavour = draw(st.sampled_from(["good", "near", "wild"]))
    if flavour == "good":
        part = st.tuples(st.just(field), REAL_FILENAMES, PART_TYPES, st.sampled_from(VALID_UPLOADS))
        parts = draw(st.lists(part, min_size=1, max_size=SETTINGS.max_files))
        top_k = draw(st.sampled_from([None, "1", "3", "10", "1000"]))
    else:
        names = st.just(field) if flavour == "near" else FIELD_NAMES
        filenames = REAL_FILENAMES if flavour == "near" else FILENAMES
        part = st.tuples(names, filenames, PART_TYPES, CONTENTS)
        parts = draw(st.lists(part, max_size=SETTINGS.max_files + 2))
        top_k = draw(TOP_KS)
    params = draw(st.dictionaries(st.sampled_from(["x", "file", "k"]), st.text(max_size=8),
                                  max_size=2))  # fmt: skip
    if top_k is not None:
        params["top_k"] = top_k
    return parts, top_k, params


@pytest.mark.integration
@pytest.mark.parametrize("endpoint", ["/predict", "/predict_batch", "/embed", "/preview"])
@fuzz(50)
@given(data=st.data())
def test_multipart_requests_get_2xx_or_4xx_json(api, endpoint, data):
    parts, top_k, params = data.draw(upload_requests(endpoint), label="request")
    files = [(name, (filename, content, ctype)) for name, filename, ctype, content in parts]
    # httpx sends a part without filename as a plain field; with no parts, send an empty form.
    response = api.client.post(endpoint, files=files or None, params=params,
                               data=None if files else {"nothing": ""})  # fmt: skip
    count = sum(name == "files" for name, *_ in parts)
    k = int(top_k) if top_k is not None and valid_top_k(top_k) else SETTINGS.top_k
    check_answer(response, endpoint, count, k, api.served.class_names)
    expected = should_succeed(api.served, endpoint, parts, top_k)
    assert (response.status_code < 300) == expected


def multipart_body(boundary: bytes, fields: list[tuple[bytes, bytes]]) -> bytes:
    chunks = [b"--" + boundary + b'\r\nContent-Disposition: form-data; name="' + name +
              b'"; filename="x.png"\r\nContent-Type: image/png\r\n\r\n' + content + b"\r\n"
              for name, content in fields]  # fmt: skip
    return b"".join(chunks) + b"--" + boundary + b"--\r\n"


@st.composite
def malformed_bodies(draw) -> tuple[str | None, bytes]:
    """(Content-Type header, body): broken multipart, wrong types, JSON, raw images."""
    boundary = draw(st.sampled_from([b"b0undary", b"x" * 70, b"a b", b""]))
    good = multipart_body(b"b0undary", [(b"file", VALID_UPLOADS[0]), (b"files", VALID_UPLOADS[1])])
    body = draw(st.one_of(
        st.just(good),
        st.builds(lambda n: good[:n], st.integers(0, len(good))),  # cut off anywhere
        st.builds(lambda at, junk: good[:at] + junk + good[at:], st.integers(0, len(good)),
                  st.binary(min_size=1, max_size=32)),
        st.just(multipart_body(b"b0undary", [(b"file", b"")]).replace(b"\r\n", b"\n")),
        st.just(json.dumps({"file": "aGVsbG8=", "top_k": 3}).encode()),
        st.just(b"file=abc&files=def"),
        st.sampled_from(VALID_UPLOADS),
        st.binary(max_size=512),
    ))  # fmt: skip
    content_type = draw(st.one_of(
        st.sampled_from([None, "multipart/form-data", "multipart/form-data; boundary=",
                         "multipart/form-data; boundary=" + boundary.decode(),
                         'multipart/form-data; boundary="b0undary"; charset=utf-16',
                         "multipart/mixed; boundary=b0undary", "application/json",
                         "application/x-www-form-urlencoded", "image/png", "text/plain"]),
        # Printable ASCII without outer spaces: what an HTTP client lets through as a header.
        st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=60).map(str.strip),
    ))  # fmt: skip
    return content_type, body


@pytest.mark.integration
@fuzz(100)
@given(st.sampled_from(["/predict", "/predict_batch", "/embed"]), malformed_bodies())
def test_malformed_bodies_get_2xx_or_4xx_json(api, endpoint, request_body):
    content_type, body = request_body
    headers = {} if content_type is None else {"Content-Type": content_type}
    response = api.client.post(endpoint, content=body, headers=headers)
    # A well-formed body may succeed: its answer must then have the documented shape.
    check_answer(response, endpoint, None, SETTINGS.top_k, api.served.class_names)


@pytest.mark.integration
@pytest.mark.parametrize(
    ("method", "path", "status"),
    [("GET", "/predict", 405), ("PUT", "/embed", 405), ("POST", "/nope", 404)],
)
def test_wrong_routes_and_methods_get_a_json_error(api, method, path, status):
    response = api.client.request(method, path)
    assert response.status_code == status
    assert isinstance(response.json().get("error"), str), response.text


@pytest.mark.integration
def test_the_server_is_healthy_after_the_fuzzing(api):
    # Runs after the property tests above (file order): nothing they sent broke the server.
    assert api.client.get("/healthz").json()["status"] == "ok"
    start = time.perf_counter()
    response = api.client.post("/predict", files={"file": ("d.png", VALID_UPLOADS[0], "image/png")})
    assert response.status_code == 200 and len(response.json()["predictions"]) == SETTINGS.top_k
    assert time.perf_counter() - start < 5
