"""Most confident mistakes: the ranking exactly, then end to end on a real tiny run."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

import trainlab
from live import png_size
from trainlab.analysis.gallery import (
    Mistake,
    caption,
    draw_gallery,
    draw_run_gallery,
    load_test_split,
    most_confident_mistakes,
    predict_test_set,
)
from trainlab.data import load_dataset
from trainlab.errors import RunError
from trainlab.runs.record import read_summary

# --------------------------------------------------------------------------- pure ranking

PROBABILITIES = np.array(
    [
        [0.9, 0.05, 0.05],  # label 0: right
        [0.2, 0.7, 0.1],  # label 0: wrong, 0.7
        [0.1, 0.1, 0.8],  # label 1: wrong, 0.8
        [0.5, 0.5, 0.0],  # label 1: argmax tie -> class 0, wrong, 0.5
        [0.3, 0.0, 0.7],  # label 0: wrong, 0.7 (ties with index 1)
        [0.0, 0.0, 1.0],  # label 2: right
    ]
)
LABELS = np.array([0, 0, 1, 1, 0, 2])


def test_most_confident_mistakes_ranked_by_confidence_then_index():
    assert most_confident_mistakes(PROBABILITIES, LABELS, 10) == [
        Mistake(index=2, true=1, predicted=2, confidence=0.8),
        Mistake(index=1, true=0, predicted=1, confidence=0.7),
        Mistake(index=4, true=0, predicted=2, confidence=0.7),
        Mistake(index=3, true=1, predicted=0, confidence=0.5),
    ]
    assert [m.index for m in most_confident_mistakes(PROBABILITIES, LABELS, 2)] == [2, 1]
    assert most_confident_mistakes(PROBABILITIES, LABELS, 0) == []
    assert most_confident_mistakes(PROBABILITIES[[0, 5]], LABELS[[0, 5]], 3) == []


def test_most_confident_mistakes_plain_python_types_and_shape_checks():
    mistake = most_confident_mistakes(PROBABILITIES, LABELS, 1)[0]
    assert type(mistake.index) is int and type(mistake.confidence) is float
    with pytest.raises(ValueError, match=r"\[N, K\]"):
        most_confident_mistakes(PROBABILITIES, LABELS[:3], 1)


def test_caption():
    names = ["zero", "a very long class name"]
    assert caption(Mistake(0, 1, 0, 0.984), names) == "a very lo… → zero (98%)"


@pytest.mark.parametrize("channels", [1, 3])
def test_draw_gallery_grid(tmp_path, channels):
    images = torch.randint(0, 256, (6, channels, 28, 28), dtype=torch.uint8)
    mistakes = most_confident_mistakes(PROBABILITIES, LABELS, 10)
    path = draw_gallery(images, mistakes, ["0", "1", "2"], tmp_path / "g.png", columns=3)
    width, height = png_size(path)
    assert width > 300 and height > 250
    assert_gallery_empty_ok(tmp_path, images.numpy())


def assert_gallery_empty_ok(tmp_path, images):
    path = draw_gallery(images, [], ["0"], tmp_path / "empty.png")
    assert png_size(path)[0] > 100
    with pytest.raises(ValueError, match="uint8"):
        draw_gallery(images.astype(np.float32), [], ["0"], tmp_path / "bad.png")


# --------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("gallery") / "run"
    trainlab.train(
        {
            "data": {"dataset": "mnist-5k", "train_size": 300, "val_size": 100},
            "model": {"name": "mlp", "options": {"hidden": [32]}},
            "epochs": 2,
            "progress": False,
            "out": str(out),
        }
    )
    return out


def test_predict_test_set_normalises_as_training_did(run_dir):
    probabilities, labels = predict_test_set(run_dir, batch_size=300)  # dataset from config
    test = load_dataset("mnist-5k").test
    assert probabilities.shape == (len(test), 10) and probabilities.dtype == np.float32
    np.testing.assert_array_equal(labels, test.labels.numpy())
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    # Same accuracy as the run's own test evaluation: same weights, same normalisation.
    accuracy = float((probabilities.argmax(axis=1) == labels).mean())
    assert accuracy == pytest.approx(read_summary(run_dir)["test"]["accuracy"], abs=1e-3)


def test_checkpoint_folder_without_run_config_needs_the_dataset(run_dir, tmp_path):
    alone = shutil.copytree(run_dir / "checkpoint", tmp_path / "checkpoint")
    with pytest.raises(RunError, match="pass dataset="):
        predict_test_set(alone)
    split = load_test_split(alone, dataset="mnist-5k")
    probabilities, labels = predict_test_set(alone, split=split)
    expected, _ = predict_test_set(run_dir)
    np.testing.assert_allclose(probabilities, expected, atol=1e-6)
    assert len(labels) == len(split)


def test_draw_run_gallery_end_to_end(run_dir, tmp_path):
    mistakes = draw_run_gallery(run_dir, tmp_path / "gallery.png", k=16, columns=8)
    assert len(mistakes) == 16
    confidences = [m.confidence for m in mistakes]
    assert confidences == sorted(confidences, reverse=True)
    assert all(m.true != m.predicted for m in mistakes)
    width, height = png_size(tmp_path / "gallery.png")
    assert 800 <= width <= 2000 and 300 <= height <= 1200
    assert (tmp_path / "gallery.png").stat().st_size > 10_000
