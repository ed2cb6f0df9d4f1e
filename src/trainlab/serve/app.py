"""The HTTP API: thin routes over ``ServedModel`` + ``MicroBatcher`` + ``preprocess``.

Every failure a client can cause is a 4xx JSON ``{"error": ...}`` that says what is wrong;
decoding runs off the event loop, inference in micro-batches on a worker thread. ``GET /`` is
a drawing page (``serve/static/``, shipped with the package, no CDN) that uses the same API:
``/model``, ``/predict`` and ``/preview`` (the preprocessed image, to show what the model sees).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

import torch
from fastapi import FastAPI, File, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException

from trainlab.serve.batching import MicroBatcher
from trainlab.serve.model import ServedModel
from trainlab.serve.preprocess import MAX_PIXELS, InputError, is_small_image, preprocess_upload

# Module level: with postponed annotations FastAPI resolves route types from module globals.
TopK = Annotated[int | None, Query(ge=1, le=1000, description="predictions per image")]


@dataclass
class ServeSettings:
    max_upload_bytes: int = 10 * 1024 * 1024  # per file
    max_files: int = 64  # per /predict_batch or /embed request
    max_pixels: int = MAX_PIXELS
    max_batch: int = 64  # images per forward pass
    max_delay_ms: float = 5.0  # how long a request may wait for others to share its batch
    top_k: int = 5


# The drawing page: file name -> media type. Read once from the package (importlib.resources),
# so an installed wheel serves exactly what was tested; a file missing from it fails at start.
STATIC_TYPES = {"index.html": "text/html; charset=utf-8",
                "app.js": "text/javascript; charset=utf-8",
                "style.css": "text/css; charset=utf-8"}  # fmt: skip
# The page loads nothing from elsewhere and runs no inline code; images are blob: URLs.
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


def _static_files() -> dict[str, bytes]:
    folder = resources.files("trainlab.serve").joinpath("static")
    return {name: folder.joinpath(name).read_bytes() for name in STATIC_TYPES}


def _png(image: torch.Tensor) -> bytes:
    """uint8 ``[C, H, W]`` -> PNG bytes: RGB for three channels, else grey (the first one)."""
    array = image.cpu().numpy()
    pixels = array.transpose(1, 2, 0) if array.shape[0] == 3 else array[0]
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class ClientError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def _top_k(probabilities: torch.Tensor, classes: list[str], k: int) -> list[dict[str, Any]]:
    values, indices = probabilities.topk(min(k, len(classes)))
    return [{"label": classes[i], "index": int(i), "probability": round(float(p), 6)}
            for p, i in zip(values.tolist(), indices.tolist(), strict=True)]  # fmt: skip


def create_app(served: ServedModel, settings: ServeSettings | None = None) -> FastAPI:
    settings = settings or ServeSettings()
    served.prepare_for_serving()
    classify = MicroBatcher(served.probabilities, max_batch=settings.max_batch,
                            max_delay=settings.max_delay_ms / 1000)  # fmt: skip
    embed_batcher = MicroBatcher(served.embeddings, max_batch=settings.max_batch,
                                 max_delay=settings.max_delay_ms / 1000)  # fmt: skip

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await classify.start()
        await embed_batcher.start()
        # Everything loaded so far (torch, FastAPI, the model) lives as long as the server: keep
        # it out of the garbage collector's full scans, which otherwise stall every request for
        # tens of milliseconds every few seconds (p99 at 32 clients: 113 ms -> 51 ms).
        gc.collect()
        gc.freeze()
        yield
        await classify.stop()
        await embed_batcher.stop()

    app = FastAPI(title=f"trainlab: {served.name}", lifespan=lifespan,
                  description="Classify images with a trainlab checkpoint.")  # fmt: skip
    app.state.batchers = {"classify": classify, "embed": embed_batcher}

    @app.exception_handler(ClientError)
    async def client_error(request: Request, error: ClientError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        # Starlette's own refusals (a body that is not valid multipart, too many parts, a field
        # over 1 MB, an unknown path or method) in the same {"error": ...} shape as ours.
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code,
                            headers=error.headers)  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        return JSONResponse({"error": f"bad request ({problems}); send images as multipart form "
                             "field `file` (/predict) or `files` (/predict_batch, /embed)"},
                            status_code=422)  # fmt: skip

    async def read_images(files: list[UploadFile]) -> torch.Tensor:
        if not files:
            raise ClientError(400, "no image in the request")
        if len(files) > settings.max_files:
            raise ClientError(413, f"{len(files)} files; at most {settings.max_files} per request")
        tensors = []
        for upload in files:
            data = await upload.read(settings.max_upload_bytes + 1)
            name = upload.filename or "upload"
            if len(data) > settings.max_upload_bytes:
                raise ClientError(413, f"{name}: larger than {settings.max_upload_bytes:,} bytes")
            try:
                if is_small_image(data):  # ~0.1 ms for a digit: less than a thread hand-off
                    tensor = preprocess_upload(data, served.preprocessing,
                                               max_pixels=settings.max_pixels)  # fmt: skip
                else:  # large decodes must not block the event loop
                    tensor = await asyncio.to_thread(preprocess_upload, data, served.preprocessing,
                                                     max_pixels=settings.max_pixels)  # fmt: skip
                tensors.append(tensor)
            except InputError as error:
                raise ClientError(400, f"{name}: {error}") from None
        return torch.stack(tensors)

    @app.post("/predict", summary="Classify one image")
    async def predict(file: Annotated[UploadFile, File(description="an image")],
                      top_k: TopK = None) -> dict[str, Any]:  # fmt: skip
        images = await read_images([file])
        probabilities = await classify.run(images)
        return {"predictions": _top_k(probabilities[0], served.class_names,
                                      top_k or settings.top_k)}  # fmt: skip

    @app.post("/predict_batch", summary="Classify several images")
    async def predict_batch(files: Annotated[list[UploadFile], File(description="images")],
                            top_k: TopK = None) -> dict[str, Any]:  # fmt: skip
        images = await read_images(files)
        probabilities = await classify.run(images)
        return {"results": [
            {"filename": f.filename, "predictions": _top_k(p, served.class_names,
                                                           top_k or settings.top_k)}
            for f, p in zip(files, probabilities, strict=True)]}  # fmt: skip

    @app.post("/embed", summary="Penultimate-layer embeddings")
    async def embed(
        files: Annotated[list[UploadFile], File(description="images")],
    ) -> dict[str, Any]:
        images = await read_images(files)
        features = await embed_batcher.run(images)
        return {"dimensions": int(features.shape[1]),
                "embeddings": [[round(v, 6) for v in row] for row in features.tolist()]}  # fmt: skip

    @app.get("/model", summary="The model: name, classes, input, preprocessing, run metrics")
    async def model_info() -> dict[str, Any]:
        return served.info()

    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, Any]:
        stats = classify.stats
        return {"status": "ok", "batches": stats.batches, "images": stats.images,
                "largest_batch": stats.largest}  # fmt: skip

    @app.post("/preview", summary="What the model sees: an image after preprocessing, as PNG",
              response_class=Response,
              responses={200: {"content": {"image/png": {}},
                               "description": "the model's input (its size and channels), "
                               "before normalisation"}})  # fmt: skip
    async def preview(file: Annotated[UploadFile, File(description="an image")]) -> Response:
        images = await read_images([file])
        return Response(await asyncio.to_thread(_png, images[0]), media_type="image/png",
                        headers={"Cache-Control": "no-store"})  # fmt: skip

    static = _static_files()

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        return Response(static["index.html"], media_type=STATIC_TYPES["index.html"],
                        headers=PAGE_HEADERS)  # fmt: skip

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in STATIC_TYPES or name == "index.html":
            raise ClientError(404, f"no static file {name!r}")
        return Response(static[name], media_type=STATIC_TYPES[name], headers=PAGE_HEADERS)

    return app
