"""Penultimate-layer embeddings of a run: computed, saved, projected to 2-D and drawn.

The pieces, in the order ``trainlab embed`` uses them:

- :func:`load_model` and :func:`load_run_split`: a run's model (no unpickling) and the images of
  one of its splits, made exactly as training made them (the run's ``data`` settings: split
  seed, validation size, training subsample). Nothing is downloaded.
- :func:`compute_embeddings`: features and predictions batch by batch through
  :meth:`trainlab.serve.model.ServedModel.embeddings`, the serving path (uint8 in, the
  checkpoint's own normalisation).
- :class:`Embeddings`: the arrays, saved atomically as an ``.npz`` that loads with
  ``allow_pickle=False`` (strings are unicode arrays, metadata one JSON string).
- Pure functions for the figure: :func:`pca` (deterministic signs), :func:`tsne` (exact, in
  torch, deterministic), :func:`nearest_neighbours` (cosine) and :func:`first_of_each_class`.
- :func:`draw_embeddings`: a scatter coloured by class beside rows of nearest neighbours.

Both projections are implemented here (numpy/torch), so the package does not need scikit-learn.
t-SNE is the exact O(N²) algorithm: fine up to :data:`TSNE_MAX_POINTS` points; use ``limit``
or PCA beyond that.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch

import trainlab
from trainlab._io import atomic_path
from trainlab.analysis.plots import new_figure, save_png, shorten_middle
from trainlab.config import DataConfig, TrainConfig
from trainlab.data.types import DatasetBundle
from trainlab.errors import DataError, RunError, TrainlabError

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from trainlab.serve.model import ServedModel

__all__ = [
    "EMBEDDINGS_FORMAT",
    "SPLITS",
    "TSNE_MAX_POINTS",
    "Embeddings",
    "NeighbourRows",
    "PCAResult",
    "Projection",
    "RunSplit",
    "check_images_fit",
    "check_tsne_count",
    "class_colors",
    "compute_embeddings",
    "draw_embeddings",
    "embed_run",
    "first_of_each_class",
    "load_model",
    "load_run_dataset",
    "load_run_split",
    "nearest_neighbours",
    "neighbour_rows",
    "output_folder",
    "pca",
    "project",
    "run_config",
    "run_folder",
    "show_image",
    "split_indices",
    "stratified_limit",
    "tsne",
]

EMBEDDINGS_FORMAT = "trainlab-embeddings"
EMBEDDINGS_FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")
Split = Literal["train", "val", "test"]
ProjectionMethod = Literal["pca", "tsne"]
PROJECTIONS: tuple[str, ...] = ("pca", "tsne")
TSNE_MAX_POINTS = 5000  # exact t-SNE holds a few N×N float32 matrices: 5,000 points ≈ 0.5 GB
TSNE_MIN_POINTS = 4  # below this, tsne() returns its PCA start


# --------------------------------------------------------------------------- the run and its data


def load_model(run: str | Path, device: str = "auto") -> ServedModel:
    """The model of a run folder (or checkpoint folder), in eval mode on ``device``.

    Raises :class:`RunError` with the fix for a missing folder or a run that has no checkpoint.
    """
    from trainlab.runs.checkpoint import find_checkpoint
    from trainlab.serve.model import ServedModel
    from trainlab.training import resolve_device

    run = Path(run)
    if not run.exists():
        raise RunError(f"no such run folder: {run}")
    if not run.is_dir():
        raise RunError(f"{run} is a file; pass a run folder (or its checkpoint/ folder)")
    if (run / "config.yaml").is_file() and not (run / "checkpoint").is_dir():
        raise RunError(
            f"run {run} has no checkpoint (a run saves one after its first epoch); "
            f"train it further (`trainlab train --resume {run}`) or pass another run"
        )
    find_checkpoint(run)  # a clear RunError for any other folder
    return ServedModel.load(run, device=str(resolve_device(device)))


def run_folder(run: str | Path) -> Path | None:
    """The run folder of ``run`` (a run folder or its checkpoint/ folder); None for a bare
    checkpoint."""
    from trainlab.runs.record import CONFIG_FILE

    run = Path(run)
    return next((folder for folder in (run, run.parent) if (folder / CONFIG_FILE).is_file()), None)


def run_config(run: str | Path) -> TrainConfig | None:
    """The config of the run that saved the checkpoint in ``run``, or None for a bare checkpoint."""
    from trainlab.runs.record import read_run_config

    folder = run_folder(run)
    return read_run_config(folder) if folder is not None else None


def output_folder(run: str | Path) -> Path:
    """Where a command's files go by default: the run folder, also when it was given the run's
    checkpoint/ folder; beside a bare checkpoint folder, not in it (a checkpoint folder is the
    served artifact: nothing else goes in it)."""
    from trainlab.runs.checkpoint import META_FILE

    run = Path(run)
    found = run_folder(run)
    if found is not None:
        return found
    return run.resolve().parent if (run / META_FILE).is_file() else run


def split_indices(labels: torch.Tensor, data: DataConfig, split: Split) -> torch.Tensor:
    """Positions, in a dataset's training data, of a run's ``train`` or ``val`` images.

    Makes the split as :func:`trainlab.training.prepare_data` does, with the same functions
    (k-fold or carved validation, then the training subsample, all seeded by ``split_seed``), so
    ``val`` is exactly the run's validation split and ``train`` the images it trained on.
    Sorted ascending, int64.
    """
    from trainlab.data import ImageSplit, carve_validation, subsample
    from trainlab.data.splits import kfold_validation

    if split not in ("train", "val"):
        raise ValueError(f"split_indices is for train and val, got {split!r}")
    # The split functions take and return ImageSplits: each sample's position rides along as
    # its "image", the 8 bytes of an int64, so the real functions choose and nothing is copied.
    count = len(labels)
    positions = torch.arange(count, dtype=torch.int64).view(torch.uint8).reshape(count, 8, 1, 1)
    everything = ImageSplit(positions, labels.reshape(-1))
    if data.folds is not None:
        train, val = kfold_validation(
            everything, folds=data.folds, fold=data.fold, seed=data.split_seed
        )
    else:
        train, val = carve_validation(
            everything, fraction=data.val_fraction, size=data.val_size, seed=data.split_seed
        )
    if split == "train":
        chosen = subsample(
            train, fraction=data.train_fraction, size=data.train_size, seed=data.split_seed
        )
    else:
        chosen = val
    return chosen.images.reshape(-1, 8).contiguous().view(torch.int64).reshape(-1)


@dataclass
class RunSplit:
    """Images of one split, as uint8 CPU tensors, with where they come from."""

    images: torch.Tensor  # uint8 [N, C, H, W]
    labels: torch.Tensor  # int64 [N]
    indices: torch.Tensor  # int64 [N]: positions in the dataset's training data (train, val)
    #                         or test data (test)
    class_names: list[str]  # of the dataset
    dataset: str
    split: str


def _check_offline(dataset: str, root: str | Path | None, command: str) -> None:
    """A registered dataset must already be cached: these tools never download."""
    from trainlab.data import list_datasets
    from trainlab.data.registry import get_spec, is_registered
    from trainlab.data.sources import dataset_dir

    if not is_registered(dataset):
        return  # a path: load_dataset says clearly when it does not exist
    spec = get_spec(dataset)
    info = next(info for info in list_datasets(root) if info.name == spec.name)
    if not info.available:
        where = (
            "its package is not installed"
            if spec.bundled
            else f"not in {dataset_dir(spec.name, root)}"
        )
        raise DataError(
            f"dataset {spec.name!r} is not available offline ({where}) and `trainlab {command}` "
            f"never downloads; fetch it once (`trainlab fetch {spec.name}`) "
            "or point --data-root at the cache that holds it"
        )


def check_images_fit(preprocessing: dict[str, Any], images: torch.Tensor, dataset: str) -> None:
    """Raise :class:`DataError` if the model cannot take these images (channels, size)."""
    expected = [preprocessing.get("channels"), *(preprocessing.get("image_size") or [None, None])]
    actual = [int(side) for side in images.shape[1:4]]
    if None not in expected and actual != expected:
        shape = "×".join(map(str, actual))
        wanted = "×".join(map(str, expected))
        raise DataError(
            f"dataset {dataset!r} has {shape} images (channels×height×width) but the model takes "
            f"{wanted}; pass a dataset of that shape (by default the run's own)"
        )


def load_run_dataset(
    run: str | Path,
    *,
    dataset: str | None = None,
    root: str | Path | None = None,
    command: str = "embed",
) -> tuple[DatasetBundle, DataConfig]:
    """The run's dataset (or ``dataset``), never downloaded, and the run's data settings.

    ``dataset`` and ``root`` default to the run's; a bare checkpoint folder (no ``config.yaml``
    beside it) needs ``dataset`` and gets the default data settings. ``command`` names the
    command in the message for a dataset that is not cached.
    """
    from trainlab.data import load_dataset

    config = run_config(run)
    if config is None and dataset is None:
        raise RunError(
            f"{run} has no config.yaml to name its dataset; pass --dataset (e.g. mnist-5k)"
        )
    data = config.data if config is not None else DataConfig()
    name = dataset if dataset is not None else data.dataset
    root = root if root is not None else data.root
    _check_offline(name, root, command)
    return load_dataset(name, root=root, download=False), data


def _check_split_unchanged(
    run: str | Path, split: str, labels: torch.Tensor, count: int, dataset: str
) -> None:
    """Refuse to rebuild ``split`` from training data (``labels``) that changed since the run:
    the same seed would pick other images, and "val" would mix in images the model trained on.
    Judged by the fingerprint of the labels the run recorded (by the split's size for runs
    older than it)."""
    from trainlab.data.splits import labels_fingerprint
    from trainlab.runs.record import read_summary

    folder = run_folder(run)
    summary = read_summary(folder) if folder is not None else None
    record = (summary or {}).get("dataset") or {}
    fingerprint, size = record.get("train_labels_sha256"), record.get(f"{split}_size")
    if fingerprint is not None:
        changed = fingerprint != labels_fingerprint(labels)
    else:
        changed = isinstance(size, int) and size != count
    if changed:
        raise DataError(f"{dataset}'s training data changed since the run (its labels differ "
                        f"from the run's record): the same seed picks other images now, so "
                        f"this would not be the run's {split} split; use --split test, or "
                        "restore the data")  # fmt: skip


def stratified_limit(labels: torch.Tensor, limit: int | None, seed: int) -> torch.Tensor:
    """Positions of a stratified subset of ``limit`` labels (all of them when ``limit`` is None
    or not smaller), sorted ascending; the same subset on every call with the same seed."""
    from trainlab.data import stratified_indices

    if limit is not None and limit < 1:
        raise TrainlabError(f"limit must be at least 1, got {limit}")
    if limit is None or limit >= len(labels):
        return torch.arange(len(labels), dtype=torch.int64)
    return stratified_indices(labels, size=limit, seed=seed)[0]


def load_run_split(
    run: str | Path,
    split: str = "test",
    *,
    dataset: str | None = None,
    root: str | Path | None = None,
    limit: int | None = None,
    command: str = "embed",
) -> RunSplit:
    """The ``split`` images of the run's dataset (or of ``dataset``) as the run made its splits.

    ``train`` and ``val`` follow the run's data settings (see :func:`split_indices`), whatever
    the dataset; ``test`` is the dataset's test split. ``limit`` keeps a stratified subset of
    that many (the same one on every call). See :func:`load_run_dataset` for the defaults.
    """
    if split not in SPLITS:
        raise TrainlabError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")
    bundle, data = load_run_dataset(run, dataset=dataset, root=root, command=command)
    if split == "test":
        source = bundle.test
        indices = torch.arange(len(source), dtype=torch.int64)
    else:
        if run_folder(run) is None:  # no config.yaml: its split settings are unknown
            raise RunError(f"{run} is a checkpoint without its run's config.yaml: the run's "
                           f"{split} split cannot be rebuilt; use --split test, or give the run "
                           "folder")  # fmt: skip
        source = bundle.train
        indices = split_indices(source.labels, data, split)  # type: ignore[arg-type]
        if dataset is None or dataset == data.dataset:
            _check_split_unchanged(run, split, source.labels, len(indices), bundle.name)
    indices = indices[stratified_limit(source.labels[indices], limit, data.split_seed)]
    return RunSplit(source.images[indices], source.labels[indices], indices,
                    list(bundle.class_names), bundle.name, split)  # fmt: skip


# --------------------------------------------------------------------------- embeddings


@torch.no_grad()
def compute_embeddings(
    served: ServedModel, images: torch.Tensor, batch_size: int = 512
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features ``[N, D]`` (float32, CPU) and predicted classes ``[N]`` (int64) of uint8 images.

    Batch by batch through :meth:`ServedModel.embeddings` (the serving path); the prediction is
    the model's classifier applied to those same features (every trainlab model is
    ``classifier ∘ forward_features``), so each image goes through the network once.
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    features, predictions = [], []
    for start in range(0, len(images), batch_size):
        batch = served.embeddings(images[start : start + batch_size])
        if not bool(torch.isfinite(batch).all()):
            raise RunError("the model's features are not finite (NaN or inf): its weights are "
                           "broken, most likely by a run that diverged (see the status in its "
                           "summary.json); embed a run that trained")  # fmt: skip
        logits = served.model.classifier(batch.to(served.device))
        features.append(batch)
        predictions.append(logits.argmax(dim=1).cpu())
    if not features:
        width = int(getattr(served.model, "embedding_dim", 0))
        return torch.empty(0, width), torch.empty(0, dtype=torch.int64)
    return torch.cat(features), torch.cat(predictions).long()


@dataclass
class Embeddings:
    """Embeddings of one split, the arrays of an embeddings ``.npz``.

    ``predictions`` are indices into ``model_class_names`` (the classes the model predicts);
    ``labels`` into ``class_names`` (the dataset's). They are comparable (``predictions ==
    labels`` means right) when the two lists are equal: the run's own dataset.
    """

    embeddings: np.ndarray  # float32 [N, D]
    labels: np.ndarray  # int64 [N]
    predictions: np.ndarray  # int64 [N]
    indices: np.ndarray  # int64 [N], see RunSplit.indices
    class_names: list[str]
    model_class_names: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.embeddings = np.asarray(self.embeddings, dtype=np.float32)
        self.labels, self.predictions, self.indices = (
            np.asarray(a, dtype=np.int64) for a in (self.labels, self.predictions, self.indices)
        )
        n = len(self.embeddings)
        if self.embeddings.ndim != 2 or any(
            a.shape != (n,) for a in (self.labels, self.predictions, self.indices)
        ):
            raise ValueError(
                f"expected embeddings [N, D] and labels, predictions, indices [N]; got "
                f"{self.embeddings.shape}, {self.labels.shape}, {self.predictions.shape}, "
                f"{self.indices.shape}"
            )
        self.class_names = [str(name) for name in self.class_names]
        self.model_class_names = [str(name) for name in self.model_class_names]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def comparable(self) -> bool:
        """Whether predictions and labels name the same classes (so mistakes can be marked)."""
        return self.class_names == self.model_class_names

    @property
    def accuracy(self) -> float | None:
        if not self.comparable or len(self) == 0:
            return None
        return float(np.mean(self.predictions == self.labels))

    def save(self, path: str | Path) -> Path:
        """Write an ``.npz`` atomically (temporary file, then rename); no pickled objects."""
        path = Path(path)
        meta = {"format": EMBEDDINGS_FORMAT, "format_version": EMBEDDINGS_FORMAT_VERSION,
                "trainlab_version": trainlab.__version__, **self.metadata}  # fmt: skip
        arrays = {
            "embeddings": self.embeddings,
            "labels": self.labels,
            "predictions": self.predictions,
            "indices": self.indices,
            "class_names": np.array(self.class_names, dtype=np.str_),
            "model_class_names": np.array(self.model_class_names, dtype=np.str_),
            "metadata": np.array(json.dumps(meta, default=str)),
        }
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)  # a file object: savez would append .npz to a name
        return path

    @classmethod
    def load(cls, path: str | Path) -> Embeddings:
        """Read an embeddings ``.npz`` written by :meth:`save` (never unpickles)."""
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {key: data[key] for key in data.files}
        except FileNotFoundError as error:
            raise DataError(f"no such embeddings file: {path}") from error
        except (OSError, ValueError) as error:
            raise DataError(f"{path} is not a readable .npz file: {error}") from error
        required = ("embeddings", "labels", "predictions", "indices", "class_names", "metadata")
        missing = [key for key in required if key not in arrays]
        if missing:
            raise DataError(f"{path} is not an embeddings file: no {', '.join(missing)}")
        try:
            meta = json.loads(str(arrays["metadata"]))
        except json.JSONDecodeError as error:
            raise DataError(f"{path} has corrupt metadata (not JSON): {error}") from error
        names = arrays["class_names"].tolist()
        return cls(arrays["embeddings"], arrays["labels"], arrays["predictions"],
                   arrays["indices"], names,
                   arrays["model_class_names"].tolist() if "model_class_names" in arrays
                   else names, meta)  # fmt: skip


def embed_run(
    run: str | Path,
    *,
    split: str = "test",
    dataset: str | None = None,
    root: str | Path | None = None,
    limit: int | None = None,
    device: str = "auto",
    batch_size: int = 512,
    check: Callable[[RunSplit], None] | None = None,
) -> tuple[Embeddings, RunSplit]:
    """Embeddings of a run's ``split`` (see :func:`load_run_split`) and the images behind them.
    ``check`` sees the split before the forward pass, to refuse it while that is cheap."""
    if split not in SPLITS:  # before the model loads
        raise TrainlabError(f"unknown split {split!r}; available: {', '.join(SPLITS)}")
    served = load_model(run, device)
    data = load_run_split(run, split, dataset=dataset, root=root, limit=limit)
    check_images_fit(served.preprocessing, data.images, data.dataset)
    if check is not None:
        check(data)
    features, predictions = compute_embeddings(served, data.images, batch_size)
    run_dir = str((run_folder(run) or Path(run)).resolve())
    metadata = {"run_dir": run_dir, "dataset": data.dataset, "split": data.split,
                "model": served.name, "device": str(served.device), "limit": limit,
                "count": len(features),
                "embedding_dim": int(features.shape[1]),
                "indices": f"positions in the dataset's {'test' if split == 'test' else 'training'}"
                           " data"}  # fmt: skip
    embeddings = Embeddings(features.numpy(), data.labels.numpy(), predictions.numpy(),
                            data.indices.numpy(), data.class_names, served.class_names,
                            metadata)  # fmt: skip
    return embeddings, data


# --------------------------------------------------------------------------- projections (pure)


@dataclass(frozen=True)
class PCAResult:
    coordinates: np.ndarray  # float64 [N, k]: centred data on the principal axes
    components: np.ndarray  # float64 [k, D]: unit principal axes, largest variance first
    explained_variance_ratio: np.ndarray  # float64 [k]: share of the total variance per axis


PCA_CHUNK_ROWS = 8192  # rows converted to float64 at a time


def pca(x: np.ndarray | torch.Tensor, components: int = 2) -> PCAResult:
    """Principal components of the rows of ``x``, in float64.

    With more rows than features (the usual case: 45,000 images × 768 features) from the
    D×D scatter matrix, accumulated over row chunks, so memory stays O(D² + chunk × D) instead of
    a float64 copy and an SVD of all N×D; otherwise by SVD of the centred data. Signs are
    deterministic: each axis is flipped so that its largest-magnitude entry is positive (the
    first such entry on ties). When ``x`` has fewer than ``components`` useful directions (few
    points or features) the missing axes are zero.
    """
    data = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x)
    if data.ndim != 2 or len(data) == 0:
        raise ValueError(f"expected a non-empty [N, D] array, got shape {data.shape}")
    rows, features = data.shape
    mean = data.mean(axis=0, dtype=np.float64)

    def centred(start: int) -> np.ndarray:
        return data[start : start + PCA_CHUNK_ROWS].astype(np.float64) - mean

    if rows > features:
        scatter = np.zeros((features, features))
        for start in range(0, rows, PCA_CHUNK_ROWS):
            chunk = centred(start)
            scatter += chunk.T @ chunk
        values, vectors = np.linalg.eigh(scatter)  # ascending
        variances, vt = np.clip(values[::-1], 0.0, None), vectors[:, ::-1].T.copy()
    else:
        _, singular, vt = np.linalg.svd(data.astype(np.float64) - mean, full_matrices=False)
        variances, vt = singular**2, vt.copy()
    strongest = np.abs(vt).argmax(axis=1)
    vt *= np.sign(vt[np.arange(len(vt)), strongest])[:, None]
    kept = min(components, len(vt))
    axes = np.zeros((components, features))
    axes[:kept] = vt[:kept]
    total = float(np.sum(variances))
    ratio = np.zeros(components)
    if total > 0:
        ratio[:kept] = variances[:kept] / total
    coordinates = np.concatenate(
        [centred(start) @ axes.T for start in range(0, rows, PCA_CHUNK_ROWS)]
    )
    return PCAResult(coordinates, axes, ratio)


def _conditional_probabilities(distances: torch.Tensor, perplexity: float) -> torch.Tensor:
    """Row ``i`` is ``P(j | i)``: a Gaussian around point ``i`` over the others (rows sum to 1).

    Each point's precision is found by bisection on its log so that the entropy of its row is
    ``log(perplexity)`` (natural log), all rows at once. ``distances`` are squared.
    """
    n = len(distances)
    off_diagonal = ~torch.eye(n, dtype=torch.bool, device=distances.device)
    d = distances.masked_fill(~off_diagonal, math.inf)
    d = d - d.min(dim=1, keepdim=True).values  # the nearest neighbour at 0: no underflow
    scale = d[off_diagonal].mean().clamp_min(1e-12)
    d = (d / scale).masked_fill_(~off_diagonal, 0.0)
    target = math.log(perplexity)
    # log precision, for distances in units of their mean; 40 halvings of 60: 5e-11 apart
    low = torch.full((n, 1), -30.0, dtype=d.dtype, device=d.device)
    high = torch.full((n, 1), 30.0, dtype=d.dtype, device=d.device)
    for _ in range(40):
        middle = (low + high) / 2
        beta = middle.exp()
        p = torch.exp(-d * beta).mul_(off_diagonal)
        total = p.sum(dim=1, keepdim=True)
        entropy = total.log() + beta * (d * p).sum(dim=1, keepdim=True) / total
        too_flat = entropy > target  # too wide a Gaussian: raise the precision
        low = torch.where(too_flat, middle, low)
        high = torch.where(too_flat, high, middle)
    p = torch.exp(-d * ((low + high) / 2).exp()).mul_(off_diagonal)
    return p / p.sum(dim=1, keepdim=True)


def _joint_probabilities(distances: torch.Tensor, perplexity: float) -> torch.Tensor:
    """Symmetric t-SNE affinities ``P`` (sum 1) from squared distances."""
    p = _conditional_probabilities(distances, perplexity)
    return ((p + p.T) / (2 * len(p))).clamp_min_(1e-12)


def tsne(
    x: np.ndarray | torch.Tensor,
    *,
    perplexity: float = 30.0,
    iterations: int = 750,
    exaggeration: float = 12.0,
    exaggeration_iterations: int = 250,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Exact t-SNE (van der Maaten & Hinton, 2008) of the rows of ``x`` to 2-D, in torch.

    The standard recipe: Gaussian affinities at the given perplexity (capped at ``(N - 1) / 3``),
    a Student-t kernel in 2-D, early exaggeration for the first ``exaggeration_iterations``,
    momentum 0.5 then 0.8 with per-coordinate gains, learning rate ``max(N / exaggeration / 4,
    50)``. It starts from the PCA projection scaled to a standard deviation of 1e-4, so it uses
    no random numbers: the same input on the same device gives the same output. O(N²) time and
    memory (see :data:`TSNE_MAX_POINTS`); a GPU ``device`` makes large N fast. Returns float64
    ``[N, 2]`` coordinates, centred.
    """
    data = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float64)
    n = len(data)
    if data.ndim != 2 or n < 2:
        raise ValueError(f"t-SNE needs an [N, D] array with N >= 2, got shape {data.shape}")
    if n > TSNE_MAX_POINTS:
        raise ValueError(
            f"exact t-SNE takes at most {TSNE_MAX_POINTS} points, not {n}; subsample or use PCA"
        )
    start = pca(data, 2).coordinates
    if n < 4:
        return start
    perplexity = min(perplexity, (n - 1) / 3)
    # float32 from here on: t-SNE needs no more, and it halves memory and time.
    points = torch.as_tensor(data, dtype=torch.float32, device=device)
    p = _joint_probabilities(_squared_distances(points), perplexity)
    del points
    y = torch.as_tensor(start, dtype=torch.float32, device=device)
    spread = float(y[:, 0].std())
    y = y / spread * 1e-4 if spread > 0 else y
    learning_rate = max(n / exaggeration / 4, 50.0)
    update, gains = torch.zeros_like(y), torch.ones_like(y)
    attraction = p * exaggeration
    for step in range(iterations):
        if step == exaggeration_iterations:
            attraction = p
        # Gradient 4 Σ_j (p_ij − q_ij) k_ij (y_i − y_j), with k = 1 / (1 + |y_i − y_j|²) and
        # q = k / Σk; the N×N buffers are reused in place, which is most of the speed.
        kernel = _squared_distances(y).add_(1.0).reciprocal_()
        kernel.fill_diagonal_(0.0)
        weights = torch.sub(attraction, kernel, alpha=1.0 / float(kernel.sum())).mul_(kernel)
        gradient = 4.0 * (weights.sum(dim=1, keepdim=True) * y - weights @ y)
        same_direction = (gradient > 0) == (update > 0)
        gains = torch.where(same_direction, gains * 0.8, gains + 0.2).clamp_min_(0.01)
        update = (0.5 if step < exaggeration_iterations else 0.8) * update
        update -= learning_rate * gains * gradient
        y = y + update
    result = y.double().cpu().numpy()
    return result - result.mean(axis=0)


def _squared_distances(x: torch.Tensor) -> torch.Tensor:
    """Pairwise squared Euclidean distances ``|x_i|² + |x_j|² − 2 x_i·x_j``, at least 0."""
    norms = x.square().sum(dim=1)
    return torch.addmm(norms[:, None] + norms[None, :], x, x.T, alpha=-2.0).clamp_min_(0.0)


@dataclass(frozen=True)
class Projection:
    """2-D coordinates of every embedding, and how they were made."""

    method: str  # "pca" or "tsne"
    coordinates: np.ndarray  # float64 [N, 2]
    explained_variance_ratio: tuple[float, float] | None  # PCA only

    def axis_labels(self) -> tuple[str, str]:
        if self.method == "pca" and self.explained_variance_ratio is not None:
            first, second = self.explained_variance_ratio
            return f"PC 1 ({first:.1%} of variance)", f"PC 2 ({second:.1%} of variance)"
        return "t-SNE 1", "t-SNE 2"


def check_tsne_count(count: int, split: str | None = None) -> None:
    """t-SNE here is exact: between 2 and :data:`TSNE_MAX_POINTS` points (checked before
    anything is computed, with the fix)."""
    what = f"the {split} split has" if split else "got"
    if count > TSNE_MAX_POINTS:
        raise TrainlabError(f"t-SNE here is exact (O(N²)): at most {TSNE_MAX_POINTS:,} images, "
                            f"and {what} {count:,}; pass --limit {TSNE_MAX_POINTS} or "
                            "--projection pca")  # fmt: skip
    if count < 2:
        raise TrainlabError(f"t-SNE needs at least 2 images, and {what} {count}; raise --limit")


def project(
    x: np.ndarray | torch.Tensor, method: str = "pca", device: str | torch.device = "cpu"
) -> Projection:
    """2-D projection of the rows of ``x`` with ``pca`` or ``tsne`` (t-SNE runs on ``device``)."""
    if method == "pca":
        result = pca(x, 2)
        first, second = (float(v) for v in result.explained_variance_ratio)
        return Projection("pca", result.coordinates, (first, second))
    if method == "tsne":
        check_tsne_count(len(x))
        if len(x) < TSNE_MIN_POINTS:  # t-SNE's own answer would be the PCA start: say so
            return project(x, "pca")
        return Projection("tsne", tsne(x, device=device), None)
    raise TrainlabError(f"unknown projection {method!r}; available: {', '.join(PROJECTIONS)}")


# --------------------------------------------------------------------------- neighbours (pure)


def first_of_each_class(labels: np.ndarray | Sequence[int], limit: int = 10) -> np.ndarray:
    """Position of the first sample of each class present, by class index, for ``limit`` classes."""
    labels = np.asarray(labels)
    _, first = np.unique(labels, return_index=True)  # classes sorted ascending
    return first[: max(limit, 0)].astype(np.int64)


def nearest_neighbours(
    embeddings: np.ndarray | torch.Tensor, queries: np.ndarray | Sequence[int], k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows to each query row by cosine similarity, the query itself excluded.

    Returns ``(indices, similarities)``, both ``[Q, k']`` with ``k' = min(k, N - 1)``, most
    similar first; equal similarities keep the lower index first. A zero vector has similarity
    0 to everything.
    """
    data = np.asarray(
        embeddings.detach().cpu() if isinstance(embeddings, torch.Tensor) else embeddings,
        dtype=np.float64,
    )
    queries = np.asarray(queries, dtype=np.int64).reshape(-1)
    norms = np.linalg.norm(data, axis=1, keepdims=True)
    unit = np.divide(data, norms, out=np.zeros_like(data), where=norms > 0)
    similarity = unit[queries] @ unit.T
    similarity[np.arange(len(queries)), queries] = -np.inf
    k = max(0, min(k, len(data) - 1))
    order = np.argsort(-similarity, axis=1, kind="stable")[:, :k]
    return order.astype(np.int64), np.take_along_axis(similarity, order, axis=1)


@dataclass(frozen=True)
class NeighbourRows:
    """Rows of the neighbour panel: a query image and its nearest neighbours."""

    queries: list[int]  # positions in the embeddings
    neighbours: list[list[int]]  # per query, most similar first
    similarities: list[list[float]]  # cosine, same shape as neighbours

    @property
    def k(self) -> int:
        """Neighbours per query: fewer than asked for when there are few images."""
        return len(self.neighbours[0]) if self.neighbours else 0


def neighbour_rows(embeddings: Embeddings, k: int = 5, classes: int = 10) -> NeighbourRows:
    """The first image of each class (up to ``classes`` classes) and its ``k`` neighbours."""
    queries = first_of_each_class(embeddings.labels, classes)
    indices, similarities = nearest_neighbours(embeddings.embeddings, queries, k)
    return NeighbourRows(queries.tolist(), indices.tolist(), similarities.tolist())


# --------------------------------------------------------------------------- drawing


def class_colors(count: int) -> list[tuple[float, float, float, float]]:
    """One colour per class: tab10 up to 10 classes, tab20 up to 20, else sampled from turbo."""
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    if count <= 20:
        return [colormaps["tab20"](i) for i in range(count)]
    return [colormaps["turbo"](i / max(count - 1, 1)) for i in range(count)]


def show_image(ax: Axes, image: np.ndarray | torch.Tensor) -> None:
    """Draw one uint8 ``[C, H, W]`` image (1 or 3 channels) without ticks."""
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    picture = np.asarray(image).transpose(1, 2, 0)
    if picture.shape[2] == 1:
        ax.imshow(picture[:, :, 0], cmap="gray", vmin=0, vmax=255)
    else:
        ax.imshow(picture)
    ax.set_xticks([])
    ax.set_yticks([])


MISTAKE_COLOR = "#D55E00"  # Okabe-Ito vermilion


def _draw_scatter(ax: Axes, projection: Projection, embeddings: Embeddings) -> None:
    coordinates, labels = projection.coordinates, embeddings.labels
    names = embeddings.class_names
    colors = class_colors(len(names))
    size = float(np.clip(3000 / max(len(labels), 1), 2, 25))
    for cls in np.unique(labels):
        chosen = labels == cls
        name = names[cls] if 0 <= cls < len(names) else str(cls)
        ax.scatter(coordinates[chosen, 0], coordinates[chosen, 1], s=size, alpha=0.7,
                   color=colors[cls % len(colors)], label=shorten_middle(name, 16), linewidths=0,
                   rasterized=True)  # fmt: skip
        if len(names) <= 20:  # the class name at the median of its points
            x, y = np.median(coordinates[chosen], axis=0)
            ax.text(x, y, shorten_middle(name, 12), fontsize=8, weight="bold", ha="center",
                    va="center", bbox={"boxstyle": "round,pad=0.15", "fc": "white",
                                       "ec": "none", "alpha": 0.7})  # fmt: skip
    if len(names) <= 20:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(len(names), 5),
                  fontsize=7, markerscale=max(1.0, 30 / size) ** 0.5, frameon=False)  # fmt: skip
    x_label, y_label = projection.axis_labels()
    ax.set_xlabel(x_label, fontsize=8)
    ax.set_ylabel(y_label, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.set_aspect("equal" if projection.method == "pca" else "auto", adjustable="datalim")


def _draw_thumbnail(ax: Axes, image: np.ndarray, text: str, *, other: bool, wrong: bool) -> None:
    show_image(ax, image)
    ax.set_title(text, fontsize=6.5, color=MISTAKE_COLOR if other else "black", pad=2)
    for spine in ax.spines.values():
        spine.set_visible(wrong)
        spine.set_color(MISTAKE_COLOR)
        spine.set_linewidth(2.5)


def draw_embeddings(
    projection: Projection,
    embeddings: Embeddings,
    images: np.ndarray | torch.Tensor,
    rows: NeighbourRows,
    path: str | Path,
    title: str = "",
) -> Path:
    """Scatter of the projection coloured by class, beside rows of nearest neighbours.

    ``images`` are the uint8 ``[N, C, H, W]`` images behind ``embeddings`` (same order). In the
    neighbour rows a red caption is a neighbour of another class than its query, and a red frame
    an image the model misclassified (caption ``true→predicted``; only when the model predicts
    the dataset's classes). ``title`` (e.g. model, dataset and split) heads the scatter. Writes
    one PNG atomically and returns its path.
    """
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    if len(images) != len(embeddings) or len(projection.coordinates) != len(embeddings):
        raise ValueError(
            f"{len(images)} images and {len(projection.coordinates)} points for "
            f"{len(embeddings)} embeddings"
        )
    columns = 1 + max((len(row) for row in rows.neighbours), default=0)
    count = max(len(rows.queries), 1)
    panel_height = max(5.0, 0.85 * count + 0.8)
    figure = new_figure((6.2 + 0.78 * columns, panel_height))
    left, right = figure.subfigures(1, 2, width_ratios=[6.2, 0.78 * columns])
    _draw_scatter(left.subplots(), projection, embeddings)
    method = "PCA" if projection.method == "pca" else "t-SNE"
    heading = f"{len(embeddings):,} embeddings, {method}"
    left.suptitle(f"{title}\n{heading}" if title else heading, fontsize=9)
    axes = right.subplots(count, columns, squeeze=False)
    for ax in axes.ravel():
        ax.set_axis_off()
    names, model_names = embeddings.class_names, embeddings.model_class_names
    labels, predictions = embeddings.labels, embeddings.predictions
    comparable = embeddings.comparable

    def caption(index: int, extra: str = "") -> tuple[str, bool]:
        wrong = comparable and predictions[index] != labels[index]
        # Both ends kept: class names often share their start (a_long_name_00, _01, ...).
        text = shorten_middle(names[labels[index]], 9)
        if wrong:
            text += "→" + shorten_middle(model_names[predictions[index]], 9)
        return text + extra, bool(wrong)

    for row, (query, neighbours, similarities) in enumerate(
        zip(rows.queries, rows.neighbours, rows.similarities, strict=True)
    ):
        text, wrong = caption(query)
        axes[row, 0].set_axis_on()
        _draw_thumbnail(axes[row, 0], images[query], "query " + text, other=False, wrong=wrong)
        for column, (index, similarity) in enumerate(zip(neighbours, similarities, strict=True)):
            text, wrong = caption(index, f" {similarity:.2f}")
            ax = axes[row, column + 1]
            ax.set_axis_on()
            _draw_thumbnail(ax, images[index], text,
                            other=bool(labels[index] != labels[query]), wrong=wrong)  # fmt: skip
    if not rows.queries:
        axes[0, 0].text(0.5, 0.5, "no images", ha="center", va="center")
    legend = "cosine nearest neighbours (similarity); red caption: another class than the query"
    if comparable:
        legend += ";\nred frame: misclassified by the model (true→predicted)"
    right.suptitle(legend, fontsize=7)
    return save_png(figure, path)
