"""``poolscope.diagnose()``: which pool was the bottleneck, at what load, and what would fix it.

The input is what the pools did over windows of time (a load step of the
demo, a scrape interval of ``top``, a range read from Prometheus): for each
(service, instance, pool) its limit, peak and mean busy workers, peak
pending tasks, and the tasks, wait and run seconds recorded in the window;
for each event loop its lag. The output names, per process, the pools that
hit their own cap with tasks queued, the first load at which each did, and
how many workers the tasks wanted at once (measured, or by Little's law); and it
says when the event loop, not a pool, is what held requests up.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

__all__ = ["Diagnosis", "LoopFinding", "LoopWindow", "PoolFinding", "PoolWindow", "diagnose"]

SATURATION: Final = 0.95
"""Busy/limit at or above which a pool with tasks queued counts as saturated."""
LAG_THRESHOLD_S: Final = 0.1
"""Event-loop lag p99 above which the loop counts as blocked."""


@dataclass(frozen=True)
class PoolWindow:
    """What one pool of one process did during one window."""

    pool: str
    limit: float
    busy_peak: float
    pending_peak: float
    tasks: float
    wait_seconds: float
    run_seconds: float
    duration: float
    """Length of the window, seconds."""
    busy_typical: float | None = None
    """The median of the busy samples in the window: saturated most of the time, not once."""
    demand_typical: float | None = None
    """The median of busy + pending samples: the tasks that wanted a worker at once."""
    wait_p95: float | None = None
    load: float | None = None
    """What drove the window, e.g. the demo's concurrency; ``None`` if unknown."""
    service: str = ""
    instance: str = ""
    type: str = ""

    @property
    def saturated(self) -> bool:
        busy = self.busy_typical if self.busy_typical is not None else self.busy_peak
        return self.limit > 0 and busy >= SATURATION * self.limit and self.pending_peak > 0

    @property
    def needed_workers(self) -> float:
        """How many workers the tasks wanted at the same time.

        Measured when samples of busy and pending are known (their median sum);
        otherwise by Little's law, tasks per second times mean time in the pool
        (waiting + running), which is the average over the window.
        """
        if self.demand_typical is not None:
            return self.demand_typical
        if self.duration <= 0:
            return 0.0
        return (self.wait_seconds + self.run_seconds) / self.duration


@dataclass(frozen=True)
class LoopWindow:
    """What one process's event loop did during one window."""

    lag_p99: float | None
    duration: float
    blocked: int = 0
    load: float | None = None
    service: str = ""
    instance: str = ""


@dataclass(frozen=True)
class PoolFinding:
    """A pool that hit its cap with tasks queued."""

    service: str
    instance: str
    pool: str
    type: str
    limit: float
    saturated_at: float | None
    """The lowest load at which it was saturated (``None`` when loads are unknown)."""
    windows_saturated: int
    peak_busy: float
    peak_pending: float
    worst_wait_p95: float | None
    needed_workers: float
    """The largest Little's-law estimate over the saturated windows."""

    def describe(self) -> str:
        where = f" in {self.service}" if self.service else ""
        at = f" from a load of {self.saturated_at:g}" if self.saturated_at is not None else ""
        wait = (
            f", tasks waited up to {self.worst_wait_p95 * 1000:.0f} ms (p95)"
            if self.worst_wait_p95
            else ""
        )
        return (
            f"{self.pool}{where} hit its limit of {self.limit:g} workers{at}"
            f" ({self.peak_pending:g} tasks queued at the peak{wait}); the tasks wanted "
            f"about {self.needed_workers:.0f} workers at once"
        )


@dataclass(frozen=True)
class LoopFinding:
    """An event loop that was blocked: requests waited for the loop, not for a pool."""

    service: str
    instance: str
    worst_lag_p99: float
    blocked: int
    lagging_from: float | None

    def describe(self) -> str:
        where = f" of {self.service}" if self.service else ""
        return (
            f"the event loop{where} ran callbacks up to {self.worst_lag_p99 * 1000:.0f} ms late "
            f"(p99), {self.blocked} blocked stretches: something runs blocking code on the "
            "loop itself, and no pool size will fix that"
        )


@dataclass(frozen=True)
class Diagnosis:
    pools: tuple[PoolFinding, ...] = ()
    loops: tuple[LoopFinding, ...] = ()
    healthy: tuple[str, ...] = field(default=())
    """Pools (by name) that were seen and never saturated."""

    @property
    def ok(self) -> bool:
        return not self.pools and not self.loops

    def bottleneck(self, service: str = "") -> PoolFinding | None:
        """The pool that saturated first (then the one that needed the most workers)."""
        found = [f for f in self.pools if not service or f.service == service]
        if not found:
            return None
        return min(
            found,
            key=lambda f: (
                f.saturated_at if f.saturated_at is not None else float("inf"),
                -f.needed_workers,
            ),
        )

    def summary(self) -> str:
        if self.ok:
            names = ", ".join(self.healthy) or "none seen"
            return f"No pool hit its limit and the event loop kept up (pools: {names})."
        lines = [f"- {finding.describe()}" for finding in self.pools]
        lines += [f"- {finding.describe()}" for finding in self.loops]
        return "\n".join(lines)


def diagnose(pools: Iterable[PoolWindow], loops: Iterable[LoopWindow] = ()) -> Diagnosis:
    """Name the saturated pools and blocked loops in ``pools`` and ``loops``.

    A pool is saturated in a window when its typical busy workers (the
    median of the samples, or the peak if there are none) reach 95% of *its
    own* limit while tasks are pending: per process, never summed across
    processes, the same rule as the ``PoolscopePoolSaturated`` alert.
    """
    by_pool: dict[tuple[str, str, str], list[PoolWindow]] = {}
    for window in pools:
        by_pool.setdefault((window.service, window.instance, window.pool), []).append(window)
    findings, healthy = [], []
    for (service, instance, pool), windows in sorted(by_pool.items()):
        saturated = [w for w in windows if w.saturated]
        if not saturated:
            healthy.append(pool)
            continue
        loads = [w.load for w in saturated if w.load is not None]
        waits = [w.wait_p95 for w in saturated if w.wait_p95 is not None]
        findings.append(
            PoolFinding(
                service=service,
                instance=instance,
                pool=pool,
                type=saturated[0].type,
                limit=max(w.limit for w in saturated),
                saturated_at=min(loads) if loads else None,
                windows_saturated=len(saturated),
                peak_busy=max(w.busy_peak for w in saturated),
                peak_pending=max(w.pending_peak for w in saturated),
                worst_wait_p95=max(waits) if waits else None,
                needed_workers=max(w.needed_workers for w in saturated),
            )
        )
    by_loop: dict[tuple[str, str], list[LoopWindow]] = {}
    for loop in loops:
        by_loop.setdefault((loop.service, loop.instance), []).append(loop)
    loop_findings = []
    for (service, instance), loop_windows in sorted(by_loop.items()):
        lagging = [
            w
            for w in loop_windows
            if (w.lag_p99 is not None and w.lag_p99 > LAG_THRESHOLD_S) or w.blocked > 0
        ]
        if not lagging:
            continue
        loads = [w.load for w in lagging if w.load is not None]
        loop_findings.append(
            LoopFinding(
                service=service,
                instance=instance,
                worst_lag_p99=max(w.lag_p99 or 0.0 for w in lagging),
                blocked=sum(w.blocked for w in lagging),
                lagging_from=min(loads) if loads else None,
            )
        )
    findings.sort(key=lambda f: (f.saturated_at is None, f.saturated_at or 0.0, f.pool))
    return Diagnosis(tuple(findings), tuple(loop_findings), tuple(sorted(set(healthy))))
