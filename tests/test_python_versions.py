"""What changes between the Python versions poolscope claims (3.11 to 3.13), tested on each.

* 3.13 sizes the loop's default executor from ``os.process_cpu_count()`` (the
  CPUs this process may run on), 3.11 and 3.12 from ``os.cpu_count()``;
* 3.12 added eager tasks (``asyncio.eager_task_factory``): a task's first step
  runs inside ``create_task``, in its creator's callback;
* ``asyncio.timeout`` and ``asyncio.TaskGroup`` (3.11) cancel tasks whose
  offloads may still be queued, each version by its own cancellation code.

``./scripts/test`` runs this file, with the unit and server tiers, on every
version ``pyproject.toml`` claims.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from _helpers import Gate, default_executor_limit
from _servers import serve
from conftest import Telemetry
from poolscope import PoolscopeMiddleware, semconv

needs_eager_tasks = pytest.mark.skipif(
    sys.version_info < (3, 12), reason="asyncio.eager_task_factory is new in Python 3.12"
)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="CPU affinity is Linux's")
@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs a second CPU to leave out")
def test_the_default_executors_limit_is_the_one_this_python_gives_it(
    telemetry: Telemetry,
) -> None:
    # The loop's thread may run on one CPU only: 3.13 gives its default executor
    # min(32, 1 + 4) threads, 3.11 and 3.12 min(32, cpu_count + 4). poolscope
    # reports the executor's own figure, not a formula of its own.
    every_cpu = os.sched_getaffinity(0)
    found: dict[str, float] = {}

    async def main() -> None:
        await asyncio.to_thread(int)
        found.update(telemetry.gauges(semconv.POOL_ASYNCIO_DEFAULT))

    os.sched_setaffinity(0, {min(every_cpu)})
    try:
        asyncio.run(main())
        expected = default_executor_limit()
    finally:
        os.sched_setaffinity(0, every_cpu)
    assert found["limit"] == expected
    if sys.version_info >= (3, 13):
        assert expected == 5
    else:
        assert expected == min(32, (os.cpu_count() or 1) + 4)


BLOCKS_IN_FIRST_STEP_S = 0.25


async def eager_endpoint(request: Request) -> PlainTextResponse:
    async def first_step_blocks() -> None:
        time.sleep(BLOCKS_IN_FIRST_STEP_S)  # runs inside create_task below
        await asyncio.to_thread(time.sleep, 0.05)

    # the app's loop runs its tasks eagerly from here on (the test's server loop ends with it)
    asyncio.get_running_loop().set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
    before = time.monotonic()
    task = asyncio.create_task(first_step_blocks())
    eager = time.monotonic() - before >= BLOCKS_IN_FIRST_STEP_S
    await task
    return PlainTextResponse("eager" if eager else "lazy")


async def start_endpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse("started")


def eager_app(telemetry: Telemetry) -> Starlette:
    return Starlette(
        routes=[Route("/eager", eager_endpoint), Route("/", start_endpoint)],
        middleware=[Middleware(PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)],
    )


@needs_eager_tasks
@pytest.mark.servers
def test_eager_tasks_keep_blocks_waits_and_the_request_roll_up(telemetry: Telemetry) -> None:
    # An eager task's first step blocks the loop inside create_task, in the endpoint's
    # callback, then offloads: the block, the offload and its resume belong to the request.
    # On the stock loop only: uvloop's create_task does not take the eager factory's
    # arguments (TypeError on 3.13), so eager tasks are the stock loop's feature.
    with serve(eager_app(telemetry)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/").text == "started"  # the loop's watchdog starts with it
        time.sleep(0.1)
        assert client.get("/eager").text == "eager"
        time.sleep(0.2)  # the watchdog reports a block when it sees the loop free again

    [request] = [span for span in telemetry.spans() if span.name == "GET /eager"]
    runs = telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ASYNCIO_DEFAULT)
    assert [
        span.attributes[semconv.ATTR_CODE_FUNCTION_NAME] for span in runs if span.attributes
    ] == ["time.sleep"]
    assert runs[0].context.trace_id == request.context.trace_id
    attributes = request.attributes or {}
    assert attributes[semconv.ATTR_EXECUTOR_TASK_COUNT] == 1
    [resume] = telemetry.points(
        semconv.METRIC_TASK_RESUME_DURATION, executor__name=semconv.POOL_ASYNCIO_DEFAULT
    )
    assert resume.count == 1

    [blocked] = telemetry.spans(semconv.SPAN_EVENTLOOP_BLOCKED)
    block = blocked.attributes or {}
    assert block[semconv.ATTR_CODE_FILE_PATH] == __file__
    assert block[semconv.ATTR_CODE_FUNCTION_NAME].endswith("first_step_blocks")
    assert block[semconv.ATTR_EVENTLOOP_BLOCKED_CAUSE] == semconv.BLOCK_CAUSE_CALL
    assert blocked.context.trace_id == request.context.trace_id


def _cancelled_waits(telemetry: Telemetry) -> int:
    return sum(
        1
        for span in telemetry.spans(semconv.SPAN_WAIT, pool=semconv.POOL_ASYNCIO_DEFAULT)
        if span.attributes and span.attributes.get(semconv.ATTR_EXECUTOR_TASK_CANCELLED)
    )


@pytest.mark.anyio
async def test_a_timeout_while_queued_never_runs_the_function(telemetry: Telemetry) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))
    gate = Gate(expected_running=1)
    ran: list[int] = []
    with telemetry.tracer.start_as_current_span("request"):  # wait spans need a trace
        blocker = asyncio.ensure_future(asyncio.to_thread(gate.task))
        await _wait_running(gate)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.05):
                await asyncio.to_thread(ran.append, 1)
        gate.open()
        await blocker
    await asyncio.sleep(0.05)  # the worker would have run it by now
    assert ran == []
    assert _cancelled_waits(telemetry) == 1
    gauges = telemetry.gauges(semconv.POOL_ASYNCIO_DEFAULT)
    assert (gauges["busy"], gauges["pending"]) == (0, 0)


@pytest.mark.anyio
async def test_a_task_group_that_fails_cancels_its_queued_offloads(telemetry: Telemetry) -> None:
    loop = asyncio.get_running_loop()
    loop.set_default_executor(ThreadPoolExecutor(1))
    gate = Gate(expected_running=1)
    ran: list[int] = []

    async def fail_soon() -> None:
        await asyncio.sleep(0.05)
        raise ValueError("one task of the group failed")

    async def offload_three_and_fail() -> None:
        async with asyncio.TaskGroup() as group:
            for index in range(3):
                group.create_task(asyncio.to_thread(ran.append, index))
            group.create_task(fail_soon())

    with telemetry.tracer.start_as_current_span("request"):  # wait spans need a trace
        blocker = asyncio.ensure_future(asyncio.to_thread(gate.task))
        await _wait_running(gate)
        with pytest.raises(ExceptionGroup) as failed:
            await offload_three_and_fail()
        gate.open()
        await blocker
    assert failed.group_contains(ValueError), repr(failed.value.exceptions)
    await asyncio.sleep(0.05)
    assert ran == []
    assert _cancelled_waits(telemetry) == 3
    gauges = telemetry.gauges(semconv.POOL_ASYNCIO_DEFAULT)
    assert (gauges["busy"], gauges["pending"]) == (0, 0)
    # only the task that held the worker ran
    runs = telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ASYNCIO_DEFAULT)
    assert [(span.attributes or {}).get(semconv.ATTR_CODE_FUNCTION_NAME) for span in runs] == [
        "_helpers.Gate.task"
    ]


async def _wait_running(gate: Gate) -> None:
    """Until the gate's task runs on its worker, without taking a seat of the pool."""
    waiter = threading.Thread(target=gate.wait_running)
    waiter.start()
    while waiter.is_alive():
        await asyncio.sleep(0.005)
