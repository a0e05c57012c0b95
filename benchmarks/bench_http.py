"""Cost per blocking HTTP call made on a pool's worker: the bare call against the call
with poolscope's hook (metrics only, and with its span), and against
OpenTelemetry's own instrumentation of the library (alone, and enriched by poolscope).

One task on an instrumented pool's worker makes the calls one after another on
a keep-alive connection to a local server (its own process, so it does not
share this one's GIL), so the figure is the call itself, not the hand-off to
the worker. Each configuration runs in a fresh interpreter, the rounds of all
configurations are interleaved so that machine noise hits them alike, and the
median round is reported with the spread (lowest to highest round).

    python benchmarks/bench_http.py                 # prints a Markdown table
    python benchmarks/bench_http.py --calls 500 --rounds 3   # quicker
"""

from __future__ import annotations

import argparse
import contextlib
import http.server
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _providers import batch_providers

CONFIGS = ("bare", "poolscope-metrics", "poolscope-spans", "otel", "otel+poolscope")
LIBRARIES = ("requests", "httpx")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, no delayed-ACK stall

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def _server(used: dict[str, float]) -> Iterator[str]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--serve"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        yield f"http://127.0.0.1:{process.stdout.readline().strip()}/context?q=1"
        used["server"] = _cpu_seconds(process.pid)
    finally:
        process.kill()
        process.wait()


def _instrumentor(library: str) -> Any:
    if library == "requests":
        from opentelemetry.instrumentation.requests import RequestsInstrumentor

        return RequestsInstrumentor()
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    return HTTPXClientInstrumentor()


def _setup(config: str, library: str) -> Any:
    """Instrument for ``config``; return a tracer for the parent span (None: no tracing)."""
    import poolscope

    if config == "bare":
        return None
    tracer_provider, meter_provider = batch_providers()
    if config == "poolscope-metrics":
        poolscope.instrument(meter_provider=meter_provider)
        return None
    if config.startswith("otel"):
        _instrumentor(library).instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        if config == "otel":
            return tracer_provider.get_tracer("bench")
    poolscope.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    return tracer_provider.get_tracer("bench")


def _client(library: str, url: str) -> Callable[[], object]:
    if library == "requests":
        import requests

        session = requests.Session()
        return lambda: session.get(url, timeout=10).status_code
    import httpx

    client = httpx.Client(timeout=10)
    return lambda: client.get(url).status_code


def _measure(config: str, library: str, calls: int, url: str) -> dict[str, float]:
    tracer = _setup(config, library)
    call = _client(library, url)

    def task() -> dict[str, float]:
        for _ in range(20):
            call()  # warm: the connection, the first spans
        started = time.perf_counter()
        cpu_started = time.process_time()
        for _ in range(calls):
            call()
        wall = time.perf_counter() - started
        if "poolscope" in config:
            from poolscope._core import _recorder

            _recorder.drain()  # what poolscope defers to its flusher, counted here
        return {"wall": wall / calls, "cpu": (time.process_time() - cpu_started) / calls}

    import poolscope

    pool = ThreadPoolExecutor(1)
    if config not in {"bare", "otel"}:
        pool = poolscope.instrument_executor(pool, name="fetchers")
    parent = tracer.start_as_current_span("request") if tracer else contextlib.nullcontext()
    with pool, parent:
        figures = pool.submit(task).result()
    figures["rss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return figures


def _round(config: str, library: str, calls: int, url: str) -> dict[str, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--child", config, library, str(calls), url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures: dict[str, float] = json.loads(output)
    return figures


def _spread(values: list[float], scale: float) -> str:
    low, middle, high = (
        f"{v * scale:.2f}" for v in (min(values), statistics.median(values), max(values))
    )
    return f"{middle} ({low} to {high})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2_000, help="HTTP calls per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per configuration")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        _serve()
        return
    if args.child:
        config, library, calls, url = args.child
        print(json.dumps(_measure(config, library, int(calls), url)))
        return

    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    used: dict[str, float] = {}
    started = time.monotonic()
    with _server(used) as url:
        for _ in range(args.rounds):
            for library in LIBRARIES:
                for config in CONFIGS:
                    results.setdefault((config, library), []).append(
                        _round(config, library, args.calls, url)
                    )
    print(
        f"{args.calls} sequential keep-alive GETs per round on one pool worker, "
        f"median (lowest to highest) of {args.rounds} rounds"
    )
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print(
        "| library | configuration | wall µs/call | added vs bare (median) | ratio vs bare "
        "| ratio vs otel | CPU µs/call (all threads) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for library in LIBRARIES:
        bare = statistics.median(r["wall"] for r in results[("bare", library)])
        otel = statistics.median(r["wall"] for r in results[("otel", library)])
        for config in CONFIGS:
            rounds = results[(config, library)]
            walls = [r["wall"] for r in rounds]
            wall = statistics.median(walls)
            ratios = [w / bare for w in walls]
            print(
                f"| {library} | {config} | {_spread(walls, 1e6)} | {(wall - bare) * 1e6:+.1f} "
                f"| {_spread(ratios, 1)} | {wall / otel:.2f} "
                f"| {_spread([r['cpu'] for r in rounds], 1e6)} |"
            )
    wall = time.monotonic() - started
    server = used.get("server", 0.0)
    print(
        f"\nThe server (its own process) used {server:.1f} CPU s in {wall:.0f} s "
        f"({server / wall:.2f} cores): one core was left for the measured process"
        if server / wall < 0.9
        else f"\nThe server used {server / wall:.2f} cores: the machine, not the client, "
        "may have been the limit"
    )


if __name__ == "__main__":
    main()
