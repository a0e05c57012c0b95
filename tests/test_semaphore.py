"""asyncio.Semaphore as a pool: waiting to acquire is queue wait, holding is run time."""

from __future__ import annotations

import asyncio

import pytest

import poolscope
from _helpers import assert_ground_truth
from conftest import Telemetry
from poolscope import semconv

pytestmark = pytest.mark.anyio


async def test_async_with_records_waits_holds_and_nests_calls(telemetry: Telemetry) -> None:
    slots = poolscope.instrument_semaphore(asyncio.Semaphore(2), name="llm-slots")

    async def call() -> None:
        async with slots:
            with telemetry.tracer.start_as_current_span("llm-call"):
                await asyncio.sleep(0.1)

    with telemetry.tracer.start_as_current_span("request"):
        await asyncio.gather(*(call() for _ in range(6)))

    assert_ground_truth(
        telemetry.spans(semconv.SPAN_WAIT, pool="llm-slots"),
        telemetry.spans(semconv.SPAN_RUN, pool="llm-slots"),
    )
    runs = telemetry.spans(semconv.SPAN_RUN, pool="llm-slots")
    assert len(runs) == 6
    calls = telemetry.spans("llm-call")
    assert {c.parent.span_id for c in calls if c.parent} == {r.context.span_id for r in runs}
    assert telemetry.gauges("llm-slots") == {"busy": 0, "idle": 2, "limit": 2, "pending": 0}


async def test_acquire_release_and_peak_figures(telemetry: Telemetry) -> None:
    slots = poolscope.instrument_semaphore(asyncio.BoundedSemaphore(1), name="manual")
    await slots.acquire()
    waiter = asyncio.ensure_future(slots.acquire())
    await asyncio.sleep(0)
    assert slots.locked()
    assert telemetry.gauges("manual") == {"busy": 1, "idle": 0, "limit": 1, "pending": 1}
    slots.release()
    await waiter
    slots.release()
    assert telemetry.gauges("manual") == {"busy": 0, "idle": 1, "limit": 1, "pending": 0}
    [runs] = telemetry.points(semconv.METRIC_TASK_RUN_DURATION, executor__name="manual")
    assert runs.count == 2


async def test_cancelled_while_waiting_to_acquire(telemetry: Telemetry) -> None:
    slots = poolscope.instrument_semaphore(asyncio.Semaphore(1), name="cancel-acquire")
    async with slots:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(slots.acquire(), 0.05)
    assert telemetry.gauges("cancel-acquire") == {"busy": 0, "idle": 1, "limit": 1, "pending": 0}
    [cancelled] = telemetry.points(
        semconv.METRIC_TASK_WAIT_DURATION,
        executor__name="cancel-acquire",
        executor__task__cancelled=True,
    )
    assert cancelled.count == 1


def test_bad_arguments_are_named() -> None:
    with pytest.raises(poolscope.ConfigurationError, match=r"asyncio\.Semaphore"):
        poolscope.instrument_semaphore(object(), name="x")  # type: ignore[arg-type]
    with pytest.raises(poolscope.ConfigurationError, match="name must be a non-empty string"):
        poolscope.instrument_semaphore(asyncio.Semaphore(1), name="")
    with pytest.raises(poolscope.ConfigurationError, match="limit must be a positive int"):
        poolscope.instrument_semaphore(asyncio.Semaphore(1), name="x", limit=0)


async def test_a_release_from_a_task_holding_nothing_leaves_async_with_holds_alone(
    telemetry: Telemetry,
) -> None:
    from opentelemetry import trace

    slots = poolscope.instrument_semaphore(asyncio.Semaphore(3), name="cross-release")
    a_inside = asyncio.Event()
    b_done = asyncio.Event()
    seen_after: list[object] = []

    async def task_a() -> None:
        with telemetry.tracer.start_as_current_span("a") as a_span:
            async with slots:
                a_inside.set()
                await b_done.wait()
            seen_after.append(trace.get_current_span() is a_span)

    async def task_c_and_b() -> None:
        await a_inside.wait()
        await slots.acquire()  # C takes a permit with acquire()
        await asyncio.create_task(_release(slots))  # B, holding nothing, releases one
        b_done.set()

    with telemetry.tracer.start_as_current_span("request"):
        await asyncio.gather(task_a(), task_c_and_b())
    assert seen_after == [True]  # A's context is A's again after its block
    runs = telemetry.spans(semconv.SPAN_RUN, pool="cross-release")
    assert len(runs) == 2  # A's hold (closed by A) and C's (closed by B's release)
    assert telemetry.gauges("cross-release") == {"busy": 0, "idle": 3, "limit": 3, "pending": 0}


async def _release(slots: poolscope.InstrumentedSemaphore) -> None:
    slots.release()
