"""10,000 tasks per path with random exceptions and cancellations: the figures end exactly at 0.

A sampler thread reads the live figures the whole time (as a metric reader
would) and checks they are never negative and busy never exceeds the limit.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
import anyio.to_thread
import pytest

import poolscope
from conftest import Telemetry
from poolscope import semconv
from poolscope._core._pools import PoolSnapshot, snapshot_all

TASKS = 10_000


class Sampler:
    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.violations: list[PoolSnapshot] = []
        self.samples = 0
        self.peak_pending = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for snapshot in snapshot_all():
                if snapshot.name != self.pool:
                    continue
                self.samples += 1
                self.peak_pending = max(self.peak_pending, snapshot.pending)
                if snapshot.busy < 0 or snapshot.pending < 0 or snapshot.busy > snapshot.limit:
                    self.violations.append(snapshot)
            time.sleep(0.0005)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def work(rng_value: float) -> float:
    if rng_value < 0.1:
        raise ValueError("random failure")
    if rng_value < 0.15:
        time.sleep(0.0005)
    return rng_value


def assert_balanced(telemetry: Telemetry, pool: str, sampler: Sampler) -> None:
    assert sampler.samples > 10
    assert sampler.violations == []
    gauges = telemetry.gauges(pool)
    assert (gauges["busy"], gauges["pending"]) == (0, 0), gauges
    waits = sum(
        p.count for p in telemetry.points(semconv.METRIC_TASK_WAIT_DURATION, executor__name=pool)
    )
    runs = sum(
        p.count for p in telemetry.points(semconv.METRIC_TASK_RUN_DURATION, executor__name=pool)
    )
    cancelled = sum(
        p.count
        for p in telemetry.points(
            semconv.METRIC_TASK_WAIT_DURATION, executor__name=pool, executor__task__cancelled=True
        )
    )
    assert cancelled > 0, "no task was cancelled while waiting: the schedule tests nothing"
    assert waits == TASKS, (waits, runs, cancelled)
    assert runs == TASKS - cancelled


@pytest.fixture
def rng() -> random.Random:
    return random.Random(20261128)


def test_thread_pool_submit_and_cancel(telemetry: Telemetry, rng: random.Random) -> None:
    with (
        Sampler("stress-threads") as sampler,
        ThreadPoolExecutor(4, thread_name_prefix="stress-threads") as pool,
    ):
        futures = []
        for _ in range(TASKS):
            future = pool.submit(work, rng.random())
            if rng.random() < 0.2:
                future.cancel()  # succeeds only while still queued
            futures.append(future)
        for future in futures:
            if not future.cancelled():
                future.exception()
    assert sampler.peak_pending > 0
    assert_balanced(telemetry, "stress-threads", sampler)


@pytest.mark.anyio
async def test_asyncio_to_thread_with_task_cancellation(
    telemetry: Telemetry, rng: random.Random
) -> None:
    pool = poolscope.instrument_executor(ThreadPoolExecutor(4), name="stress-asyncio")
    asyncio.get_running_loop().set_default_executor(pool)

    async def one(value: float, cancel_after: float | None) -> None:
        task = asyncio.ensure_future(asyncio.to_thread(work, value))
        if cancel_after is not None:
            await asyncio.sleep(cancel_after)
            task.cancel()
        with contextlib.suppress(ValueError, asyncio.CancelledError):
            await task

    with Sampler("stress-asyncio") as sampler:
        for start in range(0, TASKS, 500):
            batch = [
                one(rng.random(), rng.choice([None, None, 0, 0.0005]))
                for _ in range(start, start + 500)
            ]
            await asyncio.gather(*batch)
    assert_balanced(telemetry, "stress-asyncio", sampler)


@pytest.mark.anyio
async def test_anyio_run_sync_with_cancel_scopes(telemetry: Telemetry, rng: random.Random) -> None:
    limiter = poolscope.instrument_limiter(anyio.CapacityLimiter(4), name="stress-anyio")

    async def one(value: float, timeout: float | None, abandon: bool) -> None:
        with anyio.move_on_after(timeout if timeout is not None else 60):
            with contextlib.suppress(ValueError):
                await anyio.to_thread.run_sync(
                    work, value, limiter=limiter, abandon_on_cancel=abandon
                )

    with Sampler("stress-anyio") as sampler:
        for start in range(0, TASKS, 500):
            async with anyio.create_task_group() as group:
                for _ in range(start, start + 500):
                    group.start_soon(
                        one, rng.random(), rng.choice([None, None, 0, 0.0002]), rng.random() < 0.5
                    )
        # abandoned threads may still be finishing their (short) work
        for _ in range(200):
            if all(s.busy == 0 for s in snapshot_all() if s.name == "stress-anyio"):
                break
            await anyio.sleep(0.01)
    assert_balanced(telemetry, "stress-anyio", sampler)
