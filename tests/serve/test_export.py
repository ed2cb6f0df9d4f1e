"""Export: ONNX and TorchScript give the checkpoint's predictions; ONNX is served by onnxruntime
under uvicorn; the server refuses files it would have to unpickle."""

from __future__ import annotations

import os

import httpx
import numpy as np
import pytest
import torch

from live import png, uvicorn_thread
from trainlab.serve.export import OnnxServedModel, export_model, export_onnx
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
    from trainlab.serve.app import create_app

    _, onnx_path = exported
    with uvicorn_thread(create_app(ServedModel.load(onnx_path))) as url:
        response = httpx.post(
            f"{url}/predict", files={"file": ("z.png", png(np.zeros((28, 28), np.uint8)))}
        )
        assert response.status_code == 200 and len(response.json()["predictions"]) == 5
        assert httpx.get(f"{url}/model").json()["format"] == "onnx"


def test_export_cli_and_bad_files(exported, tmp_path):
    from typer.testing import CliRunner

    from trainlab.cli import app
    from trainlab.errors import TrainlabError

    run_dir, _ = exported
    result = CliRunner().invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 0 and (tmp_path / "m.onnx").is_file()
    capitals = CliRunner().invoke(app, ["export", str(run_dir), "--format", "TorchScript",
                                        "--out", str(tmp_path / "m.pt")])  # fmt: skip
    assert capitals.exit_code == 0 and "torch.jit.load" in capitals.output
    bad = CliRunner().invoke(app, ["export", str(run_dir), "--format", "tflite"])
    assert bad.exit_code == 2 and "unknown export format" in bad.output
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(TrainlabError, match="cannot load"):
        OnnxServedModel(tmp_path / "junk.onnx")


def test_torchscript_gives_the_checkpoints_predictions_and_carries_its_metadata(exported, tmp_path):
    import json
    import warnings

    from trainlab.data import load_dataset

    run_dir, _ = exported
    path = export_model(run_dir, "torchscript", tmp_path / "model.pt")
    extra = {"trainlab.json": ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(path), _extra_files=extra)  # our own file, in a test
    meta = json.loads(extra["trainlab.json"])
    original = ServedModel.load(run_dir, device="cpu")
    assert meta["class_names"] == original.class_names
    assert meta["preprocessing"] == original.preprocessing
    images = load_dataset("mnist-5k").test.images[:33]  # another batch size than the trace's
    logits, features = scripted(images)
    assert torch.allclose(logits.softmax(1), original.probabilities(images), atol=1e-5)
    assert torch.allclose(features, original.embeddings(images), atol=1e-4)


def test_default_export_paths_and_refusals(exported, tmp_path):
    from trainlab.errors import TrainlabError

    run_dir, onnx_path = exported
    assert export_model(run_dir, "torchscript") == run_dir / "model.pt"
    # Given the checkpoint folder itself, the export lands beside it, not in it.
    assert export_model(run_dir / "checkpoint", "torchscript") == run_dir / "model.pt"
    with pytest.raises(TrainlabError, match="not servable"):
        ServedModel.load(run_dir / "model.pt")  # TorchScript archives are unpickled: never served
    with pytest.raises(TrainlabError, match="already exported"):
        export_model(onnx_path, "torchscript")
    weights = run_dir / "checkpoint" / "model.safetensors"
    before = weights.read_bytes()
    with pytest.raises(TrainlabError, match=r"a torchscript export ends in \.pt"):
        export_model(run_dir, "torchscript", weights)  # reported success, then broke the run
    with pytest.raises(TrainlabError, match="inside the checkpoint folder"):
        export_model(run_dir, "onnx", run_dir / "checkpoint" / "model.onnx")
    assert weights.read_bytes() == before


def test_a_model_onnx_cannot_express_is_a_clear_error_and_leaves_no_file(exported, tmp_path,
                                                                         monkeypatch, capfd):  # fmt: skip
    from trainlab.errors import TrainlabError

    def refuse(*args, **kwargs):
        os.write(2, b"Torch IR graph at exception: graph(%images : Byte(...)) ...\n")  # C++ level
        raise RuntimeError("Exporting the operator 'aten::_upsample_bicubic2d_aa' to ONNX opset "
                           "version 17 is not supported.\nPlease feel free to request support")  # fmt: skip

    monkeypatch.setattr(torch.onnx, "export", refuse)
    run_dir, _ = exported
    with pytest.raises(TrainlabError, match=r"cannot be exported to ONNX .*bicubic.*torchscript"):
        export_onnx(run_dir, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []  # no half-written file
    assert "Torch IR" not in capfd.readouterr().err  # was: hundreds of lines before the error
    os.write(2, b"stderr works again\n")
    assert "stderr works again" in capfd.readouterr().err


@pytest.mark.integration
def test_a_vit_with_a_class_token_exports_for_any_batch_size(tmp_path):
    """The class token is expanded to the batch from its traced shape: one image, seven, 33."""
    import warnings

    import trainlab
    from trainlab.data import load_dataset

    trainlab.train({"data": {"dataset": "mnist-5k", "train_size": 200, "val_size": 100},
                    "model": {"name": "vit", "options": {"dim": 32, "depth": 1, "heads": 2,
                                                         "pool": "cls"}},
                    "epochs": 1, "progress": False, "out": str(tmp_path / "run")})  # fmt: skip
    original = ServedModel.load(tmp_path / "run", device="cpu")
    onnx = ServedModel.load(export_onnx(tmp_path / "run", tmp_path / "vit.onnx"))
    path = export_model(tmp_path / "run", "torchscript", tmp_path / "vit.pt")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        scripted = torch.jit.load(str(path))  # our own file, in a test
    images = load_dataset("mnist-5k").test.images[:33]
    for count in (1, 7, 33):
        expected = original.probabilities(images[:count])
        assert torch.allclose(onnx.probabilities(images[:count]), expected, atol=1e-5), count
        assert torch.allclose(scripted(images[:count])[0].softmax(1), expected, atol=1e-5), count
