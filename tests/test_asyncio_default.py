"""The loop's default executor: run_in_executor(None, ...), to_thread, set_default_executor.

Every test runs on the stock asyncio loop and on uvloop (see ``anyio_backend``).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import poolscope
from _helpers import Gate, assert_ground_truth
from conftest import Telemetry
from poolscope import semconv

pytestmark = pytest.mark.anyio


async def test_to_thread_and_run_in_executor_are_named_asyncio_default(
    telemetry: Telemetry,
) -> None:
    loop = asyncio.get_running_loop()
    with telemetry.tracer.start_as_current_span("request"):
        await asyncio.to_thread(time.sleep, 0)
        await loop.run_in_executor(None, time.sleep, 0)
    runs = telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ASYNCIO_DEFAULT)
    assert len(runs) == 2
    assert {
        span.attributes[semconv.ATTR_CODE_FUNCTION_NAME] for span in runs if span.attributes
    } == {"time.sleep"}


async def test_ground_truth_through_a_default_executor_set_by_the_app(telemetry: Telemetry) -> None:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(2)
    loop.set_default_executor(executor)
    with telemetry.tracer.start_as_current_span("request"):
        await asyncio.gather(*(asyncio.to_thread(time.sleep, 0.1) for _ in range(6)))
    assert_ground_truth(
        telemetry.spans(semconv.SPAN_WAIT, pool=semconv.POOL_ASYNCIO_DEFAULT),
        telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ASYNCIO_DEFAULT),
    )
    gauges = telemetry.gauges(semconv.POOL_ASYNCIO_DEFAULT)
    assert gauges["limit"] >= 2  # other live loops' default executors add up under one name
    assert gauges["busy"] == 0
    assert gauges["pending"] == 0


async def test_a_named_default_executor_keeps_its_name(telemetry: Telemetry) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(
        poolscope.instrument_executor(ThreadPoolExecutor(2), name="app-default")
    )
    await asyncio.to_thread(int)
    [point] = telemetry.points(semconv.METRIC_TASK_RUN_DURATION, executor__name="app-default")
    assert point.count == 1


async def test_spans_made_inside_to_thread_are_children_of_the_run_span(
    telemetry: Telemetry,
) -> None:
    def work() -> None:
        with telemetry.tracer.start_as_current_span("inside-worker"):
            pass

    with telemetry.tracer.start_as_current_span("request"):
        await asyncio.to_thread(work)
    [run_span] = telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ASYNCIO_DEFAULT)
    [inner] = telemetry.spans("inside-worker")
    assert inner.parent is not None
    assert inner.parent.span_id == run_span.context.span_id


async def test_cancelling_the_awaiting_task_while_queued_never_runs_the_function(
    telemetry: Telemetry,
) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))
    gate = Gate(expected_running=1)
    ran: list[int] = []
    with telemetry.tracer.start_as_current_span("request"):
        blocker = asyncio.ensure_future(asyncio.to_thread(gate.task))
        with ThreadPoolExecutor(1, thread_name_prefix="side") as side:
            await loop.run_in_executor(side, gate.wait_running)
        queued = asyncio.ensure_future(asyncio.to_thread(ran.append, 1))
        await asyncio.sleep(0.01)
        queued.cancel()
        with pytest.raises(asyncio.CancelledError):
            await queued
        gate.open()
        await blocker
    assert ran == []
    cancelled = [
        span
        for span in telemetry.spans(semconv.SPAN_WAIT, pool=semconv.POOL_ASYNCIO_DEFAULT)
        if span.attributes and span.attributes.get(semconv.ATTR_EXECUTOR_TASK_CANCELLED)
    ]
    assert len(cancelled) == 1
    gauges = telemetry.gauges(semconv.POOL_ASYNCIO_DEFAULT)
    assert (gauges["busy"], gauges["pending"]) == (0, 0)
