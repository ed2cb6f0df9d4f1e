"""The HTTP API: thin routes over ``ServedModel`` + ``MicroBatcher`` + ``preprocess``.

Every failure a client can cause is a 4xx JSON ``{"error": ...}`` that says what is wrong;
decoding runs off the event loop, inference in micro-batches on a worker thread. ``GET /`` is
a drawing page (``serve/static/``, shipped with the package, no CDN) that uses the same API:
``/model``, ``/predict`` and ``/preview`` (the preprocessed image, to show what the model sees).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import io
import os
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any

import torch
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from trainlab.serve.batching import MicroBatcher
from trainlab.serve.model import ServedModel
from trainlab.serve.multipart import (
    FormError,
    Part,
    TooManyParts,
    boundary_of,
    header_parameters,
    parse_form,
)
from trainlab.serve.preprocess import MAX_PIXELS, InputError, declared_pixels, preprocess_upload

# Module level: with postponed annotations FastAPI resolves route types from module globals.
TopK = Annotated[int | None, Query(ge=1, le=1000, description="predictions per image")]


@dataclass
class ServeSettings:
    max_upload_bytes: int = 10 * 1024 * 1024  # per file
    max_files: int = 64  # per /predict_batch or /embed request
    max_request_bytes: int = 64 * 1024 * 1024  # a whole /predict_batch or /embed body
    max_inflight_bytes: int = 256 * 1024 * 1024  # all request bodies held at once, server-wide
    body_timeout_s: float = 30.0  # longest wait for the next piece of a request body
    max_pixels: int = MAX_PIXELS  # per image
    # Decoded pixels in flight, server-wide: a 170 KB PNG can declare 40 megapixels (~0.6 GB
    # while it is decoded and converted), so body bytes alone do not bound memory. Twice the
    # largest image: six 12-megapixel phone photos at once.
    max_inflight_pixels: int = 2 * MAX_PIXELS
    decode_threads: int = min(4, os.cpu_count() or 1)  # beside the inference thread
    max_batch: int = 64  # images per forward pass
    max_delay_ms: float = 2.0  # how long a request may wait for others to share its batch
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


HOW_TO_SEND = {
    "file": "send the image as multipart form field `file` (curl -F file=@digit.png) or as the "
    "raw body with its image/* Content-Type",
    "files": "send the images as multipart form field `files` (curl -F files=@a.png -F "
    "files=@b.png)",
}
# Images decoded on the event loop itself: a 28×28 digit takes ~0.1 ms there, less than a hand-off
# to a thread; a 512×512 RGBA photo takes ~14 ms, which would stall every other client. Small in
# bytes too: reading a header walks every chunk of the file in Python (a 10 MB PNG of empty
# chunks declaring 28×28 took 1.6 s to open and 1.6 s to decode, all other clients waiting).
INLINE_PIXELS = 64 * 64
INLINE_BYTES = 16 * 1024  # a 64×64 RGBA PNG stored uncompressed is 16.4 kB
INLINE_PIXELS_PER_REQUEST = 16 * INLINE_PIXELS
INLINE_BYTES_PER_REQUEST = 4 * INLINE_BYTES
MAX_OTHER_FIELDS = 16  # form fields besides the images that a request may carry (and we ignore)


# The 4xx answers of the upload routes, documented as sent ({"error": ...}), in place of
# FastAPI's default 422 schema ({"detail": [...]}), which this app never answers with.
UPLOAD_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "content": {"application/json": {"schema": {
        "type": "object", "required": ["error"], "properties": {"error": {"type": "string"}}}}}}
    for status, description in [
        (400, "not a usable image, or a malformed form"),
        (408, "the upload stalled: no part of the body arrived within the server's timeout"),
        (413, "an image, the body or the number of files over the server's limits"),
        (415, "not a form upload (nor a raw image/* body where one image is expected)"),
        (422, "no image field in the form, or a bad top_k"),
        (503, "busy: the server holds its limit of upload bytes; retry after Retry-After seconds"),
    ]
}  # fmt: skip


def upload_body(field: str, description: str) -> dict[str, Any]:
    """OpenAPI for a form upload in ``field`` (the routes read the body themselves)."""
    binary = {"type": "string", "format": "binary"}
    schema = binary if field == "file" else {"type": "array", "items": binary}
    content: dict[str, Any] = {"multipart/form-data": {"schema": {
        "type": "object", "required": [field],
        "properties": {field: {**schema, "description": description}}}}}  # fmt: skip
    if field == "file":
        content["image/*"] = {"schema": binary}
    return {"requestBody": {"required": True, "content": content}}


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
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.headers = status, message, headers


HELD_BYTES = "trainlab.held_body_bytes"  # ASGI scope key: what this request holds of the budget


class BodyBudget:
    """Request-body bytes received and held at once, server-wide.

    Each request is bounded by its own limits; this bounds their sum, so a burst of large batch
    uploads gets 503 + Retry-After (clients retry) instead of the server running out of memory.
    Only bytes actually received count (a client that declares a large body and then stalls
    holds nothing it has not sent), and a request holds them until its response is sent
    (:class:`ReleaseBodies` gives them back), since the body lives that long. Peak memory is a
    small multiple of what is counted (the body, its parsed parts, decoded images). One event
    loop touches it: no lock needed.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity, self.held = capacity, 0

    def check(self, size: int) -> None:
        """503 unless ``size`` more bytes fit now."""
        if self.held + size > self.capacity:
            raise ClientError(503, "the server is busy receiving other uploads; retry shortly",
                              headers={"Retry-After": "1"})  # fmt: skip

    def take(self, scope: dict[str, Any], size: int) -> None:
        self.check(size)
        self.held += size
        scope[HELD_BYTES] = scope.get(HELD_BYTES, 0) + size

    def give_back(self, scope: dict[str, Any]) -> None:
        self.held -= scope.pop(HELD_BYTES, 0)


class PixelBudget:
    """Decoded pixels in flight, server-wide, read from each image's header before decoding.

    Decoding memory grows with pixels, not with upload bytes (a blank 6300×6300 PNG is 170 KB),
    so uploads that would together decode more than ``capacity`` pixels at once get 503 +
    Retry-After. The capacity is never below one allowed image. One event loop touches it.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity, self.held = capacity, 0

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        if self.held + pixels > self.capacity:
            raise ClientError(503, "the server is busy decoding other large images; retry "
                              "shortly", headers={"Retry-After": "1"})  # fmt: skip
        self.held += pixels
        try:
            yield
        finally:
            self.held -= pixels


class ReleaseBodies:
    """ASGI middleware: whatever a request took from the :class:`BodyBudget` is given back
    when it ends, however it ends (answered, refused, failed, or the client gone)."""

    def __init__(self, app: Any, budget: BodyBudget) -> None:
        self.app, self.budget = app, budget

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            self.budget.give_back(scope)


async def next_chunk(chunks: AsyncIterator[bytes], seconds: float) -> bytes | None:
    """The next piece of a request body, None at its end; ``asyncio.TimeoutError`` when none
    arrives within ``seconds``."""
    if hasattr(asyncio, "timeout"):  # Python 3.11+: a timer, not a task per chunk as wait_for
        async with asyncio.timeout(seconds):
            return await anext(chunks, None)
    return await asyncio.wait_for(anext(chunks, None), seconds)


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
        decoders.shutdown(wait=False)

    app = FastAPI(title=f"trainlab: {served.name}", lifespan=lifespan,
                  description="Classify images with a trainlab checkpoint.")  # fmt: skip
    app.state.batchers = {"classify": classify, "embed": embed_batcher}

    one_image = settings.max_upload_bytes + 64 * 1024  # room for the part headers
    largest_body = max(settings.max_request_bytes, one_image)
    # Never below one allowed request: otherwise that request could never be served.
    budget = BodyBudget(max(settings.max_inflight_bytes, largest_body))
    app.add_middleware(ReleaseBodies, budget=budget)
    # Never below one allowed image (+1: a refused image is refused by decode, with its size).
    pixel_budget = PixelBudget(max(settings.max_inflight_pixels, settings.max_pixels + 1))
    decoders = ThreadPoolExecutor(max_workers=max(1, settings.decode_threads),
                                  thread_name_prefix="trainlab-decode")  # fmt: skip

    @app.exception_handler(ClientError)
    async def client_error(request: Request, error: ClientError) -> JSONResponse:
        return JSONResponse({"error": error.message}, status_code=error.status,
                            headers=error.headers)  # fmt: skip

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, error: HTTPException) -> JSONResponse:
        # Starlette's own refusals (an unknown path or method) in the same {"error": ...} shape
        # as ours.
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code,
                            headers=error.headers)  # fmt: skip

    @app.exception_handler(Exception)
    async def server_error(request: Request, error: Exception) -> JSONResponse:
        # A failure of the server itself (the model out of memory, say) is still a JSON answer;
        # uvicorn logs the traceback.
        return JSONResponse({"error": f"the server failed: {type(error).__name__}: {error}"},
                            status_code=500)  # fmt: skip

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in error.errors()
        )
        return JSONResponse({"error": f"bad request ({problems})"}, status_code=422)

    async def read_body(request: Request, limit: int) -> bytes:
        """The whole request body, refused with 413 as soon as it is known to exceed ``limit``."""
        declared = request.headers.get("content-length", "")
        if declared.isdigit():  # refused before a byte is read: too large, or cannot fit now
            if int(declared) > limit:
                raise ClientError(413, f"request body larger than {limit:,} bytes")
            budget.check(int(declared))
        body = bytearray()  # one growing buffer: a list of chunks plus its join held it twice
        chunks = request.stream()
        try:
            while (chunk := await next_chunk(chunks, settings.body_timeout_s)) is not None:
                budget.take(request.scope, len(chunk))  # what arrived, whatever was declared
                body += chunk
                if len(body) > limit:
                    raise ClientError(413, f"request body larger than {limit:,} bytes")
        except ClientDisconnect:  # nobody to answer; without this uvicorn logs a traceback
            raise ClientError(400, "the client disconnected before the upload ended") from None
        except asyncio.TimeoutError:
            # A stalled client would otherwise hold its connection (and what it sent) forever;
            # `Connection: close` makes uvicorn drop it rather than wait for the rest of the body.
            stalled = f"the upload stalled: nothing received for {settings.body_timeout_s:g} s"
            raise ClientError(408, stalled, headers={"Connection": "close"}) from None
        return bytes(body)

    async def read_uploads(request: Request, field: str) -> list[Part]:
        """The parts of the form field ``field`` (``file`` for one image, ``files`` for many);
        ``/predict`` and ``/preview`` also take a raw ``image/*`` body."""
        single = field == "file"
        limit = one_image if single else largest_body
        content_type = request.headers.get("content-type", "")
        media, _ = header_parameters(content_type)
        if single and media.startswith("image/"):
            return [Part(field, None, media, await read_body(request, limit))]
        if not content_type:
            raise ClientError(422, f"bad request: no form in the request; {HOW_TO_SEND[field]}")
        try:
            boundary = boundary_of(content_type)
            parts = parse_form(await read_body(request, limit), boundary,
                               max_parts=settings.max_files + MAX_OTHER_FIELDS)  # fmt: skip
        except TooManyParts:  # counted as files, the limit /model lists
            raise too_many_files(single, f"more than {settings.max_files}") from None
        except FormError as error:
            hint = f"; {HOW_TO_SEND[field]}" if error.status == 415 else ""
            raise ClientError(error.status, f"bad request: {error}{hint}") from None
        uploads = [part for part in parts if part.name == field]
        if not uploads:
            raise ClientError(422, f"bad request: no form field `{field}`; {HOW_TO_SEND[field]}")
        if (single and len(uploads) > 1) or len(uploads) > settings.max_files:
            raise too_many_files(single, str(len(uploads)))
        return uploads

    def too_many_files(single: bool, count: str) -> ClientError:
        if single:
            return ClientError(400, f"{count} images in field `file`: /predict and /preview "
                               "take one; send several to /predict_batch as `files`")  # fmt: skip
        return ClientError(413, f"{count} files; at most {settings.max_files} per request")

    async def read_images(uploads: list[Part]) -> torch.Tensor:
        tensors = []
        loop = asyncio.get_running_loop()
        inline_pixels, inline_bytes = INLINE_PIXELS_PER_REQUEST, INLINE_BYTES_PER_REQUEST
        for upload in uploads:
            name = upload.filename or "upload"
            size = len(upload.data)
            if size > settings.max_upload_bytes:
                raise ClientError(413, f"{name}: larger than {settings.max_upload_bytes:,} bytes")
            decode = functools.partial(preprocess_upload, upload.data, served.preprocessing,
                                       max_pixels=settings.max_pixels)  # fmt: skip
            # A few kilobytes: every step on the event loop, faster than a thread hand-off
            # (~0.1 ms), capped per request so a batch of them cannot hold the loop either.
            small = size <= INLINE_BYTES and size <= inline_bytes
            try:
                if small:
                    pixels = declared_pixels(upload.data)
                else:
                    pixels = await loop.run_in_executor(decoders, declared_pixels, upload.data)
                if small and (pixels is None or pixels <= min(INLINE_PIXELS, inline_pixels)):
                    # None: unreadable, and decode says why at once, decoding nothing
                    inline_pixels -= pixels or 0
                    inline_bytes -= size
                    tensors.append(decode())
                elif pixels is None:
                    tensors.append(await loop.run_in_executor(decoders, decode))
                else:  # larger decodes run on the decode threads, within the pixel budget
                    with pixel_budget.hold(min(pixels, settings.max_pixels + 1)):
                        tensors.append(await loop.run_in_executor(decoders, decode))
            except InputError as error:
                raise ClientError(400, f"{name}: {error}") from None
        return torch.stack(tensors)

    # The routes take the raw request and answer with a ready JSONResponse: FastAPI's form and
    # response machinery cost more event-loop time per digit than decoding and the model together.
    @app.post("/predict", summary="Classify one image", response_model=dict[str, Any],
              openapi_extra=upload_body("file", "an image"), responses=UPLOAD_ERRORS)  # fmt: skip
    async def predict(request: Request, top_k: TopK = None) -> JSONResponse:
        images = await read_images(await read_uploads(request, "file"))
        probabilities = await classify.run(images)
        return JSONResponse({"predictions": _top_k(probabilities[0], served.class_names,
                                                   top_k or settings.top_k)})  # fmt: skip

    @app.post("/predict_batch", summary="Classify several images", response_model=dict[str, Any],
              openapi_extra=upload_body("files", "images"), responses=UPLOAD_ERRORS)  # fmt: skip
    async def predict_batch(request: Request, top_k: TopK = None) -> JSONResponse:
        uploads = await read_uploads(request, "files")
        probabilities = await classify.run(await read_images(uploads))
        return JSONResponse({"results": [
            {"filename": u.filename, "predictions": _top_k(p, served.class_names,
                                                           top_k or settings.top_k)}
            for u, p in zip(uploads, probabilities, strict=True)]})  # fmt: skip

    @app.post("/embed", summary="Penultimate-layer embeddings", response_model=dict[str, Any],
              openapi_extra=upload_body("files", "images"), responses=UPLOAD_ERRORS)  # fmt: skip
    async def embed(request: Request) -> JSONResponse:
        images = await read_images(await read_uploads(request, "files"))
        features = await embed_batcher.run(images)
        return JSONResponse({"dimensions": int(features.shape[1]),
                             "embeddings": [[round(v, 6) for v in row]
                                            for row in features.tolist()]})  # fmt: skip

    info = {**served.info(), "limits": {"max_upload_bytes": settings.max_upload_bytes,
                                        "max_files": settings.max_files,
                                        "max_request_bytes": settings.max_request_bytes,
                                        "max_inflight_bytes": budget.capacity,
                                        "max_pixels": settings.max_pixels,
                                        "max_inflight_pixels": pixel_budget.capacity,
                                        "max_batch": settings.max_batch,
                                        "body_timeout_s": settings.body_timeout_s}}  # fmt: skip

    @app.get("/model", summary="The model: name, classes, input, preprocessing, run metrics")
    async def model_info() -> dict[str, Any]:
        return info

    # HEAD too: load balancers and uptime checkers often probe with it.
    @app.head("/healthz", include_in_schema=False)
    @app.get("/healthz", summary="Liveness")
    async def healthz() -> dict[str, Any]:
        stats = classify.stats
        return {"status": "ok", "batches": stats.batches, "images": stats.images,
                "largest_batch": stats.largest}  # fmt: skip

    @app.post("/preview", summary="What the model sees: an image after preprocessing, as PNG",
              response_class=Response, openapi_extra=upload_body("file", "an image"),
              responses={**UPLOAD_ERRORS, 200: {"content": {"image/png": {}},
                               "description": "the model's input (its size and channels), "
                               "before normalisation"}})  # fmt: skip
    async def preview(request: Request) -> Response:
        images = await read_images(await read_uploads(request, "file"))
        return Response(await asyncio.to_thread(_png, images[0]), media_type="image/png",
                        headers={"Cache-Control": "no-store"})  # fmt: skip

    static = _static_files()

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> Response:
        return Response(static["index.html"], media_type=STATIC_TYPES["index.html"],
                        headers=PAGE_HEADERS)  # fmt: skip

    @app.get("/static/{name}", include_in_schema=False)
    async def static_file(name: str) -> Response:
        if name not in STATIC_TYPES or name == "index.html":
            raise ClientError(404, f"no static file {name!r}")
        return Response(static[name], media_type=STATIC_TYPES[name], headers=PAGE_HEADERS)

    return app
