"""Shared fixtures: real SDK providers with in-memory exporters, injected, never global."""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Tracer
from tools.stack import MissingBinary

import poolscope
from poolscope import semconv
from poolscope._core import _pools


@dataclass
class Telemetry:
    """What a test reads back: finished spans and collected metric points."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider
    meter_provider: MeterProvider

    @property
    def tracer(self) -> Tracer:
        return self.tracer_provider.get_tracer("tests")

    def spans(self, name: str | None = None, pool: str | None = None) -> list[ReadableSpan]:
        found = []
        for span in self.exporter.get_finished_spans():
            if name is not None and span.name != name:
                continue
            attributes = span.attributes or {}
            if pool is not None and attributes.get(semconv.ATTR_EXECUTOR_NAME) != pool:
                continue
            found.append(span)
        return found

    def points(self, metric: str, **match: Any) -> list[Any]:
        """Data points of ``metric`` whose attributes include ``match`` (dots as ``__``)."""
        wanted = {key.replace("__", "."): value for key, value in match.items()}
        data = self.reader.get_metrics_data()
        found = []
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for m in scope_metrics.metrics:
                    if m.name != metric:
                        continue
                    for point in m.data.data_points:
                        attributes = dict(point.attributes)
                        if all(attributes.get(k) == v for k, v in wanted.items()):
                            found.append(point)
        return found

    def gauges(self, pool: str) -> dict[str, float]:
        """busy, idle, limit and pending of ``pool`` from one collection."""
        data = self.reader.get_metrics_data()
        figures: dict[str, float] = {}
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for m in scope_metrics.metrics:
                    for point in m.data.data_points:
                        attributes = dict(point.attributes)
                        if attributes.get(semconv.ATTR_EXECUTOR_NAME) != pool:
                            continue
                        if m.name == semconv.METRIC_WORKER_COUNT:
                            figures[str(attributes[semconv.ATTR_EXECUTOR_WORKER_STATE])] = (
                                point.value
                            )
                        elif m.name == semconv.METRIC_WORKER_LIMIT:
                            figures["limit"] = point.value
                        elif m.name == semconv.METRIC_TASK_PENDING:
                            figures["pending"] = point.value
        return figures


def make_telemetry() -> Telemetry:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    return Telemetry(exporter, reader, tracer_provider, meter_provider)


@pytest.fixture(autouse=True)
def fresh_pool_names() -> Iterator[None]:
    """Each test starts under the cardinality guard with no pool names seen: the
    suite as a whole names far more pools than the cap (200) lets through."""
    with _pools.fresh_names():
        yield


@pytest.fixture
def telemetry() -> Iterator[Telemetry]:
    """poolscope instrumented with fresh providers; every span is kept (threshold 0)."""
    found = make_telemetry()
    poolscope.instrument(
        tracer_provider=found.tracer_provider,
        meter_provider=found.meter_provider,
        wait_span_threshold=0,
    )
    try:
        yield found
    finally:
        poolscope.uninstrument()
        found.tracer_provider.shutdown()
        found.meter_provider.shutdown()


@pytest.fixture(
    params=[
        pytest.param(("asyncio", {"use_uvloop": False}), id="asyncio"),
        pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
    ]
)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    """Every async test runs on the stock asyncio loop and on uvloop."""
    return request.param


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    except MissingBinary as error:
        _raise_for_missing(error)
        raise


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    try:
        return (yield)
    except MissingBinary as error:
        _raise_for_missing(error)
        raise


def _raise_for_missing(error: MissingBinary) -> None:
    """A test that needs a stack binary fails under CI when it is missing (a skipped
    stack test must not count for a green run) and skips elsewhere (no Go, say)."""
    if os.environ.get("CI"):
        pytest.fail(str(error), pytrace=False)
    pytest.skip(str(error))
