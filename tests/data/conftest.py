"""Fixtures for the data tests: a real HTTP server on loopback and generated dataset files.

Nothing here touches the internet: the server listens on 127.0.0.1 on an ephemeral port and
serves bytes the tests generate in each real format (gzipped IDX, K49-style npz, CIFAR python
batches in a tar.gz). Registry entries are pointed at it with ``monkeypatch``.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import pickle
import socket
import struct
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from trainlab.data import registry
from trainlab.data.sources import DATA_ENV, MIRROR_ENV, RemoteFile


@dataclasses.dataclass
class Route:
    body: bytes
    behaviour: str = "ok"  # ok | truncate (promise more bytes than sent, then hang up) | stall


class FileServer:
    """Serves registered paths; records every request path. Test-only, loopback-only."""

    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        self.requests: list[str] = []
        self.release = threading.Event()  # lets stalled handlers finish at teardown
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests.append(self.path)
                route = server.routes.get(self.path)
                if route is None:
                    self.send_error(404, "Not Found")
                    return
                if route.behaviour == "stall":
                    server.release.wait(10)  # bounded: the client's timeout fires long before
                    return
                self.send_response(200)
                extra = 1000 if route.behaviour == "truncate" else 0
                self.send_header("Content-Length", str(len(route.body) + extra))
                self.end_headers()
                self.wfile.write(route.body)
                self.close_connection = True

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output clean

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        # A short poll interval: shutdown() waits up to one interval, once per test.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True)

    def url(self, prefix: str = "/") -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}{prefix}"

    def serve(self, path: str, body: bytes, behaviour: str = "ok") -> None:
        self.routes[path] = Route(body, behaviour)


@pytest.fixture
def http_server() -> Iterator[FileServer]:
    server = FileServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.release.set()
        server.httpd.shutdown()
        server.httpd.server_close()
        server.thread.join(timeout=5)


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens: connecting is refused at once (an 'offline' host)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def data_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private cache folder via TRAINLAB_DATA, and no mirror override from the environment."""
    home = tmp_path / "cache"
    monkeypatch.setenv(DATA_ENV, str(home))
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    return home


# ---------------------------------------------------------------------------------------------
# File generators, in the formats the publishers use
# ---------------------------------------------------------------------------------------------


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def idx_bytes(array: np.ndarray, compress: bool = True) -> bytes:
    """IDX: 00 00 08 <ndim>, big-endian uint32 sizes, then the uint8 values."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    return gzip.compress(raw, mtime=0) if compress else raw


def npz_bytes(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


class Py2Pickler(pickle._Pickler):  # type: ignore[name-defined]
    """Writes bytes as Python 2 ``str`` opcodes, so pickles look like the real CIFAR files."""

    dispatch = pickle._Pickler.dispatch.copy()  # type: ignore[attr-defined]

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str


def py2_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue()


def cifar_tarball(
    variant: str, n_train: int = 20, n_test: int = 10, seed: int = 0
) -> tuple[bytes, dict]:
    """A ``cifar-10-python.tar.gz`` or ``cifar-100-python.tar.gz`` with tiny random batches."""
    rng = np.random.default_rng(seed)
    classes = 10 if variant == "cifar10" else 100
    x_train = rng.integers(0, 256, (n_train, 3072), dtype=np.uint8)
    y_train = (np.arange(n_train) % classes).tolist()
    x_test = rng.integers(0, 256, (n_test, 3072), dtype=np.uint8)
    y_test = (np.arange(n_test) % classes).tolist()
    names = [f"class{i}".encode() for i in range(classes)]
    if variant == "cifar10":
        folder, label_key = "cifar-10-batches-py", b"labels"
        halves = np.array_split(np.arange(n_train), 5)
        members = {
            f"data_batch_{i + 1}": {b"data": x_train[h], label_key: [y_train[j] for j in h]}
            for i, h in enumerate(halves)
        }
        members["test_batch"] = {b"data": x_test, label_key: y_test}
        members["batches.meta"] = {b"label_names": names, b"num_vis": 3072}
    else:
        folder, label_key = "cifar-100-python", b"fine_labels"
        coarse = [b"coarse"] * 20
        members = {
            "train": {b"data": x_train, label_key: y_train, b"coarse_labels": [0] * n_train},
            "test": {b"data": x_test, label_key: y_test, b"coarse_labels": [0] * n_test},
            "meta": {b"fine_label_names": names, b"coarse_label_names": coarse},
        }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members.items():
            data = py2_pickle(content)
            info = tarfile.TarInfo(f"{folder}/{name}")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    expected = {
        "x_train": x_train.reshape(-1, 3, 32, 32),
        "y_train": np.array(y_train),
        "x_test": x_test.reshape(-1, 3, 32, 32),
        "y_test": np.array(y_test),
        "class_names": [n.decode() for n in names],
    }
    return buffer.getvalue(), expected


def fake_dataset_files(name: str, seed: int = 0) -> tuple[dict[str, bytes], dict]:
    """Small files in the official format of registry entry ``name``, and what they decode to."""
    rng = np.random.default_rng(seed)
    if name.startswith("cifar"):
        archive, expected = cifar_tarball(name, seed=seed)
        return {registry.get_spec(name).files[0].name: archive}, expected
    classes = 49 if name == "k49" else 10
    x_train = rng.integers(0, 256, (3 * classes, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (classes, 28, 28), dtype=np.uint8)
    y_train = np.arange(3 * classes, dtype=np.uint8) % classes
    y_test = np.arange(classes, dtype=np.uint8)
    arrays = (x_train, y_train, x_test, y_test)
    if name == "k49":
        files = {n: npz_bytes(arr_0=a) for n, a in zip(registry.K49_FILES, arrays, strict=True)}
    else:
        files = {n: idx_bytes(a) for n, a in zip(registry.IDX_FILES, arrays, strict=True)}
    expected = {
        "x_train": x_train[:, None],
        "y_train": y_train,
        "x_test": x_test[:, None],
        "y_test": y_test,
    }
    return files, expected


@dataclasses.dataclass
class FakeRemote:
    server: FileServer
    monkeypatch: pytest.MonkeyPatch

    def publish(
        self, name: str, prefix: str = "/official/", extra: dict[str, bytes] | None = None
    ) -> dict:
        """Serve fake files for registry entry ``name`` and point the entry at them."""
        files, expected = fake_dataset_files(name)
        files.update(extra or {})
        for file_name, body in files.items():
            self.server.serve(prefix + file_name, body)
        spec = registry.get_spec(name)
        remote = tuple(
            RemoteFile(
                f.name,
                None if f.optional else md5(files[f.name]),
                f.optional,
                unpacked_md5=md5(gzip.decompress(files[f.name])) if f.unpacked_md5 else None,
            )
            for f in spec.files
        )
        patched = dataclasses.replace(spec, files=remote, mirrors=(self.server.url(prefix),))
        self.monkeypatch.setitem(registry._REGISTRY, spec.name, patched)
        return expected


@pytest.fixture
def fake_remote(
    http_server: FileServer, monkeypatch: pytest.MonkeyPatch, data_home: Path
) -> FakeRemote:
    return FakeRemote(http_server, monkeypatch)


@pytest.fixture
def gen() -> SimpleNamespace:
    """``gen.idx_bytes(...)``, ``gen.cifar_tarball(...)``... for tests that build their own files."""
    functions = (md5, idx_bytes, npz_bytes, py2_pickle, cifar_tarball, fake_dataset_files)
    return SimpleNamespace(**{function.__name__: function for function in functions})
