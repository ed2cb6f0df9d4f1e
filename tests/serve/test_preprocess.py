"""Uploads become exactly what the model was trained on; bad uploads are clear errors."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from trainlab.data import background_of, load_dataset
from trainlab.data.formats import read_image_folder
from trainlab.serve.preprocess import (
    InputError,
    Target,
    decode,
    handwriting,
    preprocess_upload,
    to_model_input,
)

DIGITS = {"channels": 1, "image_size": [28, 28], "kind": "digits", "mean": [0.13], "std": [0.31]}


def png(array: np.ndarray, mode: str | None = None, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    return load_dataset("mnist-5k").test.images[:20]  # uint8 [N, 1, 28, 28]


def test_a_training_image_passes_through_unchanged(digits):
    for image in digits:
        assert torch.equal(preprocess_upload(png(image[0].numpy()), DIGITS), image)


def test_a_digit_of_the_models_size_that_fills_the_frame_is_normalised(digits):
    """28×28, light on dark, but cropped to its ink and stretched to the frame (as tutorials
    prepare images): normalised like any other size, not passed through as it is."""
    original = digits[0][0].numpy()
    rows, cols = np.flatnonzero(original.any(1)), np.flatnonzero(original.any(0))
    ink = original[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    filled = np.asarray(Image.fromarray(ink).resize((28, 28), Image.Resampling.LANCZOS))
    result = preprocess_upload(png(filled), DIGITS)[0].numpy()

    def similarity(a: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel().astype(float), original.ravel().astype(float))[0, 1])

    assert similarity(filled) < 0.3 < 0.6 < similarity(result)  # was: unchanged, 20 points off
    shifted = np.roll(original, 4, axis=1)  # in the box, but 4 px off centre
    assert np.array_equal(preprocess_upload(png(shifted), DIGITS)[0].numpy()[:, 4:],
                          handwriting(shifted, 28, 28)[:, 4:])  # fmt: skip
    assert not np.array_equal(handwriting(shifted, 28, 28), shifted)


def test_handwriting_is_scaled_to_the_box_its_training_images_had():
    """Characters that fill their frame in training (ink_box recorded as 26/28) are drawn that
    large, and a training image laid out so passes unchanged."""
    filling = {**DIGITS, "kind": "characters", "ink_box": 26 / 28, "ink_offset": 0.3}
    stroke = np.zeros((28, 28), dtype=np.uint8)
    stroke[1:27, 12:16] = 255
    assert torch.equal(preprocess_upload(png(stroke), filling)[0], torch.from_numpy(stroke))
    drawing = np.full((200, 200), 255, dtype=np.uint8)
    drawing[40:160, 90:110] = 0  # dark on white, small in a large canvas
    rows = np.flatnonzero(preprocess_upload(png(drawing), filling)[0].numpy().any(axis=1))
    assert rows[-1] - rows[0] + 1 == 26  # MNIST's box would be 20
    rows = np.flatnonzero(preprocess_upload(png(drawing), DIGITS)[0].numpy().any(axis=1))
    assert rows[-1] - rows[0] + 1 == 20


def test_a_drawing_is_inverted_cropped_scaled_and_centred_by_mass(digits):
    original = digits[0][0].numpy()
    # Dark ink on white paper, small and off-centre on a large canvas, with an alpha channel.
    canvas = np.full((280, 400), 255, dtype=np.uint8)
    glyph = np.asarray(Image.fromarray(255 - original).resize((84, 84), Image.Resampling.LANCZOS))
    canvas[20:104, 250:334] = glyph
    rgba = np.dstack([canvas, canvas, canvas, np.full_like(canvas, 255)])
    result = preprocess_upload(png(rgba, "RGBA"), DIGITS)[0].numpy().astype(float)
    assert result.shape == (28, 28) and result[0].max() == 0  # light ink on black, margins clear
    ys, xs = np.indices(result.shape)
    centre = ((ys * result).sum() / result.sum(), (xs * result).sum() / result.sum())
    assert centre == pytest.approx((13.5, 13.5), abs=0.6)  # centred by mass, like MNIST
    rows, cols = np.nonzero(result > 50)
    assert max(np.ptp(rows), np.ptp(cols)) + 1 in range(17, 22)  # fills the 20-pixel box
    # ...and looks like the training digit it was drawn from.
    similarity = np.corrcoef(result.ravel(), original.astype(float).ravel())[0, 1]
    assert similarity > 0.7  # not 1: MNIST's own anti-aliasing and box differ slightly


def test_a_transparent_canvas_with_dark_strokes():
    rgba = np.zeros((100, 100, 4), dtype=np.uint8)
    rgba[30:70, 48:52] = (0, 0, 0, 255)  # a vertical stroke "1", the rest fully transparent
    result = preprocess_upload(png(rgba, "RGBA"), DIGITS)[0]
    assert result.max() > 200 and result[:, :4].max() == 0


def test_a_transparent_canvas_with_light_strokes_is_the_same_drawing():
    dark = np.zeros((100, 100, 4), dtype=np.uint8)
    dark[10:90, 45:55] = (0, 0, 0, 255)
    light = np.zeros((100, 100, 4), dtype=np.uint8)
    light[..., :3] = 255  # white everywhere, the stroke only in alpha
    light[10:90, 45:55, 3] = 255
    expected = preprocess_upload(png(dark, "RGBA"), DIGITS)
    assert expected.max() > 200
    assert torch.equal(preprocess_upload(png(light, "RGBA"), DIGITS), expected)  # was: blank
    photo = {**DIGITS, "kind": "natural", "channels": 3, "image_size": [8, 8]}
    assert preprocess_upload(png(light, "RGBA"), photo)[:, 4, 0].tolist() == [0, 0, 0]


def test_an_empty_drawing_is_black():
    blank = np.full((50, 50), 255, dtype=np.uint8)
    assert preprocess_upload(png(blank), DIGITS).max() == 0


def test_natural_images_are_fitted_in_colour():
    target = Target(3, 32, 32, "natural")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8))
    assert to_model_input(image, target).shape == (3, 32, 32)
    grey = Image.fromarray(np.zeros((10, 10), dtype=np.uint8))
    assert to_model_input(grey, target).shape == (3, 32, 32)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_other_formats(fmt):
    rgb = np.full((40, 40, 3), 255, dtype=np.uint8)
    rgb[10:30, 18:22] = 0
    assert preprocess_upload(png(rgb, fmt=fmt), DIGITS).shape == (1, 28, 28)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"%PDF-1.4 not an image", "not an image"),
        (png(np.zeros((50, 50), dtype=np.uint8))[:60], "damaged or truncated"),
    ],
)
def test_bad_uploads_are_clear_errors(data, message):
    with pytest.raises(InputError, match=message):
        decode(data)


def test_huge_dimensions_are_refused_before_decoding():
    import zlib

    header = png(np.zeros((1, 1), dtype=np.uint8))
    # Patch the IHDR width/height to 100000 x 100000 (a decompression bomb's claim), valid CRC.
    ihdr = b"IHDR" + (100_000).to_bytes(4, "big") * 2 + header[24:29]
    bomb = header[:12] + ihdr + zlib.crc32(ihdr).to_bytes(4, "big") + header[33:]
    with pytest.raises(InputError, match=r"decompression bomb\?\); at most 40,000,000 pixels and "
                       "16384 per side are accepted"):  # fmt: skip
        decode(bomb)
    with pytest.raises(InputError, match="at most 100 pixels"):
        decode(png(np.zeros((20, 20), dtype=np.uint8)), max_pixels=100)


def test_handwriting_keeps_a_lopsided_stroke_inside_the_frame():
    grey = np.full((10, 200), 255, dtype=np.uint8)
    grey[4:6, :] = 0  # one long horizontal line
    assert handwriting(grey, 28, 28).shape == (28, 28)


def test_an_uploaded_test_image_gets_the_in_process_probabilities(tmp_path, tiny_config, digits):
    import trainlab
    from trainlab.analysis.gallery import predict_test_set
    from trainlab.data.batches import normalize_uint8
    from trainlab.runs.checkpoint import load_checkpoint

    run = trainlab.train(tiny_config())
    checkpoint = load_checkpoint(run.checkpoint_dir)
    expected, _ = predict_test_set(run.checkpoint_dir, dataset="mnist-5k")
    pre = checkpoint.preprocessing
    uploads = torch.stack([preprocess_upload(png(image[0].numpy()), pre) for image in digits])
    model = checkpoint.build_model().eval()
    with torch.no_grad():
        probabilities = model(normalize_uint8(uploads, pre["mean"], pre["std"])).softmax(dim=1)
    assert np.allclose(probabilities.numpy(), expected[: len(digits)], atol=1e-6)


def test_digits_on_grey_paper_are_the_digits_on_white_paper():
    """A photo of a digit on grey paper: the paper's level is taken off, the ink stretched."""
    results = []
    for paper in (255, 200):
        sheet = np.full((600, 600), paper, dtype=np.uint8)
        sheet[150:450, 280:320] = 0  # a black bar: a "1"
        results.append(preprocess_upload(png(sheet), DIGITS)[0].numpy())
    white, grey = results
    assert grey[0].max() == 0 and grey.max() == 255  # paper black, ink at full strength
    rows = np.flatnonzero((grey > 50).any(axis=1))
    assert np.ptp(rows) + 1 in range(19, 22)  # the stroke fills the 20-pixel box, as on white
    assert np.abs(grey.astype(int) - white.astype(int)).max() <= 2


def test_handwriting_keeps_the_polarity_training_saw():
    """A model trained on dark ink on white paper (a folder of scans) gets dark ink on white."""
    light = {**DIGITS, "background": "light"}
    scan = np.full((28, 28), 255, dtype=np.uint8)
    scan[6:22, 12:15] = 0  # dark ink on white, already the model's size: passes through
    assert torch.equal(preprocess_upload(png(scan), light)[0], torch.from_numpy(scan))
    photo = np.full((300, 300), 255, dtype=np.uint8)
    photo[50:250, 140:160] = 0
    result = preprocess_upload(png(photo), light)[0].numpy()
    assert result[0].min() == 255 and result.min() == 0  # white paper, dark ink
    assert torch.equal(torch.from_numpy(255 - result), preprocess_upload(png(photo), DIGITS)[0])


def test_background_of_training_images():
    digits = torch.zeros(5, 1, 28, 28, dtype=torch.uint8)
    digits[:, :, 8:20, 12:16] = 255
    assert background_of(digits) == "dark" and background_of(255 - digits) == "light"


def test_a_training_image_from_a_folder_is_the_same_picture_at_the_server(tmp_path):
    """Image folders and uploads share one decoder: EXIF orientation, 16-bit depth, alpha on
    white and an odd size give the training tensor exactly."""
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: shown rotated
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (16, 12, 3), dtype=np.uint8)).save(
        buffer, "PNG", exif=exif
    )
    files["a/rotated.png"] = buffer.getvalue()
    deep = rng.integers(0, 65536, (12, 16), dtype=np.uint16)
    files["a/deep.png"] = png(deep)  # mode I;16
    rgba = rng.integers(0, 256, (12, 16, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(rng.random((12, 16)) < 0.5, 0, 255)
    files["b/alpha.png"] = png(rgba, "RGBA")
    files["b/wide.png"] = png(rng.integers(0, 256, (12, 30, 3), dtype=np.uint8))
    for name in ("plain1", "plain2"):
        files[f"b/{name}.png"] = png(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8))
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(data)
    with pytest.warns(UserWarning, match="1 of 6 images"):
        arrays = read_image_folder(tmp_path)
    images = np.concatenate([arrays.x_train, arrays.x_test])
    labels = np.concatenate([arrays.y_train, arrays.y_test])
    preprocessing = {"channels": 3, "image_size": [12, 16], "kind": "unknown",
                     "mean": [0.5] * 3, "std": [0.5] * 3}  # fmt: skip
    served = [preprocess_upload(data, preprocessing).numpy() for data in files.values()]
    for image, label in zip(images, labels, strict=True):
        assert any(np.array_equal(image, s) for s in served), label
    assert len(images) == len(files)
