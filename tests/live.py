"""Test helpers for live things: an app under real uvicorn on 127.0.0.1, headless Chromium,
PNG bytes of an array and the size of a written PNG."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def png_size(path: Any) -> tuple[int, int]:
    """(width, height) of a PNG file, from its IHDR chunk (and that it is a PNG at all)."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


@contextlib.contextmanager
def uvicorn_thread(app: Any, http: Any = "auto") -> Iterator[str]:
    """``app`` under real uvicorn on a free loopback port, in a daemon thread; yields its URL
    and stops the server on exit. ``http``: uvicorn's protocol (a name or a class)."""
    import uvicorn

    from postgres_server import free_port

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", http=http)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline and thread.is_alive():
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 30 s"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def chromium_path() -> str:
    """Debian's chromium for Playwright; a skip where it is missing, unless
    ``TRAINLAB_REQUIRE_BROWSER`` is set (``.ci/run`` sets it), then a failure."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("TRAINLAB_REQUIRE_BROWSER"):
            pytest.fail("headless Chromium is required here but `chromium` was not found")
        pytest.skip("Chromium is not installed (apt-get install chromium)")
    return path
