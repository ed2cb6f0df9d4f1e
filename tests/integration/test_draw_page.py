"""The drawing page (``GET /``) in real headless Chromium against real uvicorn on 127.0.0.1.

Strokes drawn with the mouse and with a finger (touch pointer events) give live predictions that
equal what ``POST /predict`` answers for the same canvas; Clear, Escape and Undo reset what they
should; the model's-eye preview is the server's preprocessing to the pixel; and every failure
(not an image, a 500, no network) is shown on the page instead of being swallowed. The page loads
nothing from elsewhere (it must work offline) and raises no script errors.

The page marks its state on ``<body data-state>`` ("idle", "pending", "ready", "error"), so the
tests wait for it, never for a fixed time. Every wait is bounded (``TIMEOUT_MS``).
"""

from __future__ import annotations

import base64
import contextlib
import io
import itertools
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import torch
from PIL import Image

from live import chromium_path, png, uvicorn_thread
from trainlab.serve.app import ServeSettings, create_app
from trainlab.serve.model import ServedModel
from trainlab.serve.preprocess import preprocess_upload

pytestmark = pytest.mark.integration

TIMEOUT_MS = 30_000
CANVAS = "[data-testid=canvas]"
ROWS = "[data-testid=prediction]"
PHOTO_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]  # fmt: skip
# Chromium logs every non-2xx fetch as a console error; the error tests expect those.
NETWORK_LOG = "Failed to load resource"


@contextlib.contextmanager
def serving(served: Any) -> Iterator[str]:
    """``create_app(served)`` under real uvicorn on 127.0.0.1, in a thread; yields its URL."""
    settings = ServeSettings(max_upload_bytes=200_000, max_delay_ms=5)
    with uvicorn_thread(create_app(served, settings)) as url:
        yield url


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """A small CNN trained for a few seconds on real digits, served: (url, served model)."""
    import trainlab

    out = tmp_path_factory.mktemp("draw") / "run"
    trainlab.train({"data": {"dataset": "mnist-5k", "train_size": 2000, "val_size": 200},
                    "model": {"name": "cnn"}, "epochs": 3, "progress": False, "out": str(out)})  # fmt: skip
    served = ServedModel.load(out, device="cpu")
    with serving(served) as url:
        yield url, served


@pytest.fixture(scope="module")
def photos():
    """An (untrained) CNN for 3×32×32 natural images, served: the page's photo mode."""
    from trainlab.models import create_model

    torch.manual_seed(0)
    model = create_model("cnn", in_channels=3, num_classes=10, image_size=(32, 32)).eval()
    preprocessing = {"mean": [0.5] * 3, "std": [0.25] * 3, "kind": "natural", "channels": 3,
                     "image_size": [32, 32]}  # fmt: skip
    served = ServedModel("cnn", model, preprocessing, PHOTO_CLASSES, torch.device("cpu"), {})
    with serving(served) as url:
        yield url, served


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    path = chromium_path()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=path, args=["--no-sandbox"])
        try:
            yield chromium
        finally:
            chromium.close()


@dataclass
class Session:
    page: Any
    url: str
    problems: list[str] = field(default_factory=list)  # page errors and console errors
    offsite: list[str] = field(default_factory=list)  # requests to anywhere but the server

    def errors(self, *, network_logs_expected: bool = False) -> list[str]:
        return [p for p in self.problems if not (network_logs_expected and NETWORK_LOG in p)]


@contextlib.contextmanager
def open_page(browser, url: str, **options: Any) -> Iterator[Session]:
    options.setdefault("viewport", {"width": 1000, "height": 800})
    context = browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    session = Session(page, url)
    host = urlsplit(url).netloc

    def guard(route) -> None:  # offline: anything not from this server is refused and noted
        if urlsplit(route.request.url).netloc == host:
            route.continue_()
        else:
            session.offsite.append(route.request.url)
            route.abort()

    def console(message) -> None:
        if message.type == "error":
            session.problems.append(f"console: {message.text}")

    context.route("**/*", guard)
    page.on("pageerror", lambda error: session.problems.append(f"pageerror: {error}"))
    page.on("console", console)
    try:
        page.goto(f"{url}/", wait_until="load")
        wait_state(page, "idle")
        yield session
    finally:
        context.close()


def wait_state(page, state: str) -> None:
    # A selector, not wait_for_function: the page's CSP forbids eval, which that would need.
    page.wait_for_selector(f"body[data-state={state}]", state="attached", timeout=TIMEOUT_MS)


def pad_point(page, x: float, y: float) -> tuple[float, float]:
    """(x, y) as shares of the pad's side -> page coordinates."""
    box = page.locator(CANVAS).bounding_box()
    return box["x"] + x * box["width"], box["y"] + y * box["height"]


def mouse_stroke(page, points: list[tuple[float, float]], steps: int = 8, up: bool = True) -> None:
    page.mouse.move(*pad_point(page, *points[0]))
    page.mouse.down()
    for point in points[1:]:
        page.mouse.move(*pad_point(page, *point), steps=steps)
    if up:
        page.mouse.up()


def shown(page) -> list[dict[str, Any]]:
    """The prediction rows as the page shows them (data attributes and text)."""
    return page.locator(ROWS).evaluate_all(
        "rows => rows.map(r => ({label: r.dataset.label, index: +r.dataset.index,"
        " probability: +r.dataset.probability, text: r.textContent}))"
    )


def canvas_png(page) -> bytes:
    data_url = page.locator(CANVAS).evaluate("c => c.toDataURL('image/png')")
    return base64.b64decode(data_url.split(",", 1)[1])


def api_predictions(url: str, data: bytes, filename: str = "drawing.png") -> list[dict[str, Any]]:
    response = httpx.post(f"{url}/predict", files={"file": (filename, data)},
                          params={"top_k": 5}, timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def assert_rows_match(rows: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    assert [r["label"] for r in rows] == [p["label"] for p in expected]
    for row, prediction in zip(rows, expected, strict=True):
        assert row["index"] == prediction["index"]
        assert row["probability"] == pytest.approx(prediction["probability"], abs=1e-6)
        assert row["text"] == f"{row['label']} — {100 * row['probability']:.1f}%"


def preview_pixels(page) -> dict[str, Any]:
    """The preview <img> as decoded by Chromium: natural size, shown size, and its red channel."""
    return page.locator("[data-testid=preview]").evaluate(
        """img => {
            const c = document.createElement('canvas');
            c.width = img.naturalWidth; c.height = img.naturalHeight;
            const g = c.getContext('2d');
            g.drawImage(img, 0, 0);
            const rgba = g.getImageData(0, 0, c.width, c.height).data;
            return {width: img.naturalWidth, height: img.naturalHeight,
                    shown: img.getBoundingClientRect().width,
                    rendering: getComputedStyle(img).imageRendering,
                    red: Array.from(rgba.filter((_, i) => i % 4 === 0))};
        }"""
    )


def ink_share(page) -> float:
    """Share of the pad's pixels that are not white paper."""
    return page.locator(CANVAS).evaluate(
        """c => {
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let ink = 0;
            for (let i = 0; i < d.length; i += 4) if (d[i] < 250) ink++;
            return ink / (c.width * c.height);
        }"""
    )


ONE = [(0.5, 0.18), (0.5, 0.82)]  # a "1": one vertical stroke down the middle


# -- the routes behind the page ------------------------------------------------------------------


def test_page_static_files_and_preview_route(digits):
    url, _ = digits
    page = httpx.get(f"{url}/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert 'data-testid="canvas"' in page.text
    script = httpx.get(f"{url}/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert httpx.get(f"{url}/static/style.css").headers["content-type"].startswith("text/css")
    missing = httpx.get(f"{url}/static/../app.py")
    assert missing.status_code == 404
    assert httpx.get(f"{url}/static/secret.txt").json()["error"] == "no static file 'secret.txt'"

    from trainlab.data import load_dataset

    digit = load_dataset("mnist-5k").test.images[0][0].numpy()
    response = httpx.post(f"{url}/preview", files={"file": ("d.png", png(digit))})
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert image.mode == "L" and image.size == (28, 28)
    assert np.array_equal(np.asarray(image), digit)  # a training-format image passes unchanged
    bad = httpx.post(f"{url}/preview", files={"file": ("x.txt", b"hello, not an image")})
    assert bad.status_code == 400 and "not an image" in bad.json()["error"]
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    assert "/preview" in paths and "/" not in paths and "/static/{name}" not in paths


# -- the page in Chromium --------------------------------------------------------------------------


def test_the_page_describes_the_model_and_loads_nothing_from_elsewhere(browser, digits):
    url, served = digits
    with open_page(browser, url) as session:
        page = session.page
        assert page.get_by_test_id("model-name").text_content() == served.name
        facts = page.get_by_test_id("model-facts").text_content()
        accuracy = served.run["test"]["accuracy"]
        assert f"test accuracy {100 * accuracy:.1f}%" in facts and "1×28×28" in facts
        assert "Draw a digit" in page.locator("#hint").text_content()
        # Keyboard- and screen-reader-reachable controls, found by their accessible names.
        assert page.get_by_role("button", name="Undo").count() == 1
        assert page.get_by_role("button", name="Clear").count() == 1
        assert page.get_by_label("Choose an image…").get_attribute("type") == "file"
        assert page.get_by_role("status").count() == 1 and page.get_by_role("img").count() >= 1
        assert page.locator(ROWS).count() == 0
    assert session.offsite == [] and session.errors() == []


def test_a_mouse_stroke_is_classified_live_as_the_api_would(browser, digits):
    url, _ = digits
    with open_page(browser, url) as session:
        page = session.page
        # Live: predictions appear while the button is still down, half way down the stroke.
        mouse_stroke(page, [ONE[0], (0.5, 0.5)], up=False)
        page.wait_for_selector(ROWS, state="attached", timeout=TIMEOUT_MS)
        page.mouse.move(*pad_point(page, *ONE[1]), steps=8)
        page.mouse.up()
        wait_state(page, "ready")
        rows = shown(page)
        assert rows[0]["label"] == "1", rows
        assert len(rows) == 5 and int(page.locator("body").get_attribute("data-requests")) >= 2
        probabilities = [r["probability"] for r in rows]
        assert probabilities == sorted(probabilities, reverse=True)
        assert sum(probabilities) <= 1 + 1e-5  # the top 5 of a distribution
        # What the page shows is what the API answers for the very pixels on the pad.
        assert_rows_match(rows, api_predictions(url, canvas_png(page)))
        assert page.get_by_role("status").text_content().startswith("Most likely 1 (")
        assert page.locator(CANVAS).get_attribute("data-pointer-type") == "mouse"
    assert session.offsite == [] and session.errors() == []


def test_a_finger_draws_on_a_phone(browser, digits):
    url, _ = digits
    phone = {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2,
             "is_mobile": True, "has_touch": True}  # fmt: skip
    with open_page(browser, url, **phone) as session:
        page = session.page
        cdp = page.context.new_cdp_session(page)
        scroll = page.evaluate("() => window.scrollY")
        assert page.evaluate("() => document.documentElement.scrollHeight") > 844  # could scroll
        seven = [(0.25, 0.22), (0.75, 0.22), (0.62, 0.5), (0.45, 0.82)]
        points = [pad_point(page, *p) for p in seven]
        path = [points[0]]
        for (x0, y0), (x1, y1) in itertools.pairwise(points):
            path += [(x0 + (x1 - x0) * t / 8, y0 + (y1 - y0) * t / 8) for t in range(1, 9)]

        def touch(kind: str, point: tuple[float, float] | None) -> None:
            touch_points = [] if point is None else [{"x": point[0], "y": point[1], "id": 1}]
            cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": touch_points})

        touch("touchStart", path[0])
        for point in path[1:]:
            touch("touchMove", point)
        touch("touchEnd", None)
        wait_state(page, "ready")
        assert page.locator(CANVAS).get_attribute("data-pointer-type") == "touch"
        assert page.locator(ROWS).count() == 5
        assert page.evaluate("() => window.scrollY") == scroll  # touch-action: none: no scrolling
        # devicePixelRatio 2: the backing store has twice the CSS pixels, and the ink is there.
        size = page.locator(CANVAS).evaluate("c => [c.width, c.getBoundingClientRect().width]")
        assert size[0] == round(2 * size[1])
        assert 0.01 < ink_share(page) < 0.5
        assert_rows_match(shown(page), api_predictions(url, canvas_png(page)))
    assert session.offsite == [] and session.errors() == []


def test_clear_escape_and_undo(browser, digits):
    url, _ = digits
    with open_page(browser, url) as session:
        page = session.page
        mouse_stroke(page, ONE)
        wait_state(page, "ready")
        assert page.locator(ROWS).count() == 5 and ink_share(page) > 0.01
        page.get_by_role("button", name="Clear").click()
        wait_state(page, "idle")
        assert page.locator(ROWS).count() == 0 and ink_share(page) == 0
        assert page.get_by_test_id("preview-box").is_hidden()
        assert page.get_by_role("status").text_content().startswith("Draw something")

        mouse_stroke(page, ONE)
        wait_state(page, "ready")
        page.keyboard.press("Escape")
        wait_state(page, "idle")
        assert page.locator(ROWS).count() == 0 and ink_share(page) == 0

        # Undo takes back the last stroke and asks again; undoing the only stroke clears.
        mouse_stroke(page, ONE)
        wait_state(page, "ready")
        one_stroke = ink_share(page)
        mouse_stroke(page, [(0.2, 0.5), (0.8, 0.5)])
        wait_state(page, "ready")
        assert ink_share(page) > one_stroke
        page.get_by_role("button", name="Undo").click()
        wait_state(page, "ready")
        assert ink_share(page) == pytest.approx(one_stroke, rel=0.05)
        assert_rows_match(shown(page), api_predictions(url, canvas_png(page)))
        page.keyboard.press("Control+z")
        wait_state(page, "idle")
        assert page.locator(ROWS).count() == 0 and ink_share(page) == 0
    assert session.offsite == [] and session.errors() == []


def test_one_request_in_flight_and_stale_answers_are_dropped(browser, digits):
    url, _ = digits
    with open_page(browser, url) as session:
        page = session.page
        held: list[Any] = []  # the first /predict is held back until the test lets it go

        def hold_first(route) -> None:
            if held:
                route.continue_()
            else:
                held.append(route)

        page.route("**/predict*", hold_first)
        with page.expect_request("**/predict*"):
            mouse_stroke(page, [(0.2, 0.5), (0.8, 0.5)])  # a dash, then cleared
        deadline = time.monotonic() + TIMEOUT_MS / 1000
        while not held and time.monotonic() < deadline:
            page.wait_for_timeout(20)  # lets Playwright run the route handler
        assert held
        page.keyboard.press("Escape")
        wait_state(page, "idle")
        mouse_stroke(page, ONE)  # drawn while the dash's request is still out: no new request
        body = page.locator("body")
        assert body.get_attribute("data-state") == "pending"
        assert body.get_attribute("data-requests") == "1"
        held[0].continue_()  # the dash's answer arrives after Clear: stale, not shown
        wait_state(page, "ready")
        assert body.get_attribute("data-requests") == "2"
        assert body.get_attribute("data-results") == "1"
        assert_rows_match(shown(page), api_predictions(url, canvas_png(page)))
    assert session.offsite == [] and session.errors() == []


def test_the_preview_is_what_the_model_sees(browser, digits):
    url, served = digits
    with open_page(browser, url) as session:
        page = session.page
        mouse_stroke(page, [(0.3, 0.3), (0.7, 0.3), (0.5, 0.8)])
        wait_state(page, "ready")
        assert page.get_by_test_id("preview-box").is_visible()
        preview = preview_pixels(page)
        assert (preview["width"], preview["height"]) == (28, 28)
        assert preview["shown"] > 28 and preview["rendering"] == "pixelated"
        expected = preprocess_upload(canvas_png(page), served.preprocessing)[0].numpy()
        assert np.array_equal(np.array(preview["red"], dtype=np.uint8).reshape(28, 28), expected)
        assert expected.max() > 200  # light ink on black, as MNIST
    assert session.offsite == [] and session.errors() == []


def test_errors_are_shown_and_the_page_recovers(browser, digits):
    url, _ = digits
    with open_page(browser, url) as session:
        page = session.page
        error = page.get_by_test_id("error")
        assert error.is_hidden()
        # Not an image, through the file input: the server's own message is shown.
        page.get_by_test_id("file-input").set_input_files(
            files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"}]
        )
        wait_state(page, "error")
        assert error.is_visible() and "notes.txt: not an image" in error.text_content()
        assert page.locator(ROWS).count() == 0 and page.get_by_test_id("preview-box").is_hidden()

        # Over the server's upload limit (from /model): refused on the page, nothing is sent.
        page.get_by_role("button", name="Clear").click()
        sent = []
        page.on("request", lambda request: sent.append(request.url))
        page.get_by_test_id("file-input").set_input_files(
            files=[{"name": "huge.png", "mimeType": "image/png", "buffer": b"\x89PNG" * 60_000}]
        )
        message = "huge.png: 240,000 bytes; this server takes images of at most 200,000 bytes"
        assert message in error.text_content()
        assert error.is_visible() and not [u for u in sent if "/predict" in u or "/preview" in u]

        # A server error that is not JSON (a crash, a proxy): status and body are shown.
        page.get_by_role("button", name="Clear").click()
        wait_state(page, "idle")
        assert error.is_hidden()
        page.route("**/predict*", lambda route: route.fulfill(status=500, body="worker crashed",
                                                              content_type="text/plain"))  # fmt: skip
        mouse_stroke(page, ONE)
        wait_state(page, "error")
        assert "500" in error.text_content() and "worker crashed" in error.text_content()

        # No server at all.
        page.keyboard.press("Escape")
        page.unroute("**/predict*")
        page.route("**/predict*", lambda route: route.abort("connectionrefused"))
        mouse_stroke(page, ONE)
        wait_state(page, "error")
        assert "cannot reach the server" in error.text_content()

        # The next drawing, with the server back, is classified and the error goes away.
        page.unroute("**/predict*")
        page.keyboard.press("Escape")
        mouse_stroke(page, ONE)
        wait_state(page, "ready")
        assert error.is_hidden() and page.locator(ROWS).count() == 5
    assert session.offsite == []
    assert session.errors(network_logs_expected=True) == []
    assert any(NETWORK_LOG in p for p in session.problems)  # the failures did happen


def test_a_photo_model_classifies_a_chosen_or_dropped_image(browser, photos):
    url, _ = photos
    photo = np.zeros((48, 64, 3), np.uint8)
    photo[..., 0] = np.linspace(0, 255, 64, dtype=np.uint8)[None, :]
    photo[..., 2] = np.linspace(255, 0, 48, dtype=np.uint8)[:, None]
    data = png(photo)
    with open_page(browser, url) as session:
        page = session.page
        assert "trained on photos" in page.locator("#hint").text_content()
        assert "photos" in (page.locator("body").get_attribute("class") or "")
        page.get_by_test_id("file-input").set_input_files(
            files=[{"name": "photo.png", "mimeType": "image/png", "buffer": data}]
        )
        wait_state(page, "ready")
        rows = shown(page)
        assert {r["label"] for r in rows} <= set(PHOTO_CLASSES) and len(rows) == 5
        assert_rows_match(rows, api_predictions(url, data, "photo.png"))  # the file, sent as is
        preview = preview_pixels(page)
        assert (preview["width"], preview["height"]) == (32, 32)
        assert ink_share(page) > 0.3  # the photo is shown on the pad

        page.keyboard.press("Escape")
        wait_state(page, "idle")
        # Drag and drop: a real DataTransfer with the file, dropped on the pad.
        page.locator("[data-testid=drop-zone]").evaluate(
            """(zone, b64) => {
                const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
                const transfer = new DataTransfer();
                transfer.items.add(new File([bytes], 'dropped.png', {type: 'image/png'}));
                for (const type of ['dragenter', 'dragover', 'drop']) {
                    zone.dispatchEvent(new DragEvent(type, {dataTransfer: transfer, bubbles: true,
                                                            cancelable: true}));
                }
            }""",
            base64.b64encode(data).decode(),
        )
        wait_state(page, "ready")
        assert_rows_match(shown(page), api_predictions(url, data, "dropped.png"))
    assert session.offsite == [] and session.errors() == []
