import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from trainlab.cli import app, augment_overrides, early_stopping_overrides, flag_overrides

runner = CliRunner()
SMALL = [
    "--dataset",
    "mnist-5k",
    "--train-size",
    "200",
    "--val-size",
    "100",
    "--epochs",
    "1",
    "--model",
    "mlp",
    "--model-options",
    "hidden=[16]",
    "--no-progress",
]


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_lists_commands_and_train_help_has_examples():
    result = invoke("--help")
    assert result.exit_code == 0
    for command in ("train", "datasets", "fetch", "models", "augment-preview"):
        assert command in result.output
    train_help = invoke("train", "--help").output
    assert "--early-stopping" in train_help and "Examples" in train_help


def test_help_keeps_angle_bracket_placeholders():
    # Help is rendered as markdown, where a bare <time> would be dropped as an HTML tag.
    result = runner.invoke(app, ["train", "--help"], env={"COLUMNS": "200"})
    assert "runs/<time>-<dataset>-<model>" in result.output


def test_console_script_is_installed():
    result = subprocess.run(
        [sys.executable, "-m", "trainlab", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0 and "train" in result.stdout


def test_datasets_and_models_catalogues():
    datasets = invoke("datasets")
    assert datasets.exit_code == 0
    for name in ("mnist-5k", "mnist", "fashion-mnist", "kmnist", "k49", "cifar10", "cifar100"):
        assert name in datasets.output
    models = invoke("models")
    assert models.exit_code == 0
    for name in ("mlp", "cnn", "vgg", "spinalvgg", "resnet", "fastnet", "vit", "gru"):
        assert name in models.output


def test_datasets_takes_data_root_and_says_what_the_cache_holds(tmp_path, monkeypatch):
    import numpy as np

    from trainlab.data.formats import ArrayDataset
    from trainlab.data.registry import DECODED_NAME, get_spec

    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path / "elsewhere"))
    root = tmp_path / "cache"
    images, labels = np.zeros((2, 1, 28, 28), np.uint8), np.array([0, 1])
    decoded = ArrayDataset(images, labels, images, labels, [str(i) for i in range(10)])
    decoded.save(root / "mnist" / DECODED_NAME, get_spec("mnist").fingerprint())
    (root / "kmnist").mkdir()
    for file in get_spec("kmnist").files:
        (root / "kmnist" / file.name).write_bytes(b"not checked yet")
    result = runner.invoke(app, ["datasets", "--data-root", str(root)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    rows = {line.split()[0]: line.split()[6] for line in result.output.splitlines()[1:8]}
    assert rows == {"cifar10": "no", "cifar100": "no", "fashion-mnist": "no", "k49": "no",
                    "kmnist": "unverified", "mnist": "ready", "mnist-5k": "bundled"}  # fmt: skip
    assert f"cache {root}: ready = verified and decoded" in result.output
    assert "unverified" in invoke("datasets", "--help").output


def test_fetch_of_a_path_that_does_not_exist_downloads_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path / "cache"))
    import dataclasses

    from trainlab.data import registry

    # Were it taken as the name "mnist", the download would go nowhere but to this loopback port.
    spec = dataclasses.replace(registry.get_spec("mnist"), mirrors=())
    monkeypatch.setitem(registry._REGISTRY, "mnist", spec)
    monkeypatch.setenv("TRAINLAB_MIRROR", "http://127.0.0.1:9/")
    result = runner.invoke(app, ["fetch", "./mnist"])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert (
        "no such file or folder: ./mnist (for the registered dataset, write its name: mnist)"
        in (result.output)
    )
    assert not (tmp_path / "cache").exists()


def test_fetch_explains_what_it_did_or_why_it_could_not(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINLAB_DATA", str(tmp_path / "cache"))
    bundled = invoke("fetch", "mnist-5k")
    assert bundled.exit_code == 0
    assert "mnist-5k: 4,000 train / 1,000 test images, 10 classes, bundled" in bundled.output
    empty = tmp_path / "kit"
    empty.mkdir()
    missing = runner.invoke(app, ["fetch", "mnist", "--from", str(empty)])
    assert missing.exit_code == 2 and "Traceback" not in missing.output
    assert "does not hold the mnist files: train-images-idx3-ubyte.gz (missing)" in missing.output
    assert "(or their decompressed copies, without .gz)" in missing.output
    assert not (tmp_path / "cache" / "mnist").exists()
    two = runner.invoke(app, ["fetch", "mnist", "fashion-mnist", "--from", str(empty)])
    assert two.exit_code == 2 and "--from takes one dataset name" in two.output


def test_train_with_flags_writes_the_run_and_prints_a_summary(tmp_path):
    out = tmp_path / "k1"
    result = invoke(
        "train",
        *SMALL,
        "--optimizer",
        "adam",
        "--lr",
        "1e-3",
        "--augment",
        "rotate=15,translate=0.1",
        "--early-stopping",
        "patience=5",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "run summary" in result.output and "test" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed"
    config = (out / "config.yaml").read_text()
    assert "name: adam" in config and "rotate: 15" in config and "patience: 5" in config


def test_config_file_then_set_overrides_win(tmp_path):
    config_file = tmp_path / "c.yaml"
    config_file.write_text("optim:\n  name: sgd\n  lr: 0.5\ndata:\n  batch_size: 32\n")
    out = tmp_path / "run"
    result = invoke(
        "train",
        "--config",
        str(config_file),
        *SMALL,
        "--set",
        "optim.lr=0.05",
        "--set",
        "data.batch_size=64",
        "--out",
        str(out),
    )
    assert result.exit_code == 0, result.output
    config = (out / "config.yaml").read_text()
    assert "name: sgd" in config and "lr: 0.05" in config and "batch_size: 64" in config


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "vgg19"], "unknown model 'vgg19'"),
        (["--dataset", "nope"], "unknown dataset 'nope'"),
        (["--set", "optim.lr"], "key=value"),
        (["--set", "optim.lr=-1"], "optim.lr"),
        (["--optimizer", "lbfgs"], "optim.name"),
        (["--augment", "spin=3"], "spin"),
        (["--config", "missing.yaml"], "config file not found"),
        (
            ["--optimizer", "sgd", "--momentum", "0.5"],  # was: saved as used, trained without it
            "optim.momentum applies to the momentum and nesterov optimizers, not sgd",
        ),
        (
            ["--optimizer", "rmsprop", "--set", "optim.betas=[0.8,0.99]"],
            "optim.betas applies to the adam and adamw optimizers, not rmsprop",
        ),
    ],
)
def test_user_mistakes_give_one_clear_line_and_exit_2(args, message, tmp_path):
    result = runner.invoke(app, ["train", "--no-progress", "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_resume_of_a_finished_run_says_so(tmp_path):
    out = tmp_path / "run"
    assert invoke("train", *SMALL, "--out", str(out)).exit_code == 0
    result = runner.invoke(app, ["train", "--resume", str(out)])
    assert result.exit_code == 2 and "already finished" in result.output


def test_augment_preview_writes_a_png(tmp_path):
    out = tmp_path / "grid.png"
    result = invoke(
        "augment-preview",
        "--dataset",
        "mnist-5k",
        "--augment",
        "rotate=30",
        "--out",
        str(out),
        "--samples",
        "3",
        "--variants",
        "4",
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_augment_preview_shows_what_training_with_a_data_kind_uses(tmp_path):
    import numpy as np

    images = np.full((20, 12, 12), 250, np.uint8)  # dark ink on white paper, no kind recorded
    images[:, 4:8, 5:7] = 10
    np.savez(tmp_path / "scans.npz", x_train=images, y_train=np.arange(20) % 2,
             x_test=images[:4], y_test=np.arange(4) % 2)  # fmt: skip
    arguments = ["augment-preview", "--dataset", str(tmp_path / "scans.npz"),
                 "--out", str(tmp_path / "p.png")]  # fmt: skip
    as_digits = invoke(*arguments, "--data-kind", "digits")
    assert as_digits.exit_code == 0, as_digits.output
    assert "rotate=10.0" in as_digits.output and "fill=edge" in as_digits.output
    assert "rotate" not in invoke(*arguments).output  # unknown data: a small shift only
    wrong = invoke(*arguments, "--data-kind", "letters")
    assert wrong.exit_code == 2 and "data.kind" in wrong.output


def test_flag_helpers():
    assert early_stopping_overrides("off") == ["early_stopping.enabled=false"]
    assert early_stopping_overrides("patience=3,monitor=val.accuracy") == [
        "early_stopping.enabled=true",
        "early_stopping.patience=3",
        "monitor=val.accuracy",
    ]
    assert augment_overrides("none")[0].startswith("data.augment={")
    assert '"rotate": 15' in augment_overrides("rotate=15")[0]
    assert augment_overrides("auto") == ["data.augment=auto"]
    assert flag_overrides(lr=0.1, epochs=None, offline=True) == [
        "optim.lr=0.1",
        "data.download=false",
    ]


def test_models_name_shows_options():
    result = invoke("models", "vit")
    assert result.exit_code == 0 and "patch_size" in result.output and "dim" in result.output
    assert runner.invoke(app, ["models", "vgg19"]).exit_code == 2


def test_early_stopping_runs_from_the_command_line(tmp_path):
    out = tmp_path / "es"
    args = [a if a != "1" else "8" for a in SMALL]  # 8 epochs
    result = invoke(
        "train", *args, "--early-stopping", "patience=1,min_delta=5,mode=min", "--out", str(out)
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "early_stopped" and summary["epochs_run"] == 2


def test_own_npz_and_image_folder(tmp_path):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    npz = tmp_path / "my_digits.npz"
    np.savez(
        npz,
        x_train=rng.integers(0, 255, (60, 12, 12), dtype=np.uint8),
        y_train=np.arange(60) % 3,
        x_test=rng.integers(0, 255, (9, 12, 12), dtype=np.uint8),
        y_test=np.arange(9) % 3,
        class_names=np.array(["a", "b", "c"]),
    )
    result = invoke(
        "train",
        "--dataset",
        str(npz),
        "--epochs",
        "1",
        "--model",
        "mlp",
        "--no-progress",
        "--data-kind",
        "digits",
        "--out",
        str(tmp_path / "n"),
    )
    assert result.exit_code == 0, result.output
    config = (tmp_path / "n" / "config.yaml").read_text()
    assert "kind: digits" in config and "hflip: false" in config and str(npz.resolve()) in config

    for split, count in (("train", 8), ("test", 3)):
        for label in ("cat", "dog"):
            folder = tmp_path / "imgs" / split / label
            folder.mkdir(parents=True)
            for index in range(count):
                Image.fromarray(rng.integers(0, 255, (10, 10), dtype=np.uint8)).save(
                    folder / f"{index}.png"
                )
    result = invoke(
        "train",
        "--dataset",
        str(tmp_path / "imgs"),
        "--epochs",
        "1",
        "--model",
        "cnn",
        "--no-progress",
        "--val-size",
        "4",
        "--out",
        str(tmp_path / "f"),
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "f" / "summary.json").read_text())
    assert summary["dataset"]["classes"] == ["cat", "dog"] and summary["dataset"]["test_size"] == 6


def test_budget_and_auto_epochs_from_flags(tmp_path):
    result = invoke(
        "train", *SMALL[:-3], "--no-progress", "--budget", "1", "--out", str(tmp_path / "b")
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "b" / "summary.json").read_text())["status"] == "budget_exhausted"
    args = [a if a != "1" else "auto" for a in SMALL]
    assert (
        invoke(
            "train", *args, "--model-options", "hidden=[16,8]", "--out", str(tmp_path / "a")
        ).exit_code
        == 0
    )
    assert "- 16\n    - 8" in (tmp_path / "a" / "config.yaml").read_text()


def test_resume_a_killed_run_from_the_command_line(tmp_path):
    import trainlab
    from trainlab.config import load_config
    from trainlab.engine.callbacks import Callback

    class Kill(Callback):
        def on_epoch_end(self, trainer, record):
            raise KeyboardInterrupt

    out = tmp_path / "k"
    config = load_config(
        overrides=[
            "data.train_size=200",
            "data.val_size=100",
            "epochs=3",
            "model.name=mlp",
            "progress=false",
            f"out={out}",
        ]
    )
    with pytest.raises(KeyboardInterrupt):
        trainlab.train(config, callbacks=[Kill()])
    for flags in (["--epochs", "2"], ["--seed", "0"], ["--label-smoothing", "0"]):
        conflict = runner.invoke(app, ["train", "--resume", str(out), *flags])
        assert conflict.exit_code == 2 and f"drop {flags[0]}" in conflict.output, flags
    result = invoke("train", "--resume", str(out), "--device", "cpu", "--no-progress")
    assert result.exit_code == 0, result.output
    assert json.loads((out / "summary.json").read_text())["epochs_run"] == 3


def test_ctrl_c_names_the_folder_to_resume(tmp_path, monkeypatch):
    from trainlab.engine.loop import Trainer

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "fit", interrupted)
    result = runner.invoke(app, ["train", *SMALL, "--out", str(tmp_path / "i")])
    assert result.exit_code == 130
    assert f"--resume {tmp_path / 'i'}" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "cuda:x"], "unknown device"),
        (["--out", "/proc/forbidden/run"], "cannot create run folder"),
    ],
)
def test_more_mistakes_are_one_line(args, message):
    result = runner.invoke(app, ["train", *SMALL, *args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def damage(folder, name, content: bytes) -> None:
    (folder / name).write_bytes(content)


@pytest.mark.parametrize(
    ("file", "content", "commands"),
    [
        (
            "summary.json",
            b'{"status": "comp',
            [["report"], ["train", "--resume"]],
        ),
        ("history.csv", b"epoch,train_loss\n1,abc\n", [["report"]]),
        ("environment.json", b'{"x": ', [["report"]]),
        ("environment.json", b"[1, 2]", [["report"]]),  # JSON, but not the object it must be
        ("config.yaml", b"data:\n  dataset: [\n", [["train", "--resume"], ["embed"]]),
        ("config.yaml", b"\xff\xfe\x00bad", [["decode"]]),
    ],
)
def test_a_damaged_run_folder_is_one_line_naming_the_file(small_run, tmp_path, file, content,
                                                          commands):  # fmt: skip
    import shutil

    from PIL import Image

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    damage(run, file, content)
    png = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(png)
    for command in commands:
        args = [command[0], *(a.format(png=png) for a in command[1:])]
        at = 2 if command[0] == "train" else 1  # train --resume RUN; the others take RUN first
        args.insert(at, str(run))
        if command[0] in ("report", "export", "decode"):
            args += ["--out", str(tmp_path / f"out-{command[0]}")]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert "Traceback" not in result.output and str(run / file) in result.output, args
        assert len(result.output.strip().splitlines()) == 1, result.output


@pytest.mark.parametrize(
    ("command", "content", "message"),
    [
        (["train", "--config"], b"\xff\xfe\x00bad", "is not UTF-8 text"),
        (["sweep", "--study", "s", "--dry-run", "--grid-file"], b"a:\n b: [\n", "not valid YAML"),
        (["tune", "--study", "s", "--dry-run", "--space"], b"\xff\xfe", "is not UTF-8 text"),
        (["train", "--config"], None, "is a folder; give the YAML file"),
    ],
)
def test_unreadable_config_files_are_one_line(tmp_path, command, content, message):
    path = tmp_path / "file.yaml"
    if content is None:
        path.mkdir()
    else:
        path.write_bytes(content)
    result = runner.invoke(app, [*command, str(path)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["predict", "{run}", "{png}", "--device", "gpu"],
        ["serve", "{run}", "--device", "gpu"],
        ["sweep", "--study", "s", "--device", "gpu", "--grid", "optim.lr=0.1"],
    ],
)
def test_an_unknown_device_is_refused_before_any_work(small_run, tmp_path, args):
    from PIL import Image

    png = tmp_path / "digit.png"
    Image.new("L", (28, 28)).save(png)
    filled = [a.format(run=small_run, png=png) for a in args]
    result = runner.invoke(app, [*filled, "--runs-dir", str(tmp_path)] if args[0] == "sweep"
                           else filled)  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "unknown device 'gpu'; use auto, cpu" in result.output
    assert not (tmp_path / "studies.db").exists()


def test_a_model_that_cannot_be_built_leaves_no_run_folder(tmp_path):
    out = tmp_path / "run"
    result = runner.invoke(app, ["train", *SMALL, "--model-options", "width=-1", "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert not out.exists()


def test_a_damaged_summary_does_not_stop_its_intact_checkpoint(small_run, tmp_path):
    import shutil

    from PIL import Image

    run = tmp_path / "run"
    shutil.copytree(small_run, run, ignore=shutil.ignore_patterns("embeddings*", "decode"))
    damage(run, "summary.json", b'{"status": "comp')  # a side file: the model is whole
    Image.new("L", (28, 28)).save(tmp_path / "digit.png")
    for args in (["predict", str(run), str(tmp_path / "digit.png")],
                 ["export", str(run), "--out", str(tmp_path / "m.onnx")]):  # fmt: skip
        with pytest.warns(UserWarning, match="without its run's metrics"):
            result = runner.invoke(app, args)
        assert result.exit_code == 0, result.output


def test_writing_onto_a_folder_names_the_users_path(small_run, tmp_path):
    (tmp_path / "img").mkdir()
    result = runner.invoke(app, ["export", str(small_run), "--out", str(tmp_path / "img")])
    assert result.exit_code == 2, result.output
    assert f"{tmp_path / 'img'} is a folder; give a file name" in result.output
    assert ".part" not in result.output


def test_model_descriptions_keep_their_brackets():
    result = invoke("models", "hf:some/model")  # rich markup would eat "[hf]"
    assert result.exit_code == 0 and "'trainlab[hf]'" in result.output.replace("\n", "")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "{run}", "--format", "torchscript", "--out", "{tmp}/m.onnx"],
         ".onnx is the onnx extension; a torchscript export ends in .pt"),
        (["export", "{run}", "--out", "{tmp}/m.pt"], ".pt is the torchscript extension"),
        (["augment-preview", "--dataset", "mnist-5k", "--out", "{tmp}/p.jpg"],
         "the preview is a PNG image; end the name in .png"),
        (["export", "{run}", "--out", "{tmp}/afile/m.onnx"], "afile is a file, not a folder"),
    ],
)  # fmt: skip
def test_outputs_whose_name_contradicts_their_content_are_refused(small_run, tmp_path, args,
                                                                   message):  # fmt: skip
    (tmp_path / "afile").write_text("a file")
    result = runner.invoke(app, [a.format(run=small_run, tmp=tmp_path) for a in args])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]  # nothing written


def test_messages_name_the_real_problem(tmp_path, monkeypatch):
    import numpy as np
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    zeros = np.zeros((20, 8, 8), np.uint8)
    np.savez("one.npz", x_train=zeros, y_train=np.zeros(20, np.int64), x_test=zeros[:5],
             y_test=np.zeros(5, np.int64))  # fmt: skip
    (tmp_path / "img" / "a").mkdir(parents=True)
    for index in range(6):
        Image.new("L", (8, 8)).save(tmp_path / "img" / "a" / f"{index}.png")
    (tmp_path / "nonempty").mkdir()
    (tmp_path / "nonempty" / "notes.txt").write_text("mine")
    cases = [
        (["fetch", "one.npz"], "one.npz is a local file or folder: it needs no fetching"),
        (["report", "nothere/"], "no such run folder: nothere"),
        (["train", "--resume", "nothere"], "no such run folder: nothere"),
        (["train", *SMALL, "--out", "nonempty"], "it is not a run folder; choose another --out"),
        (["train", "--model", "hf:"], "model 'hf:' names no model id or folder"),
        (["train", "--early-stopping", "maybe"], "use on, off, or key=value settings"),
        (["train", "--dataset", "one.npz"], "has 1 class ('0'); a classifier needs at least two"),
        (["train", "--dataset", "img"], "has 1 class ('a'); a classifier needs at least two"),
    ]
    for args, message in cases:
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "--resume" not in result.output or args[1] == "--resume"
    assert not (tmp_path / "runs").exists()  # no empty run folder from any of them


def test_a_registered_name_is_fetched_even_beside_a_same_named_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mnist-5k").mkdir()  # the cache itself when TRAINLAB_DATA=.
    result = runner.invoke(app, ["fetch", "mnist-5k"])
    assert result.exit_code == 0, result.output
    assert "mnist-5k: 4,000 train / 1,000 test images, 10 classes, bundled" in result.output


def test_one_class_data_is_refused_for_training_only(tmp_path):
    from PIL import Image

    (tmp_path / "img" / "cat").mkdir(parents=True)
    for index in range(6):
        Image.new("L", (8, 8), color=index * 40).save(tmp_path / "img" / "cat" / f"{index}.png")
    preview = runner.invoke(app, ["augment-preview", "--dataset", str(tmp_path / "img"),
                                  "--out", str(tmp_path / "p.png")])  # fmt: skip
    assert preview.exit_code == 0, preview.output  # looking at one class is fine
    train = runner.invoke(app, ["train", "--dataset", str(tmp_path / "img"), "--epochs", "1",
                                "--out", str(tmp_path / "run")])  # fmt: skip
    assert train.exit_code == 2 and "has 1 class ('cat')" in train.output
    assert not (tmp_path / "run").exists()


def test_a_failed_write_is_one_line_and_still_an_oserror(tmp_path):
    from trainlab._io import write_text_atomic
    from trainlab.errors import RunError

    (tmp_path / "afile").write_text("x")
    with pytest.raises(OSError, match=r"cannot write .*afile/out\.txt") as caught:
        write_text_atomic(tmp_path / "afile" / "out.txt", "hello")  # a read-only cache is let be
    assert isinstance(caught.value, RunError)


def test_threads_sets_torchs_cpu_threads_and_stays_out_of_the_config(tmp_path):
    import torch

    before = torch.get_num_threads()
    try:
        result = invoke("train", *SMALL, "--threads", "1", "--out", str(tmp_path / "run"))
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() == 1
        assert "threads" not in (tmp_path / "run" / "config.yaml").read_text()
    finally:
        torch.set_num_threads(before)


def test_an_out_that_is_a_file_is_named(tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    result = runner.invoke(app, ["train", *SMALL, "--out", str(afile)])
    assert result.exit_code == 2
    assert f"--out {afile} is a file, not a folder" in result.output  # was: "Not a directory"
    assert afile.read_text() == "mine"


def test_version():
    import trainlab

    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.strip() == f"trainlab {trainlab.__version__}"
