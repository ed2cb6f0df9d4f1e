"""`trainlab embed` and `trainlab decode` on a real tiny run, and their one-line errors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from trainlab.analysis.decoder import load_decoder
from trainlab.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def run_dir(small_run):
    return small_run


def invoke(*args: str):
    return runner.invoke(app, [str(arg) for arg in args])


def test_help_has_examples():
    assert "embed" in invoke("--help").output and "decode" in invoke("--help").output
    for command in ("embed", "decode"):
        result = invoke(command, "--help")
        assert result.exit_code == 0 and "Examples" in result.output


def test_embed_writes_the_test_split_and_its_plot(run_dir):
    result = invoke("embed", run_dir)
    assert result.exit_code == 0, result.output
    out, plot = run_dir / "embeddings-test.npz", run_dir / "embeddings-test.png"
    assert f"wrote {out}" in result.output and f"wrote {plot} (PCA" in result.output
    assert "embedded 1,000 test images of mnist-5k with mlp: 32 dimensions" in result.output
    with np.load(out, allow_pickle=False) as data:
        assert data["embeddings"].shape == (1000, 32) and data["embeddings"].dtype == np.float32
        assert data["indices"].tolist() == list(range(1000))
        assert data["class_names"].tolist() == [str(digit) for digit in range(10)]
        meta = json.loads(str(data["metadata"]))
        accuracy = float(np.mean(data["predictions"] == data["labels"]))
    assert meta["dataset"] == "mnist-5k" and meta["split"] == "test" and meta["model"] == "mlp"
    assert meta["run_dir"] == str(run_dir.resolve())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert accuracy == pytest.approx(summary["test"]["accuracy"])  # the run's own test result
    assert plot.read_bytes()[:4] == b"\x89PNG"


def test_embed_the_runs_own_splits_with_tsne(run_dir, tmp_path):
    result = invoke("embed", run_dir, "--split", "val", "--limit", "60", "--projection", "tsne",
                    "--out", tmp_path / "val.npz", "--plot", tmp_path / "val-plot.png")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "(t-SNE; 10 query images × 5 neighbours)" in result.output
    assert (tmp_path / "val-plot.png").is_file() and not (tmp_path / "val.png").exists()
    val = np.load(tmp_path / "val.npz", allow_pickle=False)
    assert len(val["labels"]) == 60 and np.bincount(val["labels"]).tolist() == [6] * 10
    train = invoke("embed", run_dir, "--split", "train", "--no-plot", "--out", tmp_path / "t.npz")
    assert train.exit_code == 0, train.output
    train_indices = np.load(tmp_path / "t.npz", allow_pickle=False)["indices"]
    assert len(train_indices) == 300 and not set(train_indices) & set(val["indices"])


def test_decode_writes_the_decoder_and_three_figures(run_dir, tmp_path):
    out = tmp_path / "decoded"
    result = invoke("decode", run_dir, "--epochs", "2", "--limit", "400", "--pair", "3", "150",
                    "--out", out)  # fmt: skip
    assert result.exit_code == 0, result.output
    device = "cuda" if torch.cuda.is_available() else "cpu"  # the device auto picks
    assert f"on 400 mnist-5k training images, 2 epochs on {device}" in result.output
    assert "reconstruction error on 1,000 held-out test images: MSE" in result.output
    assert "decoder epoch   2/2" in result.output and f"wrote {out}/" in result.output
    for name in ("class_means.png", "interpolation.png", "reconstructions.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    decoder, meta = load_decoder(out)
    assert decoder.image_shape == (1, 28, 28) and decoder.embedding_dim == 32
    assert meta["training"]["images"] == 400 and len(meta["training"]["losses"]) == 2
    assert 0 < meta["test"]["mse"] < 1 and meta["figures"]["interpolation"] == "interpolation.png"
    assert not list(out.glob(".*part"))  # every file written atomically


def test_a_checkpoint_folder_writes_into_its_run_folder(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    result = invoke("embed", copy / "checkpoint", "--no-plot", "--limit", "50")
    assert result.exit_code == 0, result.output
    assert (copy / "embeddings-test.npz").is_file()
    assert not list((copy / "checkpoint").glob("embeddings*"))  # the served artifact stays as is


def test_a_bare_checkpoint_has_no_run_splits_and_gets_its_files_beside_it(run_dir, tmp_path):
    bare = tmp_path / "bare"
    shutil.copytree(run_dir / "checkpoint", bare)
    refused = invoke("embed", bare, "--dataset", "mnist-5k", "--split", "val")
    assert refused.exit_code == 2 and "the run's val split cannot be rebuilt" in refused.output
    result = invoke("embed", bare, "--dataset", "mnist-5k", "--no-plot", "--limit", "50")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "embeddings-mnist-5k-test.npz").is_file()
    assert not list(bare.glob("embeddings*"))  # the served artifact stays as is


def test_a_split_of_data_that_changed_since_training_is_refused(tmp_path):
    import trainlab

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (60, 8, 8), dtype=np.uint8)
    data = tmp_path / "mine.npz"
    np.savez(data, x_train=images, y_train=np.arange(60) % 2, x_test=images[:10],
             y_test=np.arange(10) % 2)  # fmt: skip
    trainlab.train({"data": {"dataset": str(data), "val_size": 12}, "model": {"name": "mlp"},
                    "epochs": 1, "progress": False, "out": str(tmp_path / "run")})  # fmt: skip
    assert invoke("embed", tmp_path / "run", "--split", "val", "--no-plot").exit_code == 0
    more = np.concatenate([images, images[:6]])  # images added: the same seed picks others
    np.savez(data, x_train=more, y_train=np.arange(66) % 2, x_test=images[:10],
             y_test=np.arange(10) % 2)  # fmt: skip
    for split in ("val", "train"):
        result = invoke("embed", tmp_path / "run", "--split", split, "--no-plot")
        assert result.exit_code == 2 and "training data changed since the run" in result.output
    assert invoke("embed", tmp_path / "run", "--no-plot").exit_code == 0  # test: the data's own


def test_a_diverged_model_is_refused_not_plotted(tmp_path):
    import trainlab

    run = tmp_path / "run"
    result = trainlab.train({"data": {"dataset": "mnist-5k", "train_size": 200, "val_size": 50},
                             "model": {"name": "mlp", "options": {"hidden": [16]}},
                             "optim": {"name": "sgd", "lr": 1e30}, "epochs": 2,
                             "progress": False, "out": str(run)})  # fmt: skip
    assert result.status == "diverged" and result.summary["best_epoch"] is None
    for command in ("embed", "decode", "export"):
        result = invoke(command, run, *(["--limit", "50"] if command != "export" else []))
        assert result.exit_code == 2 and "holds no validated epoch" in result.output
    assert not list(run.glob("embeddings*")) and not (run / "decode").exists()


def test_default_outputs_are_checked_before_the_work(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("embeddings*", "decode"))
    (copy / "embeddings-test.png").mkdir()  # the default figure's name is taken by a folder
    result = invoke("embed", copy, "--limit", "50")
    assert result.exit_code == 2 and "embeddings-test.png" in result.output
    assert not (copy / "embeddings-test.npz").exists()  # not written, then failed after


def test_a_large_split_is_refused_for_tsne_before_the_forward_pass(run_dir, monkeypatch):
    from trainlab.analysis import embeddings

    def no_forward_pass(*args, **kwargs):
        raise AssertionError("embedded before refusing")

    monkeypatch.setattr(embeddings, "compute_embeddings", no_forward_pass)
    monkeypatch.setattr(embeddings, "TSNE_MAX_POINTS", 500)
    result = invoke("embed", run_dir, "--projection", "tsne")
    assert result.exit_code == 2, result.output
    assert "at most 500 images, and the test split has 1,000; pass --limit 500" in result.output


def test_decode_learns_from_training_images_and_draws_from_embeddings(run_dir, tmp_path,
                                                                      monkeypatch):  # fmt: skip
    # What the figures show is checked against a recomputation, not only that PNGs exist: the
    # decoder sees training images only, class means are decoded from the mean embeddings, and
    # the interpolation runs between the two chosen test images.
    import torch

    from trainlab.analysis import decoder as decoding
    from trainlab.analysis.embeddings import compute_embeddings, load_model, load_run_dataset

    seen: dict[str, tuple] = {}

    def spy(name):
        real = getattr(decoding, name)

        def wrapper(*args, **kwargs):
            seen[name] = args
            return real(*args, **kwargs)

        monkeypatch.setattr(decoding, name, wrapper)

    for name in ("train_decoder", "draw_class_means", "draw_interpolation"):
        spy(name)
    out = tmp_path / "decoded"
    result = decoding.decode_run(run_dir, out=out, epochs=2, limit=200, pair=(3, 150))
    bundle, data = load_run_dataset(run_dir, command="decode")
    chosen = decoding.stratified_limit(bundle.train.labels, 200, data.split_seed)
    train_images = seen["train_decoder"][1]
    assert torch.equal(train_images, bundle.train.images[chosen])  # never the test images
    served, (decoder, _) = load_model(run_dir), decoding.load_decoder(out)
    embedded = compute_embeddings(served, train_images)[0]
    means, classes = decoding.class_mean_embeddings(embedded, bundle.train.labels[chosen])
    drawn = seen["draw_class_means"][0]
    assert classes == list(range(10))
    assert torch.equal(drawn, decoding.to_uint8(decoder.pixels(means)))
    first, second, between = seen["draw_interpolation"][:3]
    assert torch.equal(first, bundle.test.images[3]) and torch.equal(
        second, bundle.test.images[150]
    )
    ends = compute_embeddings(served, bundle.test.images[[3, 150]])[0]
    assert torch.equal(between[0], decoding.to_uint8(decoder.pixels(ends[:1]))[0])
    assert torch.equal(between[-1], decoding.to_uint8(decoder.pixels(ends[1:]))[0])
    # the baseline is the mean training image, scored on the test images
    mean = (train_images.double() / 255).mean(dim=0)
    direct = float(((bundle.test.images.double() / 255) - mean).square().mean())
    assert result.baseline_error == pytest.approx(direct, rel=1e-6)


def test_decode_defaults_to_the_run_folder(run_dir, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    result = invoke("decode", copy, "--epochs", "1", "--limit", "200", "--no-progress")
    assert result.exit_code == 0, result.output
    assert (copy / "decode" / "decoder.json").is_file() and "decoder epoch" not in result.output


@pytest.fixture
def rgb_npz(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "rgb.npz"
    np.savez(path, x_train=rng.integers(0, 256, (8, 32, 32, 3), dtype=np.uint8),
             y_train=np.arange(8) % 2, x_test=rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8),
             y_test=np.arange(4) % 2)  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["embed", "{tmp}/nope"], "no such run folder"),
        (["embed", "{tmp}/unfinished"], "has no checkpoint"),
        (
            ["embed", "{run}", "--dataset", "mnist-6k"],
            "unknown dataset 'mnist-6k' (did you mean 'mnist-5k'?); available: ",
        ),
        (["embed", "{run}", "--dataset", "fashion-mnist"], "is not available offline"),
        (["embed", "{run}", "--dataset", "{rgb}"], "has 3×32×32 images (channels×height×width)"),
        (["embed", "{run}", "--split", "holdout"], "unknown split 'holdout'"),
        (["embed", "{run}", "--projection", "umap"], "unknown projection 'umap'"),
        (["decode", "{run}", "--pair", "0", "1000"], "the test split of mnist-5k has 1000 images"),
        (["decode", "{tmp}/nope"], "no such run folder"),
        (["decode", "{run}", "--dataset", "{rgb}"], "but the model takes 1×28×28"),
        (["embed", "{run}", "--device", "bogus"], "unknown device 'bogus'; use auto, cpu"),
        (["decode", "{run}", "--device", "gpu0"], "unknown device 'gpu0'; use auto, cpu"),
        # the .npz and the .png are different files, checked before any work
        (["embed", "{run}", "--out", "{tmp}/same.png"], "the embeddings file is an .npz"),
        (["embed", "{run}", "--plot", "{tmp}/e.npz"], "the figure is a PNG; end it in .png"),
        (["embed", "{run}", "--out", "{tmp}/afile/e.npz"], "afile is a file, not a folder"),
        (["embed", "{run}", "--limit", "1", "--projection", "tsne"], "t-SNE needs at least 2"),
        (["decode", "{run}", "--out", "{tmp}/afile"], "afile is a file; give a folder"),
        (["decode", "{run}", "--pair", "3", "3"], "needs two different test images"),
    ],
)
def test_mistakes_are_one_line(run_dir, tmp_path, rgb_npz, monkeypatch, args, message):
    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path / "empty-cache"))
    (tmp_path / "afile").write_text("not a folder")
    (tmp_path / "unfinished").mkdir()
    shutil.copy(run_dir / "config.yaml", tmp_path / "unfinished" / "config.yaml")
    filled = [a.format(tmp=tmp_path, run=run_dir, rgb=rgb_npz) for a in args]
    result = invoke(*filled)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "empty-cache").exists()  # nothing was downloaded
