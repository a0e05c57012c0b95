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
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONFIGS = ("bare", "otel", "poolscope", "poolscope-no-run-spans", "poolscope-no-loop-monitor")
_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


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


def _wrk(url: str, duration: int, connections: int) -> tuple[float, float]:
    """(requests per second, p99 latency in seconds) of one wrk run."""
    output = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    rate_match = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99_match = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if rate_match is None or p99_match is None:
        raise SystemExit(f"unexpected wrk output:\n{output}")
    rate = float(rate_match.group(1))
    value, unit = p99_match.groups()
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    if errors:
        raise SystemExit(f"{url}: {errors.group(1)} failed responses")
    return rate, float(value) * _UNITS[unit]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--paths", nargs="+", default=["/offload", "/sync", "/async"])
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")

    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for config in CONFIGS:
            port = _free_port()
            server = _serve(config, port)
            try:
                for path in args.paths:
                    url = f"http://127.0.0.1:{port}{path}"
                    _wrk(url, 2, args.connections)  # warm-up
                    results.setdefault((path, config), []).append(
                        _wrk(url, args.duration, args.connections)
                    )
            finally:
                server.terminate()
                server.wait(30)

    print(
        f"wrk -t2 -c{args.connections} -d{args.duration}s, uvicorn 1 process, "
        f"median of {args.rounds} rounds"
    )
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print("| endpoint | configuration | requests/s | p99 ms | req/s vs otel | p99 vs otel |")
    print("|---|---|---:|---:|---:|---:|")
    for path in args.paths:
        otel_rate = statistics.median(r[0] for r in results[(path, "otel")])
        otel_p99 = statistics.median(r[1] for r in results[(path, "otel")])
        for config in CONFIGS:
            rate = statistics.median(r[0] for r in results[(path, config)])
            p99 = statistics.median(r[1] for r in results[(path, config)])
            ratios = f"{rate / otel_rate:.2f} | {p99 / otel_p99:.2f}"
            print(f"| `{path}` | {config} | {rate:.0f} | {p99 * 1000:.1f} | {ratios} |")


if __name__ == "__main__":
    main()
