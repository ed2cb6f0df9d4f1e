"""A checkpoint ready to serve: built once, in eval mode, with its preprocessing and classes."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainlab.data.batches import normalize_uint8
from trainlab.errors import RunError, TrainlabError
from trainlab.runs.checkpoint import load_checkpoint
from trainlab.runs.record import read_summary


def _select_device(name: str) -> torch.device:
    """``auto`` serves on CUDA when present, else the CPU; a named device is checked (an
    unknown name, or CUDA on a machine without it, is a one-line error, not a traceback)."""
    from trainlab.training import resolve_device

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return resolve_device(name)


class ServingHead(torch.nn.Module):
    """uint8 images -> class probabilities, normalisation and softmax included: the whole
    request path in one module, so that traced it is one call per batch. The worker thread then
    retakes the GIL once per batch instead of after every op, each time waiting for the event
    loop's Python (at 32 clients: 1,350 -> 1,900 requests/s)."""

    def __init__(self, model: torch.nn.Module, mean: Any, std: Any):
        super().__init__()
        self.model, self.mean, self.std = model, mean, std

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        # The training math itself; traced, its mean/std tensors become constants.
        x = normalize_uint8(images, self.mean, self.std)
        return self.model(x).float().softmax(dim=1)


def _traced(served: ServedModel) -> Any:
    """The serving head traced and frozen for inference, or None where tracing fails or
    changes the answer (models with data-dependent control flow keep the eager path)."""
    import warnings

    channels = served.preprocessing["channels"]
    height, width = served.preprocessing["image_size"]
    generator = torch.Generator().manual_seed(0)

    def images(count: int) -> torch.Tensor:
        pixels = torch.randint(0, 256, (count, channels, height, width), generator=generator)
        return pixels.to(torch.uint8).to(served.device)

    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation and tracer notices
            fast = torch.jit.freeze(torch.jit.trace(served.head, images(3), check_trace=False))
            probe = images(5)
            for _ in range(2):  # the first calls optimise the graph: pay that before serving
                same = torch.allclose(fast(probe), served.head(probe), atol=1e-5, rtol=1e-4)
    except Exception:
        return None
    return fast if same else None


@dataclass
class ServedModel:
    name: str
    model: torch.nn.Module = field(repr=False)
    preprocessing: dict[str, Any]
    class_names: list[str]
    device: torch.device
    run: dict[str, Any]  # metrics of the run that made it, when the checkpoint is in a run folder
    fast: Any = field(default=None, repr=False)  # traced + frozen head for /predict, or None

    def __post_init__(self) -> None:
        self.head = ServingHead(self.model, self.preprocessing["mean"],
                                self.preprocessing["std"]).eval()  # fmt: skip

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> ServedModel:
        """A checkpoint folder or a run folder (its ``checkpoint/``), or an exported ``.onnx``
        file (served with onnxruntime). Never unpickles."""
        path = Path(path)
        if path.suffix == ".onnx":
            from trainlab.serve.export import OnnxServedModel

            return OnnxServedModel(path)  # type: ignore[return-value]
        if path.is_file():  # TorchScript, .pth, ...: loading them would unpickle a user's file
            raise TrainlabError(f"{path} is not servable: serve a run folder, a checkpoint folder "
                                "or an .onnx file (`trainlab export RUN --format onnx`)")  # fmt: skip
        folder = path / "checkpoint" if (path / "checkpoint").is_dir() else path
        checkpoint = load_checkpoint(folder)
        if "epoch" in checkpoint.metadata and checkpoint.metadata["epoch"] is None:
            # A run that diverged (or ran out of budget) before its first validation keeps its
            # last weights for inspection; they would answer NaN or noise to every request.
            raise TrainlabError(f"{folder} holds no validated epoch: its run ended before one "
                                "(diverged, or a budget too short for an epoch; see its "
                                "summary.json), so there is no model to use; train again")  # fmt: skip
        target = _select_device(device)
        model = checkpoint.build_model(target).eval()
        try:
            summary = read_summary(folder.parent)  # None beside a bare checkpoint folder
        except RunError as error:  # a side file: the checkpoint itself is whole
            warnings.warn(f"{error}; the model is used without its run's metrics", stacklevel=2)
            summary = None
        run: dict[str, Any] = {}
        if summary is not None:
            # The folder's name, not its path: /model is public, the server's file system is not.
            run = {"name": folder.parent.resolve().name, "best_epoch": summary.get("best_epoch"),
                   "val": summary.get("val"),
                   "test": {k: v for k, v in (summary.get("test") or {}).items()
                            if isinstance(v, (int, float))}}  # fmt: skip
        served = cls(checkpoint.architecture.get("name", folder.parent.name), model,
                     checkpoint.preprocessing, list(checkpoint.class_names), target, run)  # fmt: skip
        return served

    def prepare_for_serving(self) -> None:
        """Trace the classifier for the server's many small batches (costs a second at start-up,
        so only the server pays it; one-off users such as predict, export and embed do not)."""
        self.fast = _traced(self)

    @torch.no_grad()
    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, C, H, W]`` -> softmax probabilities ``[B, K]`` (float32, CPU)."""
        return (self.fast or self.head)(images.to(self.device)).cpu()

    @torch.no_grad()
    def embeddings(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, C, H, W]`` -> penultimate-layer features ``[B, D]`` (float32, CPU)."""
        x = normalize_uint8(images.to(self.device), self.preprocessing["mean"],
                            self.preprocessing["std"])  # fmt: skip
        return self.model.forward_features(x).float().flatten(1).cpu()

    def info(self) -> dict[str, Any]:
        height, width = self.preprocessing["image_size"]
        return {"name": self.name, "classes": self.class_names,
                "input": {"channels": self.preprocessing["channels"], "height": height,
                          "width": width},
                "preprocessing": self.preprocessing, "device": str(self.device),
                "run": self.run}  # fmt: skip
