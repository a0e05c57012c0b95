"""anyio.to_thread.run_sync and what Starlette builds on it; waiting for a token is queue wait."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import anyio
import anyio.to_thread
import pytest
from starlette.concurrency import iterate_in_threadpool, run_in_threadpool

import poolscope
from _helpers import Gate, assert_ground_truth
from conftest import Telemetry
from poolscope import semconv

pytestmark = pytest.mark.anyio


async def test_run_sync_on_the_default_limiter_is_anyio_default(telemetry: Telemetry) -> None:
    with telemetry.tracer.start_as_current_span("request"):
        await anyio.to_thread.run_sync(time.sleep, 0)
    [run_span] = telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ANYIO_DEFAULT)
    assert run_span.attributes is not None
    assert run_span.attributes[semconv.ATTR_EXECUTOR_TYPE] == semconv.EXECUTOR_TYPE_LIMITER
    gauges = telemetry.gauges(semconv.POOL_ANYIO_DEFAULT)
    assert gauges["limit"] >= 40  # anyio's default, per event loop


async def test_ground_truth_on_a_limiter_of_two_tokens(telemetry: Telemetry) -> None:
    limiter = poolscope.instrument_limiter(anyio.CapacityLimiter(2), name="two-tokens")
    with telemetry.tracer.start_as_current_span("request"):
        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(lambda: anyio.to_thread.run_sync(time.sleep, 0.1, limiter=limiter))
    assert_ground_truth(
        telemetry.spans(semconv.SPAN_WAIT, pool="two-tokens"),
        telemetry.spans(semconv.SPAN_RUN, pool="two-tokens"),
    )
    assert telemetry.gauges("two-tokens") == {"busy": 0, "idle": 2, "limit": 2, "pending": 0}


async def test_the_default_limiter_set_to_two_tokens_starves_like_a_pool(
    telemetry: Telemetry,
) -> None:
    anyio.to_thread.current_default_thread_limiter().total_tokens = 2
    with telemetry.tracer.start_as_current_span("request"):
        async with anyio.create_task_group() as group:
            for _ in range(6):
                group.start_soon(run_in_threadpool, time.sleep, 0.1)
    assert_ground_truth(
        telemetry.spans(semconv.SPAN_WAIT, pool=semconv.POOL_ANYIO_DEFAULT),
        telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ANYIO_DEFAULT),
    )


async def test_busy_and_pending_follow_a_resized_limiter(telemetry: Telemetry) -> None:
    raw = anyio.CapacityLimiter(2)
    limiter = poolscope.instrument_limiter(raw, name="resized")
    gate = Gate(expected_running=2)
    async with anyio.create_task_group() as group:
        for _ in range(5):
            group.start_soon(lambda: anyio.to_thread.run_sync(gate.task, limiter=raw))
        await anyio.to_thread.run_sync(gate.wait_running)
        assert telemetry.gauges("resized") == {"busy": 2, "idle": 0, "limit": 2, "pending": 3}
        limiter.total_tokens = 5
        # the three queued tasks now get tokens and block on the same gate
        await anyio.to_thread.run_sync(gate.wait_running, 3)
        figures = telemetry.gauges("resized")
        assert figures["limit"] == 5
        assert figures["busy"] == 5
        assert figures["pending"] == 0
        gate.open()
    assert telemetry.gauges("resized") == {"busy": 0, "idle": 5, "limit": 5, "pending": 0}


async def test_cancelled_while_waiting_for_a_token(telemetry: Telemetry) -> None:
    limiter = poolscope.instrument_limiter(anyio.CapacityLimiter(1), name="cancel-token")
    gate = Gate(expected_running=1)
    ran = threading.Event()
    with telemetry.tracer.start_as_current_span("request"):
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: anyio.to_thread.run_sync(gate.task, limiter=limiter))
            await anyio.to_thread.run_sync(gate.wait_running)
            with anyio.move_on_after(0.05):
                await anyio.to_thread.run_sync(ran.set, limiter=limiter)
            gate.open()
    assert not ran.is_set()
    cancelled = [
        span
        for span in telemetry.spans(semconv.SPAN_WAIT, pool="cancel-token")
        if span.attributes and span.attributes.get(semconv.ATTR_EXECUTOR_TASK_CANCELLED)
    ]
    assert len(cancelled) == 1
    assert telemetry.gauges("cancel-token")["pending"] == 0


async def test_iterate_in_threadpool_records_every_chunk(telemetry: Telemetry) -> None:
    def chunks() -> Iterator[bytes]:
        yield from (b"x" for _ in range(20))

    with telemetry.tracer.start_as_current_span("request"):
        received = [chunk async for chunk in iterate_in_threadpool(chunks())]
    assert len(received) == 20
    # 20 chunks plus the final StopIteration probe
    assert len(telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ANYIO_DEFAULT)) == 21


async def test_a_limiter_used_directly_records_waits_and_holds(telemetry: Telemetry) -> None:
    limiter = poolscope.instrument_limiter(anyio.CapacityLimiter(1), name="direct")
    with telemetry.tracer.start_as_current_span("request"):
        async with anyio.create_task_group() as group:
            for _ in range(3):

                async def hold() -> None:
                    async with limiter:
                        with telemetry.tracer.start_as_current_span("held-call"):
                            await anyio.sleep(0.05)

                group.start_soon(hold)
    runs = telemetry.spans(semconv.SPAN_RUN, pool="direct")
    assert len(runs) == 3
    held = telemetry.spans("held-call")
    assert {span.parent.span_id for span in held if span.parent} == {
        run.context.span_id for run in runs
    }
    waits = sorted(
        (span.end_time or 0) - (span.start_time or 0)
        for span in telemetry.spans(semconv.SPAN_WAIT, pool="direct")
    )
    assert waits[-1] >= 90e6  # the third holder waited for two 50 ms holds
