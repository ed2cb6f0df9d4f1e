"""The ``trainlab`` command: a thin layer that parses flags and calls the library."""

from __future__ import annotations

import functools
import json
import shlex
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from trainlab._io import check_writable
from trainlab.config import ConfigError, ignored_setting, load_config, parse_key_values
from trainlab.errors import TrainlabError

app = typer.Typer(
    name="trainlab",
    help=(
        "Train, tune, compare and serve small image classifiers.\n\n"
        "Start with `trainlab train` (real MNIST digits, offline, a fast recipe), then see "
        "`trainlab datasets` and `trainlab models` for what else is available."
    ),
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
)
# Piped to a file (80 columns), a line is never broken: paths and hints stay whole in logs.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)  # one error, one line

F = TypeVar("F", bound=Callable[..., Any])


def user_errors(function: F) -> F:
    """Turn user mistakes into one red line and exit code 2 instead of a traceback."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except TrainlabError as error:
            err_console.print(f"[bold red]error:[/] {error}", highlight=False)
            raise typer.Exit(2) from None
        except OSError as error:  # a path the user gave: unreadable, unwritable, disk full
            where = f" ({error.filename})" if error.filename else ""
            err_console.print(
                f"[bold red]error:[/] {error.strerror or error}{where}", highlight=False
            )
            raise typer.Exit(2) from None

    return wrapper  # type: ignore[return-value]


# Flags that change how a run executes, not what it computes: allowed together with --resume.
RESUME_FLAGS = {"device", "no_progress", "data_root", "offline", "threads"}


def _print_version(value: bool) -> None:
    if value:
        import trainlab

        console.print(f"trainlab {trainlab.__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="print the version and exit"
        ),
    ] = False,
) -> None:
    """Train, tune, compare and serve small image classifiers."""  # the app's help is shown


def given_on_command_line(ctx: typer.Context, name: str) -> bool:
    """Whether the user typed this option (a default of 0 or False still counts as not given)."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


# -- train -----------------------------------------------------------------------------------


def early_stopping_overrides(text: str) -> list[str]:
    """``patience=5,min_delta=0.001`` -> enabled + those fields; ``off``/``on`` toggle."""
    lowered = text.strip().lower()
    if lowered in {"off", "false", "no", "none"}:
        return ["early_stopping.enabled=false"]
    overrides = ["early_stopping.enabled=true"]
    if lowered not in {"on", "true", "yes", ""}:
        if "=" not in text:
            raise ConfigError(f"--early-stopping {text}: use on, off, or key=value settings "
                              "(patience=5,min_delta=0.001)")  # fmt: skip
        for key, value in parse_key_values(text, "--early-stopping").items():
            if key in ("monitor", "mode"):  # shared with best-epoch selection: top-level keys
                overrides.append(f"{key}={value}")
            else:
                overrides.append(f"early_stopping.{key}={value}")
    return overrides


def augment_overrides(text: str) -> list[str]:
    """``--augment`` replaces the dataset default as a whole: ``rotate=15`` means only rotation."""
    from trainlab.data import parse_augment

    parsed = parse_augment(text)
    if parsed == "auto":
        return ["data.augment=auto"]
    return ["data.augment=" + json.dumps(parsed.model_dump())]


def flag_overrides(**flags: Any) -> list[str]:
    """Map the convenience flags onto dotted config keys (applied after the config file)."""
    keys = {
        "dataset": "data.dataset",
        "data_root": "data.root",
        "batch_size": "data.batch_size",
        "val_fraction": "data.val_fraction",
        "val_size": "data.val_size",
        "train_fraction": "data.train_fraction",
        "train_size": "data.train_size",
        "model": "model.name",
        "optimizer": "optim.name",
        "lr": "optim.lr",
        "weight_decay": "optim.weight_decay",
        "momentum": "optim.momentum",
        "grad_clip": "optim.grad_clip",
        "schedule": "schedule.name",
        "warmup": "schedule.warmup_epochs",
        "epochs": "epochs",
        "budget": "budget",
        "monitor": "monitor",
        "mode": "mode",
        "data_kind": "data.kind",
        "label_smoothing": "label_smoothing",
        "class_weights": "class_weights",
        "ema": "ema_decay",
        "seed": "seed",
        "device": "device",
        "out": "out",
    }
    overrides = [
        f"{keys[name]}={value}"
        for name, value in flags.items()
        if name in keys and value is not None
    ]
    if flags.get("model_options"):
        overrides += [
            f"model.options.{k}={v}"
            for k, v in parse_key_values(flags["model_options"], "--model-options").items()
        ]
    if flags.get("augment") is not None:
        overrides += augment_overrides(flags["augment"])
    if flags.get("early_stopping") is not None:
        stopping = early_stopping_overrides(flags["early_stopping"])
        for key in ("monitor", "mode"):
            ours = next((o for o in stopping if o.startswith(f"{key}=")), None)
            if ours and flags.get(key) is not None and ours != f"{key}={flags[key]}":
                raise ConfigError(
                    f"--{key} {flags[key]} and --early-stopping {ours} disagree; give one"
                )
        overrides += stopping
    if flags.get("deterministic"):
        overrides.append("deterministic=true")
    if flags.get("offline"):
        overrides.append("data.download=false")
    if flags.get("no_progress"):
        overrides.append("progress=false")
    return overrides


def print_summary(result: Any) -> None:
    summary = result.summary
    table = Table(title="run summary", show_header=False, title_justify="left")
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")  # a long run folder wraps, never cut to "…"
    test, val = summary["test"], summary["val"]

    def pct(value: Any) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    table.add_row(
        "status",
        summary["status"] + (f" ({summary['stop_reason']})" if summary["stop_reason"] else ""),
    )
    table.add_row(
        "data",
        f"{summary['dataset']['name']}: {summary['dataset']['train_size']:,} train / "
        f"{summary['dataset']['val_size']:,} val / {summary['dataset']['test_size']:,} test",
    )
    table.add_row(
        "model",
        f"{summary['model']['name']} ({summary['model']['parameters']:,} parameters) on {summary['runtime']['device']}",
    )
    table.add_row(
        "epochs",
        f"{summary['epochs_run']} run, best {summary['best_epoch']} by {summary['monitor']}",
    )
    table.add_row("time", f"{summary['train_seconds']:.1f} s training")
    table.add_row(
        "val (best epoch)",
        f"accuracy {pct(val.get('accuracy'))}, loss {val.get('loss', float('nan')):.4f}",
    )
    line = f"accuracy {pct(test['accuracy'])}, balanced {pct(test['balanced_accuracy'])}, macro F1 {pct(test['macro_f1'])}"
    table.add_row("test", line)
    if "top5_accuracy" in test:
        table.add_row("test top-5", pct(test["top5_accuracy"]))
    if result.run_dir is not None:
        table.add_row("run folder", str(result.run_dir))
    console.print(table)


@app.command(
    epilog=(
        "**Examples**\n\n"
        "* `trainlab train` — the default recipe on the offline MNIST digits\n\n"
        "* `trainlab train --dataset kmnist --model spinalvgg --epochs 30 --optimizer adam --lr 1e-3 "
        "--augment rotate=15,translate=0.1 --early-stopping patience=5 --out runs/k1`\n\n"
        "* `trainlab train --config examples/cifar10-vgg.yaml --set optim.lr=0.05 --set data.batch_size=256`\n\n"
        "* `trainlab train --dataset my_digits.npz` or `--dataset path/to/folder`\n\n"
        "* `trainlab train --resume runs/k1` — continue a killed run exactly"
    )
)
@user_errors
def train(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="YAML config file (defaults < file < flags)"),
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option("--set", help="override any config key: optim.lr=0.05 (repeatable)"),
    ] = None,
    dataset: Annotated[
        str | None, typer.Option(help="registry name, .npz file or image folder")
    ] = None,
    model: Annotated[str | None, typer.Option(help="model name (see `trainlab models`)")] = None,
    model_options: Annotated[
        str | None, typer.Option("--model-options", help="model options: width=2,dropout=0.3")
    ] = None,
    epochs: Annotated[
        str | None, typer.Option(help="number of epochs, or auto (scaled to the data size)")
    ] = None,
    batch_size: Annotated[int | None, typer.Option(help="training batch size")] = None,
    optimizer: Annotated[
        str | None, typer.Option(help="sgd, momentum, nesterov, adam, adamw, rmsprop, adagrad")
    ] = None,
    lr: Annotated[float | None, typer.Option(help="peak learning rate")] = None,
    weight_decay: Annotated[float | None, typer.Option(help="weight decay")] = None,
    momentum: Annotated[float | None, typer.Option(help="momentum (momentum/nesterov)")] = None,
    grad_clip: Annotated[
        float | None, typer.Option(help="clip the gradient norm to this value")
    ] = None,
    schedule: Annotated[
        str | None, typer.Option(help="constant, step, exponential, cosine, onecycle, plateau")
    ] = None,
    warmup: Annotated[float | None, typer.Option(help="linear warmup, epochs")] = None,
    augment: Annotated[
        str | None,
        typer.Option(help="auto, none, or rotate=15,translate=0.1,crop=4,hflip=true,..."),
    ] = None,
    early_stopping: Annotated[
        str | None, typer.Option("--early-stopping", help="patience=5[,min_delta=0.001], on or off")
    ] = None,
    monitor: Annotated[
        str | None, typer.Option(help="val.loss, val.accuracy, val.balanced_accuracy, val.macro_f1")
    ] = None,
    mode: Annotated[
        str | None, typer.Option(help="min or max for --monitor (default: min for loss, else max)")
    ] = None,
    data_kind: Annotated[
        str | None,
        typer.Option(
            help="what the images are: digits, characters, natural, other, unknown (picks augmentation)"
        ),
    ] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="label smoothing (0 = off)")] = None,
    class_weights: Annotated[
        str | None,
        typer.Option(help="balanced: weight the loss by inverse class frequency (imbalanced data)"),
    ] = None,
    ema: Annotated[float | None, typer.Option(help="EMA decay of the weights, e.g. 0.999")] = None,
    budget: Annotated[
        float | None,
        typer.Option(
            help="wall-clock budget in seconds (--epochs is then ignored); the schedule fits it"
        ),
    ] = None,
    val_fraction: Annotated[
        float | None, typer.Option(help="validation share of the training data")
    ] = None,
    val_size: Annotated[
        int | None, typer.Option(help="validation size (overrides --val-fraction)")
    ] = None,
    train_fraction: Annotated[
        float | None, typer.Option(help="use this stratified share of the training data")
    ] = None,
    train_size: Annotated[
        int | None, typer.Option(help="use this many training images (stratified)")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="random seed")] = None,
    deterministic: Annotated[bool, typer.Option(help="deterministic algorithms (slower)")] = False,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:1, mps")] = None,
    data_root: Annotated[
        str | None,
        typer.Option(help="data cache folder (default TRAINLAB_DATA or ~/.cache/trainlab)"),
    ] = None,
    offline: Annotated[bool, typer.Option(help="never download; fail if data is missing")] = False,
    out: Annotated[
        str | None, typer.Option(help="run folder (default `runs/<time>-<dataset>-<model>`)")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="continue the run in this folder")] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="torch CPU threads (default: one per core; fewer when other "
            "work shares the machine: oversubscribed cores slow down a lot)",
        ),
    ] = None,
    no_progress: Annotated[
        bool,
        typer.Option(
            "--no-progress", help="no progress bar and no line per epoch (the summary still prints)"
        ),
    ] = False,
) -> None:
    """Train a model and evaluate it once on the test split; writes a run folder."""
    flags = {name: value for name, value in locals().items() if name != "ctx"}
    given = [name for name in flags if given_on_command_line(ctx, name)]
    from trainlab.training import RunInterrupted
    from trainlab.training import train as run_training

    if threads is not None:  # where it runs, not what it computes: not part of the config
        import torch

        torch.set_num_threads(threads)
    try:
        if resume is not None:
            blocked = [name for name in given if name not in RESUME_FLAGS and name != "resume"]
            if blocked:
                options = ", ".join(
                    "--" + name.rstrip("_").replace("_", "-") for name in sorted(blocked)
                )
                raise ConfigError(f"--resume continues a run with its saved config; drop {options}")
            runtime = flag_overrides(
                **{name: flags[name] for name in given if name in RESUME_FLAGS}
            )
            result = run_training(resume=resume, runtime_overrides=runtime)
        else:
            overrides = flag_overrides(**flags)
            loaded = load_config(config, overrides + list(set_ or []))
            if ignored := loaded.optim.ignored():  # one run: a setting changing nothing is a slip
                raise ConfigError(ignored_setting(ignored[0], loaded.optim.name))
            result = run_training(loaded)
    except KeyboardInterrupt as interrupted:
        run_dir = (
            getattr(interrupted, "run_dir", None)
            if isinstance(interrupted, RunInterrupted)
            else None
        )
        hint = (
            f"; continue with `trainlab train --resume {shlex.quote(str(run_dir))}`"
            if run_dir
            else ""
        )
        err_console.print(f"interrupted{hint}", highlight=False)
        raise typer.Exit(130) from None
    print_summary(result)


# -- catalogues ------------------------------------------------------------------------------


def print_columns(headers: list[str], rows: list[list[str]]) -> None:
    """One line per row, columns aligned; a line too long for the terminal is cut, not wrapped."""
    widths = [max(len(header), *(len(row[i]) for row in rows)) for i, header in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            cell.ljust(width) for cell, width in zip(cells, widths, strict=True)
        ).rstrip()

    # On a terminal a long line is cut rather than wrapped; piped output keeps every character.
    cut = ({"no_wrap": True, "overflow": "ellipsis", "soft_wrap": False} if console.is_terminal
           else {"soft_wrap": True})  # fmt: skip
    console.print(line(headers), style="bold", highlight=False, **cut)
    for row in rows:
        console.print(line(row), highlight=False, markup=False, **cut)


@app.command(
    epilog=(
        "**The cache column** (checked without reading the files, so it is quick)\n\n"
        "* `ready` — verified against the published checksums and decoded: loads offline at once\n\n"
        "* `unverified` — the files are there, not yet checked: the first load checks their "
        "MD5s and downloads any wrong one again (`trainlab fetch NAME` does it now)\n\n"
        "* `bundled` — ships with a Python package\n\n"
        "* `no` — downloaded on first use, or with `trainlab fetch NAME`"
    )
)
@user_errors
def datasets(
    data_root: Annotated[
        str | None,
        typer.Option(help="data cache folder (default TRAINLAB_DATA or ~/.cache/trainlab)"),
    ] = None,
) -> None:
    """List the datasets trainlab knows, and what the cache holds of each."""
    from rich.markup import escape

    from trainlab.data import list_datasets
    from trainlab.data.sources import data_root as cache_folder

    rows = []
    for info in list_datasets(root=data_root):
        channels, height, width = info.image_shape
        rows.append([info.name, f"{height}×{width}×{channels}", str(info.num_classes),
                     f"{info.train_size:,} / {info.test_size:,}", info.cache,
                     info.description])  # fmt: skip
    print_columns(["name", "images", "classes", "train / test", "cache", "description"], rows)
    console.print(
        f"[dim]cache {escape(str(cache_folder(data_root)))}: ready = verified and decoded; "
        "unverified = files present, checked on first load (see --help)[/]",
        highlight=False,
        soft_wrap=True,
    )
    console.print("[dim]or pass a .npz file or an image folder to --dataset[/]")


@app.command(
    epilog=(
        "**Examples**\n\n"
        "* `trainlab fetch mnist fashion-mnist` — download now (e.g. before going offline)\n\n"
        "* `trainlab fetch mnist --from data/MNIST/raw` — copy the files you already have "
        "(torchvision's folder, a course kit), verified; no network"
    )
)
@user_errors
def fetch(
    names: Annotated[list[str], typer.Argument(metavar="NAME", help="registered dataset names")],
    source: Annotated[
        Path | None,
        typer.Option(
            "--from",
            help="copy the files from this folder instead of downloading: the published files "
            "or (MNIST, Fashion-MNIST) their decompressed copies",
        ),
    ] = None,
    data_root: Annotated[
        str | None,
        typer.Option(help="data cache folder (default TRAINLAB_DATA or ~/.cache/trainlab)"),
    ] = None,
) -> None:
    """Put datasets in the cache, verified against their published checksums, so training needs
    no network."""
    from trainlab.data import fetch_dataset
    from trainlab.data.registry import get_spec

    if source is not None and len(names) > 1:
        raise typer.BadParameter("--from takes one dataset name per call")
    for name in names:
        bundle = fetch_dataset(name, root=data_root, source=source)
        where = "bundled, nothing to fetch" if get_spec(name).bundled else "ready"
        console.print(
            f"{bundle.name}: {len(bundle.train):,} train / {len(bundle.test):,} test images, "
            f"{bundle.num_classes} classes, {where}; in {bundle.source}",
            highlight=False,
            soft_wrap=True,
        )


@app.command()
@user_errors
def models(
    name: Annotated[str | None, typer.Argument(help="show this model's options in detail")] = None,
) -> None:
    """List the model families, one line each; `trainlab models NAME` shows its options.

    Options are set with `--model-options key=value,...` or `model.options` in a config file.
    """
    from trainlab.models import get_model_info, list_models

    if name is None:
        rows = [[info.usage, info.description] for info in list_models(prefixed=True)]
        print_columns(["name", "description"], rows)
        console.print("[dim]options of one model: trainlab models NAME[/]")
        return
    from rich.markup import escape  # descriptions hold brackets: 'trainlab[hf]', [16, 32]

    info = get_model_info(name)
    table = Table(title=escape(f"{info.name}: {info.description}"), title_justify="left")
    for column in ("option", "default", "meaning"):
        table.add_column(column)
    for option, default in info.options.items():
        shown = json.dumps(list(default) if isinstance(default, tuple) else default)
        meaning = info.option_help.get(option, "").replace("``", "`")
        table.add_row(escape(option), escape(shown), escape(meaning))
    console.print(table)


@app.command("augment-preview")
@user_errors
def augment_preview(
    dataset: Annotated[
        str, typer.Option(help="registry name, .npz file or image folder")
    ] = "mnist-5k",
    augment: Annotated[str, typer.Option(help="auto, or rotate=30,translate=0.1,...")] = "auto",
    out: Annotated[Path, typer.Option(help="PNG file to write")] = Path("augment-preview.png"),
    samples: Annotated[int, typer.Option(min=1, help="rows: how many training images")] = 8,
    variants: Annotated[int, typer.Option(min=1, help="columns: augmented versions of each")] = 8,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    data_root: Annotated[str | None, typer.Option(help="data cache folder")] = None,
    data_kind: Annotated[
        str | None,
        typer.Option(help="what the images are, as `trainlab train --data-kind` (picks auto)"),
    ] = None,
) -> None:
    """Write a grid of training images (first column) and augmented versions of them.

    Example: `trainlab augment-preview --dataset kmnist --augment rotate=30 --out grid.png`
    """
    from trainlab.config import build_config
    from trainlab.data import (
        augment_preview_counts,
        load_dataset,
        parse_augment,
        resolve_augment,
        save_augment_preview,
    )
    from trainlab.data.batches import background_of

    if out.suffix.lower() != ".png":
        raise TrainlabError(f"--out {out}: the preview is a PNG image; end the name in .png")
    check_writable(out)
    kind = build_config({"data": {"kind": data_kind}}).data.kind if data_kind else None
    bundle = load_dataset(dataset, root=data_root)
    config = resolve_augment(parse_augment(augment), kind or bundle.kind, bundle.image_shape,
                             background_of(bundle.train.images))  # fmt: skip
    rows, columns = augment_preview_counts(bundle.train.images, samples, variants)
    path = save_augment_preview(
        out, bundle.train.images, config, samples=rows, variants=columns, seed=seed
    )
    console.print(
        f"wrote {path} ({rows} images × {columns} augmented versions, {config_summary(config)})"
    )


def config_summary(config: Any) -> str:
    changed = {k: v for k, v in config.model_dump().items() if v and k != "fill"}
    return (
        ", ".join(f"{k}={v}" for k, v in changed.items()) + f", fill={config.fill}"
        if changed
        else "no augmentation"
    )


def one_line_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings for users (mixed image sizes, empty classes) as one line, without source code."""
    return f"warning: {message}\n"


def main() -> None:
    """Console-script entry point."""
    warnings.formatwarning = one_line_warning
    app()


# Study commands (sweep, tune, work, studies, runs, best), reports, serving and embeddings live
# in their own modules.
from trainlab import cli_embed, cli_reports, cli_serve, cli_studies  # noqa: E402, F401
