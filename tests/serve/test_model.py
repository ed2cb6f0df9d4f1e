"""ServedModel: the traced serving head answers exactly as the training math does, and a model
that cannot be traced is served eagerly."""

from __future__ import annotations

import pytest
import torch

from trainlab.data.batches import normalize_uint8
from trainlab.serve.model import ServedModel


@pytest.fixture(scope="module")
def images(small_run):
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, 256, (7, 1, 28, 28), generator=generator).to(torch.uint8)


def training_math(served: ServedModel, images: torch.Tensor) -> torch.Tensor:
    x = normalize_uint8(images, served.preprocessing["mean"], served.preprocessing["std"])
    with torch.no_grad():
        return served.model(x).softmax(dim=1)


def test_the_traced_head_gives_the_training_probabilities(small_run, images):
    served = ServedModel.load(small_run, device="cpu")
    eager = served.probabilities(images)
    served.prepare_for_serving()
    assert served.fast is not None
    traced = served.probabilities(images)
    expected = training_math(served, images)
    assert torch.allclose(eager, expected, atol=1e-6)
    assert torch.allclose(traced, expected, atol=1e-5)
    assert torch.allclose(served.probabilities(images[:1]), expected[:1], atol=1e-5)  # any size


def test_a_model_that_cannot_be_traced_is_served_eagerly(small_run, images, monkeypatch):
    def refuse(*args, **kwargs):
        raise RuntimeError("data-dependent control flow")

    monkeypatch.setattr(torch.jit, "trace", refuse)
    served = ServedModel.load(small_run, device="cpu")
    served.prepare_for_serving()
    assert served.fast is None
    assert torch.allclose(served.probabilities(images), training_math(served, images), atol=1e-6)
