"""Pictures from embedding vectors: a small decoder trained on a run's frozen embeddings.

What a classifier's penultimate layer keeps of an image can be seen by learning to invert it.
:func:`decode_run` embeds the training images of the run's dataset with the frozen model
(batch by batch, on the run's device), trains an MLP :class:`EmbeddingDecoder` from embeddings
back to pixels (binary cross-entropy on pixels in [0, 1]), measures the reconstruction error on
the test images, which it never trained on, and draws three figures:

- ``class_means.png``: the decoder applied to the mean embedding of each class;
- ``interpolation.png``: two test images at the ends and the decoded linear interpolation of
  their embeddings between them;
- ``reconstructions.png``: test images above their reconstructions.

The decoder is saved pickle-free (``decoder.safetensors`` + ``decoder.json``, see
:func:`save_decoder` / :func:`load_decoder`). The pure parts (:func:`interpolate`,
:func:`class_mean_embeddings`, :func:`default_pair`, :func:`decoder_epochs`) are tested on exact
values; drawing is separate, on the Agg canvas of :mod:`trainlab.analysis.plots`.

Nothing is selected on the test images: they are only decoded and measured.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import trainlab
from trainlab._io import check_writable, write_json_atomic
from trainlab.analysis.embeddings import (
    check_images_fit,
    compute_embeddings,
    first_of_each_class,
    load_model,
    load_run_dataset,
    output_folder,
    run_folder,
    show_image,
    stratified_limit,
)
from trainlab.analysis.plots import new_figure, save_png
from trainlab.errors import RunError, TrainlabError
from trainlab.runs.state import load_tensors, save_tensors

__all__ = [
    "DECODER_FORMAT",
    "DecodeResult",
    "EmbeddingDecoder",
    "class_mean_embeddings",
    "decode_run",
    "decoder_epochs",
    "default_pair",
    "draw_class_means",
    "draw_interpolation",
    "draw_reconstructions",
    "interpolate",
    "load_decoder",
    "mean_image_error",
    "reconstruction_error",
    "save_decoder",
    "to_uint8",
    "train_decoder",
]

DECODER_FORMAT = "trainlab-decoder"
DECODER_FORMAT_VERSION = 1
WEIGHTS_FILE = "decoder.safetensors"
META_FILE = "decoder.json"
DEFAULT_HIDDEN = (256, 512)
SAMPLE_BUDGET = 100_000  # images seen by an "auto" training: ~25 epochs of mnist-5k's 4,000
INTERPOLATION_STEPS = 8  # decoded frames, both ends included

EpochCallback = Callable[[int, int, float, float], None]  # epoch, epochs, loss, seconds


# --------------------------------------------------------------------------- the decoder


class EmbeddingDecoder(nn.Module):
    """An MLP from an embedding ``[B, D]`` to image logits ``[B, C, H, W]``.

    Embeddings are standardised with the training embeddings' per-dimension mean and std,
    kept as buffers so they travel with the weights. ``pixels`` gives images in [0, 1].
    """

    def __init__(
        self,
        embedding_dim: int,
        image_shape: Sequence[int],
        hidden: Sequence[int] = DEFAULT_HIDDEN,
    ):
        super().__init__()
        self.embedding_dim = int(embedding_dim)
        self.image_shape = tuple(int(side) for side in image_shape)
        self.hidden = tuple(int(units) for units in hidden)
        if len(self.image_shape) != 3 or self.embedding_dim < 1:
            raise ValueError(f"need embedding_dim >= 1 and image_shape (C, H, W), got "
                             f"{embedding_dim} and {image_shape}")  # fmt: skip
        self.register_buffer("embedding_mean", torch.zeros(self.embedding_dim))
        self.register_buffer("embedding_std", torch.ones(self.embedding_dim))
        layers: list[nn.Module] = []
        width = self.embedding_dim
        for units in self.hidden:
            layers += [nn.Linear(width, units), nn.GELU()]
            width = units
        layers.append(nn.Linear(width, math.prod(self.image_shape)))
        self.net = nn.Sequential(*layers)

    @property
    def spec(self) -> dict[str, Any]:
        """The arguments that rebuild this decoder."""
        return {"embedding_dim": self.embedding_dim, "image_shape": list(self.image_shape),
                "hidden": list(self.hidden)}  # fmt: skip

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        z = (embeddings - self.embedding_mean) / self.embedding_std
        return self.net(z).view(-1, *self.image_shape)

    @torch.no_grad()
    def pixels(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Decoded images, float in [0, 1], ``[B, C, H, W]``, on the decoder's device."""
        return torch.sigmoid(self(embeddings))


def decoder_epochs(train_size: int) -> int:
    """Epochs of an "auto" training: about :data:`SAMPLE_BUDGET` images, from 3 to 30 epochs."""
    if train_size < 1:
        raise ValueError(f"need at least one training image, got {train_size}")
    return min(30, max(3, math.ceil(SAMPLE_BUDGET / train_size)))


def _as_pixels(images: torch.Tensor) -> torch.Tensor:
    return images.float().div_(255.0)


def train_decoder(
    embeddings: torch.Tensor,
    images: torch.Tensor,
    *,
    epochs: int,
    batch_size: int = 128,
    lr: float = 2e-3,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
) -> tuple[EmbeddingDecoder, list[float]]:
    """Train a decoder from ``embeddings`` ``[N, D]`` to uint8 ``images`` ``[N, C, H, W]``.

    Runs on the device of ``embeddings`` (images are moved there): AdamW with a cosine decay to
    zero, binary cross-entropy between the logits and the pixels in [0, 1]. The initial weights
    and the batch order follow ``seed``. Returns the decoder (eval mode) and the mean training
    loss of each epoch.
    """
    if len(embeddings) != len(images) or len(embeddings) == 0:
        raise ValueError(f"need as many embeddings as images (and some), got "
                         f"{len(embeddings)} and {len(images)}")  # fmt: skip
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"epochs and batch_size must be positive, got {epochs}, {batch_size}")
    device = embeddings.device
    embeddings = embeddings.float()
    images = images.to(device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        decoder = EmbeddingDecoder(embeddings.shape[1], images.shape[1:], hidden)
    decoder.embedding_mean.copy_(embeddings.mean(dim=0))
    # A dimension that never varies (a dead ReLU) is left unscaled rather than divided by ~0.
    std = embeddings.std(dim=0) if len(embeddings) > 1 else torch.ones(embeddings.shape[1])
    decoder.embedding_std.copy_(torch.where(std > 1e-6, std, torch.ones_like(std)))
    decoder.to(device).train()
    steps_per_epoch = math.ceil(len(embeddings) / batch_size)
    total_steps = epochs * steps_per_epoch
    optimizer = torch.optim.AdamW(decoder.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
    )
    generator = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        order = torch.randperm(len(embeddings), generator=generator).to(device)
        total = torch.zeros((), device=device)
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            logits = decoder(embeddings[batch])
            loss = nn.functional.binary_cross_entropy_with_logits(logits, _as_pixels(images[batch]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.detach() * len(batch)  # no sync per step: read once per epoch
        losses.append(float(total) / len(order))
        if on_epoch is not None:
            on_epoch(epoch, epochs, losses[-1], time.perf_counter() - started)
    return decoder.eval(), losses


@torch.no_grad()
def reconstruction_error(
    decoder: EmbeddingDecoder,
    embeddings: torch.Tensor,
    images: torch.Tensor,
    batch_size: int = 1024,
) -> float:
    """Mean squared error per pixel, pixels in [0, 1], between decoded and real images."""
    device = decoder.embedding_mean.device
    total, count = 0.0, 0
    for start in range(0, len(embeddings), batch_size):
        decoded = decoder.pixels(embeddings[start : start + batch_size].to(device).float())
        target = _as_pixels(images[start : start + batch_size].to(device))
        total += float((decoded - target).square().sum())
        count += target.numel()
    return total / count if count else math.nan


def mean_image_error(
    train_images: torch.Tensor, test_images: torch.Tensor, batch_size: int = 4096
) -> float:
    """The error of always answering the mean training image: what a decoder must beat.

    Batch by batch (float64 sums), so a large uint8 dataset is never held as float32 at once.
    """
    total = torch.zeros(train_images.shape[1:], dtype=torch.float64)
    for start in range(0, len(train_images), batch_size):
        total += _as_pixels(train_images[start : start + batch_size]).double().sum(dim=0).cpu()
    mean = total / max(len(train_images), 1)
    squared, count = 0.0, 0
    for start in range(0, len(test_images), batch_size):
        batch = _as_pixels(test_images[start : start + batch_size]).double().cpu()
        squared += float((batch - mean).square().sum())
        count += batch.numel()
    return squared / count if count else math.nan


# --------------------------------------------------------------------------- pure helpers


def interpolate(a: torch.Tensor, b: torch.Tensor, steps: int = INTERPOLATION_STEPS) -> torch.Tensor:
    """``steps`` points from ``a`` to ``b`` (both included) on the straight line: ``[steps, D]``."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    t = torch.linspace(0.0, 1.0, steps, dtype=a.dtype, device=a.device)[:, None]
    return a[None] + t * (b - a)[None]


def class_mean_embeddings(
    embeddings: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, list[int]]:
    """The mean embedding of each class present, by class index: ``([K', D], classes)``."""
    classes = torch.unique(labels.cpu()).tolist()
    labels = labels.to(embeddings.device)
    means = torch.stack([embeddings[labels == cls].float().mean(dim=0) for cls in classes])
    return means, [int(cls) for cls in classes]


def default_pair(labels: torch.Tensor | np.ndarray | Sequence[int]) -> tuple[int, int]:
    """The first image and the first one after it of another class."""
    labels = np.asarray(labels)
    if len(labels) == 0:
        raise TrainlabError("no test images to interpolate between")
    others = np.flatnonzero(labels != labels[0])
    if len(others) == 0:
        raise TrainlabError("every test image has the same class; pass --pair I J")
    return 0, int(others[0])


def to_uint8(pixels: torch.Tensor) -> torch.Tensor:
    """Pixels in [0, 1] to uint8 [0, 255] on the CPU (rounded, clamped)."""
    return pixels.detach().float().mul(255.0).round_().clamp_(0, 255).to(torch.uint8).cpu()


# --------------------------------------------------------------------------- saving


def save_decoder(folder: str | Path, decoder: EmbeddingDecoder, metadata: dict[str, Any]) -> Path:
    """Write ``decoder.safetensors`` then ``decoder.json`` (the commit point) into ``folder``.

    Both atomically; the JSON holds the architecture, ``metadata`` and the weights' SHA-256.
    Returns the JSON's path.
    """
    folder = Path(folder)
    state = {key: value.detach().cpu() for key, value in decoder.state_dict().items()}
    digest = save_tensors(folder / WEIGHTS_FILE, state, metadata={"format": DECODER_FORMAT})
    write_json_atomic(folder / META_FILE, {
        "format": DECODER_FORMAT, "format_version": DECODER_FORMAT_VERSION,
        "trainlab_version": trainlab.__version__, "architecture": decoder.spec,
        "loss": "binary cross-entropy on pixels in [0, 1]", **metadata,
        "weights_sha256": digest})  # fmt: skip
    return folder / META_FILE


def load_decoder(
    folder: str | Path, device: str | torch.device = "cpu"
) -> tuple[EmbeddingDecoder, dict[str, Any]]:
    """Rebuild a decoder saved by :func:`save_decoder` (never unpickles): ``(decoder, meta)``."""
    folder = Path(folder)
    meta_path = folder / META_FILE
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise RunError(f"no decoder in {folder}: {META_FILE} is missing") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RunError(f"corrupt decoder file {meta_path}: {error}") from error
    if not isinstance(meta, dict) or meta.get("format") != DECODER_FORMAT:
        raise RunError(f"{meta_path} is not a trainlab decoder")
    if int(meta.get("format_version", 0)) > DECODER_FORMAT_VERSION:
        raise RunError(f"{meta_path} is from a newer trainlab ({meta.get('trainlab_version')}); "
                       "upgrade trainlab")  # fmt: skip
    state = load_tensors(folder / WEIGHTS_FILE, sha256=meta.get("weights_sha256"))
    architecture = meta["architecture"]
    decoder = EmbeddingDecoder(architecture["embedding_dim"], architecture["image_shape"],
                               architecture["hidden"])  # fmt: skip
    decoder.load_state_dict(state, strict=True)
    return decoder.to(device).eval(), meta


# --------------------------------------------------------------------------- drawing


def _short(name: str, limit: int = 12) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def draw_class_means(
    images: torch.Tensor, names: Sequence[str], path: str | Path, title: str = ""
) -> Path:
    """One decoded uint8 image per class in a grid (up to 10 columns), captioned by name."""
    count = len(images)
    columns = max(1, min(10, count))
    rows = max(1, math.ceil(count / columns))
    figure = new_figure((max(3.0, 1.05 * columns), 1.2 * rows + 0.6))
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, image, name in zip(axes, images, names, strict=False):
        show_image(ax, image)
        ax.set_axis_on()
        ax.set_title(_short(name), fontsize=8)
    figure.suptitle(title or "Decoded class-mean embeddings", fontsize=10)
    return save_png(figure, path)


def draw_interpolation(
    first: torch.Tensor,
    last: torch.Tensor,
    frames: torch.Tensor,
    captions: tuple[str, str],
    path: str | Path,
    title: str = "",
) -> Path:
    """A strip: the first original, the decoded frames (``t`` from 0 to 1), the last original."""
    steps = len(frames)
    figure = new_figure((1.0 * (steps + 2) + 0.2, 1.75))
    axes = figure.subplots(1, steps + 2, squeeze=False).ravel()
    show_image(axes[0], first)
    axes[0].set_title(f"original\n{_short(captions[0])}", fontsize=7.5)
    for position, (ax, frame) in enumerate(zip(axes[1:-1], frames, strict=True)):
        show_image(ax, frame)
        ax.set_title(f"decoded\nt = {position / max(steps - 1, 1):.2f}", fontsize=7.5)
    show_image(axes[-1], last)
    axes[-1].set_title(f"original\n{_short(captions[1])}", fontsize=7.5)
    for ax in (axes[0], axes[-1]):
        for spine in ax.spines.values():
            spine.set_color("#0072B2")
            spine.set_linewidth(2)
    figure.suptitle(title or "Decoded interpolation between two embeddings", fontsize=9)
    return save_png(figure, path)


def draw_reconstructions(
    originals: torch.Tensor,
    reconstructions: torch.Tensor,
    captions: Sequence[str],
    path: str | Path,
    title: str = "",
) -> Path:
    """Originals (top row) above their decoded embeddings (bottom row), with per-image MSE."""
    count = max(1, len(originals))
    figure = new_figure((max(3.0, 1.0 * count + 0.9), 2.7))
    axes = figure.subplots(2, count, squeeze=False)
    for column, (original, decoded, text) in enumerate(
        zip(originals, reconstructions, captions, strict=True)
    ):
        show_image(axes[0, column], original)
        axes[0, column].set_title(_short(text), fontsize=8)
        show_image(axes[1, column], decoded)
        error = float((original.float() / 255 - decoded.float() / 255).square().mean())
        axes[1, column].set_title(f"MSE {error:.3f}", fontsize=7)
    axes[0, 0].set_ylabel("original", fontsize=8)
    axes[1, 0].set_ylabel("decoded", fontsize=8)
    figure.suptitle(title or "Test images and their decoded embeddings", fontsize=9)
    return save_png(figure, path)


# --------------------------------------------------------------------------- the whole job


@dataclass
class DecodeResult:
    folder: Path
    files: dict[str, Path]  # decoder (JSON), weights, class_means, interpolation, reconstructions
    train_size: int
    test_size: int
    epochs: int
    losses: list[float]  # mean training loss per epoch
    test_error: float  # MSE per pixel in [0, 1] on the test images
    baseline_error: float  # the same for the mean training image
    pair: tuple[int, int]  # positions in the test split
    device: str
    metadata: dict[str, Any] = field(default_factory=dict)


def decode_run(
    run: str | Path,
    *,
    dataset: str | None = None,
    root: str | Path | None = None,
    out: str | Path | None = None,
    epochs: int | None = None,
    pair: tuple[int, int] | None = None,
    limit: int | None = None,
    device: str = "auto",
    batch_size: int = 128,
    hidden: Sequence[int] = DEFAULT_HIDDEN,
    seed: int = 0,
    on_epoch: EpochCallback | None = None,
) -> DecodeResult:
    """Train a decoder on a run's frozen embeddings and write it and its figures to ``out``.

    The decoder learns from the training split of the run's dataset (or ``dataset``; all of it,
    or a stratified ``limit``) and is measured on its test split. ``epochs`` defaults to
    :func:`decoder_epochs`; ``pair`` (positions in the test split) to :func:`default_pair`;
    ``out`` to ``RUN/decode`` (the run folder's, also when ``run`` is its checkpoint folder).
    Never downloads.
    """
    folder = Path(out) if out is not None else output_folder(run) / "decode"
    check_writable(folder, folder=True)  # now, not after the decoder has trained
    if pair is not None and pair[0] == pair[1]:
        raise TrainlabError(f"--pair {pair[0]} {pair[1]}: an interpolation needs two different "
                            "test images")  # fmt: skip
    served = load_model(run, device)
    bundle, data = load_run_dataset(run, dataset=dataset, root=root, command="decode")
    check_images_fit(served.preprocessing, bundle.train.images, bundle.name)
    test = bundle.test
    if pair is not None:
        for index in pair:
            if not 0 <= index < len(test):
                raise TrainlabError(f"--pair {pair[0]} {pair[1]}: the test split of "
                                    f"{bundle.name} has {len(test)} images (0 to "
                                    f"{len(test) - 1})")  # fmt: skip
    pair = pair if pair is not None else default_pair(test.labels)
    chosen = stratified_limit(bundle.train.labels, limit, data.split_seed)
    train_images, train_labels = bundle.train.images[chosen], bundle.train.labels[chosen]
    epochs = epochs if epochs is not None else decoder_epochs(len(chosen))

    target = served.device
    train_embeddings = compute_embeddings(served, train_images)[0].to(target)
    test_embeddings = compute_embeddings(served, test.images)[0].to(target)
    decoder, losses = train_decoder(train_embeddings, train_images, epochs=epochs,
                                    batch_size=batch_size, hidden=hidden, seed=seed,
                                    on_epoch=on_epoch)  # fmt: skip
    test_error = reconstruction_error(decoder, test_embeddings, test.images)
    baseline = mean_image_error(train_images, test.images)

    names = list(bundle.class_names)
    heading = f"{served.name} on {bundle.name}"
    means, classes = class_mean_embeddings(train_embeddings, train_labels)
    files = {
        "class_means": draw_class_means(
            to_uint8(decoder.pixels(means)), [names[c] for c in classes],
            folder / "class_means.png", f"{heading}: decoded mean embedding of each class"),
        "interpolation": draw_interpolation(
            test.images[pair[0]], test.images[pair[1]],
            to_uint8(decoder.pixels(interpolate(test_embeddings[pair[0]],
                                                test_embeddings[pair[1]]))),
            (names[int(test.labels[pair[0]])], names[int(test.labels[pair[1]])]),
            folder / "interpolation.png",
            f"{heading}: test images {pair[0]} and {pair[1]}, their embeddings interpolated"),
    }  # fmt: skip
    shown = torch.as_tensor(first_of_each_class(test.labels.numpy(), 10))
    files["reconstructions"] = draw_reconstructions(
        test.images[shown], to_uint8(decoder.pixels(test_embeddings[shown.to(target)])),
        [names[int(test.labels[i])] for i in shown], folder / "reconstructions.png",
        f"{heading}: test images and their decoded embeddings")  # fmt: skip

    run_dir = str((run_folder(run) or Path(run)).resolve())
    metadata = {
        "source": {"run_dir": run_dir, "dataset": bundle.name, "model": served.name},
        "training": {"images": len(chosen), "split": "train (all of the dataset's training data)"
                     if limit is None else f"train (stratified {len(chosen)})",
                     "epochs": epochs, "batch_size": batch_size, "seed": seed,
                     "losses": [round(loss, 6) for loss in losses], "device": str(target)},
        "test": {"images": len(test), "mse": test_error, "mean_image_mse": baseline},
        "figures": {key: path.name for key, path in files.items()},
    }  # fmt: skip
    files["decoder"] = save_decoder(folder, decoder, metadata)
    files["weights"] = folder / WEIGHTS_FILE
    return DecodeResult(folder, files, len(chosen), len(test), epochs, losses, test_error,
                        baseline, (int(pair[0]), int(pair[1])), str(target), metadata)  # fmt: skip
