"""Cost per offload: bare, poolscope metrics-only, poolscope with spans, and
opentelemetry-instrumentation-asyncio's ``to_thread`` span, in one run.

poolscope records into providers built as ``poolscope.configure()`` builds
them (its own histograms); ``poolscope-metrics-sdk`` into a meter provider the
app made, where the SDK aggregates poolscope's histograms.

Each configuration runs in its own fresh interpreter (instrumentations patch
process-wide state), the rounds of all configurations are interleaved so that
machine noise hits them alike, and the median round is reported. The workload
is sequential: one ``await asyncio.to_thread(noop)`` (or one
``pool.submit(noop).result()``) at a time, so the figure is the full cost of a
hand-off to a worker thread and back, and the difference to ``bare`` is what
instrumentation adds to it. Wall time is what the offloading code waits; CPU
time counts every thread of the process, including the work poolscope defers
to its background flusher (replayed before the CPU clock stops).

    python benchmarks/bench_offload.py            # prints a Markdown table
    python benchmarks/bench_offload.py --calls 5000 --rounds 3   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _providers import batch_providers, configured_providers
from _spread import spread

CONFIGS = ("bare", "poolscope-metrics", "poolscope-spans", "poolscope-metrics-sdk", "otel-asyncio")
PATHS = ("to_thread", "submit")


def noop() -> None:
    return None


def setup(config: str) -> Any:
    """Instrument for ``config``; return its tracer provider (None: no tracing)."""
    if config == "bare":
        return None
    if config == "poolscope-metrics-sdk":
        import poolscope

        poolscope.instrument(meter_provider=batch_providers()[1])
        return None
    if config in ("poolscope-metrics", "poolscope-spans"):
        import poolscope

        tracer_provider, meter_provider = configured_providers()
        if config == "poolscope-metrics":
            poolscope.instrument(meter_provider=meter_provider)
            return None
        poolscope.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
        return tracer_provider
    tracer_provider, meter_provider = batch_providers()
    if config == "otel-asyncio":
        os.environ["OTEL_PYTHON_ASYNCIO_TO_THREAD_FUNCTION_NAMES_TO_TRACE"] = noop.__name__
        from opentelemetry.instrumentation.asyncio import AsyncioInstrumentor

        AsyncioInstrumentor().instrument(
            tracer_provider=tracer_provider, meter_provider=meter_provider
        )
        return tracer_provider
    raise SystemExit(f"unknown config {config!r}; expected one of {CONFIGS}")


def _finish(config: str) -> None:
    """Do now what poolscope defers to its flusher thread, so CPU time includes it."""
    if config.startswith("poolscope"):
        from poolscope._core import _recorder

        _recorder.drain()


def _measure(config: str, path: str, calls: int) -> tuple[float, float]:
    """Wall and CPU (all threads) seconds per offload for one round."""
    import asyncio
    import contextlib

    tracer_provider = setup(config)
    tracer = tracer_provider.get_tracer("bench") if tracer_provider else None

    def parent() -> Any:
        # Inside a request span, as in a traced app.
        return tracer.start_as_current_span("request") if tracer else contextlib.nullcontext()

    if path == "submit":
        with ThreadPoolExecutor(4) as pool, parent():
            pool.submit(noop).result()
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(calls):
                pool.submit(noop).result()
            wall = time.perf_counter() - started
            _finish(config)
            return wall / calls, (time.process_time() - cpu_started) / calls

    async def main() -> tuple[float, float]:
        with parent():
            await asyncio.to_thread(noop)
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(calls):
                await asyncio.to_thread(noop)
            wall = time.perf_counter() - started
            _finish(config)
            return wall / calls, (time.process_time() - cpu_started) / calls

    return asyncio.run(main())


def _round(config: str, path: str, calls: int) -> tuple[float, float]:
    output = subprocess.run(
        [sys.executable, __file__, "--child", config, path, str(calls)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    figures = json.loads(output)
    return float(figures["wall"]), float(figures["cpu"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000, help="offloads per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per configuration")
    parser.add_argument(
        "--child", nargs=3, metavar=("CONFIG", "PATH", "CALLS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        config, path, calls = args.child
        wall, cpu = _measure(config, path, int(calls))
        print(json.dumps({"wall": wall, "cpu": cpu}))
        return

    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    for _ in range(args.rounds):
        for path in PATHS:
            for config in CONFIGS:
                if config == "otel-asyncio" and path == "submit":
                    continue  # it does not instrument executors
                results.setdefault((config, path), []).append(_round(config, path, args.calls))

    print(
        f"{args.calls} sequential offloads per round, {args.rounds} rounds, "
        "median (lowest to highest)"
    )
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print(
        "| path | configuration | wall µs/offload | added vs bare | ratio vs otel-asyncio "
        "| CPU µs/offload (all threads) | CPU added vs bare |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for path in PATHS:
        bare = results[("bare", path)]
        otel = results.get(("otel-asyncio", path))
        for config in CONFIGS:
            runs = results.get((config, path))
            if runs is None:
                continue
            # each round against the baselines measured in the same round
            added = [(r[0] - b[0]) * 1e6 for r, b in zip(runs, bare, strict=True)]
            cpu_added = [(r[1] - b[1]) * 1e6 for r, b in zip(runs, bare, strict=True)]
            versus_otel = (
                spread([r[0] / o[0] for r, o in zip(runs, otel, strict=True)], "{:.2f}")
                if otel
                else "n/a"
            )
            print(
                f"| `{path}` | {config} | {spread([r[0] * 1e6 for r in runs], '{:.1f}')} "
                f"| {spread(added, '{:+.1f}')} | {versus_otel} "
                f"| {spread([r[1] * 1e6 for r in runs], '{:.1f}')} "
                f"| {spread(cpu_added, '{:+.1f}')} |"
            )
    sdk_us, own_us = (_record_cost(providers) * 1e6 for providers in _RECORDERS)
    print(
        f"\nFor scale: one OpenTelemetry SDK Histogram.record costs {sdk_us:.1f} µs here, "
        f"one record into poolscope's own histograms {own_us:.1f} µs; poolscope makes "
        "two per task (wait, run), three per awaited offload (and resume)."
    )


_RECORDERS = (batch_providers, configured_providers)


def _record_cost(providers: Any) -> float:
    """Seconds per histogram record with poolscope's attributes, into the wait
    histogram of the meter provider ``providers()`` makes, for scale."""
    import timeit

    from poolscope._config import Settings
    from poolscope._core._telemetry import Telemetry

    _, meter_provider = providers()
    histogram = Telemetry(Settings(), meter_provider=meter_provider).wait
    attributes = {"executor.name": "asyncio.default", "executor.type": "thread_pool"}
    calls = 100_000
    return (
        min(timeit.repeat(lambda: histogram.record(0.001, attributes), number=calls, repeat=3))
        / calls
    )


if __name__ == "__main__":
    main()
