"""The loop's default executor: run_in_executor(None, ...), to_thread, set_default_executor.

Every test runs on the stock asyncio loop and on uvloop (see ``anyio_backend``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

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


class EndedOn(SpanProcessor):
    """Which thread ended each span."""

    def __init__(self) -> None:
        self.threads: dict[str, set[int]] = {}

    def on_end(self, span: ReadableSpan) -> None:
        self.threads.setdefault(span.name, set()).add(threading.get_ident())


async def test_an_awaited_offload_has_its_spans_when_the_caller_resumes_built_on_the_loop(
    telemetry: Telemetry,
) -> None:
    """The wait span and the end of the run span of an awaited task are left to the
    loop (a worker runs Python slower, holding the GIL the loop needs), and are there,
    with the worker's timestamps, before the awaiting coroutine goes on."""
    ended_on = EndedOn()
    telemetry.tracer_provider.add_span_processor(ended_on)
    loop = asyncio.get_running_loop()
    loop.set_default_executor(poolscope.instrument_executor(ThreadPoolExecutor(1), name="one"))
    gate = Gate(expected_running=1)
    seen: list[tuple[int, int]] = []

    async def offload() -> None:
        await asyncio.to_thread(gate.task)
        # what the caller finds on resuming: its own wait (threshold 0) and run spans
        names = (semconv.SPAN_WAIT, semconv.SPAN_RUN)
        seen.append(tuple(len(telemetry.spans(name, pool="one")) for name in names))

    with ThreadPoolExecutor(1) as side, telemetry.tracer.start_as_current_span("request"):
        first = asyncio.ensure_future(offload())
        await loop.run_in_executor(side, gate.wait_running)  # the one worker is busy
        second = asyncio.ensure_future(offload())  # waits for the first's worker
        await asyncio.sleep(0.05)
        gate.open()
        await asyncio.gather(first, second)
    assert seen == [(1, 1), (2, 2)]
    loop_thread = threading.get_ident()
    assert ended_on.threads[semconv.SPAN_WAIT] == {loop_thread}  # the side pool's too
    assert ended_on.threads[semconv.SPAN_RUN] == {loop_thread}
    waits = sorted(telemetry.spans(semconv.SPAN_WAIT, pool="one"), key=lambda s: s.start_time or 0)
    runs = {span.start_time: span for span in telemetry.spans(semconv.SPAN_RUN, pool="one")}
    # the second task's wait ends when its run starts, after the first run's end
    last_wait = waits[-1]
    assert last_wait.end_time in runs
    assert runs[last_wait.end_time].end_time is not None
    assert (last_wait.end_time or 0) - (last_wait.start_time or 0) >= 40e6


async def test_an_offload_nobody_awaits_builds_its_spans_on_the_worker(
    telemetry: Telemetry,
) -> None:
    ended_on = EndedOn()
    telemetry.tracer_provider.add_span_processor(ended_on)
    with ThreadPoolExecutor(1) as pool, telemetry.tracer.start_as_current_span("request"):
        pool.submit(time.sleep, 0.02)
        worker = pool.submit(threading.get_ident).result()  # waited for the sleeping one
    assert ended_on.threads[semconv.SPAN_WAIT] == {worker}
    assert ended_on.threads[semconv.SPAN_RUN] == {worker}
    assert len(telemetry.spans(semconv.SPAN_RUN)) == 2


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
