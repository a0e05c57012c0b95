"""How busy the whole machine was over a stretch: for the benchmarks that drive load,
so that a run can say when the machine, not the app, was the limit."""

from __future__ import annotations

import os
from typing import Final

BUSY_MACHINE: Final = 0.8
"""Fraction of the machine's cores in use above which a run says the machine, not
the app, may have been the limit."""


def busy_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs so far, from /proc/stat."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def cores_busy(before: tuple[int, int], after: tuple[int, int]) -> float:
    """Cores busy on average between two ``busy_jiffies()`` readings."""
    return (os.cpu_count() or 1) * (after[0] - before[0]) / max(after[1] - before[1], 1)
