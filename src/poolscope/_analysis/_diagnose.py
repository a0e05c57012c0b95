"""``poolscope.diagnose()``: what held requests up, per process, and what would fix it.

The input is what happened over windows of time (a load step of the demo,
the span of ``poolscope diagnose``'s scrapes, a range read from Prometheus):

* a :class:`PoolWindow` per (service, instance, pool): its limit, typical and
  peak busy workers, peak pending tasks, and the tasks, wait, run and
  LLM-call seconds recorded;
* a :class:`ProcessWindow` per (service, instance): the CPU the process and
  its event loop's thread used, the loop's utilization and lag, and the
  callbacks that blocked it, by line.

The output is a :class:`Diagnosis`: one :class:`Verdict` per problem and
process, each with its ``kind``, the figures that show it, and one line of
advice:

* ``pool_starvation``: a pool at its own cap with tasks queued, while the
  process still had CPU to spare;
* ``cpu_bound``: the process used about a core, or its loop ran callbacks
  nearly all the time on the CPU, and no single callback is to blame;
* ``loop_blocked``: named callbacks held the loop, by file and line;
* ``gil_contention``: the loop lagged while its thread was mostly off the CPU
  and other threads of the process ran.

Every condition is judged over a whole window (medians of the samples for
gauges, rates for counters, shares of heartbeats for the lag), never from one
sample, and per process, never summed across processes. A healthy process
gets no verdict: naming the wrong bottleneck is worse than naming none.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .. import semconv
from .._thresholds import (
    BLOCKED_SHARE,
    CPU_BOUND_CORES,
    LAG_THRESHOLD_S,
    LATE_SHARE,
    LOOP_BUSY,
    MIN_BLOCKS,
    ON_CPU,
    OTHER_THREADS_CORES,
    SATURATION,
)

__all__ = [
    "BlockSite",
    "Diagnosis",
    "PoolWindow",
    "ProcessWindow",
    "Verdict",
    "VerdictKind",
    "count",
    "diagnose",
]


class VerdictKind(enum.StrEnum):
    """What a verdict says held requests up (a ``str``: ``"pool_starvation"``, ...)."""

    POOL_STARVATION = "pool_starvation"
    CPU_BOUND = "cpu_bound"
    LOOP_BLOCKED = "loop_blocked"
    GIL_CONTENTION = "gil_contention"


# --- Input --------------------------------------------------------------------------


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
    run_p95: float | None = None
    llm_seconds: float = 0.0
    """Worker-seconds spent inside LLM calls (``gen_ai.client.operation.duration`` by pool)."""
    io_seconds: float = 0.0
    """Worker-seconds spent inside blocking HTTP calls (``executor.io.duration`` by pool)."""
    io_target: str = ""
    """Where most of those seconds went: ``requests → 127.0.0.1:8001``."""
    io_p50: float | None = None
    """The median duration of one such call."""
    load: float | None = None
    """What drove the window, e.g. the demo's concurrency; ``None`` if unknown."""
    start: float = 0.0
    """When the window began (any clock): pairs it with its process's window."""
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
class BlockSite:
    """A line that held the event loop: how often, and for how long in all."""

    function: str
    file: str
    line: int
    count: float
    seconds: float
    cause: str = semconv.BLOCK_CAUSE_CALL
    """``asyncio.eventloop.blocked.cause``: whether the callback itself held the loop."""

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.file else self.function

    @property
    def own(self) -> bool:
        """The callback held the loop itself (ran, or called something that blocks)."""
        return self.cause in semconv.BLOCK_CAUSES_OWN


@dataclass(frozen=True)
class ProcessWindow:
    """What one process (its CPU, its event loop) did during one window."""

    duration: float
    """Length of the window, seconds."""
    cpu: float | None = None
    """Cores the process used on average (``process.cpu.time`` per second)."""
    loop_utilization: float | None = None
    """Share of the time its event loop ran callbacks (``asyncio.eventloop.time``)."""
    loop_cpu: float | None = None
    """Cores the event loop's thread used on average (``asyncio.eventloop.cpu.time``)."""
    lag_p99: float | None = None
    late_share: float | None = None
    """Share of the loop's heartbeats that ran more than ``LAG_THRESHOLD_S`` late."""
    blocks: tuple[BlockSite, ...] = ()
    load: float | None = None
    start: float = 0.0
    """When the window began, on the clock of its pools' windows."""
    service: str = ""
    instance: str = ""

    @property
    def own_blocks(self) -> tuple[BlockSite, ...]:
        """The blocks the callbacks did themselves (not waits for the GIL or a core)."""
        return tuple(site for site in self.blocks if site.own)

    @property
    def blocked_seconds(self) -> float:
        return sum(site.seconds for site in self.own_blocks)

    @property
    def block_count(self) -> float:
        return sum(site.count for site in self.own_blocks)

    @property
    def other_threads_cpu(self) -> float | None:
        """Cores used by the process's threads other than the loop's."""
        if self.cpu is None or self.loop_cpu is None:
            return None
        return max(self.cpu - self.loop_cpu, 0.0)

    @property
    def blocked(self) -> bool:
        return (
            self.block_count >= MIN_BLOCKS and self.blocked_seconds >= BLOCKED_SHARE * self.duration
        )

    @property
    def blocks_explain_loop(self) -> bool:
        """The blocks are most of the loop's busy time: they, not load, kept it busy."""
        if not self.blocked:
            return False
        busy = (self.loop_utilization or 0.0) * self.duration
        return self.blocked_seconds >= 0.5 * busy

    @property
    def lagging(self) -> bool:
        return self.late_share is not None and self.late_share >= LATE_SHARE

    @property
    def out_of_cpu(self) -> bool:
        """Used about a core, or its loop ran callbacks nearly always and mostly on the CPU."""
        if self.cpu is not None and self.cpu >= CPU_BOUND_CORES:
            return True
        utilization, loop_cpu = self.loop_utilization, self.loop_cpu
        return (
            utilization is not None
            and loop_cpu is not None
            and utilization >= LOOP_BUSY
            and loop_cpu >= ON_CPU * utilization
        )

    @property
    def gil_bound(self) -> bool:
        """The loop lagged while other threads, not its own, used the CPU."""
        other, cpu, loop_cpu = self.other_threads_cpu, self.cpu, self.loop_cpu
        if not self.lagging or other is None or cpu is None or loop_cpu is None:
            return False
        return other >= OTHER_THREADS_CORES and loop_cpu < ON_CPU * cpu


# --- Output -------------------------------------------------------------------------


@dataclass(frozen=True)
class Verdict:
    """One problem of one process, the figures that show it, and what to change."""

    kind: VerdictKind
    service: str
    instance: str
    summary: str
    """What happened, in plain words."""
    advice: str
    evidence: Mapping[str, Any] = field(default_factory=dict)
    pool: str | None = None
    limit: float | None = None
    since_load: float | None = None
    """The lowest load at which it held (``None`` when loads are unknown)."""
    windows: int = 1
    """In how many windows it held."""

    def describe(self) -> str:
        where = "/".join(part for part in (self.service, self.instance) if part)
        return f"{where + ': ' if where else ''}{self.summary}. {self.advice}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": str(self.kind),
            "service": self.service,
            "instance": self.instance,
            "pool": self.pool,
            "limit": self.limit,
            "since_load": self.since_load,
            "evidence": dict(self.evidence),
            "summary": self.summary,
            "advice": self.advice,
        }


@dataclass(frozen=True)
class Diagnosis:
    verdicts: tuple[Verdict, ...] = ()
    healthy: tuple[str, ...] = ()
    """Pools (by name) that were seen and never saturated."""

    @property
    def ok(self) -> bool:
        return not self.verdicts

    def of(self, kind: VerdictKind, service: str | None = None) -> list[Verdict]:
        return [
            v for v in self.verdicts if v.kind == kind and (service is None or v.service == service)
        ]

    def summary(self) -> str:
        if self.ok:
            names = ", ".join(self.healthy) or "none seen"
            return (
                "No pool hit its limit, the process had CPU to spare and the event loop "
                f"kept up (pools: {names})."
            )
        return "\n".join(f"- {verdict.describe()}" for verdict in self.verdicts)


# --- The rules ----------------------------------------------------------------------


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.2f} s"


def count(value: float) -> str:
    """A count read from rates (workers, tasks, blocks) is an estimate: show it whole."""
    return f"{value:.0f}"


def _lowest(loads: Iterable[float | None]) -> float | None:
    found = [load for load in loads if load is not None]
    return min(found) if found else None


def _pool_advice(window: PoolWindow, held: _Held) -> str:
    needed = max(window.needed_workers, window.limit + 1)
    if held.io_share >= 0.5:
        return (
            f"Make the HTTP calls ({held.io_target}) with an async client (httpx.AsyncClient, "
            "aiohttp): a call waiting on the network then holds no worker; or give the sync "
            f"calls a dedicated pool of about {needed:.0f} workers"
        )
    if held.llm_share >= 0.5:
        return (
            "Use the LLM SDK's async client (AsyncOpenAI, AsyncAnthropic): a call waiting on "
            "the model then holds no worker; or give the sync calls a dedicated pool of "
            f"about {needed:.0f} workers"
        )
    if window.pool == semconv.POOL_ANYIO_DEFAULT:
        return (
            "Make the sync endpoints and dependencies async def with async clients, or raise "
            "anyio's limit (anyio.to_thread.current_default_thread_limiter().total_tokens = "
            f"{needed:.0f}) if the work must stay blocking"
        )
    if window.type == semconv.EXECUTOR_TYPE_SEMAPHORE:
        return (
            f"The semaphore caps this work at {window.limit:g} on purpose: raise it only if "
            "what it protects allows more"
        )
    if window.type == semconv.EXECUTOR_TYPE_PROCESS_POOL:
        return f"Give the pool more processes (about {needed:.0f}), or less work per task"
    return (
        "Use async clients for the blocking calls, or move them to a dedicated pool of about "
        f"{needed:.0f} workers (a bigger shared pool only moves the queue)"
    )


@dataclass(frozen=True)
class _Held:
    """What held a pool's workers: shares of their running time."""

    llm_share: float
    io_share: float
    io_target: str
    io_p50: float | None

    @classmethod
    def of(cls, windows: list[PoolWindow]) -> _Held:
        run = sum(w.run_seconds for w in windows)
        llm = min(sum(w.llm_seconds for w in windows), run)
        io = min(sum(w.io_seconds for w in windows), run - llm)  # an LLM SDK's HTTP is not in it
        most = max(windows, key=lambda w: w.io_seconds)
        return cls(llm / run if run else 0.0, io / run if run else 0.0, most.io_target, most.io_p50)

    def describe(self, pool: str) -> str:
        found = []
        if self.io_share:
            p50 = f", {_ms(self.io_p50)} p50" if self.io_p50 is not None else ""
            found.append((self.io_share, f"sync HTTP calls ({self.io_target}{p50})"))
        if self.llm_share:
            found.append((self.llm_share, "sync LLM calls"))
        if not found:
            return "blocking calls held the workers"
        parts = " and ".join(f"{what} {share:.0%}" for share, what in sorted(found, reverse=True))
        rest = max(1.0 - self.llm_share - self.io_share, 0.0)
        return f"{pool} was held by {parts} of its workers' time, other work {rest:.0%}"


def _starvation(windows: list[PoolWindow], cpu: float | None) -> Verdict:
    worst = max(windows, key=lambda w: (w.pending_peak, w.needed_workers))
    shares = _Held.of(windows)
    held = shares.describe(worst.pool)
    busy = worst.busy_typical if worst.busy_typical is not None else worst.busy_peak
    if cpu is not None and busy:
        held += f" (the whole process used {cpu:.2f} cores for {count(busy)} busy workers)"
    since = _lowest(w.load for w in windows)
    at = f" from a load of {since:g}" if since is not None else ""
    waits = [w.wait_p95 for w in windows if w.wait_p95 is not None]
    wait = f", tasks waited up to {_ms(max(waits))} (p95)" if waits else ""
    summary = (
        f"{worst.pool} hit its limit of {worst.limit:g} workers{at} "
        f"({count(worst.pending_peak)} tasks queued at the peak{wait}) while the process had CPU "
        f"to spare; the tasks wanted about {worst.needed_workers:.0f} workers at once; {held}"
    )
    evidence = {
        "busy_typical": busy,
        "pending_peak": worst.pending_peak,
        "needed_workers": round(worst.needed_workers, 1),
        "wait_p95": max(waits) if waits else None,
        "llm_share": round(shares.llm_share, 3),
        "io_share": round(shares.io_share, 3),
        "io_target": shares.io_target or None,
        "io_p50": shares.io_p50,
        "process_cpu": cpu,
        "type": worst.type,
    }
    return Verdict(
        VerdictKind.POOL_STARVATION,
        worst.service,
        worst.instance,
        summary,
        _pool_advice(worst, shares),
        evidence,
        pool=worst.pool,
        limit=max(w.limit for w in windows),
        since_load=since,
        windows=len(windows),
    )


def _cpu_bound(windows: list[ProcessWindow], saturated: list[PoolWindow]) -> Verdict:
    worst = max(windows, key=lambda w: (w.cpu or 0.0, w.loop_utilization or 0.0))
    since = _lowest(w.load for w in windows)
    at = f" from a load of {since:g}" if since is not None else ""
    parts = []
    if worst.cpu is not None:
        parts.append(f"used {worst.cpu:.2f} cores")
    if worst.loop_utilization is not None:
        parts.append(f"its event loop ran callbacks {worst.loop_utilization:.0%} of the time")
    if worst.lag_p99 is not None:
        parts.append(f"callbacks ran up to {_ms(worst.lag_p99)} late (p99)")
    summary = f"the process is out of CPU{at}: it {', '.join(parts) or 'was busy'}"
    if worst.loop_cpu is not None and worst.cpu:
        summary += f"; the loop's thread did {min(worst.loop_cpu / worst.cpu, 1.0):.0%} of it"
    if saturated:
        names = ", ".join(sorted({w.pool for w in saturated}))
        summary += f" (the full pools, {names}, wait for the CPU too)"
    return Verdict(
        VerdictKind.CPU_BOUND,
        worst.service,
        worst.instance,
        summary,
        "Run more processes (uvicorn --workers N, gunicorn) or do less work per request; "
        "a bigger pool will not help",
        {
            "process_cpu": worst.cpu,
            "loop_utilization": worst.loop_utilization,
            "loop_cpu": worst.loop_cpu,
            "lag_p99": worst.lag_p99,
            "late_share": worst.late_share,
        },
        since_load=since,
        windows=len(windows),
    )


def _blocked(windows: list[ProcessWindow]) -> Verdict:
    merged: dict[tuple[str, str, int], list[float]] = {}
    for window in windows:
        for site in window.own_blocks:
            totals = merged.setdefault((site.function, site.file, site.line), [0.0, 0.0])
            totals[0] += site.count
            totals[1] += site.seconds
    sites = sorted(
        (
            BlockSite(f, path, line, count, seconds)
            for (f, path, line), (count, seconds) in merged.items()
        ),
        key=lambda site: -site.seconds,
    )
    duration = sum(w.duration for w in windows)
    # a block that straddles a window's edge counts whole in the window it ended in
    blocked = min(sum(site.seconds for site in sites), duration)
    named = "; ".join(
        f"{site.function} at {site.where}: {count(site.count)} times, "
        f"{_ms(site.seconds / site.count)} each"
        for site in sites[:3]
        if site.count
    )
    since = _lowest(w.load for w in windows)
    at = f" from a load of {since:g}" if since is not None else ""
    worst = windows[0]
    return Verdict(
        VerdictKind.LOOP_BLOCKED,
        worst.service,
        worst.instance,
        f"callbacks blocked the event loop{at} for {blocked / duration:.0%} of the time: {named}",
        f"Move the blocking call at {sites[0].where} off the loop: await an async API, or run it "
        "with asyncio.to_thread or a dedicated executor; no pool size will fix this",
        {
            "blocked_share": round(blocked / duration, 3) if duration else None,
            "sites": [
                {
                    "function": s.function,
                    "file": s.file,
                    "line": s.line,
                    "count": s.count,
                    "seconds": round(s.seconds, 3),
                }
                for s in sites
            ],
        },
        since_load=since,
        windows=len(windows),
    )


def _gil(windows: list[ProcessWindow], saturated: list[PoolWindow]) -> Verdict:
    worst = max(windows, key=lambda w: w.late_share or 0.0)
    since = _lowest(w.load for w in windows)
    at = f" from a load of {since:g}" if since is not None else ""
    summary = (
        f"the event loop lagged{at} ({worst.late_share or 0:.0%} of its heartbeats over "
        f"{_ms(LAG_THRESHOLD_S)} late) while its thread used {worst.loop_cpu or 0:.2f} cores and "
        f"the process's other threads {worst.other_threads_cpu or 0:.2f}: they held the GIL"
    )
    if saturated:
        names = ", ".join(sorted({w.pool for w in saturated}))
        summary += f" (workers of {names})"
    return Verdict(
        VerdictKind.GIL_CONTENTION,
        worst.service,
        worst.instance,
        summary,
        "Move CPU-heavy Python work from threads to a ProcessPoolExecutor or another service, "
        "or run it in fewer threads; the loop needs the GIL to serve requests",
        {
            "late_share": worst.late_share,
            "lag_p99": worst.lag_p99,
            "loop_cpu": worst.loop_cpu,
            "other_threads_cpu": worst.other_threads_cpu,
            "process_cpu": worst.cpu,
        },
        since_load=since,
        windows=len(windows),
    )


def _saturated(
    pools: Mapping[tuple[str, str, str], list[PoolWindow]],
    process: tuple[str, str],
    windows: list[ProcessWindow],
) -> list[PoolWindow]:
    """The saturated pool windows of ``process`` during ``windows``."""
    starts = {w.start for w in windows}
    return [
        w
        for (service, instance, _), pool_windows in pools.items()
        if (service, instance) == process
        for w in pool_windows
        if w.saturated and w.start in starts
    ]


def diagnose(pools: Iterable[PoolWindow], processes: Iterable[ProcessWindow] = ()) -> Diagnosis:
    """The verdicts on ``pools`` and ``processes``, per process; see the module docstring.

    A pool is saturated in a window when its typical busy workers (the
    median of the samples, or the peak if there are none) reach 95% of *its
    own* limit while tasks are pending, the rule the ``PoolscopePoolSaturated``
    alert uses. It is starvation only when the process had CPU to spare in
    that window: a pool full of tasks that wait for the CPU is ``cpu_bound``.
    """
    by_process: dict[tuple[str, str], list[ProcessWindow]] = {}
    for each in processes:
        by_process.setdefault((each.service, each.instance), []).append(each)
    by_pool: dict[tuple[str, str, str], list[PoolWindow]] = {}
    for window in pools:
        by_pool.setdefault((window.service, window.instance, window.pool), []).append(window)
    during = {
        (key, w.start): w for key, process_windows in by_process.items() for w in process_windows
    }

    verdicts: list[Verdict] = []
    healthy = []
    for (service, instance, pool), pool_windows in sorted(by_pool.items()):
        saturated = [w for w in pool_windows if w.saturated]
        if not saturated:
            healthy.append(pool)
            continue
        # starved only where the process had CPU to spare (or nothing says otherwise)
        starved = []
        cpus = []
        for window in saturated:
            process = during.get(((service, instance), window.start))
            if process is not None and (process.out_of_cpu or process.gil_bound):
                continue
            starved.append(window)
            if process is not None and process.cpu is not None:
                cpus.append(process.cpu)
        if starved:
            verdicts.append(_starvation(starved, max(cpus) if cpus else None))
    for key, process_windows in sorted(by_process.items()):
        blocked = [w for w in process_windows if w.blocked]
        if blocked:
            verdicts.append(_blocked(blocked))
        unexplained = [w for w in process_windows if not w.blocks_explain_loop]
        gil = [w for w in unexplained if w.gil_bound]
        if gil:
            verdicts.append(_gil(gil, _saturated(by_pool, key, gil)))
        cpu = [w for w in unexplained if w.out_of_cpu and not w.gil_bound]
        if cpu:
            verdicts.append(_cpu_bound(cpu, _saturated(by_pool, key, cpu)))
    order = {kind: index for index, kind in enumerate(VerdictKind)}
    verdicts.sort(
        key=lambda v: (
            v.service,
            v.instance,
            v.since_load if v.since_load is not None else float("inf"),
            order[v.kind],
            v.pool or "",
        )
    )
    return Diagnosis(tuple(verdicts), tuple(sorted(set(healthy))))
