"""Drive every target through every step, reading its pools, CPU and event loop meanwhile.

Each step is closed-loop load from :mod:`.._loadgen` (every user keeps its
connection), bracketed by two full reads of the app's Prometheus endpoint and
sampled every half second in between, so a step's figures are the app's own:
its pools' peaks and waits, its CPU and loop, next to the latencies the users
saw. The CPU of this process and of the whole machine are measured too, so a
step where the machine ran out of CPU says so.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import replace
from typing import Final, TextIO

from ..._analysis import _readings
from ..._analysis._diagnose import PoolWindow, ProcessWindow, diagnose
from ..._analysis._readings import Histogram, Snapshot
from ..._core._cpu import machine_cpu
from .._loadgen import run_step
from ._model import (
    SAMPLE_INTERVAL_S,
    MachineUse,
    ProbeError,
    ProbeRun,
    Scenario,
    StepResult,
    Target,
)

__all__ = ["Progress", "diagnose_run", "drive", "stop_on_signals"]

Report = Callable[[str, int, int], None]


async def _read(target: Target, url: str) -> Snapshot:
    try:
        return await asyncio.to_thread(_readings.read, url)
    except _readings.SourceError as error:
        raise ProbeError(f"{target.name} stopped answering: {error}") from None


class _Sampler:
    """Reads an app's pools every half second during a step: peaks, means, the busy series."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.samples: list[Snapshot] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            with suppress(_readings.SourceError):  # a sample missed under load
                self.samples.append(
                    await asyncio.to_thread(_readings.read, self.url, gauges_only=True)
                )
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SAMPLE_INTERVAL_S)

    def stop(self) -> None:
        self._stop.set()


def _at_most(value: float | None, bound: float | None) -> float | None:
    return value if value is None or bound is None else min(value, bound)


class _CpuMeter:
    """CPU used by this process and by the machine, between ``start()`` and ``stop()``."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.own = time.process_time()
        self.machine = machine_cpu()

    def stop(self) -> MachineUse:
        seconds = max(time.monotonic() - self.started, 1e-9)
        own = (time.process_time() - self.own) / seconds
        now, before = machine_cpu(), self.machine
        busy = None
        if now is not None and before is not None and now[1] > before[1]:
            cores = os.cpu_count() or 1
            busy = (now[0] - before[0]) / (now[1] - before[1]) * cores
        return MachineUse(own, busy, os.cpu_count() or 1)


def _step_windows(
    service: str,
    concurrency: int,
    before: Snapshot,
    after: Snapshot,
    *,
    samples: list[Snapshot],
    longest: float | None,
) -> tuple[dict[str, PoolWindow], ProcessWindow | None, dict[str, Histogram]]:
    found = _readings.windows(before, after, samples, load=concurrency, service=service)
    # a bucket estimate; never longer than the slowest request it was part of
    pools = {w.pool: replace(w, wait_p95=_at_most(w.wait_p95, longest)) for w in found.pools}
    waits = {
        reading.pool: reading.wait.since(before.pools[key].wait if key in before.pools else None)
        for key, reading in after.pools.items()
    }
    return pools, (found.processes[0] if found.processes else None), waits


async def _one_step(
    run: ProbeRun, target: Target, scenario: Scenario, client: object, users: int
) -> tuple[StepResult, list[Snapshot]]:
    """One step: its load, and (when the pools are visible) the samples taken during it."""
    seconds, paths = run.settings.step_seconds, scenario.paths
    metrics = target.metrics
    if metrics is None:
        meter = _CpuMeter()
        load = await run_step(client, paths, users, seconds)
        step = StepResult(target.key, scenario.name, load, {}, None, {}, meter.stop(), False)
        return step, []
    sampler = _Sampler(metrics)
    before = await _read(target, metrics)
    meter = _CpuMeter()
    sampling = asyncio.create_task(sampler.run())
    window_end = time.monotonic() + seconds
    load = await run_step(client, paths, users, seconds)
    sampler.stop()
    await sampling
    after = await _read(target, metrics)
    machine = meter.stop()
    # gauges while the load ran; histograms and counters up to the end of the
    # drain, like the latencies
    in_window = [s for s in sampler.samples if s.taken_at <= window_end]
    pools, process, waits = _step_windows(
        target.name,
        users,
        before,
        after,
        samples=in_window,
        longest=max(load.latencies, default=None),
    )
    return StepResult(
        target.key, scenario.name, load, pools, process, waits, machine
    ), sampler.samples


async def drive(run: ProbeRun, progress: Report) -> None:
    """Every target, scenario and step in turn; results appended to ``run``."""
    import httpx

    settings = run.settings
    total = sum(len(t.scenarios) for t in run.targets.values()) * len(settings.steps)
    done = 0
    users = max(settings.steps)
    # every user keeps its connection: a reconnect per request is load of its own
    limits = httpx.Limits(max_connections=users + 10, max_keepalive_connections=users + 10)
    for target in run.targets.values():
        async with httpx.AsyncClient(base_url=target.url, limits=limits, timeout=120) as client:
            for path in {p for s in target.scenarios for p in s.paths}:  # warm up every route
                await client.get(path)
            for scenario in target.scenarios:
                for concurrency in settings.steps:
                    progress(f"{target.name}, {scenario.name}, {concurrency} users", done, total)
                    step, samples = await _one_step(run, target, scenario, client, concurrency)
                    run.steps.append(step)
                    series = run.busy.setdefault(target.key, [])
                    series += [
                        (sample.taken_at - run.started, r.pool, r.busy, r.limit)
                        for sample in samples
                        for r in sample.pools.values()
                    ]
                    done += 1
    progress("done", total, total)


def diagnose_run(run: ProbeRun) -> None:
    """The verdicts of every target whose pools were seen."""
    for key, target in run.targets.items():
        if target.metrics is None:
            continue
        steps = [s for s in run.steps if s.app == key]
        run.diagnoses[key] = diagnose(
            (w for s in steps for w in s.pools.values()),
            (s.process for s in steps if s.process is not None),
        )


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP stop a run the way Ctrl-C does: children first."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Progress:
    """One line, rewritten in place on a terminal; a line per step otherwise."""

    WIDTH: Final = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, what: str, done: int, total: int) -> None:
        filled = round(self.WIDTH * done / total) if total else self.WIDTH
        bar = "█" * filled + "░" * (self.WIDTH - filled)
        line = f"  [{bar}] {done}/{total} {what}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
