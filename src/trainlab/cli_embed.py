"""``trainlab embed`` and ``trainlab decode``: what a run's penultimate layer sees.

Registered on the main app by ``trainlab.cli``; parses flags and calls
``trainlab.analysis.embeddings`` and ``trainlab.analysis.decoder``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from trainlab.cli import app, console, err_console, user_errors
from trainlab.errors import TrainlabError

RunArgument = Annotated[Path, typer.Argument(help="run folder (or its checkpoint/ folder)")]
DatasetOption = Annotated[
    str | None,
    typer.Option(help="registry name, .npz file or image folder (default: the run's dataset)"),
]
DataRootOption = Annotated[
    str | None, typer.Option(help="data cache folder (default: the run's, else TRAINLAB_DATA)")
]
DeviceOption = Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1")]


@app.command(
    epilog=(
        "**Examples**\n\n"
        "* `trainlab embed runs/k1` — the test split: runs/k1/embeddings-test.npz and .png\n\n"
        "* `trainlab embed runs/k1 --split val --projection tsne --limit 2000 --out val.npz`\n\n"
        "* `trainlab embed runs/k1 --dataset fashion-mnist --no-plot` — another dataset of the "
        "same image size\n\n"
        "Read the file with `numpy.load(path, allow_pickle=False)`: arrays `embeddings`, "
        "`labels`, `predictions`, `indices` (positions in the dataset's training or test data), "
        "`class_names`, `model_class_names` and `metadata` (a JSON string)."
    )
)
@user_errors
def embed(
    run: RunArgument,
    dataset: DatasetOption = None,
    split: Annotated[
        str, typer.Option(help="test, or the run's own train or val split (same seed and sizes)")
    ] = "test",
    limit: Annotated[
        int | None, typer.Option(min=1, help="embed a stratified subset of this many images")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="the .npz file to write (default RUN/embeddings-SPLIT.npz)"),
    ] = None,
    plot: Annotated[
        Path | None, typer.Option(help="the PNG to draw (default: --out with .png)")
    ] = None,
    no_plot: Annotated[bool, typer.Option("--no-plot", help="write the .npz only")] = False,
    projection: Annotated[
        str, typer.Option(help="pca, or tsne (exact: at most 5,000 images, see --limit)")
    ] = "pca",
    neighbours: Annotated[
        int, typer.Option(min=1, max=20, help="nearest neighbours shown per query image")
    ] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="images per forward pass")] = 512,
    device: DeviceOption = "auto",
    data_root: DataRootOption = None,
) -> None:
    """Save the penultimate-layer embeddings of a split, and plot them in 2-D.

    The plot is a scatter of a 2-D projection (PCA, or t-SNE) coloured by class, beside one
    query image per class (up to 10) with its nearest neighbours in embedding space (cosine).
    Nothing is downloaded: the dataset must be cached (the run used it).
    """
    from trainlab.analysis.embeddings import (
        PROJECTIONS,
        check_tsne_count,
        draw_embeddings,
        embed_run,
        neighbour_rows,
        output_folder,
        project,
    )

    if projection not in PROJECTIONS:
        raise TrainlabError(f"unknown projection {projection!r}; available: "
                            f"{', '.join(PROJECTIONS)}")  # fmt: skip
    if no_plot and plot is not None:
        raise TrainlabError("--plot and --no-plot disagree; give one")
    default_plot = out.with_suffix(".png") if out is not None and plot is None else None
    check_outputs(out, None if no_plot else (plot or default_plot))
    chosen: dict[str, Path] = {}

    def check_split(data: Any) -> None:  # before the forward pass: refusing is cheap there
        if not no_plot and projection == "tsne":
            check_tsne_count(len(data.labels), split)
        # The default names need the data set's name: checked here, before any file is written.
        npz = out if out is not None else output_folder(run) / (
            f"embeddings-{split}.npz" if dataset is None
            else f"embeddings-{data.dataset}-{split}.npz")  # fmt: skip
        check_outputs(npz, None if no_plot else (plot or npz.with_suffix(".png")))
        chosen["npz"] = npz

    embeddings, data = embed_run(run, split=split, dataset=dataset, root=data_root, limit=limit,
                                 device=device, batch_size=batch_size, check=check_split)  # fmt: skip
    out = chosen["npz"]
    embeddings.save(out)
    accuracy = embeddings.accuracy
    shown = f", accuracy {accuracy:.1%}" if accuracy is not None else ""
    console.print(f"embedded {len(embeddings):,} {split} images of {data.dataset} with "
                  f"{embeddings.metadata['model']}: {embeddings.embeddings.shape[1]} dimensions"
                  f"{shown}", highlight=False, soft_wrap=True)  # fmt: skip
    console.print(f"wrote {out}", highlight=False, soft_wrap=True)
    if no_plot:
        return
    plot = plot if plot is not None else out.with_suffix(".png")
    coordinates = project(embeddings.embeddings, projection, device=embeddings.metadata["device"])
    rows = neighbour_rows(embeddings, k=neighbours)
    title = f"{embeddings.metadata['model']} on {data.dataset} ({split})"
    draw_embeddings(coordinates, embeddings, data.images, rows, plot, title=title)
    detail = ""
    if coordinates.explained_variance_ratio is not None:
        detail = f", {sum(coordinates.explained_variance_ratio):.1%} of the variance in 2-D"
    console.print(f"wrote {plot} ({'PCA' if coordinates.method == 'pca' else 't-SNE'}{detail}; "
                  f"{len(rows.queries)} query image{'s' if len(rows.queries) != 1 else ''} × "
                  f"{rows.k} neighbours)",
                  highlight=False, soft_wrap=True)  # fmt: skip


def check_outputs(out: Path | None, plot: Path | None) -> None:
    """The .npz and the .png are two different files, each writable: checked before the
    work, so a typo cannot cost the embedding pass, nor a plot overwrite the embeddings."""
    from trainlab._io import check_writable

    if out is not None:
        if out.suffix.lower() != ".npz":
            raise TrainlabError(f"--out {out}: the embeddings file is an .npz; end it in .npz")
        check_writable(out)
    if plot is not None:
        if plot.suffix.lower() != ".png":
            raise TrainlabError(f"--plot {plot}: the figure is a PNG; end it in .png")
        check_writable(plot)


@app.command(
    epilog=(
        "**Examples**\n\n"
        "* `trainlab decode runs/k1` — writes runs/k1/decode/: decoder + 3 figures\n\n"
        "* `trainlab decode runs/k1 --epochs 40 --pair 3 17 --out decoded/`\n\n"
        "* `trainlab decode runs/k1 --limit 10000` — train the decoder on 10,000 images"
    )
)
@user_errors
def decode(
    run: RunArgument,
    dataset: DatasetOption = None,
    epochs: Annotated[
        int | None,
        typer.Option(min=1, help="decoder epochs (default: ~100,000 images seen, 3 to 30)"),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="output folder (default RUN/decode)")] = None,
    pair: Annotated[
        tuple[int, int] | None,
        typer.Option(
            metavar="I J",
            help="interpolate between these two test images (positions in the test split; "
            "default: the first image and the first of another class)",
        ),
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option(min=1, help="train on a stratified subset of this many training images"),
    ] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="decoder training batch size")] = 128,
    seed: Annotated[int, typer.Option(help="seed of the decoder's weights and batches")] = 0,
    device: DeviceOption = "auto",
    data_root: DataRootOption = None,
    no_progress: Annotated[bool, typer.Option("--no-progress", help="no line per epoch")] = False,
) -> None:
    """Train a small decoder from a run's frozen embeddings back to images, and draw with it.

    The decoder (an MLP) learns from the training images of the run's dataset, with the
    classifier frozen; its reconstruction error is measured on the test images. It then draws
    pictures from embedding vectors: the mean embedding of each class, the interpolation
    between two test images' embeddings, and reconstructions of test images.
    """
    from trainlab.analysis.decoder import decode_run

    def progress(epoch: int, total: int, loss: float, seconds: float) -> None:
        err_console.print(f"decoder epoch {epoch:>3}/{total}  loss {loss:.4f}  {seconds:.1f}s",
                          highlight=False)  # fmt: skip

    result = decode_run(run, dataset=dataset, root=data_root, out=out, epochs=epochs, pair=pair,
                        limit=limit, device=device, batch_size=batch_size, seed=seed,
                        on_epoch=None if no_progress else progress)  # fmt: skip
    source = result.metadata["source"]
    console.print(f"trained a decoder from {source['model']} embeddings to images on "
                  f"{result.train_size:,} {source['dataset']} training images, {result.epochs} "
                  f"epochs on {result.device}", highlight=False, soft_wrap=True)  # fmt: skip
    console.print(f"reconstruction error on {result.test_size:,} held-out test images: MSE "
                  f"{result.test_error:.4f} per pixel in [0, 1] (the mean image scores "
                  f"{result.baseline_error:.4f})", highlight=False, soft_wrap=True)  # fmt: skip
    console.print(f"wrote {result.folder}/: " + ", ".join(
        path.name for key, path in result.files.items()), highlight=False,
        soft_wrap=True)  # fmt: skip
