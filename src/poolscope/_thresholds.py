"""The thresholds every verdict is judged by, in one place.

``diagnose()``, the loop monitor's block causes, the alert rules and the
dashboard (``tools/stackgen``), the docs' table and the tests all read them
from here, so that none of them can drift from the others.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "BLOCKED_SHARE",
    "CPU_BOUND_CORES",
    "LAG_THRESHOLD_S",
    "LATE_SHARE",
    "LOOP_BUSY",
    "MIN_BLOCKS",
    "ON_CPU",
    "OTHER_THREADS_CORES",
    "SATURATION",
]

SATURATION: Final = 0.95
"""Busy/limit at or above which a pool with tasks queued counts as saturated."""
CPU_BOUND_CORES: Final = 0.9
"""Cores used by a process at or above which it is out of CPU (its Python runs on one at a time)."""
LOOP_BUSY: Final = 0.9
"""Share of the time the loop ran callbacks at or above which it cannot keep up."""
ON_CPU: Final = 0.5
"""Share of its busy time a thread spent on a CPU below which it was mostly waiting."""
OTHER_THREADS_CORES: Final = 0.5
"""Cores used by threads other than the loop's at or above which they compete for the GIL."""
LAG_THRESHOLD_S: Final = 0.1
"""Event-loop lag above which a heartbeat counts as late."""
LATE_SHARE: Final = 0.05
"""Share of late heartbeats at or above which the loop lagged over the window."""
BLOCKED_SHARE: Final = 0.05
"""Share of the window the loop spent in blocking callbacks at or above which it was blocked."""
MIN_BLOCKS: Final = 2
"""Fewer blocks than this are a one-off (a first request's imports), not a pattern."""
