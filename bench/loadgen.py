"""A closed-loop HTTP/1.1 load generator for ``bench_serve.py``, cheap enough to share 2 cores.

``--concurrency`` keep-alive connections each send one request, read the whole response and send
the next, so the server always has that many requests in flight. Requests are built once, as
bytes (a multipart upload of one image each, rotating over the images in ``--images``); each
loop is a ``write`` and two reads on raw asyncio streams: no HTTP client library, no parsing
beyond the status line and ``Content-Length``.

Requests that *start* during the ``--warmup`` seconds are not recorded; after that, every request
that starts in the next ``--duration`` seconds is (each client also stops after
``--max-requests``). Errors are any non-200 status, a refused, reset or closed connection, or no
complete response within ``--timeout`` seconds; the client then reconnects. Prints one JSON
object: requests, seconds, latency percentiles in milliseconds, errors by kind, the CPU seconds
this process and (with ``--server-pid``) the server used, and the cores other processes kept
busy meanwhile.

    python bench/loadgen.py --port 8000 --images digits/ --concurrency 32 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import time
from collections import Counter
from collections.abc import Awaitable
from pathlib import Path
from typing import Any, TypeVar

from procstat import machine_busy_seconds

BOUNDARY = "trainlab-bench-7d3f0a9c"
T = TypeVar("T")
# What a failed exchange raises (asyncio.TimeoutError: Python 3.10; an OSError from 3.11).
FAILURES = (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError)


def upload_request(host: str, port: int, path: str, field: str, name: str, data: bytes) -> bytes:
    """A complete ``POST`` of one file as ``multipart/form-data``, keep-alive (HTTP/1.1)."""
    body = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: trainlab-bench\r\n"
        f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status code and body of one response (``Content-Length`` framing, as uvicorn sends)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    start = head.lower().find(b"\r\ncontent-length:")
    if start < 0:
        raise ValueError("response without Content-Length")
    end = head.index(b"\r\n", start + 2)
    length = int(head[start + 17 : end])
    return status, await reader.readexactly(length)


async def within(awaitable: Awaitable[T], seconds: float) -> T:
    """``await awaitable``, or ``TimeoutError`` after ``seconds`` (``asyncio.timeout`` where it
    exists: unlike ``wait_for`` on Python 3.11 it starts no task, which is CPU per request)."""
    if hasattr(asyncio, "timeout"):  # Python 3.11+
        async with asyncio.timeout(seconds):
            return await awaitable
    return await asyncio.wait_for(awaitable, seconds)


def percentile(ordered: list[float], q: float) -> float:
    """The ``q``-th percentile (0..100) of sorted values, linearly interpolated."""
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def process_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) process ``pid`` has used, from ``/proc`` (Linux), or None."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Load:
    """Shared state of the clients: the measured window and what was recorded in it."""

    def __init__(self, args: argparse.Namespace, requests: list[bytes]):
        self.args, self.requests = args, requests
        now = time.perf_counter()
        self.start = now + args.warmup  # requests that start before this are warm-up
        self.stop = self.start + args.duration  # no request starts after this
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.last_end = self.start

    async def client(self, index: int) -> None:
        args, requests = self.args, self.requests
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        sent = measured_count = 0
        while measured_count < args.max_requests:
            began = time.perf_counter()
            if began >= self.stop:
                break
            measured = began >= self.start
            measured_count += measured
            sent += 1
            try:
                if writer is None:
                    reader, writer = await within(
                        asyncio.open_connection(args.host, args.port), args.timeout
                    )
                writer.write(requests[(index + sent) % len(requests)])
                status, _ = await within(read_response(reader), args.timeout)
            except FAILURES as error:
                if measured:
                    self.errors[type(error).__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
                await asyncio.sleep(0.01)  # a dead server: do not spin
                continue
            ended = time.perf_counter()
            if measured:
                self.latencies.append(ended - began)
                self.last_end = max(self.last_end, ended)
                if status != 200:
                    self.errors[f"HTTP {status}"] += 1
        if writer is not None:
            writer.close()

    async def get(self, path: str) -> Any:
        """``GET path`` on a connection of its own, JSON-decoded (for the server's counters)."""
        reader, writer = await asyncio.open_connection(self.args.host, self.args.port)
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.args.host}\r\n\r\n".encode())
        _, body = await read_response(reader)
        writer.close()
        return json.loads(body)

    async def sample_window(self, server_pid: int | None) -> dict[str, Any]:
        """CPU counters (and the server's stats) at the start and the end of the window."""
        marks: dict[str, Any] = {}
        for name, at in (("start", self.start), ("stop", self.stop)):
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            marks[name] = {
                "own": own_seconds(),
                "server": process_seconds(server_pid) if server_pid else None,
                "busy": machine_busy_seconds(),
                "stats": await self.get(self.args.stats_path) if self.args.stats_path else None,
            }
        return marks


async def run(args: argparse.Namespace) -> dict[str, Any]:
    images = sorted(p for p in Path(args.images).iterdir() if p.is_file())
    if not images:
        raise SystemExit(f"no images in {args.images}")
    requests = [upload_request(args.host, args.port, args.path, args.field, p.name, p.read_bytes())
                for p in images]  # fmt: skip
    load = Load(args, requests)
    window = asyncio.create_task(load.sample_window(args.server_pid))
    await asyncio.gather(*(load.client(i) for i in range(args.concurrency)))
    marks = await window
    # Clients finish the requests they started before the stop: count until the last answer.
    seconds = max(load.last_end, load.stop) - load.start
    ordered = sorted(load.latencies)
    start, stop = marks["start"], marks["stop"]
    window_seconds = args.duration  # the CPU counters are read at start and stop

    def cores(key: str) -> float | None:
        if start[key] is None or stop[key] is None:
            return None
        return (stop[key] - start[key]) / window_seconds

    busy, own, server = cores("busy"), cores("own"), cores("server")
    result: dict[str, Any] = {
        "concurrency": args.concurrency,
        "requests": len(ordered),
        "seconds": seconds,
        "rps": len(ordered) / seconds,
        "errors": sum(load.errors.values()),
        "error_kinds": dict(load.errors),
        "latency_ms": {
            name: 1000 * percentile(ordered, q)
            for name, q in (("p50", 50), ("p90", 90), ("p99", 99), ("p99.9", 99.9), ("max", 100))
        },
        "loadgen_cores": own,
        "server_cores": server,
        "other_cores": (
            max(0.0, busy - own - (server or 0.0)) if busy is not None and own is not None else None
        ),
    }
    if args.stats_path:
        result["stats"] = {"start": start["stats"], "stop": stop["stats"]}
    return result


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/predict", help="where to POST")
    parser.add_argument("--field", default="file", help="multipart field of the upload")
    parser.add_argument("--images", required=True, help="folder of images to send, in rotation")
    parser.add_argument("--concurrency", type=int, default=32, help="connections (clients)")
    parser.add_argument("--duration", type=float, default=30, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds first")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="per client")
    parser.add_argument("--timeout", type=float, default=10, help="seconds per request")
    parser.add_argument("--server-pid", type=int, help="report this process's CPU use")
    parser.add_argument("--stats-path", help="GET this JSON at the start and end (e.g. /healthz)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    print(json.dumps(asyncio.run(run(parse_args(argv)))))


if __name__ == "__main__":
    main()
