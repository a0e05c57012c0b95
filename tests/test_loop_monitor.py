"""Event-loop lag and the blocked-loop detector, told apart from pool starvation."""

from __future__ import annotations

import asyncio
import gc
import inspect
import json
import subprocess
import threading
import time

import httpx
import pytest
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tools.stack import LOADGEN

import poolscope
from _helpers import duration_ms
from _servers import serve
from conftest import Telemetry
from poolscope import PoolscopeMiddleware, semconv

pytestmark = pytest.mark.servers


async def blocking_endpoint(request: Request) -> PlainTextResponse:
    time.sleep(0.3)  # the mistake under test: a blocking call inside async def
    return PlainTextResponse("blocked")


BLOCKING_LINE = inspect.getsourcelines(blocking_endpoint)[1] + 1


async def async_endpoint(request: Request) -> PlainTextResponse:
    await asyncio.sleep(0.2)
    return PlainTextResponse("async")


def app(telemetry: Telemetry) -> Starlette:
    return Starlette(
        routes=[Route("/blocking", blocking_endpoint), Route("/async", async_endpoint)],
        middleware=[Middleware(PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)],
    )


def histogram_quantile(point: object, quantile: float) -> float:
    """Prometheus' histogram_quantile over one data point: linear within the bucket."""
    bounds = list(point.explicit_bounds)  # type: ignore[attr-defined]
    counts = list(point.bucket_counts)  # type: ignore[attr-defined]
    rank = quantile * sum(counts)
    seen = 0
    lower = 0.0
    for bound, count in zip([*bounds, float("inf")], counts, strict=True):
        if count and seen + count >= rank:
            return lower + (bound - lower) * (rank - seen) / count
        seen += count
        lower = bound
    return lower


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_blocked_loop_is_reported_with_the_blocking_line(telemetry: Telemetry, loop: str) -> None:
    with serve(app(telemetry), loop=loop) as url, httpx.Client(base_url=url, timeout=30) as client:
        client.get("/async")  # the first request starts the monitor on the serving loop
        time.sleep(0.1)
        assert client.get("/blocking").text == "blocked"
        time.sleep(0.2)  # let the watchdog see the heartbeat come back

    [blocked] = telemetry.spans(semconv.SPAN_EVENTLOOP_BLOCKED)
    assert 240 <= duration_ms(blocked) <= 400, duration_ms(blocked)
    attributes = blocked.attributes or {}
    assert attributes[semconv.ATTR_CODE_FILE_PATH] == __file__
    assert attributes[semconv.ATTR_CODE_LINE_NUMBER] == BLOCKING_LINE
    assert str(attributes[semconv.ATTR_CODE_FUNCTION_NAME]).endswith("blocking_endpoint")
    assert f"line {BLOCKING_LINE}, in blocking_endpoint" in str(
        attributes[semconv.ATTR_CODE_STACKTRACE]
    )
    if loop == "asyncio":  # the stock loop exposes the blocked callback's context
        [request] = [
            s for s in telemetry.spans() if s.kind is SpanKind.SERVER and s.name == "GET /blocking"
        ]
        assert blocked.parent is not None
        assert blocked.parent.span_id == request.context.span_id
    assert telemetry.spans(semconv.SPAN_WAIT) == []  # no pool involved: not starvation
    [lag] = telemetry.points(semconv.METRIC_EVENTLOOP_LAG)
    assert lag.max >= 0.2
    assert list(lag.explicit_bounds) == list(semconv.LAG_BUCKETS)


async def collecting_endpoint(request: Request) -> PlainTextResponse:
    # two full collections of the large heap below: the loop stops, nobody's call. One
    # alone (~0.15 s) may begin and end between two of the watchdog's samples, which wait
    # for the GIL the collection holds; between the two, the watchdog gets its sample.
    gc.collect()
    gc.collect()
    return PlainTextResponse("collected")


def test_a_garbage_collection_that_stops_the_loop_is_a_gc_block(telemetry: Telemetry) -> None:
    heap = [[i] for i in range(3_000_000)]  # ~0.2 s per full collection on this machine
    served = Starlette(
        routes=[Route("/collect", collecting_endpoint), Route("/async", async_endpoint)],
        middleware=[Middleware(PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)],
    )
    with serve(served) as url, httpx.Client(base_url=url, timeout=30) as client:
        client.get("/async")
        time.sleep(0.1)
        assert client.get("/collect").text == "collected"
        time.sleep(0.2)
    del heap

    [blocked] = telemetry.spans(semconv.SPAN_EVENTLOOP_BLOCKED)
    attributes = blocked.attributes or {}
    assert attributes[semconv.ATTR_EVENTLOOP_BLOCKED_CAUSE] == semconv.BLOCK_CAUSE_GC, attributes
    gc_time = float(attributes[semconv.ATTR_EVENTLOOP_BLOCKED_GC_TIME])
    assert gc_time >= 0.5 * duration_ms(blocked) / 1000, (gc_time, duration_ms(blocked))
    assert semconv.BLOCK_CAUSE_GC not in semconv.BLOCK_CAUSES_OWN


def test_a_fully_async_endpoint_under_load_has_low_lag_and_no_waits(telemetry: Telemetry) -> None:
    # A 10 ms heartbeat gives a few hundred lag samples, enough for a p99
    # that is not just the single worst sample.
    poolscope.uninstrument()
    poolscope.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        loop_interval=0.01,
    )
    with serve(app(telemetry)) as url:
        with httpx.Client(base_url=url) as client:
            client.get("/async")
        result = subprocess.run(
            # 60 users, 10 requests each (the 120 s bound is never reached)
            [
                *LOADGEN,
                "--requests=10",
                url,
                "120",
                "/async:60",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    assert json.loads(result.stdout) == {"/async": {"200": 600}}
    long_waits = [s for s in telemetry.spans(semconv.SPAN_WAIT) if duration_ms(s) >= 1]
    assert long_waits == []
    # The async endpoint never blocks the loop. (A stall of the whole VM on a
    # busy 2-core machine can still show up as a block somewhere: it is real
    # lag, just not this endpoint's doing.)
    blamed = [
        span
        for span in telemetry.spans(semconv.SPAN_EVENTLOOP_BLOCKED)
        if str((span.attributes or {}).get(semconv.ATTR_CODE_FUNCTION_NAME)).endswith(
            "async_endpoint"
        )
    ]
    assert blamed == []
    [lag] = telemetry.points(semconv.METRIC_EVENTLOOP_LAG)
    assert lag.count >= 150  # about two seconds of 10 ms heartbeats
    assert histogram_quantile(lag, 0.99) < 0.020, (list(lag.bucket_counts), lag.max)


@pytest.mark.anyio
async def test_a_busy_loop_shows_as_resume_time_not_as_queue_wait(telemetry: Telemetry) -> None:
    """The worker is free and finishes at once, but the loop is blocked: long resume, no wait."""
    import threading

    loop_blocked = threading.Event()

    def quick() -> None:
        assert loop_blocked.wait(10)  # ends just after the loop starts hogging

    async def block_the_loop() -> None:
        await asyncio.sleep(0.02)  # quick() is submitted and running by now
        loop_blocked.set()
        time.sleep(0.2)  # hog the loop while quick()'s result waits to be picked up

    with telemetry.tracer.start_as_current_span("request"):
        await asyncio.gather(asyncio.to_thread(quick), block_the_loop())

    pool = semconv.POOL_ASYNCIO_DEFAULT
    [resume] = telemetry.points(semconv.METRIC_TASK_RESUME_DURATION, executor__name=pool)
    [wait] = telemetry.points(semconv.METRIC_TASK_WAIT_DURATION, executor__name=pool)
    assert resume.count == 1
    assert resume.max >= 0.15, resume.max
    assert wait.max < 0.05, wait.max


class _SteppedClock:
    """A loop thread's clocks read from a script: what the watchdog would read at each sample."""

    def __init__(self, readings: list[tuple[float, float]], in_call: bool = True) -> None:
        self.readings = iter(readings)
        self.now = (0.0, 0.0)
        self.in_call = in_call

    def step(self) -> None:
        self.now = next(self.readings)

    def cpu(self) -> float:
        return self.now[0]

    def run_queue_wait(self) -> float:
        return self.now[1]

    def in_blocking_call(self) -> bool:
        return self.in_call


def test_a_wait_for_a_cpu_after_the_block_is_not_charged_to_it() -> None:
    # A 300 ms sleep seen at samples 0, 20, ..., 280 ms; the sample at 300 ms finds it
    # over, with the loop thread since then runnable behind other work for 15 ms.
    from poolscope._core._loop_blocks import Evidence

    ms = 1_000_000
    clock = _SteppedClock([(0.0, 0.0)] + [(0.0, 0.0)] * 13 + [(0.001, 0.015)])
    clock.step()
    evidence = Evidence(clock, 0, 20 * ms, 20 * ms)  # type: ignore[arg-type]
    for sample in range(2, 15):
        clock.step()
        evidence.observe(sample * 20 * ms)
    clock.step()
    found = evidence.attributes(start_ns=0, end_ns=290 * ms, now=300 * ms)
    assert found[semconv.ATTR_EVENTLOOP_BLOCKED_CPU_WAIT] == 0.0
    assert found[semconv.ATTR_EVENTLOOP_BLOCKED_CPU_TIME] == 0.0
    assert found[semconv.ATTR_EVENTLOOP_BLOCKED_CAUSE] == semconv.BLOCK_CAUSE_CALL


@pytest.mark.parametrize("others_ran", [True, False], ids=["threads-ran", "alone"])
def test_a_short_block_off_the_cpu_is_the_gil_only_if_other_threads_ran(others_ran: bool) -> None:
    # A 150 ms block the watchdog saw at one sample only, the loop thread neither on a
    # CPU, nor runnable, nor in a system call: too little to see a blocking call. If
    # another thread ran Python meanwhile, the loop waited for the GIL; alone, it sat
    # in a call the sample missed (a lock wait, or a syscall between two samples).
    from poolscope._core._loop_blocks import Evidence

    ms = 1_000_000
    clock = _SteppedClock([(0.0, 0.0), (0.0, 0.0)], in_call=False)
    clock.step()
    start = time.monotonic_ns()
    evidence = Evidence(clock, 0, start, 100 * ms)  # type: ignore[arg-type]
    deadline = time.monotonic() + 0.15
    done = threading.Event()
    spinning = threading.Thread(
        target=_spin_until, args=(deadline if others_ran else 0.0, done), name="spinning"
    )
    spinning.start()
    time.sleep(max(deadline - time.monotonic(), 0.0))
    clock.step()
    now = time.monotonic_ns()
    evidence.observe(now)
    found = evidence.attributes(start_ns=start, end_ns=now, now=now)
    done.set()
    spinning.join()
    expected = semconv.BLOCK_CAUSE_GIL if others_ran else semconv.BLOCK_CAUSE_CALL
    assert found[semconv.ATTR_EVENTLOOP_BLOCKED_CAUSE] == expected, found
    if others_ran:
        assert found[semconv.ATTR_EVENTLOOP_BLOCKED_BUSY_THREADS] == ["spinning"]


def _spin_until(deadline: float, done: threading.Event) -> None:
    """Run Python until ``deadline``, then stay alive, off the CPU, until ``done``."""
    while time.monotonic() < deadline:
        pass
    done.wait(10)
