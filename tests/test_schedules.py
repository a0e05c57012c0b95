"""Random schedules of submits, releases, cancellations, exceptions, shutdowns and resizes.

The hand-written tests pick a few interleavings; here Hypothesis picks them,
because the invariants must hold for every schedule: busy ≥ 0, pending ≥ 0,
busy ≤ limit, and for every task that ran, wait + run = its whole stay
(submit → end). Each task blocks on its own ``threading.Event`` until the
schedule releases it, so every step is driven to a settled state without
sleeping, and after every step the live counts must equal a model of which
tasks hold a seat and which wait for one.

Paths: a ``ThreadPoolExecutor`` of 1-4 workers, ``asyncio.to_thread`` on an
instrumented default executor, and ``anyio.to_thread.run_sync`` on an
instrumented ``CapacityLimiter`` resized while tasks hold and wait for its
tokens. The async paths run on asyncio or uvloop (drawn per schedule) in a
loop thread (an anyio blocking portal), driven from the test's thread.

``pytest -s`` prints how many schedules each test tried and the states they reached.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import poolscope
from _schedules import (
    ANYIO_EXAMPLES,
    ASYNCIO_EXAMPLES,
    OFFSET_TOLERANCE_NS,
    THREAD_POOL_EXAMPLES,
    TIMEOUT,
    AnyioRun,
    AsyncioRun,
    Step,
    ThreadPoolRun,
    played,
    report,
    schedules,
)
from conftest import Telemetry
from poolscope import semconv
from poolscope._core._task import Task, current_task

pytestmark = pytest.mark.properties


COMMON_STATES = {
    "tasks queued": 20,
    "cancelled while waiting": 10,
    "cancelled while running": 10,
    "a task ran and raised": 20,
}


def test_thread_pool_schedules() -> None:
    """ThreadPoolExecutor.submit: Future.cancel() and shutdown(cancel_futures=True) while
    tasks wait and run, submits refused after shutdown, 1-4 workers."""
    reached: Counter[str] = Counter()

    @settings(max_examples=THREAD_POOL_EXAMPLES, deadline=None)
    @given(
        workers=st.integers(min_value=1, max_value=4),
        steps=schedules(abandon=False, shutdown=True, resize=False),
    )
    def schedule(workers: int, steps: list[Step]) -> None:
        played(ThreadPoolRun(workers), steps, reached)

    schedule()
    report(
        "thread pool",
        reached,
        {
            **COMMON_STATES,
            "shutdown cancelled queued tasks": 5,
            "submit refused after shutdown": 5,
        },
    )


def test_asyncio_to_thread_schedules() -> None:
    """asyncio.to_thread on the loop's instrumented default executor: the awaiting task
    cancelled while its function waits (never runs) or runs (runs on, seat kept)."""
    reached: Counter[str] = Counter()

    @settings(max_examples=ASYNCIO_EXAMPLES, deadline=None)
    @given(
        workers=st.integers(min_value=1, max_value=4),
        use_uvloop=st.booleans(),
        steps=schedules(abandon=False, shutdown=True, resize=False),
    )
    def schedule(workers: int, use_uvloop: bool, steps: list[Step]) -> None:
        reached["uvloop" if use_uvloop else "asyncio loop"] += 1
        played(AsyncioRun(workers, use_uvloop), steps, reached)

    schedule()
    report(
        "asyncio.to_thread",
        reached,
        {
            **COMMON_STATES,
            "shutdown cancelled queued tasks": 3,
            "submit refused after shutdown": 3,
            "uvloop": 10,
            "asyncio loop": 10,
        },
    )


def test_anyio_run_sync_schedules_with_resizes() -> None:
    """anyio.to_thread.run_sync on an instrumented CapacityLimiter: total_tokens raised
    and cut (to 0 and to inf too) while tasks hold and wait, cancel scopes with and
    without abandon_on_cancel."""
    reached: Counter[str] = Counter()

    @settings(max_examples=ANYIO_EXAMPLES, deadline=None)
    @given(
        tokens=st.integers(min_value=0, max_value=4),
        use_uvloop=st.booleans(),
        steps=schedules(abandon=True, shutdown=False, resize=True),
    )
    def schedule(tokens: int, use_uvloop: bool, steps: list[Step]) -> None:
        reached["uvloop" if use_uvloop else "asyncio loop"] += 1
        played(AnyioRun(tokens, use_uvloop), steps, reached)

    schedule()
    report(
        "anyio.to_thread.run_sync",
        reached,
        {
            **COMMON_STATES,
            "abandoned while running": 10,
            "cancel of a running task left it running": 5,
            "orphans beside a full limiter": 3,
            "limit cut below the tasks holding tokens": 10,
            "busy above the limit": 10,
            "raised limit let waiting tasks start": 10,
            "tasks waiting on zero tokens": 5,
            "uvloop": 10,
            "asyncio loop": 10,
        },
    )


# --- bugs the schedules found, pinned deterministically ---------------------------------


def test_a_worker_switched_out_between_two_clock_reads_keeps_wait_plus_run_exact(
    telemetry: Telemetry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The run span ends where the task ended, however long its worker is switched out.

    poolscope places a span at a monotonic reading plus ``time_ns() - monotonic_ns()``.
    It used to read that offset afresh when the run ended (``Task.finish``): a worker
    switched out between those two reads (by the GIL or the OS) got an offset short by
    the time it was away, and its run span ended that much early, so wait + run fell
    short of the task's stay. The schedules hit this about once a run of this file
    (2.5 ms off); here the switch is made certain: the worker's first wall-clock read
    after the function returns stalls 20 ms, as a switch right after it would.
    """
    stall = threading.local()
    real_time_ns = time.time_ns

    def time_ns() -> int:
        now = real_time_ns()
        if getattr(stall, "armed", False):
            stall.armed = False
            time.sleep(0.02)  # the thread is away right after reading the wall clock
        return now

    monkeypatch.setattr(time, "time_ns", time_ns)
    tasks: list[Task] = []

    def work() -> None:
        task = current_task.get()
        assert task is not None
        tasks.append(task)
        stall.armed = True  # the next wall-clock read in this thread is poolscope's

    executor = poolscope.instrument_executor(ThreadPoolExecutor(1), name="switched-out")
    with executor, telemetry.tracer.start_as_current_span("request"):
        executor.submit(work).result(TIMEOUT)
    [task] = tasks
    [wait] = telemetry.spans(semconv.SPAN_WAIT, pool="switched-out")
    [run] = telemetry.spans(semconv.SPAN_RUN, pool="switched-out")
    assert wait.start_time is not None and wait.end_time is not None
    assert run.start_time is not None and run.end_time is not None
    assert wait.end_time == run.start_time
    wait_ns = wait.end_time - wait.start_time
    run_ns = run.end_time - run.start_time
    assert wait_ns == task.started - task.submitted
    total_ns = task.ended - task.submitted
    assert abs(wait_ns + run_ns - total_ns) <= OFFSET_TOLERANCE_NS, (
        f"wait {wait_ns} + run {run_ns} ns = {wait_ns + run_ns} ns, but the task stayed "
        f"{total_ns} ns from submit to end"
    )


def test_an_unbounded_limiter_reports_figures_the_sdk_accepts(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    """Found by the schedules' ``Resize(math.inf)``.

    anyio allows ``total_tokens = math.inf``; poolscope reported that limit, and idle =
    limit - busy, as ``inf``, which the OpenTelemetry SDK rejects with a warning at every
    collection. An unbounded pool now reports busy and pending, and no limit or idle.
    """
    limiter = poolscope.instrument_limiter(anyio.CapacityLimiter(math.inf), name="unbounded")
    with caplog.at_level(logging.WARNING, logger="opentelemetry"):
        figures = telemetry.gauges("unbounded")
    assert limiter.total_tokens == math.inf  # alive until here: its pool goes with it
    assert figures == {"busy": 0, "pending": 0}, figures
    rejected = [r.getMessage() for r in caplog.records if r.name.startswith("opentelemetry")]
    assert rejected == [], rejected
