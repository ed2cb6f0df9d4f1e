"""The test images a model gets wrong most confidently, found and drawn.

:func:`most_confident_mistakes` is pure (probabilities and labels in, a ranked list out);
:func:`predict_test_set` produces its inputs from a checkpoint, normalising exactly as training
did (the checkpoint's mean/std through :func:`trainlab.data.normalize_uint8`, the one place of
that math); :func:`draw_gallery` draws the images with "true → predicted (confidence)" captions.

Only the test split is used here, after training, for the report: nothing is selected on it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainlab.analysis.plots import new_figure, save_png
from trainlab.data import ImageSplit, load_dataset, normalize_uint8
from trainlab.errors import RunError
from trainlab.runs.checkpoint import Checkpoint, load_checkpoint
from trainlab.runs.record import CONFIG_FILE, read_run_config

__all__ = [
    "Mistake",
    "caption",
    "draw_gallery",
    "draw_run_gallery",
    "load_test_split",
    "most_confident_mistakes",
    "predict_test_set",
]


@dataclass(frozen=True)
class Mistake:
    """One misclassified image."""

    index: int  # position in the split the probabilities were computed on
    true: int  # class index of the label
    predicted: int  # class index of the argmax
    confidence: float  # the model's probability of the (wrong) predicted class, in [0, 1]


def most_confident_mistakes(probabilities: np.ndarray, labels: np.ndarray, k: int) -> list[Mistake]:
    """The ``k`` misclassified samples with the highest predicted probability, highest first.

    ``probabilities`` is ``[N, K]`` (rows are class probabilities), ``labels`` ``[N]`` class
    indices. The prediction is the argmax (the first class on ties, as ``torch.argmax``); equal
    confidences keep the lower index first.
    """
    probabilities = np.asarray(probabilities)
    labels = np.asarray(labels)
    if probabilities.ndim != 2 or labels.shape != probabilities.shape[:1]:
        raise ValueError(
            f"expected probabilities [N, K] and labels [N], got {probabilities.shape} "
            f"and {labels.shape}"
        )
    predicted = probabilities.argmax(axis=1)
    confidence = probabilities[np.arange(len(labels)), predicted]
    wrong = np.flatnonzero(predicted != labels)
    # lexsort sorts by the last key first: confidence descending, then index ascending.
    ranked = wrong[np.lexsort((wrong, -confidence[wrong]))][: max(k, 0)]
    return [
        Mistake(int(i), int(labels[i]), int(predicted[i]), float(confidence[i])) for i in ranked
    ]


# --------------------------------------------------------------------------- inference


def _run_dataset(checkpoint: Checkpoint, given: Path) -> tuple[str, str | None]:
    """The dataset name and data root in the config of the run that saved ``checkpoint``."""
    candidates = [given, *([checkpoint.path.parent] if checkpoint.path else [])]
    for folder in candidates:
        if (folder / CONFIG_FILE).is_file():
            data = read_run_config(folder).data
            return data.dataset, data.root
    raise RunError(
        f"no run config beside the checkpoint in {given}: pass dataset= (e.g. 'mnist-5k')"
    )


def _check_fits(checkpoint: Checkpoint, split: ImageSplit, dataset: str, classes: int) -> None:
    if classes != checkpoint.num_classes:
        raise RunError(
            f"dataset {dataset!r} has {classes} classes but the checkpoint predicts "
            f"{checkpoint.num_classes}: pass the dataset the run was trained on"
        )
    preprocessing = checkpoint.preprocessing
    expected = [preprocessing.get("channels"), *(preprocessing.get("image_size") or [])]
    actual = list(split.images.shape[1 : 1 + len(expected)])
    if None not in expected and actual != expected:
        raise RunError(
            f"dataset {dataset!r} has images {actual} (C, H, W) but the checkpoint expects "
            f"{expected}: pass the dataset the run was trained on"
        )


def load_test_split(
    checkpoint_dir: str | Path, *, dataset: str | None = None, root: str | Path | None = None
) -> ImageSplit:
    """The test split of the dataset a checkpoint was trained on, as uint8 CPU tensors.

    ``checkpoint_dir`` is a checkpoint folder or a run folder. ``dataset`` defaults to the one
    in the run's ``config.yaml`` (and ``root`` to its data root).
    """
    checkpoint = load_checkpoint(checkpoint_dir)
    return _test_split(checkpoint, Path(checkpoint_dir), dataset, root)


def _test_split(
    checkpoint: Checkpoint, given: Path, dataset: str | None, root: str | Path | None
) -> ImageSplit:
    if dataset is None:
        dataset, run_root = _run_dataset(checkpoint, given)
        root = root if root is not None else run_root
    # A report never downloads: the data is there (the run used it here) or the gallery is not.
    bundle = load_dataset(dataset, root=root, download=False)
    _check_fits(checkpoint, bundle.test, dataset, bundle.num_classes)
    return bundle.test


@torch.no_grad()
def _probabilities(
    model: torch.nn.Module, images: torch.Tensor, preprocessing: dict[str, Any], batch_size: int
) -> torch.Tensor:
    """Softmax outputs ``[N, K]`` (float32, CPU) for uint8 ``images``, batch by batch."""
    device = next(model.parameters()).device
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].to(device)
        x = normalize_uint8(batch, preprocessing["mean"], preprocessing["std"])
        outputs.append(torch.softmax(model(x).float(), dim=1).cpu())
    return torch.cat(outputs) if outputs else torch.empty(0, 0)


def predict_test_set(
    checkpoint_dir: str | Path,
    *,
    dataset: str | None = None,
    root: str | Path | None = None,
    device: str | torch.device = "cpu",
    batch_size: int = 512,
    split: ImageSplit | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities ``[N, K]`` (float32) and labels ``[N]`` (int64) of the test split.

    ``checkpoint_dir`` is a checkpoint folder or a run folder; ``dataset`` defaults to the one in
    the run's ``config.yaml``. Pass ``split`` (e.g. from :func:`load_test_split`) to reuse
    images already loaded. The checkpoint is loaded without unpickling and the images are
    normalised with its preprocessing, exactly as training normalised them.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    checkpoint = load_checkpoint(checkpoint_dir)
    if split is None:
        split = _test_split(checkpoint, Path(checkpoint_dir), dataset, root)
    return _predict(checkpoint, split, device, batch_size)


def _predict(
    checkpoint: Checkpoint, split: ImageSplit, device: str | torch.device, batch_size: int
) -> tuple[np.ndarray, np.ndarray]:
    model = checkpoint.build_model(device)
    probabilities = _probabilities(model, split.images, checkpoint.preprocessing, batch_size)
    return probabilities.numpy(), split.labels.cpu().numpy()


# --------------------------------------------------------------------------- drawing


def _as_numpy(images: np.ndarray | torch.Tensor) -> np.ndarray:
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images [N, C, H, W], got {images.dtype} {images.shape}")
    return images


def _short(name: str, limit: int = 10) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def caption(mistake: Mistake, class_names: Sequence[str]) -> str:
    """``"7 → 1 (98%)"``: true class, predicted class, confidence of the prediction."""
    true, predicted = class_names[mistake.true], class_names[mistake.predicted]
    return f"{_short(true)} → {_short(predicted)} ({mistake.confidence:.0%})"


def draw_gallery(
    images: np.ndarray | torch.Tensor,
    mistakes: Sequence[Mistake],
    class_names: Sequence[str],
    path: str | Path,
    columns: int = 8,
    title: str = "Most confidently misclassified test images",
) -> Path:
    """A grid of ``images[m.index]`` for each mistake, captioned "true → predicted (conf%)".

    ``images`` is the uint8 ``[N, C, H, W]`` split the mistakes index into (1 or 3 channels).
    Writes one PNG atomically and returns its path.
    """
    images = _as_numpy(images)
    columns = max(1, min(columns, len(mistakes)))
    rows = max(1, math.ceil(len(mistakes) / columns))
    figure = new_figure((max(4.0, 1.45 * columns), 1.6 * rows + 0.5))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, mistake in zip(axes, mistakes, strict=False):
        image = images[mistake.index].transpose(1, 2, 0)  # C, H, W -> H, W, C
        if image.shape[2] == 1:
            ax.imshow(image[:, :, 0], cmap="gray", vmin=0, vmax=255)
        else:
            ax.imshow(image)
        ax.set_title(caption(mistake, class_names), fontsize=7)
    if not mistakes:
        axes[0].text(0.5, 0.5, "no misclassified images", ha="center", va="center")
    figure.suptitle(title, fontsize=10)
    return save_png(figure, path)


def draw_run_gallery(
    checkpoint_dir: str | Path,
    path: str | Path,
    *,
    k: int = 24,
    dataset: str | None = None,
    root: str | Path | None = None,
    device: str | torch.device = "cpu",
    columns: int = 8,
) -> list[Mistake]:
    """Predict a run's test set, draw its ``k`` most confident mistakes at ``path``, return them."""
    checkpoint = load_checkpoint(checkpoint_dir)
    split = _test_split(checkpoint, Path(checkpoint_dir), dataset, root)
    probabilities, labels = _predict(checkpoint, split, device, batch_size=512)
    mistakes = most_confident_mistakes(probabilities, labels, k)
    draw_gallery(split.images, mistakes, checkpoint.class_names, path, columns=columns)
    return mistakes
