"""instrument / uninstrument: idempotent, exact undo, and the opentelemetry-instrument entry."""

from __future__ import annotations

import asyncio
import gc
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from importlib.metadata import entry_points

import anyio
import anyio._backends._asyncio as anyio_asyncio
import anyio.to_thread
import pytest
import uvloop
from opentelemetry import trace
from opentelemetry.instrumentation.threading import ThreadingInstrumentor
from starlette.applications import Starlette

import poolscope
from conftest import Telemetry, make_telemetry
from poolscope import semconv

PATCHED = [
    (ThreadPoolExecutor, "submit"),
    (ProcessPoolExecutor, "submit"),
    (asyncio.BaseEventLoop, "run_in_executor"),
    (uvloop.Loop, "run_in_executor"),
    (anyio_asyncio.AsyncIOBackend, "run_sync_in_worker_thread"),
    (Starlette, "build_middleware_stack"),
]


def _originals() -> list[object]:
    return [owner.__dict__.get(name, "<absent>") for owner, name in PATCHED]


def test_uninstrument_restores_every_patched_callable_exactly() -> None:
    before = _originals()
    found = make_telemetry()
    poolscope.instrument(tracer_provider=found.tracer_provider, meter_provider=found.meter_provider)
    during = _originals()
    assert all(a is not b for a, b in zip(before, during, strict=True))
    poolscope.instrument(tracer_provider=found.tracer_provider)  # idempotent: no double wrapping
    assert _originals() == during
    poolscope.uninstrument()
    poolscope.uninstrument()  # idempotent
    assert all(a is b for a, b in zip(before, _originals(), strict=True))
    assert "run_in_executor" not in uvloop.Loop.__dict__


def _owner_dicts() -> list[dict[str, object]]:
    """Every patched owner's whole ``__dict__``: nothing added, nothing left behind."""
    return [dict(owner.__dict__) for owner, _ in PATCHED]


def _one_task_per_path(pool: ThreadPoolExecutor, loop: asyncio.AbstractEventLoop) -> None:
    pool.submit(int).result(timeout=10)
    loop.run_until_complete(asyncio.to_thread(int))
    anyio.run(anyio.to_thread.run_sync, int)


def _memory() -> tuple[int, int, int]:
    gc.collect()
    return len(gc.get_objects()), sys.getallocatedblocks(), threading.active_count()


def _threads_settled(at_most: int, timeout: float = 5.0) -> int:
    """The live threads, once those on their way out have gone (a worker of a closed
    loop ends a moment after it); a thread left behind stays."""
    deadline = time.monotonic() + timeout
    while threading.active_count() > at_most and time.monotonic() < deadline:
        time.sleep(0.05)
    return threading.active_count()


CYCLES = 1_000
WARM_UP = 100


def test_a_thousand_cycles_restore_the_originals_and_grow_nothing() -> None:
    found = make_telemetry()
    before = _owner_dicts()
    loop = asyncio.new_event_loop()
    pool = ThreadPoolExecutor(2, thread_name_prefix="cycles")
    try:
        for cycle in range(1, CYCLES + 1):
            poolscope.instrument(
                tracer_provider=found.tracer_provider, meter_provider=found.meter_provider
            )
            _one_task_per_path(pool, loop)
            poolscope.uninstrument()
            if cycle == WARM_UP:
                found.reader.get_metrics_data()
                warm = _memory()
            _one_task_per_path(pool, loop)  # uninstrumented: must not be recorded
        found.reader.get_metrics_data()
        end = _memory()
    finally:
        pool.shutdown()
        loop.close()
    after = _owner_dicts()
    assert [list(d) for d in after] == [list(d) for d in before]
    for owner_before, owner_after in zip(before, after, strict=True):
        for name, value in owner_before.items():
            assert owner_after[name] is value, name  # the very object: byte-identical code
    # 900 cycles after warm-up: no object, memory block or thread per cycle stays behind.
    objects, blocks, _ = (e - w for e, w in zip(end, warm, strict=True))
    assert objects < CYCLES - WARM_UP, (warm, end)
    assert blocks < CYCLES - WARM_UP, (warm, end)
    threads = _threads_settled(at_most=warm[2]) - warm[2]
    assert threads <= 0, (warm, end, [thread.name for thread in threading.enumerate()])
    # Each instrumented cycle recorded each path's task once, the others none.
    [runs] = found.points(semconv.METRIC_TASK_RUN_DURATION, executor__name="cycles")
    assert runs.count == CYCLES
    for name in (semconv.POOL_ASYNCIO_DEFAULT, semconv.POOL_ANYIO_DEFAULT):
        assert (
            sum(
                p.count for p in found.points(semconv.METRIC_TASK_RUN_DURATION, executor__name=name)
            )
            == CYCLES
        )
    # One observation of a live pool's limit: no gauge callback stacked up either.
    poolscope.instrument(tracer_provider=found.tracer_provider, meter_provider=found.meter_provider)
    try:
        pool = ThreadPoolExecutor(1, thread_name_prefix="cycles-live")
        pool.submit(int).result(timeout=10)
        limits = [
            p.value for p in found.points(semconv.METRIC_WORKER_LIMIT, executor__name="cycles-live")
        ]
        assert limits == [1]
        pool.shutdown()
    finally:
        poolscope.uninstrument()


def _runs(found: Telemetry, pool: str) -> int:
    return sum(p.count for p in found.points(semconv.METRIC_TASK_RUN_DURATION, executor__name=pool))


@pytest.fixture
def threading_instrumentor() -> Iterator[ThreadingInstrumentor]:
    instrumentor = ThreadingInstrumentor()
    try:
        yield instrumentor
    finally:
        instrumentor.uninstrument()


def test_under_opentelemetry_threading_each_task_is_recorded_once_and_context_flows(
    threading_instrumentor: ThreadingInstrumentor,
) -> None:
    found = make_telemetry()
    before = _owner_dicts()
    threading_instrumentor.instrument()
    poolscope.instrument(tracer_provider=found.tracer_provider, meter_provider=found.meter_provider)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="beneath") as pool:
            with found.tracer.start_as_current_span("request") as request:
                seen = pool.submit(trace.get_current_span).result(timeout=10)
        assert _runs(found, "beneath") == 1
        [run] = found.spans(semconv.SPAN_RUN, pool="beneath")
        assert run.parent is not None and run.parent.span_id == request.get_span_context().span_id
        assert seen.get_span_context().span_id == run.context.span_id
    finally:
        poolscope.uninstrument()
    threading_instrumentor.uninstrument()
    assert _owner_dicts() == before


def test_reinstrumenting_under_a_later_wrapper_reuses_ours_instead_of_counting_twice(
    threading_instrumentor: ThreadingInstrumentor, caplog: pytest.LogCaptureFixture
) -> None:
    found = make_telemetry()
    before = _owner_dicts()
    poolscope.instrument(tracer_provider=found.tracer_provider, meter_provider=found.meter_provider)
    threading_instrumentor.instrument()  # wraps poolscope's submit
    with ThreadPoolExecutor(1, thread_name_prefix="stranded") as pool:
        for _ in range(CYCLES):
            poolscope.uninstrument()  # ours is beneath theirs: left as a pass-through
            pool.submit(int).result(timeout=10)
            poolscope.instrument(
                tracer_provider=found.tracer_provider, meter_provider=found.meter_provider
            )
            pool.submit(int).result(timeout=10)
        assert _runs(found, "stranded") == CYCLES  # once per instrumented submit, never twice
        threading_instrumentor.uninstrument()  # puts ours back on top
        pool.submit(int).result(timeout=10)
        assert _runs(found, "stranded") == CYCLES + 1
    poolscope.uninstrument()
    assert _owner_dicts() == before
    assert "wrapped again by another library" in caplog.text


def test_a_wrapper_installed_on_top_of_ours_is_left_alone(caplog: object) -> None:
    found = make_telemetry()
    poolscope.instrument(tracer_provider=found.tracer_provider, meter_provider=found.meter_provider)
    ours = ThreadPoolExecutor.__dict__["submit"]

    def theirs(self: ThreadPoolExecutor, fn: object, /, *args: object, **kwargs: object) -> object:
        return ours(self, fn, *args, **kwargs)

    ThreadPoolExecutor.submit = theirs  # type: ignore[method-assign,assignment]
    try:
        poolscope.uninstrument()
        assert ThreadPoolExecutor.__dict__["submit"] is theirs
        with ThreadPoolExecutor(1) as pool:
            assert pool.submit(abs, -3).result() == 3  # ours is now a pass-through
    finally:
        ThreadPoolExecutor.submit = ours.__wrapped__  # type: ignore[method-assign]


def test_entry_point_is_registered() -> None:
    [entry] = [e for e in entry_points(group="opentelemetry_instrumentor") if e.name == "poolscope"]
    assert entry.load() is poolscope.PoolscopeInstrumentor


def test_opentelemetry_instrument_turns_poolscope_on_with_no_code_change(tmp_path: object) -> None:
    script = textwrap.dedent(
        """
        import asyncio
        from poolscope import _runtime
        from poolscope._core._pools import snapshot_all

        async def main():
            assert _runtime.is_active()
            gate = asyncio.Event()
            await asyncio.to_thread(sum, [1, 2])
            print(sorted({s.name for s in snapshot_all()}))

        asyncio.run(main())
        """
    )
    instrument = os.path.join(os.path.dirname(sys.executable), "opentelemetry-instrument")
    result = subprocess.run(
        [instrument, sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "OTEL_TRACES_EXPORTER": "none",
            "OTEL_METRICS_EXPORTER": "none",
            "OTEL_LOGS_EXPORTER": "none",
        },
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "asyncio.default" in result.stdout


def test_asyncio_run_with_and_without_uvloop_after_uninstrument_is_untouched() -> None:
    async def main() -> int:
        return await asyncio.to_thread(abs, -2)

    assert asyncio.run(main()) == 2
    assert uvloop.run(main()) == 2


def test_a_library_outside_its_supported_range_is_skipped_with_one_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """anyio 3, say: its path would patch nothing that exists, silently. It is said once
    instead, and the other paths still record."""
    from poolscope import _runtime
    from poolscope._config import PATH_ANYIO

    monkeypatch.setitem(_runtime.SUPPORTED, PATH_ANYIO, "anyio >= 99")
    anyios = anyio_asyncio.AsyncIOBackend.__dict__["run_sync_in_worker_thread"]
    submit = ThreadPoolExecutor.submit
    poolscope.instrument()
    try:
        assert anyio_asyncio.AsyncIOBackend.__dict__["run_sync_in_worker_thread"] is anyios
        assert ThreadPoolExecutor.submit is not submit
        warnings = [r.getMessage() for r in caplog.records if r.name == "poolscope"]
        assert len(warnings) == 1
        assert "anyio 4.16.0" in warnings[0]
        assert "anyio >= 99" in warnings[0]
    finally:
        poolscope.uninstrument()
