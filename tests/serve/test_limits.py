"""Limits that keep the server responsive: images per forward pass, decoded pixels in flight,
what is decoded on the event loop, and a JSON answer when the server itself fails."""

from __future__ import annotations

import asyncio
import io
import threading

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from live import png, uvicorn_thread
from trainlab.serve import app as app_module
from trainlab.serve.app import ClientError, PixelBudget, ServeSettings, create_app
from trainlab.serve.batching import MicroBatcher
from trainlab.serve.model import ServedModel


def test_no_forward_pass_holds_more_than_max_batch_images():
    sizes: list[int] = []

    def model(batch: torch.Tensor) -> torch.Tensor:
        sizes.append(len(batch))
        return batch * 2

    async def scenario() -> list[torch.Tensor]:
        batcher = MicroBatcher(model, max_batch=4, max_delay=0.05)
        await batcher.start()
        try:
            requests = [torch.arange(10.0), torch.arange(3.0) + 100, torch.arange(3.0) + 200]
            return await asyncio.gather(*(batcher.run(r) for r in requests))
        finally:
            await batcher.stop()

    big, first, second = asyncio.run(scenario())
    assert max(sizes) <= 4 and sum(sizes) == 16
    assert torch.equal(big, torch.arange(10.0) * 2)  # split, computed and put back in order
    assert torch.equal(first, (torch.arange(3.0) + 100) * 2)
    assert torch.equal(second, (torch.arange(3.0) + 200) * 2)


def test_the_pixel_budget_refuses_with_503_and_gives_back():
    budget = PixelBudget(100)
    with budget.hold(60):
        with pytest.raises(ClientError) as refused, budget.hold(50):
            pass
        assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
        with budget.hold(40):
            assert budget.held == 100
    assert budget.held == 0
    with pytest.raises(KeyError), budget.hold(100):
        raise KeyError("a decode that fails")
    assert budget.held == 0


def blank_png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("L", (width, height), 255).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.integration
def test_large_images_decode_off_the_event_loop_within_the_pixel_budget(small_run, monkeypatch):
    threads: list[str] = []
    decode = app_module.preprocess_upload

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return decode(*args, **kwargs)

    monkeypatch.setattr(app_module, "preprocess_upload", recording)
    served = ServedModel.load(small_run, device="cpu")
    settings = ServeSettings(max_pixels=1_000_000, max_inflight_pixels=1_000_000)
    with uvicorn_thread(create_app(served, settings)) as url:
        digit = np.zeros((28, 28), dtype=np.uint8)
        digit[6:22, 13:15] = 255
        assert (
            httpx.post(f"{url}/predict", files={"file": ("d.png", png(digit))}).status_code == 200
        )
        assert not threads[-1].startswith("trainlab-decode")  # a digit: on the loop, no hand-off
        photo = blank_png(300, 300)
        assert httpx.post(f"{url}/predict", files={"file": ("p.png", photo)}).status_code == 200
        assert threads[-1].startswith("trainlab-decode")
        # 40 images of 64×64 in one request: 16 of them (65,536 pixels) are decoded on the loop,
        # the rest on decode threads.
        threads.clear()
        tile = np.zeros((64, 64), dtype=np.uint8)
        tile[10:54, 30:34] = 255
        files = [("files", (f"{i}.png", png(tile))) for i in range(40)]
        response = httpx.post(f"{url}/predict_batch", files=files)
        assert response.status_code == 200, response.text
        on_loop = sum(not name.startswith("trainlab-decode") for name in threads)
        assert on_loop == 16 and len(threads) == 40
        # An image over the whole pixel budget is refused by its size, not left waiting.
        huge = httpx.post(f"{url}/predict", files={"file": ("h.png", blank_png(1001, 1000))})
        assert huge.status_code == 400 and "at most 1,000,000 pixels" in huge.json()["error"]


def chunk_flooded_png(chunks: int) -> bytes:
    """A valid 28×28 digit whose file is padded with empty ancillary chunks: small in pixels,
    large in bytes, and every chunk is walked by Pillow in Python when the header is read."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", 28, 28, 8, 0, 0, 0, 0)
    rows = b"".join(b"\x00" + bytes([255 if 10 <= x < 14 else 0] * 28) for x in range(28))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"abCd", b"") * chunks
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))  # fmt: skip


@pytest.mark.integration
def test_an_image_small_in_pixels_but_large_in_bytes_is_read_off_the_event_loop(
    small_run, monkeypatch
):
    threads: list[tuple[str, str]] = []
    for name in ("preprocess_upload", "declared_pixels"):
        original = getattr(app_module, name)

        def recording(*args, _original=original, _name=name, **kwargs):
            threads.append((_name, threading.current_thread().name))
            return _original(*args, **kwargs)

        monkeypatch.setattr(app_module, name, recording)
    served = ServedModel.load(small_run, device="cpu")
    with uvicorn_thread(create_app(served, ServeSettings())) as url:
        flooded = chunk_flooded_png(20_000)  # 240 kB declaring 28×28
        answer = httpx.post(f"{url}/predict", files={"file": ("f.png", flooded)})
        assert answer.status_code == 200, answer.text
    assert [name for name, _ in threads] == ["declared_pixels", "preprocess_upload"]
    assert all(thread.startswith("trainlab-decode") for _, thread in threads)  # was: the loop


@pytest.mark.integration
def test_a_failing_model_is_a_json_500_and_the_server_lives_on(small_run):
    served = ServedModel.load(small_run, device="cpu")

    def out_of_memory(batch: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("CUDA out of memory")

    served.probabilities = out_of_memory  # what the batcher calls
    digit = png(np.zeros((28, 28), dtype=np.uint8))
    with uvicorn_thread(create_app(served, ServeSettings())) as url:
        response = httpx.post(f"{url}/predict", files={"file": ("d.png", digit)})
        assert response.status_code == 500
        assert response.json() == {"error": "the server failed: RuntimeError: CUDA out of memory"}
        assert httpx.get(f"{url}/healthz").status_code == 200


@pytest.mark.integration
def test_health_checks_may_probe_with_head(small_run):
    served = ServedModel.load(small_run, device="cpu")
    with uvicorn_thread(create_app(served, ServeSettings())) as url:
        for path in ("/healthz", "/"):
            response = httpx.head(f"{url}{path}")
            assert response.status_code == 200 and response.content == b"", path


@pytest.fixture(params=["httptools", "h11"])
def slow_header_protocol(request, monkeypatch):
    """trainlab's protocol with a 0.5 s header deadline, over each of uvicorn's HTTP parsers."""
    import uvicorn.protocols.http.auto as auto

    from trainlab.serve.protocol import protocol_class

    if request.param == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol

        monkeypatch.setattr(auto, "AutoHTTPProtocol", H11Protocol)
    else:
        pytest.importorskip("httptools")
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

        monkeypatch.setattr(auto, "AutoHTTPProtocol", HttpToolsProtocol)
    return protocol_class(0.5)


def _read_all(sock, limit_s: float = 5.0) -> bytes:
    import time

    sock.settimeout(0.2)
    data, deadline = b"", time.monotonic() + limit_s
    while time.monotonic() < deadline:  # bounded: until the server closes, at most 5 s
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            break
        data += chunk
    return data


@pytest.mark.integration
def test_headers_that_trickle_in_get_408_and_the_connection_closed(small_run, slow_header_protocol):
    import socket
    import time
    from urllib.parse import urlsplit

    served = ServedModel.load(small_run, device="cpu")
    with uvicorn_thread(create_app(served, ServeSettings()), http=slow_header_protocol) as url:
        address = (urlsplit(url).hostname, urlsplit(url).port)
        with socket.create_connection(address, timeout=5) as slow:  # slowloris: never done
            slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            started = time.monotonic()
            answer = _read_all(slow)
            assert answer.startswith(b"HTTP/1.1 408") and b"request headers not received" in answer
            assert time.monotonic() - started < 4  # was: held open for ever
        with socket.create_connection(address, timeout=5) as silent:  # connects, sends nothing
            assert _read_all(silent).startswith(b"HTTP/1.1 408")
        # A slow body is the app's business (--body-timeout), not the header deadline's.
        digit = png(np.zeros((28, 28), dtype=np.uint8))
        body = (b"--B\r\nContent-Disposition: form-data; name=\"file\"; filename=\"d.png\"\r\n"
                b"Content-Type: image/png\r\n\r\n" + digit + b"\r\n--B--\r\n")  # fmt: skip
        with socket.create_connection(address, timeout=5) as upload:
            upload.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
                           b"Content-Type: multipart/form-data; boundary=B\r\n"
                           b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n"
                           + body[:10])  # fmt: skip
            time.sleep(1.0)  # twice the header deadline, the headers long complete
            upload.sendall(body[10:])
            assert _read_all(upload).startswith(b"HTTP/1.1 200")
        # Kept alive: a second request on the same connection within the deadline is served.
        with httpx.Client() as client:
            assert client.get(f"{url}/healthz").status_code == 200
            time.sleep(0.2)
            assert client.get(f"{url}/healthz").status_code == 200
