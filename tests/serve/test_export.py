"""ONNX export: same predictions as the checkpoint, served by onnxruntime under uvicorn."""

from __future__ import annotations

import io
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from trainlab.serve.export import OnnxServedModel, export_onnx
from trainlab.serve.model import ServedModel


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    import trainlab

    folder = tmp_path_factory.mktemp("export")
    trainlab.train({"data": {"dataset": "mnist-5k", "train_size": 300, "val_size": 100},
                    "model": {"name": "cnn"}, "epochs": 1, "progress": False,
                    "out": str(folder / "run")})  # fmt: skip
    return folder / "run", export_onnx(folder / "run", folder / "model.onnx")


def test_onnx_gives_the_checkpoints_predictions(exported):
    from trainlab.data import load_dataset

    run_dir, onnx_path = exported
    images = load_dataset("mnist-5k").test.images[:64]
    original, onnx = ServedModel.load(run_dir, device="cpu"), ServedModel.load(onnx_path)
    assert isinstance(onnx, OnnxServedModel)
    assert onnx.class_names == original.class_names and onnx.preprocessing == original.preprocessing
    p_torch, p_onnx = original.probabilities(images), onnx.probabilities(images)
    assert torch.allclose(p_torch, p_onnx, atol=1e-5)
    assert torch.equal(p_torch.argmax(1), p_onnx.argmax(1))
    assert torch.allclose(original.embeddings(images), onnx.embeddings(images), atol=1e-4)
    assert onnx.info()["run"]["test"]["accuracy"] == original.info()["run"]["test"]["accuracy"]


@pytest.mark.integration
def test_an_onnx_model_behind_the_api(exported):
    import uvicorn

    from postgres_server import free_port
    from trainlab.serve.app import create_app

    _, onnx_path = exported
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ServedModel.load(onnx_path)), host="127.0.0.1",
                                           port=port, log_level="warning"))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        buffer = io.BytesIO()
        Image.fromarray(np.zeros((28, 28), np.uint8)).save(buffer, format="PNG")
        response = httpx.post(
            f"http://127.0.0.1:{port}/predict", files={"file": ("z.png", buffer.getvalue())}
        )
        assert response.status_code == 200 and len(response.json()["predictions"]) == 5
        assert httpx.get(f"http://127.0.0.1:{port}/model").json()["format"] == "onnx"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_export_cli_and_bad_files(exported, tmp_path):
    from typer.testing import CliRunner

    from trainlab.cli import app
    from trainlab.errors import TrainlabError

    run_dir, _ = exported
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0 and (tmp_path / "m.onnx").is_file()
    bad = CliRunner().invoke(app, ["export", str(run_dir), "--format", "tflite"])
    assert bad.exit_code == 2 and "unknown export format" in bad.output
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(TrainlabError, match="cannot load"):
        OnnxServedModel(tmp_path / "junk.onnx")
