"""Requests/s and p99 of one app: bare, OpenTelemetryMiddleware alone, full poolscope.

uvicorn serves ``_asgi_app.py`` (one process, in its own interpreter per
configuration) and wrk drives it on loopback. Rounds of the three
configurations are interleaved, the median round is reported, and poolscope
is compared with OpenTelemetryMiddleware alone measured in the same run.

    python benchmarks/bench_asgi.py                       # needs wrk (apt-get install wrk)
    python benchmarks/bench_asgi.py --duration 5 --rounds 2 --paths /offload
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from _spread import spread
from _wrk import require_wrk, wrk

HERE = Path(__file__).resolve().parent
CONFIGS = ("bare", "otel", "poolscope", "poolscope-no-run-spans", "poolscope-no-loop-monitor")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(config: str, port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "_asgi_app:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
        ],
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

    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for config in CONFIGS:
            port = _free_port()
            server = _serve(config, port)
            try:
                for path in args.paths:
                    url = f"http://127.0.0.1:{port}{path}"
                    wrk(url, 2, args.connections)  # warm-up
                    run = wrk(url, args.duration, args.connections)
                    results.setdefault((path, config), []).append((run.rate, run.p99))
            finally:
                server.terminate()
                server.wait(30)

    print(
        f"wrk -t2 -c{args.connections} -d{args.duration}s, uvicorn 1 process, "
        f"median of {args.rounds} rounds"
    )
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print(
        "| endpoint | configuration | requests/s | p99 ms "
        "| req/s vs otel, per round (lowest to highest) | p99 vs otel |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for path in args.paths:
        otel = results[(path, "otel")]
        otel_p99 = statistics.median(r[1] for r in otel)
        for config in CONFIGS:
            runs = results[(path, config)]
            rate = statistics.median(r[0] for r in runs)
            p99 = statistics.median(r[1] for r in runs)
            # each round against OpenTelemetry alone in the same round
            ratios = [r[0] / o[0] for r, o in zip(runs, otel, strict=True)]
            print(
                f"| `{path}` | {config} | {rate:.0f} | {p99 * 1000:.1f} | {spread(ratios)} "
                f"| {p99 / otel_p99:.2f} |"
            )


if __name__ == "__main__":
    main()
