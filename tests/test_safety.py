"""Instrumentation failure never breaks the app: logged once, the user's call proceeds untouched.

The failures are injected through the providers poolscope is given (a meter
whose histograms raise, a tracer whose spans raise) — the public seams of
OpenTelemetry — not by patching asyncio or concurrent.futures.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anyio.to_thread
import pytest
from opentelemetry import metrics, trace
from opentelemetry.metrics import NoOpMeter

import poolscope
from poolscope import _safety
from poolscope._core import _recorder


class _BrokenHistogram:
    def record(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("exporter on fire")


class _BrokenMeter(NoOpMeter):
    def create_histogram(self, *args: Any, **kwargs: Any) -> Any:
        return _BrokenHistogram()


class _BrokenMeterProvider(metrics.MeterProvider):
    def get_meter(
        self,
        name: str,
        version: str | None = None,
        schema_url: str | None = None,
        attributes: Any = None,
    ) -> metrics.Meter:
        return _BrokenMeter(name)


class _BrokenTracer(trace.NoOpTracer):
    def start_span(self, *args: Any, **kwargs: Any) -> trace.Span:
        raise RuntimeError("tracer on fire")


class _BrokenTracerProvider(trace.TracerProvider):
    def get_tracer(self, *args: Any, **kwargs: Any) -> trace.Tracer:
        return _BrokenTracer()


@pytest.fixture
def broken() -> Iterator[None]:
    _safety._reported.clear()
    poolscope.instrument(
        tracer_provider=_BrokenTracerProvider(),
        meter_provider=_BrokenMeterProvider(),
        root_spans=True,
        wait_span_threshold=0,
    )
    try:
        yield
    finally:
        poolscope.uninstrument()
        _safety._reported.clear()


def _poolscope_errors(records: Sequence[logging.LogRecord]) -> list[logging.LogRecord]:
    return [r for r in records if r.name == "poolscope" and r.levelno == logging.ERROR]


def test_thread_pool_calls_proceed_and_the_error_is_logged_once(
    broken: None, caplog: pytest.LogCaptureFixture
) -> None:
    with ThreadPoolExecutor(2) as pool:
        results = [pool.submit(pow, 2, i).result() for i in range(50)]
        with pytest.raises(ZeroDivisionError):
            pool.submit(divmod, 1, 0).result()
    assert results == [2**i for i in range(50)]
    _recorder.drain()  # histogram records are replayed off the hot path; fail them now
    errors = _poolscope_errors(caplog.records)
    where = sorted(r.getMessage() for r in errors)
    # one report per failing place (spans at task start, histogram records),
    # never one per call
    assert len(errors) == 2, where
    assert any("start of a task" in message for message in where)
    assert any("histogram" in message for message in where)


def test_async_paths_proceed(broken: None, caplog: pytest.LogCaptureFixture) -> None:
    async def main() -> list[int]:
        a = await asyncio.to_thread(abs, -1)
        b = await anyio.to_thread.run_sync(abs, -2)
        return [a, b]

    assert asyncio.run(main()) == [1, 2]
    _recorder.drain()
    assert len(_poolscope_errors(caplog.records)) == 2


def test_a_broken_pool_registry_falls_back_to_the_original_call(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from poolscope._core import _task

    def explode(executor: object) -> None:
        raise RuntimeError("registry on fire")

    _safety._reported.clear()
    poolscope.instrument()
    monkeypatch.setattr(_task, "pool_for", explode)
    try:
        with ThreadPoolExecutor(1) as pool:
            assert [pool.submit(abs, -i).result() for i in range(10)] == list(range(10))
    finally:
        poolscope.uninstrument()
    errors = _poolscope_errors(caplog.records)
    assert len(errors) == 1
    assert "ThreadPoolExecutor.submit" in errors[0].getMessage()
