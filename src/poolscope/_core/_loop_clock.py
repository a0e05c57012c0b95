"""How an event loop spends its time: running callbacks, or waiting for events.

The loop's utilization (``asyncio.eventloop.time``, active against idle)
tells a loop that cannot keep up from one that waits for work, whatever the
pools do. Two ways of measuring it:

* the stock asyncio loop waits in its selector's ``select``: that one call is
  timed (two clock reads per loop iteration), so idle time is exact;
* uvloop waits inside libuv, out of Python's sight: the watchdog's samples of
  the loop thread (every 20 ms) say whether it was waiting, and each interval
  is counted to what the sample saw.

The clock also holds the loop thread's CPU clock, read from the metric
reader's thread. Clocks of loops that ended keep counting in the totals, so
the counters never go down.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from ._cpu import ThreadClock

__all__ = ["LoopClock", "SampledClock", "SelectorClock", "clock_for", "retire", "totals"]

_monotonic_ns: Final = time.monotonic_ns


class LoopClock:
    """Active and idle seconds of one loop, and its thread's CPU."""

    exact = False

    def __init__(self) -> None:
        self.thread = ThreadClock()
        self._cpu_before = self.thread.cpu()  # what the thread used before it ran this loop
        self.started_ns = _monotonic_ns()

    def cpu(self) -> float:
        """CPU seconds the loop's thread used since the clock started."""
        return max(self.thread.cpu() - self._cpu_before, 0.0)

    def times(self) -> tuple[float, float]:
        """(active, idle) seconds since the clock started."""
        raise NotImplementedError

    def waiting(self) -> bool:
        """Whether the loop waits for events right now (exact clocks only)."""
        return False

    def close(self) -> None:
        """The loop is no longer monitored: stop measuring, keep the figures."""


class SelectorClock(LoopClock):
    """Times the selector's ``select`` of a stock asyncio loop.

    The state is one tuple, replaced whole, so the reader's thread never sees
    half an update: (active ns, idle ns, when the loop last entered or left
    ``select``, whether it is in it).
    """

    exact = True

    def __init__(self, selector: Any) -> None:
        super().__init__()
        self.state: tuple[int, int, int, bool] = (0, 0, self.started_ns, False)
        self._selector = selector
        self._previous = selector.__dict__.get("select")
        self._closed_ns = 0
        original: Callable[..., Any] = selector.select
        clock = self

        def select(timeout: float | None = None) -> Any:
            if clock._closed_ns:  # wrapped over by someone else since: pass through
                return original(timeout)
            entered = _monotonic_ns()
            active, idle, since, _ = clock.state
            clock.state = (active + entered - since, idle, entered, True)
            try:
                return original(timeout)
            finally:
                left = _monotonic_ns()
                active, idle, since, _ = clock.state
                clock.state = (active, idle + left - since, left, False)

        self._wrapper = select
        selector.select = select

    def times(self) -> tuple[float, float]:
        active, idle, since, waiting = self.state
        elapsed = max((self._closed_ns or _monotonic_ns()) - since, 0)
        if waiting:
            idle += elapsed
        else:
            active += elapsed
        return active / 1e9, idle / 1e9

    def waiting(self) -> bool:
        return self.state[3]

    def last_change_ns(self) -> int:
        """When the loop last entered or left ``select``."""
        return self.state[2]

    def close(self) -> None:
        self._closed_ns = _monotonic_ns()
        selector = self._selector
        if selector.__dict__.get("select") is self._wrapper:
            if self._previous is None:
                del selector.select
            else:
                selector.select = self._previous


class SampledClock(LoopClock):
    """Counts each interval between two watchdog samples to what the later one saw.

    A sample is taken when the watchdog gets the GIL, and uvloop releases the
    GIL each time it polls, so under load the samples fall on the poll far
    more often than its share of the time: an interval the sample calls idle
    still counts as active for as long as the loop thread was on a CPU in it.
    """

    def __init__(self) -> None:
        super().__init__()
        self.state: tuple[int, int, int, float] = (0, 0, self.started_ns, self.thread.cpu())

    def sample(self, waiting: bool, now: int) -> None:
        active, idle, last, cpu_before = self.state
        cpu = self.thread.cpu()
        elapsed = max(now - last, 0)
        busy = elapsed if not waiting else min(elapsed, int(max(cpu - cpu_before, 0.0) * 1e9))
        self.state = (active + busy, idle + elapsed - busy, now, cpu)

    def times(self) -> tuple[float, float]:
        active, idle, _, _ = self.state
        return active / 1e9, idle / 1e9


def clock_for(loop: asyncio.AbstractEventLoop) -> LoopClock:
    """The exact clock where the loop's selector can be timed, else the sampled one."""
    selector = getattr(loop, "_selector", None)
    if (
        isinstance(loop, asyncio.BaseEventLoop)
        and selector is not None
        and callable(getattr(selector, "select", None))
        and hasattr(selector, "__dict__")
    ):
        clock: LoopClock = SelectorClock(selector)
    else:
        clock = SampledClock()
    _register(clock)
    return clock


# --- Totals for the metric reader --------------------------------------------------


class _Totals:
    """Every clock of the process, and what clocks that ended had counted."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.clocks: list[LoopClock] = []
        self.retired = [0.0, 0.0, 0.0]  # active, idle, cpu
        self.reported = [0.0, 0.0, 0.0]
        self.seen = False


_totals = _Totals()


def _register(clock: LoopClock) -> None:
    with _totals.lock:
        _totals.clocks.append(clock)
        _totals.seen = True


def retire(clock: LoopClock) -> None:
    """Stop measuring ``clock``; its figures stay in the totals."""
    clock.close()
    with _totals.lock:
        if clock not in _totals.clocks:
            return
        _totals.clocks.remove(clock)
        active, idle = clock.times()
        _totals.retired[0] += active
        _totals.retired[1] += idle
        _totals.retired[2] += clock.cpu()


def totals() -> tuple[float, float, float] | None:
    """(active, idle, loop-thread CPU) seconds of every loop monitored in this process.

    None before any loop was monitored. Each never decreases between two
    calls (readings of a live clock taken a moment apart may, by a few
    microseconds, when the loop switches state).
    """
    with _totals.lock:
        if not _totals.seen:
            return None
        figures = list(_totals.retired)
        for clock in _totals.clocks:
            active, idle = clock.times()
            figures[0] += active
            figures[1] += idle
            figures[2] += clock.cpu()
        reported = _totals.reported
        for index, value in enumerate(figures):
            reported[index] = max(reported[index], value)
        return reported[0], reported[1], reported[2]


def _reset_after_fork() -> None:
    # In a forked child no loop of the parent runs, and the child is a new
    # instance whose counters start from zero.
    _totals.reset()


os.register_at_fork(after_in_child=_reset_after_fork)
