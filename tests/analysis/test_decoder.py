"""The embedding decoder: pure helpers on exact values, training on tiny data, saving, drawing."""

from __future__ import annotations

import json

import pytest
import torch

from live import png_size
from trainlab.analysis.decoder import (
    EmbeddingDecoder,
    class_mean_embeddings,
    decoder_epochs,
    default_pair,
    draw_class_means,
    draw_interpolation,
    draw_reconstructions,
    interpolate,
    load_decoder,
    mean_image_error,
    reconstruction_error,
    save_decoder,
    to_uint8,
    train_decoder,
)
from trainlab.errors import RunError, TrainlabError

# --------------------------------------------------------------------------- pure helpers


def test_interpolate_includes_both_ends():
    a, b = torch.tensor([0.0, 2.0]), torch.tensor([4.0, -2.0])
    path = interpolate(a, b, steps=5)
    expected = [[0.0, 2.0], [1.0, 1.0], [2.0, 0.0], [3.0, -1.0], [4.0, -2.0]]
    torch.testing.assert_close(path, torch.tensor(expected))
    with pytest.raises(ValueError, match="at least 2"):
        interpolate(a, b, steps=1)


def test_class_mean_embeddings_of_present_classes():
    embeddings = torch.tensor([[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [0.0, 4.0]])
    means, classes = class_mean_embeddings(embeddings, torch.tensor([2, 2, 7, 0]))
    assert classes == [0, 2, 7]
    torch.testing.assert_close(means, torch.tensor([[0.0, 4.0], [2.0, 1.0], [5.0, 5.0]]))


def test_default_pair_is_the_first_image_and_the_first_of_another_class():
    assert default_pair(torch.tensor([3, 3, 5, 3, 1])) == (0, 2)
    assert default_pair([1, 0]) == (0, 1)
    with pytest.raises(TrainlabError, match="same class; pass --pair"):
        default_pair([4, 4, 4])
    with pytest.raises(TrainlabError, match="no test images"):
        default_pair([])


def test_decoder_epochs_aim_at_a_sample_budget():
    assert decoder_epochs(4000) == 25  # mnist-5k's training split
    assert decoder_epochs(60000) == 3  # at least 3
    assert decoder_epochs(100) == 30  # at most 30
    with pytest.raises(ValueError):
        decoder_epochs(0)


def test_to_uint8_rounds_and_clamps():
    pixels = torch.tensor([-0.5, 0.0, 0.5, 1.0 / 255 * 2.4, 1.0, 1.7])
    assert to_uint8(pixels).tolist() == [0, 0, 128, 2, 255, 255]
    assert to_uint8(pixels).dtype == torch.uint8


# --------------------------------------------------------------------------- training


def toy_data(n: int = 96, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Embeddings that say which of 4 templates an 8×8 image is (plus noise)."""
    generator = torch.Generator().manual_seed(seed)
    templates = (torch.rand(4, 1, 8, 8, generator=generator) > 0.5).to(torch.uint8) * 255
    classes = torch.arange(n) % 4
    embeddings = torch.nn.functional.one_hot(classes, 4).float() * 3
    embeddings = embeddings + 0.1 * torch.randn(n, 4, generator=generator)
    return embeddings, templates[classes]


def test_train_decoder_reduces_the_loss_and_beats_the_mean_image():
    embeddings, images = toy_data()
    decoder, losses = train_decoder(embeddings, images, epochs=8, batch_size=32, lr=3e-2,
                                    hidden=(32,))  # fmt: skip
    assert len(losses) == 8 and losses[-1] < 0.5 * losses[0]
    error = reconstruction_error(decoder, embeddings, images, batch_size=10)
    assert error < 0.5 * mean_image_error(images, images)
    assert not decoder.training and decoder.pixels(embeddings[:2]).shape == (2, 1, 8, 8)
    # The standardisation is learned from the data: dead dimensions are left unscaled.
    torch.testing.assert_close(decoder.embedding_mean, embeddings.mean(dim=0))


def test_train_decoder_is_deterministic_and_reports_each_epoch():
    embeddings, images = toy_data(32)
    seen = []
    first, losses = train_decoder(embeddings, images, epochs=2, hidden=(8,), seed=3,
                                  on_epoch=lambda *args: seen.append(args))  # fmt: skip
    second, again = train_decoder(embeddings, images, epochs=2, hidden=(8,), seed=3)
    assert losses == again
    for key, value in first.state_dict().items():
        assert torch.equal(value, second.state_dict()[key])
    assert [(epoch, total) for epoch, total, _, _ in seen] == [(1, 2), (2, 2)]
    assert seen[-1][2] == losses[-1]
    with pytest.raises(ValueError, match="as many embeddings as images"):
        train_decoder(embeddings[:3], images, epochs=1)


# --------------------------------------------------------------------------- saving


def test_save_and_load_decoder_round_trip_without_pickle(tmp_path):
    embeddings, images = toy_data(16)
    decoder, _ = train_decoder(embeddings, images, epochs=1, hidden=(8, 8))
    meta_path = save_decoder(tmp_path / "dec", decoder, {"source": {"dataset": "toy"}})
    meta = json.loads(meta_path.read_text())
    assert meta["format"] == "trainlab-decoder" and meta["architecture"]["hidden"] == [8, 8]
    assert meta["source"] == {"dataset": "toy"}
    loaded, loaded_meta = load_decoder(tmp_path / "dec")
    assert isinstance(loaded, EmbeddingDecoder) and loaded_meta == meta
    torch.testing.assert_close(loaded.pixels(embeddings), decoder.pixels(embeddings))
    weights = tmp_path / "dec" / "decoder.safetensors"
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(RunError, match="does not match the checksum"):
        load_decoder(tmp_path / "dec")
    with pytest.raises(RunError, match="no decoder"):
        load_decoder(tmp_path / "nothing")


# --------------------------------------------------------------------------- drawing


@pytest.mark.parametrize("channels", [1, 3])
def test_figures_are_written(tmp_path, channels):
    images = torch.randint(0, 256, (12, channels, 10, 10), dtype=torch.uint8)
    names = [f"class {i}" for i in range(12)]
    grid = draw_class_means(images, names, tmp_path / "means.png")
    assert png_size(grid)[0] > png_size(grid)[1] > 150  # two rows of up to ten
    strip = draw_interpolation(images[0], images[1], images[2:10], ("a", "b"),
                               tmp_path / "strip.png")  # fmt: skip
    assert png_size(strip)[0] > 900
    pairs = draw_reconstructions(images[:4], images[4:8], names[:4], tmp_path / "rec.png")
    assert png_size(pairs)[1] > 250
