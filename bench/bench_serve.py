"""Serving throughput: ``trainlab serve`` against the FastAPI app users write, on loopback.

One checkpoint is trained first (the default model, ``fastnet``, on offline mnist-5k; a few
seconds), and every server serves those same weights:

* ``trainlab``:    ``trainlab serve RUN`` — the CLI users run (micro-batching off the event loop);
* ``naive async``: ``bench/naive_server.py``, ``async def predict`` — one forward pass per
  request, inline on the event loop (``python -m uvicorn naive_server:app``);
* ``naive sync``:  the same with ``def predict``, which FastAPI runs in its thread pool.

The naive apps run with uvicorn's defaults except ``--log-level warning``, which turns off the
access log as ``trainlab serve`` does (a line per request costs CPU and is not what is compared).

Each server runs alone in its own process, one at a time (never two at once: they would share
the cores); the load generator (``bench/loadgen.py``) is a third process: N keep-alive
connections, each sending one MNIST test digit as a PNG upload and waiting for the answer
(rotating over ``--digits`` different digits), for ``--warmup`` unmeasured seconds and then
``--duration`` measured ones. Per server and concurrency: requests per second, latency
percentiles, errors, the server process's peak resident memory (VmHWM), the CPU cores the server,
the load generator and every other process used meanwhile, and for trainlab the mean batch size
(``/healthz``). Repeats are interleaved, the server order alternating, and the table shows
medians.

    python bench/bench_serve.py                              # 30 s at 32 and 128 clients, 3 repeats
    python bench/bench_serve.py --duration 5 --repeats 1     # a quick check
    python bench/bench_serve.py --concurrency 1 8 64 --json serve.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

BENCH = Path(__file__).resolve().parent
SERVERS = ("trainlab", "naive async", "naive sync")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prepare(args: argparse.Namespace, folder: Path) -> tuple[Path, Path, dict[str, Any]]:
    """Train the checkpoint both servers load, and write ``--digits`` test digits as PNGs."""
    from PIL import Image

    import trainlab
    from trainlab.data import load_dataset

    run_dir = folder / "run"
    result = trainlab.train({"data": {"dataset": args.dataset}, "model": {"name": args.model},
                             "epochs": args.epochs, "device": "cpu", "progress": False,
                             "out": str(run_dir)})  # fmt: skip
    test = load_dataset(args.dataset).test
    images = folder / "digits"
    images.mkdir()
    for i in range(args.digits):
        buffer = io.BytesIO()
        Image.fromarray(test.images[i][0].numpy()).save(buffer, format="PNG")
        (images / f"{i:03d}-{int(test.labels[i])}.png").write_bytes(buffer.getvalue())
    info = {"model": args.model, "dataset": args.dataset, "epochs": args.epochs,
            "test_accuracy": result.test["accuracy"],
            "parameters": sum(p.numel() for p in load_model_parameters(run_dir))}  # fmt: skip
    return run_dir, images, info


def load_model_parameters(run_dir: Path) -> list[torch.Tensor]:
    from trainlab.runs.checkpoint import load_checkpoint

    return list(load_checkpoint(run_dir / "checkpoint").build_model().parameters())


def server_command(name: str, run_dir: Path, port: int, args: argparse.Namespace) -> list[str]:
    if name == "trainlab":
        return [sys.executable, "-m", "trainlab", "serve", str(run_dir), "--port", str(port),
                "--device", "cpu", *args.trainlab_args]  # fmt: skip
    app = {"naive async": "naive_server:app", "naive sync": "naive_server:app_sync"}[name]
    return [sys.executable, "-m", "uvicorn", app, "--app-dir", str(BENCH), "--host", "127.0.0.1",
            "--port", str(port), "--log-level", "warning"]  # fmt: skip


def process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (a server started by a wrapper holds the model in a child)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):  # the process ended meanwhile
                queue += [int(c) for c in (task / "children").read_text().split()]
    return found


def status_kib(pid: int, field: str) -> int:
    """A ``kB`` field of ``/proc/PID/status`` (VmHWM: peak resident memory), or 0."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def model_process(pid: int) -> int:
    """The process of the tree that holds the model: the one with the most resident memory."""
    return max(process_tree(pid), key=lambda p: status_kib(p, "VmRSS"))


def wait_until_listening(process: subprocess.Popen, port: int, log: Path, limit: float = 120):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"the server exited ({process.returncode}):\n{log.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(
        f"the server did not listen on port {port} within {limit} s:\n{log.read_text()}"
    )


def measure(name: str, concurrency: int, run_dir: Path, images: Path, folder: Path,
            args: argparse.Namespace) -> dict[str, Any]:  # fmt: skip
    """Start one server, load it for warmup + duration seconds, stop it; what was measured."""
    port = free_port()
    log = folder / "server.log"
    env = os.environ | {"NAIVE_CHECKPOINT": str(run_dir / "checkpoint")}
    with log.open("w") as out:
        server = subprocess.Popen(server_command(name, run_dir, port, args), env=env,
                                  stdout=out, stderr=subprocess.STDOUT)  # fmt: skip
    try:
        wait_until_listening(server, port, log)
        pid = model_process(server.pid)
        command = [sys.executable, str(BENCH / "loadgen.py"), "--port", str(port),
                   "--images", str(images), "--concurrency", str(concurrency),
                   "--duration", str(args.duration), "--warmup", str(args.warmup),
                   "--timeout", str(args.timeout), "--max-requests", str(args.max_requests),
                   "--server-pid", str(pid)]  # fmt: skip
        if name == "trainlab":
            command += ["--stats-path", "/healthz"]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise SystemExit(f"the load generator failed:\n{done.stderr}")
        result = json.loads(done.stdout)
        result["peak_rss_mib"] = status_kib(pid, "VmHWM") / 1024
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    stats = result.pop("stats", None)
    if stats:
        batches = stats["stop"]["batches"] - stats["start"]["batches"]
        result["mean_batch"] = (stats["stop"]["images"] - stats["start"]["images"]) / max(
            1, batches
        )
        result["largest_batch"] = stats["stop"]["largest_batch"]
    result["server"] = name
    return result


def median_row(outcomes: list[dict[str, Any]]) -> dict[str, Any]:
    def med(get) -> float | None:
        values = [v for v in (get(o) for o in outcomes) if v is not None]
        return statistics.median(values) if values else None

    return {
        "rps": med(lambda o: o["rps"]),
        "p50": med(lambda o: o["latency_ms"]["p50"]),
        "p99": med(lambda o: o["latency_ms"]["p99"]),
        "p99.9": med(lambda o: o["latency_ms"]["p99.9"]),
        "errors": sum(o["errors"] for o in outcomes),  # all of them, not a median
        "peak_rss_mib": med(lambda o: o["peak_rss_mib"]),
        "server_cores": med(lambda o: o["server_cores"]),
        "loadgen_cores": med(lambda o: o["loadgen_cores"]),
        "other_cores": med(lambda o: o["other_cores"]),
        "mean_batch": med(lambda o: o.get("mean_batch")),
        "repeats": len(outcomes),
    }


def cell(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def main() -> dict[str, Any]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=30, help="measured seconds per cell")
    parser.add_argument("--warmup", type=float, default=2, help="unmeasured seconds first")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[32, 128],
                        help="concurrent clients (keep-alive connections)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=3, help="measurements per cell (median)")
    parser.add_argument("--servers", nargs="+", default=list(SERVERS), choices=SERVERS)
    parser.add_argument("--model", default="fastnet", help="trainlab's default model")
    parser.add_argument("--dataset", default="mnist-5k")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--digits", type=int, default=16, help="different test digits sent")
    parser.add_argument("--timeout", type=float, default=10, help="seconds per request")
    parser.add_argument("--max-requests", type=int, default=1_000_000, help="per client")
    parser.add_argument("--trainlab-args", nargs=argparse.REMAINDER, default=[],
                        help="extra `trainlab serve` flags (last), e.g. --max-delay-ms 2")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every measurement here")
    args = parser.parse_args()

    # uvicorn picks httptools and uvloop by itself where they are installed (uvicorn[standard]),
    # for every server here alike; say which were there.
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    print(f"torch {torch.__version__} ({torch.get_num_threads()} threads), Python "
          f"{platform.python_version()}, {os.cpu_count()} logical cores, uvicorn with {http} "
          f"and {loop}; load average {os.getloadavg()[0]:.2f}")  # fmt: skip
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        folder = Path(tmp)
        run_dir, images, info = prepare(args, folder)
        print(f"model {info['model']} ({info['parameters']:,} parameters), {info['epochs']} "
              f"epochs on {info['dataset']}, test accuracy {info['test_accuracy']:.3f}; "
              f"{args.digits} test digits as PNG uploads; {args.warmup:g} s warm-up + "
              f"{args.duration:g} s per measurement")  # fmt: skip
        for name in args.servers:
            command = server_command(name, Path("RUN"), 0, args)[1:]
            print(f"  {name}: python {' '.join(command).replace('--port 0', '--port P')}")
        for repeat in range(args.repeats):
            for concurrency in args.concurrency:
                # Interleaved, and the order alternates, so that machine noise hits all alike.
                order = args.servers if repeat % 2 == 0 else list(reversed(args.servers))
                for name in order:
                    r = measure(name, concurrency, run_dir, images, folder, args)
                    r["repeat"] = repeat
                    results.append(r)
                    latency = r["latency_ms"]
                    print(f"  repeat {repeat} {name:12s} {concurrency:4d} clients "
                          f"{r['rps']:8.1f} req/s  p50 {latency['p50']:7.1f} ms  "
                          f"p99 {latency['p99']:7.1f} ms  errors {r['errors']}  "
                          f"server {cell(r['server_cores'], 2)} cores  loadgen "
                          f"{cell(r['loadgen_cores'], 2)}  others {cell(r['other_cores'], 2)}"
                          + (f"  mean batch {r['mean_batch']:.1f}" if "mean_batch" in r else ""),
                          flush=True)  # fmt: skip

    print(f"\n| median of {args.repeats} × {args.duration:g} s | clients | req/s | p50 ms | p99 ms "
          "| p99.9 ms | errors | peak RSS MiB | server cores | loadgen cores | other cores "
          "| mean batch |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    table: dict[str, dict[int, dict[str, Any]]] = {}
    for concurrency in args.concurrency:
        for name in args.servers:
            m = median_row([r for r in results
                            if r["server"] == name and r["concurrency"] == concurrency])  # fmt: skip
            table.setdefault(name, {})[concurrency] = m
            flag = " ⚠" if m["errors"] else ""
            print(f"| {name}{flag} | {concurrency} | {cell(m['rps'], 0)} | {cell(m['p50'])} "
                  f"| {cell(m['p99'])} | {cell(m['p99.9'])} | {m['errors']} "
                  f"| {cell(m['peak_rss_mib'], 0)} | {cell(m['server_cores'], 2)} "
                  f"| {cell(m['loadgen_cores'], 2)} | {cell(m['other_cores'], 2)} "
                  f"| {cell(m['mean_batch'])} |")  # fmt: skip

    ratios = {}
    naive = [n for n in args.servers if n != "trainlab"]
    if "trainlab" in table and naive:
        print()
        for concurrency in args.concurrency:
            ours = table["trainlab"][concurrency]
            best = max(naive, key=lambda n: table[n][concurrency]["rps"])
            theirs = table[best][concurrency]
            ratio = ours["rps"] / theirs["rps"]
            ratios[concurrency] = {"against": best, "rps_ratio": ratio,
                                   "p99_ratio": ours["p99"] / theirs["p99"]}  # fmt: skip
            print(f"{concurrency} clients: trainlab {ratio:.1f}x the requests per second of the "
                  f"best naive app ({best}: {ours['rps']:,.0f} vs {theirs['rps']:,.0f}), p99 "
                  f"{ours['p99']:.1f} vs {theirs['p99']:.1f} ms")  # fmt: skip
    errors = sum(r["errors"] for r in results)
    if errors:
        print(f"warning: {errors} failed requests (⚠ rows); see --json for their kinds")
    worst = max((r["other_cores"] or 0.0) for r in results)
    if worst > 0.2:
        print(f"warning: other processes kept up to {worst:.2f} cores busy during a "
              "measurement; run again on a quiet machine")  # fmt: skip
    summary = {"setup": info | {"http": http, "loop": loop},
               "args": {k: str(v) for k, v in vars(args).items()},
               "torch": torch.__version__, "python": platform.python_version(),
               "cores": os.cpu_count(), "measurements": results, "medians": table,
               "ratios": ratios}  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
        print(f"wrote {args.json}")
    return summary


if __name__ == "__main__":
    main()
