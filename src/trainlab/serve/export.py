"""Export a checkpoint to ONNX (served with onnxruntime) or TorchScript (for LibTorch/C++).

The graph takes what the server's preprocessing produces — uint8 ``[B, C, H, W]`` — and does
the normalisation itself, so an exported model cannot be fed differently scaled pixels by
mistake. It returns the logits and the penultimate-layer features (for ``/embed``). Class
names, preprocessing and the run's metrics travel inside the file (ONNX metadata), so
``trainlab serve model.onnx`` needs nothing else; loading it runs no pickle.

TorchScript files are for runtimes without Python (LibTorch). They are archives that
``torch.jit.load`` unpickles, so ``trainlab serve`` does not load them: serve the checkpoint or
the ONNX file instead.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from trainlab._io import atomic_path, check_writable
from trainlab.errors import TrainlabError
from trainlab.models.layers import Classifier
from trainlab.runs.checkpoint import find_checkpoint

METADATA_KEY = "trainlab"
OPSET = 17


class _Exported(nn.Module):
    def __init__(self, model: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (images.float() / 255 - self.mean) / self.std  # data.batches.normalize_uint8
        if type(self.model).forward is Classifier.forward:  # classifier ∘ features: run once
            features = self.model.forward_features(x)
            return self.model.classifier(features), features.flatten(1)
        return self.model(x), self.model.forward_features(x).flatten(1)


FORMATS = {"onnx": ".onnx", "torchscript": ".pt"}


_ARTICLE = {"onnx": "an", "torchscript": "a"}


def _refuse_exported(model_dir: str | Path) -> None:
    if Path(model_dir).suffix in (".onnx", *FORMATS.values()):
        raise TrainlabError(f"{model_dir} is already exported; export from the run or "
                            "checkpoint folder")  # fmt: skip


def _prepare(model_dir: str | Path) -> tuple[_Exported, torch.Tensor, str]:
    """The checkpoint's uint8-in wrapper, an example batch and the metadata JSON."""
    from trainlab.serve.model import ServedModel

    _refuse_exported(model_dir)
    served = ServedModel.load(model_dir, device="cpu")
    pre = served.preprocessing
    wrapper = _Exported(served.model, pre["mean"], pre["std"]).eval()
    height, width = pre["image_size"]
    example = torch.zeros(2, pre["channels"], height, width, dtype=torch.uint8)
    metadata = json.dumps({"name": served.name, "preprocessing": pre,
                           "class_names": served.class_names, "run": served.run})  # fmt: skip
    return wrapper, example, metadata


def export_model(model_dir: str | Path, fmt: str = "onnx", out: str | Path | None = None) -> Path:
    """Export a run or checkpoint folder as ``fmt`` (onnx, torchscript) to ``out`` (default: a
    ``model.onnx``/``model.pt`` beside the checkpoint folder: in the run folder for a run);
    returns the written path."""
    fmt = fmt.lower()  # `--format ONNX` is what people type
    if fmt not in FORMATS:
        raise TrainlabError(f"unknown export format {fmt!r}; available: {', '.join(FORMATS)}")
    _refuse_exported(model_dir)
    checkpoint = find_checkpoint(model_dir).resolve()
    # Beside the checkpoint folder (in the run folder): the checkpoint folder holds only it.
    out = Path(out) if out is not None else checkpoint.parent / f"model{FORMATS[fmt]}"
    other = {ext: name for name, ext in FORMATS.items() if name != fmt}
    if out.suffix in other:  # `serve model.onnx` would then fail to parse a TorchScript file
        raise TrainlabError(f"--out {out}: {out.suffix} is the {other[out.suffix]} extension; "
                            f"{_ARTICLE[fmt]} {fmt} export ends in {FORMATS[fmt]} (or pass --format "
                            f"{other[out.suffix]})")  # fmt: skip
    check_writable(out)  # before the export's work
    if out.suffix != FORMATS[fmt]:  # e.g. model.safetensors: the checkpoint's own weights
        raise TrainlabError(f"--out {out}: {_ARTICLE[fmt]} {fmt} export ends in {FORMATS[fmt]}")
    if checkpoint in out.resolve().parents:
        raise TrainlabError(f"--out {out}: that is inside the checkpoint folder {checkpoint}, "
                            "which holds only the checkpoint; write the export beside it")  # fmt: skip
    return export_onnx(model_dir, out) if fmt == "onnx" else export_torchscript(model_dir, out)


def export_torchscript(model_dir: str | Path, out: str | Path) -> Path:
    """Write ``out`` (a TorchScript archive, traced) with the metadata as ``trainlab.json``
    inside; load it with ``torch.jit.load(path, _extra_files={"trainlab.json": ""})``."""
    wrapper, example, metadata = _prepare(model_dir)
    out = Path(out)
    with atomic_path(out) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice: still what LibTorch runs
        traced = torch.jit.trace(wrapper, (example,), check_trace=False)
        torch.jit.save(traced, str(tmp), _extra_files={f"{METADATA_KEY}.json": metadata})
    return out


def _bicubic_enlarging(g: Any, image: Any, output_size: Any, *_: Any) -> Any:
    """``aten::_upsample_bicubic2d_aa`` (an hf model resizing as PIL's bicubic, which DeiT's,
    ConvNeXt's and Swin's processors use) as ONNX ``Resize``: enlarging, anti-aliasing changes
    nothing, and Resize's cubic with a = -0.5 without outside pixels is PIL's kernel (2.4e-7 from
    torch for 28 -> 224). Shrinking needs the anti-aliasing Resize lacks at opset 17: refused."""
    from torch.onnx import symbolic_helper

    node = g.original_node  # the traced node: its shapes are all known
    before = list(node.inputsAt(0).type().sizes())[-2:]
    after = list(node.output().type().sizes())[-2:]
    if None in before or any(new < old for new, old in zip(after, before, strict=True)):
        raise RuntimeError("anti-aliased bicubic shrinking has no ONNX form at this opset (Resize "
                           "cannot anti-alias); give the model images at least its input size")  # fmt: skip
    if symbolic_helper._is_packed_list(output_size):  # (H of the input, a constant W): traced
        one = g.op("Constant", value_t=torch.tensor([1]))
        sizes = [g.op("Reshape", g.op("Cast", v, to_i=7), one)  # to_i=7: int64
                 for v in symbolic_helper._unpack_list(output_size)]  # fmt: skip
        spatial = g.op("Concat", *sizes, axis_i=0)
    else:
        spatial = g.op("Constant", value_t=torch.tensor(
            list(symbolic_helper._maybe_get_const(output_size, "is")), dtype=torch.int64))  # fmt: skip
    batch_channels = g.op("Slice", g.op("Shape", image), g.op("Constant", value_t=torch.tensor([0])),
                          g.op("Constant", value_t=torch.tensor([2])))  # fmt: skip
    empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    return g.op("Resize", image, empty, empty, g.op("Concat", batch_channels, spatial, axis_i=0),
                mode_s="cubic", cubic_coeff_a_f=-0.5, exclude_outside_i=1,
                coordinate_transformation_mode_s="half_pixel")  # fmt: skip


@contextlib.contextmanager
def _stderr_discarded() -> Iterator[None]:
    """The TorchScript-based ONNX exporter prints the whole Torch IR graph (hundreds of lines)
    to the process's stderr when an op has no ONNX form, whatever its log setting: it writes
    at the C++ level, so the file descriptor is what must be redirected. Our error says why."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def export_onnx(model_dir: str | Path, out: str | Path) -> Path:
    """Write ``out`` (an .onnx file) from a run or checkpoint folder; returns its path."""
    import onnx

    wrapper, example, metadata = _prepare(model_dir)
    out = Path(out)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        torch.onnx.register_custom_op_symbolic(
            "aten::_upsample_bicubic2d_aa", _bicubic_enlarging, OPSET
        )
        try:
            with _stderr_discarded():
                torch.onnx.export(wrapper, (example,), str(tmp), input_names=["images"],
                                  output_names=["logits", "features"], opset_version=OPSET,
                                  dynamic_axes={"images": {0: "batch"}, "logits": {0: "batch"},
                                                "features": {0: "batch"}}, dynamo=False)  # fmt: skip
        except Exception as error:  # the exporter's own types: an op ONNX has no form for, ...
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error)
            raise TrainlabError(
                f"{model_dir}: this model cannot be exported to ONNX (opset {OPSET}): {reason}. "
                "`trainlab serve` serves the run folder itself, and `trainlab export "
                "--format torchscript` writes a traced model for LibTorch"
            ) from None
        graph = onnx.load(str(tmp))
        entry = graph.metadata_props.add()
        entry.key = METADATA_KEY
        entry.value = metadata
        onnx.save(graph, str(tmp))
    return out


class OnnxServedModel:
    """The ``ServedModel`` interface over an onnxruntime session."""

    def __init__(self, path: str | Path):
        import onnxruntime

        path = Path(path)
        try:
            self.session = onnxruntime.InferenceSession(str(path),
                                                        providers=["CPUExecutionProvider"])  # fmt: skip
        except Exception as error:  # onnxruntime raises its own exception types
            raise TrainlabError(f"cannot load {path} as an ONNX model: {error}") from None
        meta = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if meta is None:
            raise TrainlabError(f"{path} was not exported by trainlab (no {METADATA_KEY} metadata)")
        data = json.loads(meta)
        self.name: str = data["name"]
        self.preprocessing: dict[str, Any] = data["preprocessing"]
        self.class_names: list[str] = data["class_names"]
        self.run: dict[str, Any] = data.get("run") or {}
        self.device = torch.device("cpu")

    def prepare_for_serving(self) -> None:
        """onnxruntime already optimised the graph when the session was created."""

    def _run(self, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        logits, features = self.session.run(None, {"images": images.cpu().numpy()})
        return logits, features

    def probabilities(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._run(images)[0]).float().softmax(dim=1)

    def embeddings(self, images: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self._run(images)[1]).float()

    def info(self) -> dict[str, Any]:
        height, width = self.preprocessing["image_size"]
        return {"name": self.name, "classes": self.class_names, "format": "onnx",
                "input": {"channels": self.preprocessing["channels"], "height": height,
                          "width": width},
                "preprocessing": self.preprocessing, "device": "cpu", "run": self.run}  # fmt: skip
