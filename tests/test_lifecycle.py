"""instrument / uninstrument: idempotent, exact undo, and the opentelemetry-instrument entry."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from importlib.metadata import entry_points

import anyio._backends._asyncio as anyio_asyncio
import uvloop
from starlette.applications import Starlette

import poolscope
from conftest import make_telemetry

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


def test_cycles_do_not_stack_instruments_or_wrappers() -> None:
    found = make_telemetry()
    before = _originals()
    for _ in range(50):
        poolscope.instrument(
            tracer_provider=found.tracer_provider, meter_provider=found.meter_provider
        )
        with ThreadPoolExecutor(1, thread_name_prefix="cycles") as pool:
            pool.submit(int).result()
        poolscope.uninstrument()
    assert _originals() == before
    poolscope.instrument(tracer_provider=found.tracer_provider, meter_provider=found.meter_provider)
    try:
        with ThreadPoolExecutor(1, thread_name_prefix="cycles") as pool:
            pool.submit(int).result()
        # One observation of the live pool's limit, and each task recorded once:
        # neither callbacks nor wrappers stacked up over the cycles.
        limits = [p.value for p in found.points("executor.worker.limit", executor__name="cycles")]
        assert limits == [1]
        [runs] = found.points("executor.task.run.duration", executor__name="cycles")
        assert runs.count == 51
    finally:
        poolscope.uninstrument()


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
        from poolscope._pools import snapshot_all

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
