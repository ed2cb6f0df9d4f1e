"""``trainlab serve``: a checkpoint behind the HTTP API (FastAPI + uvicorn).

Registered on the main app by ``trainlab.cli``; parses flags and calls ``trainlab.serve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from trainlab.cli import app, console, err_console, user_errors
from trainlab.cli_options import RunsDirOption, StorageOption
from trainlab.errors import TrainlabError


def resolve_model(model: Path | None, study: str | None, storage: str | None,
                  runs_dir: Path, dataset: str | None = None) -> Path:  # fmt: skip
    """The folder or file to serve: MODEL as given, or the best run of STUDY (on DATASET, for a
    study over several data sets)."""
    if (model is None) == (study is None):
        raise TrainlabError("give a run/checkpoint folder or .onnx file, or --study NAME "
                            "(one of them)")  # fmt: skip
    if dataset is not None and study is None:
        raise TrainlabError("--dataset picks the data set of a --study; a run folder has one")
    if study is not None:
        from trainlab.experiments import best_run, open_store, resolve_storage_url

        store = open_store(resolve_storage_url(storage, runs_dir), create=False)
        row = best_run(store, study, dataset)
        model = Path(row.run_dir or "")
        from trainlab.cli_studies import fmt_metric
        from trainlab.experiments.study import open_study

        metric = open_study(store, study)[1].metric
        console.print(f"best run of {study}: trial {row.number}, {metric} "
                      f"{fmt_metric(row.value, metric)}, {model}",
                      highlight=False, markup=False, soft_wrap=True)  # fmt: skip
        if not model.exists():
            raise TrainlabError(f"the best run's folder {model} is not on this machine "
                                f"(recorded by host {row.host}); copy it here or serve it there")  # fmt: skip
    assert model is not None
    if not model.exists():
        raise TrainlabError(f"no such run or checkpoint folder: {model}")
    return model


@app.command(
    epilog=(
        "**Examples**\n\n"
        "* `trainlab serve runs/k1 --port 8000`\n\n"
        "* `trainlab serve --study lr-study` — the best run of a study\n\n"
        "* `trainlab serve runs/k1/model.onnx` — an exported model, with onnxruntime\n\n"
        "* `curl -F file=@digit.png localhost:8000/predict`\n\n"
        "* `curl -F files=@a.png -F files=@b.png localhost:8000/predict_batch`\n\n"
        "* drawing page at http://localhost:8000/, API docs at http://localhost:8000/docs"
    )
)
@user_errors
def serve(
    model: Annotated[
        Path | None, typer.Argument(help="run folder, checkpoint folder or exported .onnx file")
    ] = None,
    study: Annotated[str | None, typer.Option(help="serve the best run of this study")] = None,
    dataset: Annotated[
        str | None, typer.Option(help="with --study over several data sets: whose best to serve")
    ] = None,
    storage: StorageOption = None,
    runs_dir: RunsDirOption = Path("runs"),
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="port")] = 8000,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1")] = "auto",
    max_batch: Annotated[int, typer.Option(min=1, help="images per forward pass")] = 64,
    max_delay_ms: Annotated[
        float, typer.Option(min=0, help="how long a request waits to share a batch")
    ] = 2.0,
    max_upload_mb: Annotated[float, typer.Option(min=0.001, help="largest upload per file")] = 10,
    max_files: Annotated[int, typer.Option(min=1, help="files per batch request")] = 64,
    max_request_mb: Annotated[
        float, typer.Option(min=0.001, help="largest /predict_batch or /embed request body")
    ] = 64,
    max_inflight_mb: Annotated[
        float,
        typer.Option(
            min=0.001,
            help="request-body bytes received and held at once, all clients together (at least "
            "one whole request); beyond it uploads get 503 + Retry-After",
        ),
    ] = 256,
    body_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="seconds to wait for the next piece of an upload; a stalled one gets 408 and "
            "its connection is closed",
        ),
    ] = 30,
    header_timeout: Annotated[
        float,
        typer.Option(
            min=0.1,
            help="seconds a client has to send a request's headers (from connecting, or from "
            "the previous response); a slower one gets 408 and its connection is closed",
        ),
    ] = 10,
    access_log: Annotated[
        bool,
        typer.Option(help="log every request (client, method, path, status: uvicorn's access log)"),
    ] = False,
) -> None:
    """Serve a trained model over HTTP: /predict, /predict_batch, /embed, /model, /healthz."""
    import uvicorn

    from trainlab.serve.app import ServeSettings, create_app
    from trainlab.serve.model import ServedModel
    from trainlab.serve.protocol import protocol_class

    served = ServedModel.load(
        resolve_model(model, study, storage, runs_dir, dataset), device=device
    )
    settings = ServeSettings(max_upload_bytes=int(max_upload_mb * 1024 * 1024),
                             max_files=max_files,
                             max_request_bytes=int(max_request_mb * 1024 * 1024),
                             max_inflight_bytes=int(max_inflight_mb * 1024 * 1024),
                             body_timeout_s=body_timeout,
                             max_batch=max_batch,
                             max_delay_ms=max_delay_ms)  # fmt: skip
    listening = listen_socket(host, port)  # before "serving …": a busy port is one clear line
    console.print(f"serving {served.name} ({len(served.class_names)} classes) on "
                  f"http://{host}:{port} — docs at /docs", highlight=False)  # fmt: skip
    config = uvicorn.Config(create_app(served, settings), host=host, port=port,
                            log_level="info" if access_log else "warning",
                            access_log=access_log, http=protocol_class(header_timeout))  # fmt: skip
    uvicorn.Server(config).run(sockets=[listening])


def listen_socket(host: str, port: int) -> Any:
    """The bound server socket (uvicorn listens on it), or a TrainlabError saying what to
    change: another --port when it is taken, another --host when it is not this machine's."""
    import socket

    # As uvicorn binds: IPv6 for an address with a colon, else IPv4 (so `localhost` is 127.0.0.1
    # even where it resolves to ::1 first).
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (socket.gaierror, UnicodeError) as error:
        sock.close()
        raise TrainlabError(f"--host {host}: not an address of this machine ({error}); use "
                            "127.0.0.1, or 0.0.0.0 for every interface") from None  # fmt: skip
    except OSError as error:
        sock.close()
        raise TrainlabError(f"cannot listen on {host}:{port}: {error.strerror or error}; "
                            "choose another --port (or check --host)") from None  # fmt: skip
    return sock


@app.command(
    epilog=(
        "**Examples**\n\n"
        "* `trainlab predict runs/k1 images/*.png`\n\n"
        "* `trainlab predict runs/k1 digit.png --top-k 3`"
    )
)
@user_errors
def predict(
    model: Annotated[Path, typer.Argument(help="run folder or checkpoint folder")],
    images: Annotated[
        list[Path], typer.Argument(help="image files (PNG, JPEG, WebP, ...) or folders of them")
    ],
    top_k: Annotated[int, typer.Option(min=1, help="predictions per image")] = 3,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1")] = "auto",
) -> None:
    """Classify image files with the server's exact preprocessing; one line per image."""
    import torch

    from trainlab.data.formats import IMAGE_SUFFIXES
    from trainlab.serve.model import ServedModel
    from trainlab.serve.preprocess import InputError, preprocess_upload

    if not model.exists():
        raise TrainlabError(f"no such run or checkpoint folder: {model}")
    served = ServedModel.load(model, device=device)
    failed = 0
    for path in _image_files(images):
        try:
            if path.is_dir():  # one without images (_image_files lists those of the others)
                raise InputError(f"no image files ({', '.join(IMAGE_SUFFIXES)}) in this folder")
            tensor = preprocess_upload(path.read_bytes(), served.preprocessing)
        except (InputError, OSError) as error:
            reason = (error.strerror or str(error)) if isinstance(error, OSError) else error
            err_console.print(f"{path}: error: {reason}", highlight=False, markup=False)
            failed += 1
            continue
        probabilities = served.probabilities(tensor[None])[0]
        values, indices = torch.topk(probabilities, min(top_k, len(served.class_names)))
        shown = ", ".join(f"{served.class_names[i]} {100 * p:.1f}%"
                          for p, i in zip(values.tolist(), indices.tolist(), strict=True))  # fmt: skip
        console.print(f"{path}: {shown}", highlight=False, markup=False, soft_wrap=True)
    if failed:
        raise typer.Exit(2)


def _image_files(paths: list[Path]) -> list[Path]:
    """The files given, a folder standing for the images directly in it (sorted by name)."""
    from trainlab.data.formats import IMAGE_SUFFIXES

    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            inside = sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)  # fmt: skip
            files += inside or [path]  # an empty folder: named in an error line
        else:
            files.append(path)
    return files


@app.command(
    epilog=(
        "**Examples**\n\n"
        "* `trainlab export runs/k1 --format onnx` — writes runs/k1/model.onnx\n\n"
        "* `trainlab serve runs/k1/model.onnx` — serve it with onnxruntime\n\n"
        "* `trainlab export runs/k1 --format torchscript` — runs/k1/model.pt for LibTorch (C++)"
    )
)
@user_errors
def export(
    model: Annotated[Path, typer.Argument(help="run folder or checkpoint folder")],
    format_: Annotated[str, typer.Option("--format", help="onnx or torchscript")] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option(
            help="output file (default: model.onnx or model.pt in the run folder, beside checkpoint/)"
        ),
    ] = None,
) -> None:
    """Export a checkpoint (weights, preprocessing and class names in one file); uint8 images in,
    normalisation inside, logits and penultimate features out."""
    from trainlab.serve.export import export_model

    if not model.exists():
        raise TrainlabError(f"no such run or checkpoint folder: {model}")
    path = export_model(model, format_, out)
    hint = (f"serve it with `trainlab serve {path}`" if path.suffix == ".onnx" else
            "load it with torch.jit.load (LibTorch in C++); trainlab serve takes the run folder")  # fmt: skip
    console.print(f"wrote {path}; {hint}", highlight=False, soft_wrap=True)
