"""What the event-loop signals cost per loop iteration: bare loop against a monitored one.

A chain of callbacks, each scheduling the next with ``call_soon``, makes the
loop go round once per callback: each iteration is one ``select`` and one
callback, the worst case for a per-iteration cost (real callbacks do work).
Two configurations, each in a fresh interpreter, rounds interleaved:

* **bare**: no poolscope.
* **monitored**: ``poolscope.instrument()`` with SDK providers and the loop
  monitor on this loop: the heartbeat, the timed ``select``
  (``asyncio.eventloop.time``), the watchdog sampling the loop thread every
  20 ms (callbacks told apart, blocks timed) and the CPU readings.

    python benchmarks/bench_loop.py                       # 300,000 iterations x 5 rounds
    python benchmarks/bench_loop.py --iterations 100000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time

CONFIGS = ("bare", "monitored")


def _chain(loop: asyncio.AbstractEventLoop, iterations: int) -> asyncio.Future[None]:
    done = loop.create_future()
    left = [iterations]

    def step() -> None:
        left[0] -= 1
        if left[0]:
            loop.call_soon(step)
        else:
            done.set_result(None)

    loop.call_soon(step)
    return done


def _watchdog_cpu() -> float:
    """CPU seconds poolscope's watchdog thread has used (0 when there is none)."""
    for thread in threading.enumerate():
        if thread.name == "poolscope-loop-watchdog" and thread.ident is not None:
            return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))
    return 0.0


async def _measure(iterations: int, config: str) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    if config == "monitored":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider

        import poolscope
        from poolscope._core import _state

        reader = InMemoryMetricReader()
        poolscope.instrument(
            tracer_provider=TracerProvider(), meter_provider=MeterProvider(metric_readers=[reader])
        )
        _state.on_serving_loop()  # what the middleware does on the first request
        await asyncio.sleep(0.2)  # the heartbeat has run: the watchdog knows the loop
    await _chain(loop, 10_000)  # warm-up
    watchdog = _watchdog_cpu()
    wall, cpu = time.perf_counter(), time.process_time()
    await _chain(loop, iterations)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    watchdog_cpu = _watchdog_cpu() - watchdog
    return {
        "wall_ns": wall / iterations * 1e9,
        "cpu_ns": cpu / iterations * 1e9,
        "seconds": wall,
        "watchdog_cpu": watchdog_cpu,
    }


def _round(config: str, iterations: int) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, __file__, "--child", config, "--iterations", str(iterations)],
        capture_output=True,
        text=True,
        check=True,
    )
    found: dict[str, float] = json.loads(result.stdout)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--child", choices=CONFIGS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_measure(args.iterations, args.child))))
        return
    results: dict[str, list[dict[str, float]]] = {config: [] for config in CONFIGS}
    for _ in range(args.rounds):
        for config in CONFIGS:
            results[config].append(_round(config, args.iterations))
    print(f"{args.iterations} loop iterations, an empty callback each, {args.rounds} rounds")
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print("| configuration | wall ns/iteration | added | ratio vs bare (min to max) | CPU ns |")
    print("|---|---:|---:|---:|---:|")
    bare_walls = [r["wall_ns"] for r in results["bare"]]
    bare = statistics.median(bare_walls)
    for config in CONFIGS:
        walls = [r["wall_ns"] for r in results[config]]
        cpus = [r["cpu_ns"] for r in results[config]]
        ratios = sorted(w / b for w, b in zip(walls, bare_walls, strict=True))
        wall = statistics.median(walls)
        print(
            f"| {config} | {wall:.0f} | {wall - bare:+.0f} | {statistics.median(ratios):.2f} "
            f"({ratios[0]:.2f} to {ratios[-1]:.2f}) | {statistics.median(cpus):.0f} |"
        )
    per_second = statistics.median(r["watchdog_cpu"] / r["seconds"] for r in results["monitored"])
    print(f"\nThe watchdog thread used {per_second * 1000:.1f} ms of CPU per second of busy loop.")


if __name__ == "__main__":
    main()
