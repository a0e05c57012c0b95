"""Requests/s, p99 and server CPU per request of one app: bare, OpenTelemetryMiddleware
alone (and with a span per ``to_thread``), full poolscope.

uvicorn serves ``_asgi_app.py`` (one process, in its own interpreter per
configuration) and wrk drives it on loopback. Rounds of the configurations are
interleaved, the median round is reported, and poolscope is compared with
OpenTelemetryMiddleware alone measured in the same round. wrk and the server
share the machine's 2 cores; the server, one process with one event loop and
one GIL, serves as fast as its own CPU per request lets it, so requests/s
moves with that, and with what wrk and the rest of the machine take. The
server's CPU per request (from ``/proc``) is reported beside it.

    python benchmarks/bench_asgi.py                       # needs wrk (apt-get install wrk)
    python benchmarks/bench_asgi.py --duration 5 --rounds 2 --paths /offload
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _machine import BUSY_MACHINE, busy_jiffies, cores_busy
from _spread import spread
from _wrk import require_wrk, wrk

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from tools.stack import cpu_seconds, free_port  # noqa: E402

CONFIGS = (
    "bare",
    "otel",
    "otel-asyncio",
    "poolscope",
    "poolscope-no-run-spans",
    "poolscope-no-loop-monitor",
)


def uvicorn_argv(port: int) -> list[str]:
    """How the benchmarks serve ``_asgi_app`` (one process; run it in this directory)."""
    argv = [sys.executable, "-m", "uvicorn", "_asgi_app:app", "--host", "127.0.0.1"]
    return [*argv, "--port", str(port), "--log-level", "warning", "--no-access-log"]


def _serve(config: str, port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        uvicorn_argv(port),
        cwd=HERE,
        env={**os.environ, "POOLSCOPE_BENCH_CONFIG": config},
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/async", timeout=1).read()
            return server
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"uvicorn ({config}) did not start") from None
            time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--paths", nargs="+", default=["/offload", "/sync", "/async"])
    args = parser.parse_args()
    require_wrk()

    # per (path, config): (requests/s, p99 s, server CPU s per request) of each round
    results: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    busiest = 0.0
    for _ in range(args.rounds):
        for config in CONFIGS:
            port = free_port()
            server = _serve(config, port)
            try:
                for path in args.paths:
                    url = f"http://127.0.0.1:{port}{path}"
                    wrk(url, 2, args.connections)  # warm-up
                    cpu, busy = cpu_seconds(server.pid), busy_jiffies()
                    run = wrk(url, args.duration, args.connections)
                    cpu = cpu_seconds(server.pid) - cpu
                    busiest = max(busiest, cores_busy(busy, busy_jiffies()))
                    figures = (run.rate, run.p99, cpu / run.requests)
                    results.setdefault((path, config), []).append(figures)
            finally:
                server.terminate()
                server.wait(30)

    print(
        f"wrk -t2 -c{args.connections} -d{args.duration}s, uvicorn 1 process, "
        f"median (lowest to highest) of {args.rounds} rounds"
    )
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print(
        "| endpoint | configuration | requests/s | req/s vs otel, per round | p99 ms "
        "| server CPU µs/request | CPU vs otel, per round |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in args.paths:
        otel = results[(path, "otel")]
        for config in CONFIGS:
            runs = results[(path, config)]
            rate = statistics.median(r[0] for r in runs)
            p99 = statistics.median(r[1] for r in runs)
            # each round against OpenTelemetry alone in the same round
            rates = [r[0] / o[0] for r, o in zip(runs, otel, strict=True)]
            cpus = [r[2] / o[2] for r, o in zip(runs, otel, strict=True)]
            print(
                f"| `{path}` | {config} | {rate:.0f} | {spread(rates)} | {p99 * 1000:.1f} "
                f"| {spread([r[2] * 1e6 for r in runs], '{:.0f}')} | {spread(cpus)} |"
            )
    cores = os.cpu_count() or 1
    limit = (
        "the machine was the limit"
        if busiest > BUSY_MACHINE * cores
        else "the machine was not the limit: the server's one process was (one event loop, one GIL)"
    )
    print(f"\nThe machine's {cores} cores were at most {busiest:.2f} busy, wrk included: {limit}.")


if __name__ == "__main__":
    main()
