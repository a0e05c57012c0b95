"""Memory per 100,000 offloads in steady state: bare, poolscope metrics-only, with spans.

Each configuration runs in a fresh interpreter: ``--warmup`` offloads first
(pools, instruments, caches and the SDK's attribute sets all made), then
``--offloads`` more, measured. The figures are what those added: the
process's resident memory (``/proc/self/statm``) and the interpreter's
allocated blocks (``sys.getallocatedblocks()``), each read after a full
collection and after poolscope's queued histogram records are replayed, so
what is left is what stays (spans waiting in the batch processor are exported
first: the queue's fill is not memory an offload keeps). A leak of one object
per offload would show as about 100,000 blocks.

    python benchmarks/bench_memory.py                  # 3 rounds, ~6 minutes here
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import statistics
import subprocess
import sys
from typing import Any

from _spread import spread
from bench_offload import noop, setup

CONFIGS = ("bare", "poolscope-metrics", "poolscope-spans")  # of bench_offload.setup's


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _settled(tracer_provider: Any) -> tuple[int, int]:
    """(RSS bytes, allocated blocks) once queued records are replayed, the spans
    waiting in the batch processor exported, and garbage collected."""
    with contextlib.suppress(ImportError):
        from poolscope._core import _recorder

        _recorder.drain()
    if tracer_provider is not None:
        tracer_provider.force_flush()
    gc.collect()
    return _rss_bytes(), sys.getallocatedblocks()


def _measure(config: str, warmup: int, offloads: int) -> dict[str, int]:
    tracer_provider = setup(config)
    tracer = tracer_provider.get_tracer("bench") if tracer_provider else None

    async def offload(count: int) -> None:
        for _ in range(count):
            await asyncio.to_thread(noop)

    async def main() -> dict[str, int]:
        # each batch inside a request span of its own, as requests are
        parent = tracer.start_as_current_span if tracer else lambda _: contextlib.nullcontext()
        with parent("warm-up"):
            await offload(warmup)
        rss, blocks = _settled(tracer_provider)
        for batch in range(10):
            with parent(f"request-{batch}"):
                await offload(offloads // 10)
        rss_after, blocks_after = _settled(tracer_provider)
        return {"rss": rss_after - rss, "blocks": blocks_after - blocks, "total_rss": rss_after}

    return asyncio.run(main())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offloads", type=int, default=100_000)
    parser.add_argument("--warmup", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_measure(args.child, args.warmup, args.offloads)))
        return
    results: dict[str, list[dict[str, int]]] = {}
    for _ in range(args.rounds):
        for config in CONFIGS:
            output = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    config,
                    "--warmup",
                    str(args.warmup),
                    "--offloads",
                    str(args.offloads),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
            results.setdefault(config, []).append(json.loads(output))
    print(
        f"{args.offloads} sequential to_thread offloads after {args.warmup} of warm-up, "
        f"{args.rounds} rounds, median (lowest to highest)"
    )
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs\n")
    print("| configuration | RSS added, KiB | allocated blocks added | RSS at the end, MiB |")
    print("|---|---:|---:|---:|")
    for config in CONFIGS:
        rounds = results[config]
        rss = [r["rss"] / 1024 for r in rounds]
        blocks = [r["blocks"] for r in rounds]
        total = statistics.median(r["total_rss"] for r in rounds) / 2**20
        print(
            f"| {config} | {spread(rss, '{:+.0f}')} | {spread(blocks, '{:+.0f}')} | {total:.1f} |"
        )


if __name__ == "__main__":
    main()
