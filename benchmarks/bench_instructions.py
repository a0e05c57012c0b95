"""Instructions per offload and per request, counted by callgrind: the figures a run repeats.

On a shared 2-core VM, wall and CPU time per offload move by ±20-60 % from
round to round and by up to 1.8 times within a day, so a difference of a few
µs between two configurations is lost in them. An instruction count moves far
less: ``valgrind --tool=callgrind`` counts the instructions every thread of the
process executed, whatever else the machine is doing. It still varies a little
from run to run (how the threads interleave decides, for example, how often
the pool starts a thread), so each figure is the median of ``--repeats``
estimates, with their spread. What it cannot see is what costs time without
instructions (cache misses, a thread waiting for the GIL): ``bench_offload.py``
and ``bench_asgi.py`` measure those, in time.

Each estimate runs the workload in a fresh interpreter under callgrind twice,
with N and 4N operations; the difference over 3N is the count per operation,
free of start-up and imports. Workloads:

* ``offload``: ``bench_offload.py``'s, one ``await asyncio.to_thread(noop)`` or
  one ``pool.submit(noop).result()`` at a time, in its configurations. A task
  alone there waits tens of µs for its worker, far below the 1 ms from which
  poolscope makes an ``executor.wait`` span; under callgrind the same hand-over
  takes milliseconds, and would make a wait span the real run never makes. So
  the threshold is raised here (:data:`NO_WAIT_SPAN`), to count what that run
  does;
* ``asgi``: ``_asgi_app.py``'s endpoints called in-process (no server, no
  sockets: the app's own ASGI calls), ``--concurrency`` requests at a time on
  uvloop, so the default executor's 6 workers are outnumbered and every
  offload waits, as under ``bench_asgi.py``'s 50 connections;
* ``server``: the same app served by uvicorn, as ``bench_asgi.py`` serves it,
  and only the server under callgrind: requests sent over ``--concurrency``
  keep-alive connections by a client in this process. It counts what the
  in-process workload leaves out (uvicorn, its HTTP parser, the ASGI scope a
  real server builds), at under a minute an estimate.

Timed work in background threads (the span processor's export every 5 s, the
watchdog's sample every 20 ms) runs per second of the process, and under
callgrind a second holds ~50 times fewer operations: the ``asgi`` and
``server`` workloads therefore run without the loop monitor (``bench_loop.py``
measures it).

    apt-get install valgrind
    python benchmarks/bench_instructions.py                 # offload and asgi, 3 repeats: ~45 min
    python benchmarks/bench_instructions.py --workload offload --repeats 1
    python benchmarks/bench_instructions.py --workload server --paths /async /offload   # ~15 min
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _spread import spread
from bench_asgi import uvicorn_argv

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from tools.stack import free_port, tcp_open  # noqa: E402

WORKLOADS = ("offload", "asgi", "server")
OFFLOAD_CONFIGS = ("bare", "poolscope-metrics", "poolscope-spans", "otel-asyncio")
OFFLOAD_PATHS = ("to_thread", "submit")
ASGI_CONFIGS = ("bare", "otel", "poolscope-no-loop-monitor")
ASGI_PATHS = ("/offload", "/sync", "/async")
_COLLECTED = re.compile(r"Collected : (\d+)")
NO_WAIT_SPAN = {"OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS": "60000"}
"""For the offload workload: a hand-over callgrind slows down is not a wait."""


_CALLGRIND = ("valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null")


def _collected(argv: list[str], returncode: int | None, stderr: str) -> int:
    found = _COLLECTED.search(stderr)
    if returncode != 0 or found is None:
        raise SystemExit(f"{' '.join(argv)} failed under callgrind:\n{stderr[-2000:]}")
    return int(found.group(1))


def _instructions(argv: list[str], env: dict[str, str] | None = None) -> int:
    """Instructions every thread of ``argv`` executed, by callgrind."""
    result = subprocess.run(
        [*_CALLGRIND, *argv],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        cwd=HERE,
    )
    return _collected(argv, result.returncode, result.stderr)


Estimates = dict[tuple[str, str], list[float]]


def _per_operation(argv: list[str], count: int, env: dict[str, str] | None = None) -> float:
    """Instructions per operation: ``argv`` + N against ``argv`` + 4N, over 3N."""
    few = _instructions([*argv, str(count)], env)
    many = _instructions([*argv, str(4 * count)], env)
    return (many - few) / (3 * count)


def _offload(count: int, repeats: int) -> Estimates:
    script = [sys.executable, str(HERE / "bench_offload.py"), "--child"]
    cases = [
        (path, config)
        for path in OFFLOAD_PATHS
        for config in OFFLOAD_CONFIGS
        if not (config == "otel-asyncio" and path == "submit")  # it does not patch executors
    ]
    found: Estimates = {case: [] for case in cases}
    for _ in range(repeats):  # rounds interleaved, as in the timed benchmarks
        for path, config in cases:
            argv = [*script, config, path]
            found[(path, config)].append(_per_operation(argv, count, NO_WAIT_SPAN))
    return found


def _asgi(count: int, concurrency: int, repeats: int, paths: list[str]) -> Estimates:
    script = [sys.executable, __file__, "--asgi-child", str(concurrency)]
    found: Estimates = {(path, config): [] for path in paths for config in ASGI_CONFIGS}
    for _ in range(repeats):
        for path, config in found:
            env = {"POOLSCOPE_BENCH_CONFIG": config}
            found[(path, config)].append(_per_operation([*script, path], count, env))
    return found


def _server(count: int, concurrency: int, repeats: int, paths: list[str]) -> Estimates:
    found: Estimates = {(path, config): [] for path in paths for config in ASGI_CONFIGS}
    for _ in range(repeats):
        for path, config in found:
            few = _served(config, path, count, concurrency)
            many = _served(config, path, 4 * count, concurrency)
            found[(path, config)].append((many - few) / (3 * count))
    return found


def _served(config: str, path: str, requests: int, concurrency: int) -> int:
    """Instructions uvicorn executed, under callgrind, from start to exit, having
    served ``requests`` requests for ``path``."""
    port = free_port()
    argv = uvicorn_argv(port)
    server = subprocess.Popen(
        [*_CALLGRIND, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "POOLSCOPE_BENCH_CONFIG": config},
        cwd=HERE,
    )
    try:
        deadline = time.monotonic() + 300  # imports under callgrind take a while
        while not tcp_open(port) and server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        if tcp_open(port):
            asyncio.run(_send(f"http://127.0.0.1:{port}{path}", requests, concurrency))
            server.send_signal(signal.SIGINT)  # uvicorn shuts down, valgrind reports
        else:
            server.kill()
        stderr = server.communicate(timeout=300)[1]
    finally:
        if server.poll() is None:
            server.kill()
    return _collected(argv, server.returncode, stderr)


async def _send(url: str, requests: int, concurrency: int) -> None:
    """``requests`` GETs of ``url``, over ``concurrency`` keep-alive connections."""
    import httpx

    left = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=300, limits=limits) as client:

        async def connection() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                (await client.get(url)).raise_for_status()

        await asyncio.gather(*(connection() for _ in range(concurrency)))


def _asgi_child(concurrency: int, path: str, requests: int) -> None:
    """Call ``_asgi_app``'s app in-process ``requests`` times, ``concurrency`` at a time."""
    import asyncio

    import uvloop

    sys.path.insert(0, str(HERE))
    from _asgi_app import app

    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 50000),
        "scheme": "http",
        "method": "GET",
        "root_path": "",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"bench")],
    }

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: object) -> None:
        return None

    async def one() -> None:
        await app(dict(scope, state={}), receive, send)

    async def main() -> None:
        for _ in range(50):  # warm-up: imports, the executor's threads, the first spans
            await one()
        for first in range(0, requests, concurrency):  # exactly ``requests`` in all
            await asyncio.gather(*(one() for _ in range(min(concurrency, requests - first))))

    uvloop.run(main())


def _table(title: str, estimates: Estimates, baseline: str, reference: str) -> None:
    print(f"\n{title}\n")
    print(
        f"| path | configuration | instructions | added vs {baseline} (median) "
        f"| ratio vs {reference} (median) |"
    )
    print("|---|---|---:|---:|---:|")
    for (path, config), counts in estimates.items():
        count = statistics.median(counts)
        base = statistics.median(estimates[(path, baseline)])
        ref = estimates.get((path, reference))
        ratio = f"{count / statistics.median(ref):.2f}" if ref else "n/a"
        print(
            f"| `{path}` | {config} | {spread(counts, '{:,.0f}')} "
            f"| {count - base:+,.0f} | {ratio} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workload", nargs="+", choices=WORKLOADS, default=["offload", "asgi"], metavar="W"
    )
    parser.add_argument("--offloads", type=int, default=1000, help="N offloads (and 4N)")
    parser.add_argument("--requests", type=int, default=100, help="N requests (and 4N)")
    parser.add_argument("--concurrency", type=int, default=50, help="requests at a time")
    parser.add_argument("--paths", nargs="+", default=list(ASGI_PATHS), help="asgi, server")
    parser.add_argument("--repeats", type=int, default=3, help="estimates per figure")
    parser.add_argument("--asgi-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.asgi_child:
        concurrency, path, requests = args.asgi_child
        _asgi_child(int(concurrency), path, int(requests))
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (Debian: apt-get install valgrind)")

    print(
        f"instructions per operation, all threads, counted by callgrind: "
        f"median (lowest to highest) of {args.repeats} estimates"
    )
    print(f"Python {sys.version.split()[0]}")
    if "offload" in args.workload:
        _table(
            f"One offload at a time ({args.offloads} and {4 * args.offloads} offloads):",
            _offload(args.offloads, args.repeats),
            "bare",
            "otel-asyncio",
        )
    requests = f"({args.requests} and {4 * args.requests} requests)"
    for workload, title, measure in (
        ("asgi", f"In-process ASGI requests, {args.concurrency} at a time", _asgi),
        ("server", f"Requests served by uvicorn, {args.concurrency} connections", _server),
    ):
        if workload in args.workload:
            estimates = measure(args.requests, args.concurrency, args.repeats, args.paths)
            _table(f"{title} {requests}:", estimates, "bare", "otel")


if __name__ == "__main__":
    main()
