"""The HTTP API under real uvicorn on 127.0.0.1: answers, batching, and bad input."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

from live import png, uvicorn_thread
from trainlab.serve.app import ServeSettings, create_app
from trainlab.serve.model import ServedModel

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def run_dir(small_run):
    return small_run


@pytest.fixture(scope="module")
def server(run_dir):
    served = ServedModel.load(run_dir, device="cpu")
    settings = ServeSettings(max_upload_bytes=200_000, max_files=8, max_delay_ms=20)
    with uvicorn_thread(create_app(served, settings)) as url:
        yield url, served


@pytest.fixture(scope="module")
def digits():
    from trainlab.data import load_dataset

    split = load_dataset("mnist-5k").test
    return split.images[:16], split.labels[:16]


def test_predict_matches_in_process_evaluation(server, digits, run_dir):
    from trainlab.analysis.gallery import predict_test_set

    url, served = server
    expected, _ = predict_test_set(run_dir / "checkpoint", dataset="mnist-5k")
    for index in range(4):
        response = httpx.post(f"{url}/predict", files={"file": ("d.png", png(digits[0][index][0].numpy()))},
                              params={"top_k": 10})  # fmt: skip
        assert response.status_code == 200, response.text
        predictions = response.json()["predictions"]
        assert [p["label"] for p in predictions[:1]] == [
            served.class_names[int(expected[index].argmax())]
        ]
        got = {p["index"]: p["probability"] for p in predictions}
        assert all(abs(got[k] - float(expected[index][k])) < 1e-5 for k in got)


def test_predict_batch_embed_model_and_health(server, digits):
    url, _ = server
    files = [("files", (f"{i}.png", png(digits[0][i][0].numpy()))) for i in range(3)]
    batch = httpx.post(f"{url}/predict_batch", files=files, params={"top_k": 2}).json()
    assert [r["filename"] for r in batch["results"]] == ["0.png", "1.png", "2.png"]
    assert all(len(r["predictions"]) == 2 for r in batch["results"])
    embedded = httpx.post(f"{url}/embed", files=files).json()
    assert embedded["dimensions"] == 32 and len(embedded["embeddings"]) == 3
    info = httpx.get(f"{url}/model").json()
    assert info["classes"] == [str(i) for i in range(10)] and info["input"]["height"] == 28
    assert "accuracy" in info["run"]["test"]
    assert info["limits"] == {"max_upload_bytes": 200_000, "max_files": 8,
                              "max_request_bytes": 64 * 1024 * 1024,
                              "max_inflight_bytes": 256 * 1024 * 1024,
                              "max_pixels": 40_000_000, "max_inflight_pixels": 80_000_000,
                              "max_batch": 64, "body_timeout_s": 30.0}  # fmt: skip
    assert httpx.get(f"{url}/healthz").json()["status"] == "ok"
    assert httpx.get(f"{url}/openapi.json").status_code == 200


def test_concurrent_requests_share_forward_passes(server, digits):
    url, _ = server
    before = httpx.get(f"{url}/healthz").json()

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as client:
            data = png(digits[0][0][0].numpy())
            responses = await asyncio.gather(*(client.post(f"{url}/predict", files={"file": ("d.png", data)})
                                               for _ in range(32)))  # fmt: skip
            return [r.status_code for r in responses]

    assert asyncio.run(burst()) == [200] * 32
    after = httpx.get(f"{url}/healthz").json()
    assert after["images"] - before["images"] == 32
    assert after["batches"] - before["batches"] < 32 and after["largest_batch"] > 1


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"files": {"file": ("x.png", b"")}}, 400, "empty"),
        ({"files": {"file": ("x.txt", b"hello, not an image")}}, 400, "not an image"),
        ({"files": {"file": ("x.png", png(np.zeros((30, 30), np.uint8))[:50])}}, 400, "truncated"),
        ({"files": {"picture": ("x.png", b"...")}}, 422, "field `file`"),
        ({"files": {"file": ("big.png", b"\x89PNG" + b"0" * 300_000)}}, 413, "larger than"),
        ({}, 422, "bad request"),
        ({"files": [("file", ("a.png", b"1")), ("file", ("b.png", b"2"))]}, 400, "take one"),
        ({"content": b"{}", "headers": {"Content-Type": "application/json"}}, 415,
         "not multipart/form-data"),
        ({"content": b"--x\r\n", "headers": {"Content-Type": "multipart/form-data; boundary=x"}},
         400, "cut off"),
        ({"content": b"\x89PNG" + b"0" * 300_000, "headers": {"Content-Type": "image/png"}}, 413,
         "larger than"),
    ],
)  # fmt: skip
def test_bad_uploads_are_4xx_json_and_the_server_lives_on(server, kwargs, status, message):
    url, _ = server
    response = httpx.post(f"{url}/predict", **kwargs)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert httpx.get(f"{url}/healthz").status_code == 200


def test_a_raw_image_body_and_a_file_without_a_name_are_uploads_too(server, digits):
    url, _ = server
    data = png(digits[0][2][0].numpy())
    expected = httpx.post(f"{url}/predict", files={"file": ("d.png", data)}).json()
    raw = httpx.post(f"{url}/predict", content=data, headers={"Content-Type": "image/png"})
    assert raw.status_code == 200 and raw.json() == expected
    # curl -F 'file=<d.png' sends the bytes as a plain field, without a file name
    plain = httpx.post(f"{url}/predict", files={"file": (None, data)})
    assert plain.status_code == 200 and plain.json() == expected
    batch = httpx.post(f"{url}/predict_batch", files=[("files", (None, data))]).json()
    assert batch["results"][0]["filename"] is None


def test_the_openapi_document_describes_the_uploads(server):
    url, _ = server
    paths = httpx.get(f"{url}/openapi.json").json()["paths"]
    single = paths["/predict"]["post"]["requestBody"]["content"]
    assert single["multipart/form-data"]["schema"]["required"] == ["file"]
    assert "image/*" in single and "top_k" in str(paths["/predict"]["post"]["parameters"])
    batch = paths["/predict_batch"]["post"]["requestBody"]["content"]["multipart/form-data"]
    assert batch["schema"]["properties"]["files"]["type"] == "array"
    for path in ("/predict", "/predict_batch", "/embed", "/preview"):  # errors as sent
        for status in ("400", "413", "415", "422"):
            answer = paths[path]["post"]["responses"][status]["content"]["application/json"]
            assert answer["schema"]["required"] == ["error"], (path, status)


def test_a_whole_request_body_over_the_limit_is_refused_before_it_is_read(run_dir, digits):
    served = ServedModel.load(run_dir, device="cpu")
    settings = ServeSettings(max_upload_bytes=20_000, max_request_bytes=100_000, max_files=8)
    with uvicorn_thread(create_app(served, settings)) as url:
        # Eight files each within the per-file limit, together over the request limit.
        files = [("files", (f"{i}.png", b"\x89PNG" + b"0" * 15_000)) for i in range(8)]
        response = httpx.post(f"{url}/predict_batch", files=files)
        assert response.status_code == 413, response.text
        assert "larger than 100,000 bytes" in response.json()["error"]
        digit = [("files", ("d.png", png(digits[0][0][0].numpy())))]
        assert httpx.post(f"{url}/predict_batch", files=digit).status_code == 200


def test_too_many_files_are_counted_against_the_limit_model_lists(run_dir, digits):
    served = ServedModel.load(run_dir, device="cpu")
    digit = png(digits[0][0][0].numpy())
    with uvicorn_thread(create_app(served, ServeSettings(max_files=4))) as url:
        for count in (5, 40):  # 40: more parts than the form is read for
            files = [("files", (f"{i}.png", digit)) for i in range(count)]
            answer = httpx.post(f"{url}/predict_batch", files=files)
            assert answer.status_code == 413
            assert answer.json()["error"].endswith("files; at most 4 per request")  # was: parts
            single = httpx.post(f"{url}/predict", files=[("file", f[1]) for f in files])
            assert single.status_code == 400
            assert "take one; send several to /predict_batch" in single.json()["error"]


def test_uploads_beyond_the_server_wide_budget_get_503_until_bytes_are_given_back(run_dir, digits):
    import socket
    import time
    from urllib.parse import urlsplit

    served = ServedModel.load(run_dir, device="cpu")
    settings = ServeSettings(max_upload_bytes=20_000, max_request_bytes=100_000,
                             max_inflight_bytes=150_000)  # fmt: skip
    digit = ("files", ("d.png", png(digits[0][0][0].numpy())))
    filler = ("note", "x" * 60_000)  # an extra form field: read (and held), then ignored
    with uvicorn_thread(create_app(served, settings)) as url:
        parts = urlsplit(url)
        head = (b"POST /predict_batch HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                b"Content-Type: multipart/form-data; boundary=B\r\n\r\n--B\r\n")  # fmt: skip
        large = {"files": [digit], "data": dict([filler])}
        with socket.create_connection((parts.hostname, parts.port), timeout=5) as idle:
            # Headers alone hold nothing: a client that declares a body and then stalls locks
            # no one out (else a handful of such sockets would disable every upload).
            idle.sendall(head)
            time.sleep(0.2)
            assert httpx.post(f"{url}/predict_batch", **large).status_code == 200
        with socket.create_connection((parts.hostname, parts.port), timeout=5) as stalled:
            stalled.sendall(head + b"x" * 95_000)  # holds 95,000 of 150,000 while it dawdles
            deadline = time.monotonic() + 10
            busy = httpx.post(f"{url}/predict_batch", files=[digit], data=dict([filler]))
            while busy.status_code != 503 and time.monotonic() < deadline:  # until it is read
                time.sleep(0.05)
                busy = httpx.post(f"{url}/predict_batch", files=[digit], data=dict([filler]))
            assert busy.status_code == 503, busy.text
            assert busy.headers["retry-after"] == "1"
            assert "busy receiving other uploads" in busy.json()["error"]
            # What fits beside the stalled upload is served.
            assert httpx.post(f"{url}/predict_batch", files=[digit]).status_code == 200
        # The stalled client left: its bytes are given back and the large upload goes through.
        for _ in range(100):  # bounded: 100 × 0.05 s
            again = httpx.post(f"{url}/predict_batch", files=[digit], data=dict([filler]))
            if again.status_code != 503:
                break
            time.sleep(0.05)
        assert again.status_code == 200, again.text
        assert httpx.get(f"{url}/model").json()["limits"]["max_inflight_bytes"] == 150_000


def test_a_chunked_body_counts_against_the_budget_as_it_arrives(run_dir, digits):
    served = ServedModel.load(run_dir, device="cpu")
    settings = ServeSettings(max_upload_bytes=20_000, max_request_bytes=100_000,
                             max_inflight_bytes=100_000)  # fmt: skip
    app = create_app(served, settings)
    digit = png(digits[0][0][0].numpy())
    body = (b"--B\r\nContent-Disposition: form-data; name=files; filename=d.png\r\n\r\n"
            + digit + b"\r\n--B--\r\n")  # fmt: skip
    budget = next(m.kwargs["budget"] for m in app.user_middleware)
    seen = []

    def chunks():  # no Content-Length: the server learns the size only as bytes arrive
        yield body[:100]
        time.sleep(0.2)  # bounded: lets the server read the first chunk
        seen.append(budget.held)
        yield body[100:]

    with uvicorn_thread(app) as url:
        headers = {"Content-Type": "multipart/form-data; boundary=B"}
        response = httpx.post(f"{url}/predict_batch", content=chunks(), headers=headers)
        assert response.status_code == 200, response.text
    assert seen == [100]  # counted while the request was still arriving
    assert budget.held == 0  # given back once answered


def test_a_stalled_upload_gets_408_its_connection_closed_and_its_bytes_given_back(run_dir, digits):
    import socket
    from urllib.parse import urlsplit

    served = ServedModel.load(run_dir, device="cpu")
    app = create_app(served, ServeSettings(body_timeout_s=1.0))
    budget = next(m.kwargs["budget"] for m in app.user_middleware)
    head = (b"POST /predict_batch HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=B\r\n\r\n--B\r\n")  # fmt: skip
    with uvicorn_thread(app) as url:
        parts = urlsplit(url)
        with socket.create_connection((parts.hostname, parts.port), timeout=10) as stalled:
            stalled.sendall(head + b"x" * 5_000)  # then nothing more
            started = time.monotonic()
            answer = b""
            while chunk := stalled.recv(65536):  # until the server closes (bounded by timeout)
                answer += chunk
            waited = time.monotonic() - started
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
        assert b"nothing received for 1 s" in answer
        assert 0.9 < waited < 8  # the timeout, not the socket's 10 s
        assert budget.held == 0
        # A client that keeps sending, however slowly, is not cut off.
        digit = png(digits[0][0][0].numpy())
        body = (b"--B\r\nContent-Disposition: form-data; name=files; filename=d.png\r\n\r\n"
                + digit + b"\r\n--B--\r\n")  # fmt: skip

        def trickle():
            for start in range(0, len(body), len(body) // 3 + 1):  # 3 pieces, 0.3 s apart
                yield body[start : start + len(body) // 3 + 1]
                time.sleep(0.3)

        headers = {"Content-Type": "multipart/form-data; boundary=B"}
        response = httpx.post(f"{url}/predict_batch", content=trickle(), headers=headers)
        assert response.status_code == 200, response.text
        assert httpx.get(f"{url}/model").json()["limits"]["body_timeout_s"] == 1.0


@pytest.mark.parametrize("python_310", [False, True], ids=["asyncio.timeout", "wait_for"])
def test_next_chunk_times_out_or_ends_on_every_python(monkeypatch, python_310):
    from trainlab.serve.app import next_chunk

    if python_310:  # Python 3.10 has no asyncio.timeout: the wait_for path
        monkeypatch.delattr(asyncio, "timeout")

    async def body():
        yield b"a"
        await asyncio.sleep(10)  # a stalled client (cancelled by the timeout)
        yield b"never"

    async def short():
        yield b"b"

    async def read() -> tuple[list[bytes | None], bool]:
        chunks, rest = body(), short()
        got = [await next_chunk(chunks, 0.2)]
        try:
            await next_chunk(chunks, 0.2)
            timed_out = False
        except asyncio.TimeoutError:
            timed_out = True
        got += [await next_chunk(rest, 0.2), await next_chunk(rest, 0.2)]
        return got, timed_out

    assert asyncio.run(read()) == ([b"a", b"b", None], True)


def test_a_client_that_disconnects_mid_upload_leaves_no_traceback(server, caplog):
    import socket
    import time
    from urllib.parse import urlsplit

    url, _ = server
    parts = urlsplit(url)
    head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
            b"Content-Type: multipart/form-data; boundary=B\r\n\r\n--B\r\n")  # fmt: skip
    with socket.create_connection((parts.hostname, parts.port), timeout=5) as sock:
        sock.sendall(head)
    time.sleep(0.3)  # the server reads the disconnect on its own loop
    assert httpx.get(f"{url}/healthz").status_code == 200  # the server went on
    assert not [r for r in caplog.records if r.levelname == "ERROR"], caplog.text


def test_too_many_files(server, digits):
    url, _ = server
    files = [("files", (f"{i}.png", png(digits[0][0][0].numpy()))) for i in range(9)]
    response = httpx.post(f"{url}/predict_batch", files=files)
    assert response.status_code == 413 and "at most 8" in response.json()["error"]


def test_probabilities_are_a_distribution(server, digits):
    url, _ = server
    response = httpx.post(f"{url}/predict", files={"file": ("d.png", png(digits[0][5][0].numpy()))},
                          params={"top_k": 10})  # fmt: skip
    total = sum(p["probability"] for p in response.json()["predictions"])
    assert total == pytest.approx(1.0, abs=1e-4)


@pytest.mark.parametrize("access_log", [False, True])
def test_trainlab_serve_command(run_dir, access_log):
    import subprocess
    import sys

    from postgres_server import free_port, wait_for

    port = free_port()
    flags = ["--access-log"] if access_log else []
    process = subprocess.Popen([sys.executable, "-m", "trainlab", "serve", str(run_dir), "--port",
                                str(port), "--device", "cpu", *flags], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:

        def healthy() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, timeout=60, interval=0.2, what="the server")
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert f"on http://127.0.0.1:{port}" in output
    # The health probes, one line each with --access-log; nothing per request without it.
    assert ('"GET /healthz HTTP/1.1" 200' in output) is access_log


def test_serve_says_when_its_port_is_taken_or_its_host_is_not_here(run_dir):
    import socket

    from typer.testing import CliRunner

    from trainlab.cli import app

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, ["serve", str(run_dir), "--port", str(port)])
    assert result.exit_code == 2, result.output
    assert (
        f"cannot listen on 127.0.0.1:{port}" in result.output and "another --port" in result.output
    )
    assert "serving" not in result.output and len(result.output.strip().splitlines()) == 1
    result = CliRunner().invoke(app, ["serve", str(run_dir), "--host", "999.1.1.1"])
    assert result.exit_code == 2 and "--host 999.1.1.1: not an address" in result.output


def test_serve_refuses_a_missing_folder(tmp_path):
    from typer.testing import CliRunner

    from trainlab.cli import app

    result = CliRunner().invoke(app, ["serve", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "no such run or checkpoint folder" in result.output


def test_trainlab_predict_agrees_with_the_server(server, digits, tmp_path, run_dir):
    from typer.testing import CliRunner

    from trainlab.cli import app

    url, _ = server
    path = tmp_path / "d.png"
    path.write_bytes(png(digits[0][1][0].numpy()))
    (tmp_path / "bad.png").write_bytes(b"nope")
    result = CliRunner().invoke(app, ["predict", str(run_dir), str(path), str(tmp_path / "bad.png"),
                                      "--top-k", "1", "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 2  # one file was not an image
    line, bad = result.output.strip().splitlines()
    top = httpx.post(f"{url}/predict", files={"file": ("d.png", path.read_bytes())}).json()
    best = top["predictions"][0]
    assert line == f"{path}: {best['label']} {100 * best['probability']:.1f}%"
    assert bad.startswith(f"{tmp_path / 'bad.png'}: error: not an image")
    assert result.stdout.strip() == line  # the error line went to stderr

    # A folder stands for its images; a missing file and an empty folder are one line each.
    folder, empty = tmp_path / "many", tmp_path / "empty"
    folder.mkdir(), empty.mkdir()
    for name in ("b.png", "a.png"):
        (folder / name).write_bytes(path.read_bytes())
    (folder / "notes.txt").write_text("not an image: not listed")
    result = CliRunner().invoke(app, ["predict", str(run_dir), str(folder), str(tmp_path / "gone.png"),
                                      str(empty), "--device", "cpu"])  # fmt: skip
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert [line.split(":")[0] for line in lines[:2]] == [
        str(folder / "a.png"),
        str(folder / "b.png"),
    ]
    assert lines[2] == f"{tmp_path / 'gone.png'}: error: No such file or directory"  # no [Errno 2]
    assert lines[3].startswith(f"{empty}: error: no image files (.png, ")
