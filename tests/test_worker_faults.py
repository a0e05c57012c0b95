"""Worker functions that misbehave: raise, hang past a timeout, get cancelled, call back
into the loop, or offload into their own pool. The app sees exactly what it would
without poolscope; the telemetry says what happened and the counts end at 0.

Async tests run on the stock asyncio loop and on uvloop (see ``anyio_backend``).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

import poolscope
from _helpers import Gate, duration_ms
from conftest import Telemetry
from poolscope import semconv
from poolscope._core import _nested


def _settled(telemetry: Telemetry, pool: str) -> tuple[float, float]:
    """(busy, pending) once the pool's last worker has handed its task back."""
    deadline = time.monotonic() + 10
    while True:
        gauges = telemetry.gauges(pool)
        if gauges.get("busy") == 0 or time.monotonic() > deadline:
            return gauges["busy"], gauges["pending"]
        time.sleep(0.01)


def _runs(telemetry: Telemetry, pool: str, **match: Any) -> int:
    points = telemetry.points(semconv.METRIC_TASK_RUN_DURATION, executor__name=pool, **match)
    return sum(p.count for p in points)


class Boom(Exception):
    pass


# --- raising -------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["to_thread", "run_in_executor", "anyio"])
async def test_an_exception_reaches_the_caller_unchanged_on_every_async_path(
    telemetry: Telemetry, path: str
) -> None:
    error = Boom("from the worker")

    def fail() -> None:
        raise error

    limiter = poolscope.instrument_limiter(anyio.CapacityLimiter(1), name="raising")
    pool = poolscope.instrument_executor(ThreadPoolExecutor(1), name="raising")
    calls: dict[str, Callable[[], Any]] = {
        "to_thread": lambda: asyncio.to_thread(fail),
        "run_in_executor": lambda: asyncio.get_running_loop().run_in_executor(pool, fail),
        "anyio": lambda: anyio.to_thread.run_sync(fail, limiter=limiter),
    }
    asyncio.get_running_loop().set_default_executor(pool)
    with telemetry.tracer.start_as_current_span("request"):
        with pytest.raises(Boom) as raised:
            await calls[path]()
    assert raised.value is error
    [run] = telemetry.spans(semconv.SPAN_RUN, pool="raising")
    assert run.status.status_code is StatusCode.ERROR
    assert _runs(telemetry, "raising", error__type=f"{__name__}.Boom") == 1
    assert _settled(telemetry, "raising") == (0, 0)
    pool.shutdown()


# --- hanging past the caller's timeout ----------------------------------------------------


@pytest.mark.anyio
async def test_a_worker_hanging_past_wait_for_keeps_its_seat_until_it_really_ends(
    telemetry: Telemetry,
) -> None:
    pool = poolscope.instrument_executor(ThreadPoolExecutor(1), name="hanging")
    asyncio.get_running_loop().set_default_executor(pool)
    release = threading.Event()
    with telemetry.tracer.start_as_current_span("request"):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(asyncio.to_thread(release.wait, 10), timeout=0.2)
    # The caller gave up; the thread did not: the seat is still taken.
    assert telemetry.gauges("hanging")["busy"] == 1
    await asyncio.sleep(0.2)
    release.set()
    assert _settled(telemetry, "hanging") == (0, 0)
    [run] = telemetry.spans(semconv.SPAN_RUN, pool="hanging")
    assert duration_ms(run) >= 350  # the real hold, not the caller's 200 ms
    assert run.status.status_code is StatusCode.UNSET
    pool.shutdown()


@pytest.mark.anyio
async def test_anyio_abandon_on_cancel_frees_the_caller_and_the_token_when_the_thread_ends(
    telemetry: Telemetry,
) -> None:
    limiter = poolscope.instrument_limiter(anyio.CapacityLimiter(1), name="abandoned")
    release = threading.Event()
    with anyio.move_on_after(0.2) as scope:
        await anyio.to_thread.run_sync(release.wait, 10, limiter=limiter, abandon_on_cancel=True)
    assert scope.cancelled_caught
    release.set()
    assert _settled(telemetry, "abandoned") == (0, 0)
    assert _runs(telemetry, "abandoned") == 1


# --- cancelled while running --------------------------------------------------------------


@pytest.mark.anyio
async def test_cancelling_the_awaiting_task_while_running_records_a_run_not_a_cancelled_wait(
    telemetry: Telemetry,
) -> None:
    pool = poolscope.instrument_executor(ThreadPoolExecutor(1), name="cancel-running")
    asyncio.get_running_loop().set_default_executor(pool)
    gate = Gate(expected_running=1)
    running = asyncio.ensure_future(asyncio.to_thread(gate.task, 7))
    await _in_side_thread(gate.wait_running)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    gate.open()
    assert _settled(telemetry, "cancel-running") == (0, 0)
    assert _runs(telemetry, "cancel-running") == 1
    cancelled_waits = telemetry.points(
        semconv.METRIC_TASK_WAIT_DURATION,
        executor__name="cancel-running",
        executor__task__cancelled=True,
    )
    assert cancelled_waits == []
    pool.shutdown()


@pytest.mark.anyio
async def test_a_task_whose_caller_was_cancelled_while_it_ran_still_ends_its_spans(
    telemetry: Telemetry,
) -> None:
    """The loop settles an awaited task's spans when the caller resumes; a caller
    cancelled mid-run never resumes for it, so the worker ends them when the
    function really ends."""
    pool = poolscope.instrument_executor(ThreadPoolExecutor(1), name="cancelled-caller")
    asyncio.get_running_loop().set_default_executor(pool)
    gate = Gate(expected_running=1)
    with telemetry.tracer.start_as_current_span("request"):
        running = asyncio.ensure_future(asyncio.to_thread(gate.task, 7))
        await _in_side_thread(gate.wait_running)
        running.cancel()
        with pytest.raises(asyncio.CancelledError):
            await running
    assert telemetry.spans(semconv.SPAN_RUN, pool="cancelled-caller") == []  # still running
    await asyncio.sleep(0.2)  # the task runs on, 200 ms past its caller
    gate.open()
    assert _settled(telemetry, "cancelled-caller") == (0, 0)
    for _ in range(100):  # the worker ends the span right after the function returns
        if telemetry.spans(semconv.SPAN_RUN, pool="cancelled-caller"):
            break
        await asyncio.sleep(0.01)
    [run] = telemetry.spans(semconv.SPAN_RUN, pool="cancelled-caller")
    [wait] = telemetry.spans(semconv.SPAN_WAIT, pool="cancelled-caller")  # threshold 0
    assert duration_ms(run) >= 190  # ended when the function did, not when the caller left
    assert wait.end_time == run.start_time
    pool.shutdown()


async def _in_side_thread(fn: Callable[[], None]) -> None:
    """Block on ``fn`` in a thread no test pool owns."""
    with ThreadPoolExecutor(1, thread_name_prefix="side") as side:
        await asyncio.get_running_loop().run_in_executor(side, fn)


# --- calling back into the event loop --------------------------------------------------


@pytest.mark.anyio
async def test_a_worker_calling_back_into_the_loop_works_and_its_spans_nest_under_the_run(
    telemetry: Telemetry,
) -> None:
    loop = asyncio.get_running_loop()
    tracer = telemetry.tracer

    async def on_the_loop() -> int:
        with tracer.start_as_current_span("callback"):
            await asyncio.sleep(0)
            return threading.get_ident()

    def worker() -> tuple[int, int]:
        via_asyncio = asyncio.run_coroutine_threadsafe(on_the_loop(), loop).result(timeout=10)
        via_anyio = anyio.from_thread.run(on_the_loop)
        return via_asyncio, via_anyio

    with tracer.start_as_current_span("request"):
        on_loop = await anyio.to_thread.run_sync(worker)
    assert on_loop == (threading.get_ident(), threading.get_ident())
    [run] = telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ANYIO_DEFAULT)
    callbacks = telemetry.spans("callback")
    assert len(callbacks) == 2
    assert callbacks[0].parent is not None
    assert callbacks[0].parent.span_id == run.context.span_id  # the worker's context went along
    assert _settled(telemetry, semconv.POOL_ANYIO_DEFAULT) == (0, 0)


# --- nested offload into the same pool ---------------------------------------------------


def _nested_waits(telemetry: Telemetry, pool: str) -> list[ReadableSpan]:
    return [
        span
        for span in telemetry.spans(semconv.SPAN_WAIT, pool=pool)
        if span.attributes and span.attributes.get(semconv.ATTR_EXECUTOR_TASK_NESTED)
    ]


def test_nested_offload_with_a_free_worker_is_marked_nested_and_nothing_more(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    with ThreadPoolExecutor(2, thread_name_prefix="nested-ok") as pool:

        def outer() -> int:
            return pool.submit(abs, -4).result(timeout=10)

        with telemetry.tracer.start_as_current_span("request"):
            assert pool.submit(outer).result(timeout=10) == 4
    [nested] = _nested_waits(telemetry, "nested-ok")
    assert nested.status.status_code is StatusCode.UNSET
    runs = telemetry.spans(semconv.SPAN_RUN, pool="nested-ok")
    assert sorted(
        bool((s.attributes or {}).get(semconv.ATTR_EXECUTOR_TASK_NESTED)) for s in runs
    ) == [
        False,
        True,
    ]
    assert "deadlock" not in caplog.text


def _stacks() -> str:
    """Every thread's stack, by name."""
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    return "\n".join(
        f"{names.get(ident, ident)}:\n{''.join(traceback.format_stack(frame))}"
        for ident, frame in sys._current_frames().items()
    )


def test_a_full_pool_of_tasks_waiting_on_nested_work_is_reported_as_deadlocked(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """Two workers, each running a task that waits for work it submitted to the same
    pool: the classic self-deadlock. poolscope ends the stuck tasks' wait spans with
    an error while they still hang, then the outer tasks give up and all recovers."""
    release = threading.Event()
    # Both outers hold a worker before either nests: else the first can submit its nested
    # work ahead of the second outer, and a free worker runs it (no deadlock to report).
    both_running = threading.Barrier(2)

    def outer(pool: ThreadPoolExecutor) -> str:
        both_running.wait(timeout=10)
        nested = pool.submit(abs, -1)
        while not release.is_set():  # waits on the nested result, as app code would
            try:
                nested.result(timeout=0.05)
            except concurrent.futures.TimeoutError:
                continue
        return "gave up"

    caplog.set_level(logging.WARNING, logger="poolscope")
    with ThreadPoolExecutor(2, thread_name_prefix="nested-full") as pool:
        try:
            with telemetry.tracer.start_as_current_span("request"):
                outers = [pool.submit(outer, pool) for _ in range(2)]
            deadline = time.monotonic() + 10
            while len(_nested_waits(telemetry, "nested-full")) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            flagged = _nested_waits(telemetry, "nested-full")
            assert len(flagged) == 2, _stacks()  # where everything was, if it never came
            # Reported while still stuck: neither nested task has run.
            gauges = telemetry.gauges("nested-full")
            assert gauges == {"busy": 2, "idle": 0, "limit": 2, "pending": 2}
        finally:
            release.set()  # a failed check must fail the test, not hang it on the pool's exit
        assert [f.result(timeout=10) for f in outers] == ["gave up", "gave up"]
    runs_by_id = {
        s.context.span_id: s for s in telemetry.spans(semconv.SPAN_RUN, pool="nested-full")
    }
    for span in flagged:
        assert span.status.status_code is StatusCode.ERROR
        assert span.attributes is not None
        assert span.attributes[semconv.ATTR_ERROR_TYPE] == semconv.ERROR_NESTED_DEADLOCK
        assert span.attributes[semconv.ATTR_CODE_FUNCTION_NAME] == "builtins.abs"
        assert span.parent is not None and span.parent.span_id in runs_by_id  # under its outer
        assert duration_ms(span) >= _nested.DEADLOCK_AFTER_S * 1000
    # Recovered: the nested tasks ran afterwards, with no second wait span, counts at 0.
    assert len(_nested_waits(telemetry, "nested-full")) == 2
    assert _runs(telemetry, "nested-full") == 4
    assert _settled(telemetry, "nested-full") == (0, 0)
    warnings = [r for r in caplog.records if "looks deadlocked" in r.getMessage()]
    assert len(warnings) == 1
    assert "'nested-full'" in warnings[0].getMessage()


def test_a_full_pool_whose_tasks_fire_off_nested_work_and_carry_on_is_not_deadlocked(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """Saturated, not deadlocked: the outer tasks do not wait for their nested work."""

    both_running = threading.Barrier(2, timeout=10)  # else a nested task could take a worker

    def outer(pool: ThreadPoolExecutor) -> None:
        both_running.wait()
        pool.submit(abs, -1)  # fire and forget
        time.sleep(_nested.DEADLOCK_AFTER_S + 0.5)  # busy with something else

    caplog.set_level(logging.WARNING, logger="poolscope")
    with ThreadPoolExecutor(2, thread_name_prefix="nested-busy") as pool:
        with telemetry.tracer.start_as_current_span("request"):
            outers = [pool.submit(outer, pool) for _ in range(2)]
        for future in outers:
            future.result(timeout=10)
    nested = _nested_waits(telemetry, "nested-busy")
    assert len(nested) == 2
    assert all(span.status.status_code is StatusCode.UNSET for span in nested)
    assert all(duration_ms(span) >= _nested.DEADLOCK_AFTER_S * 1000 for span in nested)
    assert "looks deadlocked" not in caplog.text
