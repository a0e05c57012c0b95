"""What poolscope's pytest plugin costs a test suite that does not use it: this project's own.

The plugin is loaded wherever poolscope is installed. Unused (no
``poolscope_recorder``, no ``--poolscope-max-wait``) it must cost nothing:
this runs pytest on this repository's tests with the plugin loaded and with
``-p no:poolscope``, rounds interleaved so machine noise hits both alike,
and reports the median wall and CPU seconds of each and their ratio with
the spread (lowest to highest round's ratio).

Two workloads: collecting the whole suite (``--collect-only``: the plugin's
load and its hooks, once per test item), and running the unit tests of a few
fast files.

    python benchmarks/bench_pytest_plugin.py                # 7 rounds
    python benchmarks/bench_pytest_plugin.py --rounds 3     # quicker
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS = {
    "collect the whole suite": ["--collect-only", "-q", "tests"],
    "run 4 unit-test files": [
        "-q",
        "tests/test_config.py",
        "tests/test_public_api.py",
        "tests/test_architecture.py",
        "tests/test_schedules.py",
    ],
}
CONFIGS = {"plugin unused": [], "plugin off (-p no:poolscope)": ["-p", "no:poolscope"]}


def _run(args: list[str]) -> tuple[float, float]:
    """Wall and CPU seconds of one pytest run in a fresh interpreter."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        check=True,
        stdout=subprocess.DEVNULL,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    options = parser.parse_args()
    if not 1 <= options.rounds <= 50:
        parser.error("--rounds must be 1 to 50")
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, {options.rounds} rounds")
    print("\n| workload | configuration | wall s (median) | CPU s (median) | CPU ratio (spread) |")
    print("|---|---|---:|---:|---:|")
    for workload, args in WORKLOADS.items():
        _run(args)  # warm the file cache
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in CONFIGS}
        for _ in range(options.rounds):
            for name, extra in CONFIGS.items():
                figures[name].append(_run([*extra, *args]))
        base = [cpu for _, cpu in figures["plugin off (-p no:poolscope)"]]
        for name, runs in figures.items():
            ratios = [cpu / b for (_, cpu), b in zip(runs, base, strict=True)]
            print(
                f"| {workload} | {name} | {statistics.median(w for w, _ in runs):.2f} | "
                f"{statistics.median(c for _, c in runs):.2f} | "
                f"{statistics.median(ratios):.3f} ({min(ratios):.3f} to {max(ratios):.3f}) |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
