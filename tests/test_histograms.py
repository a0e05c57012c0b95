"""poolscope's own histograms (the providers configure() makes) export what the SDK's would.

Each case records the same values into an SDK histogram, with poolscope's
bucket view, and into poolscope's aggregated one, collects both through real
SDK readers, and compares the points field by field.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics import (
    AlwaysOnExemplarFilter,
    MeterProvider,
    TraceBasedExemplarFilter,
)
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    InMemoryMetricReader,
    MetricsData,
)
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

import poolscope
from poolscope import semconv
from poolscope._core import _histograms
from poolscope._core._telemetry import SCOPE
from poolscope._sdk import _readers

BOUNDS = semconv.DURATION_BUCKETS
NAME = semconv.METRIC_TASK_WAIT_DURATION
POOL = {semconv.ATTR_EXECUTOR_NAME: "pdf", semconv.ATTR_EXECUTOR_TYPE: "thread_pool"}
FAILED = {**POOL, semconv.ATTR_ERROR_TYPE: "ValueError"}
# Bounds themselves (a value equal to a bound is in that bound's bucket), values
# between and beyond them, zero, and what the SDK drops.
VALUES = [0.0, BOUNDS[0], BOUNDS[3], BOUNDS[3] * 1.01, 0.25, BOUNDS[-1], BOUNDS[-1] * 3, 7e-9]
DROPPED = [-0.001, math.inf, math.nan]


class SplicingReader(_readers._WithPoolscopeHistograms, InMemoryMetricReader):
    """The in-memory reader, with the splice configure()'s readers have."""


def temporality(delta: bool) -> dict[type, AggregationTemporality]:
    chosen = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
    return {HistogramInstrument: chosen}


class Pair:
    """The same histogram twice: the SDK's, and poolscope's own on another provider."""

    def __init__(self, *, delta: bool = False, exemplar_filter: Any = None) -> None:
        exemplar_filter = exemplar_filter or TraceBasedExemplarFilter()
        self.sdk_reader = InMemoryMetricReader(preferred_temporality=temporality(delta))
        view = View(
            instrument_name=NAME, aggregation=ExplicitBucketHistogramAggregation(list(BOUNDS))
        )
        self.sdk_provider = MeterProvider(
            metric_readers=[self.sdk_reader],
            views=[view],
            exemplar_filter=exemplar_filter,
            shutdown_on_exit=False,
        )
        self.sdk = self.sdk_provider.get_meter(SCOPE).create_histogram(NAME, unit="s")
        self.reader = SplicingReader(preferred_temporality=temporality(delta))
        histograms = _histograms.HistogramSet(exemplar_filter)
        assert _readers.serve_histograms([self.reader], histograms)
        self.provider = MeterProvider(metric_readers=[self.reader], shutdown_on_exit=False)
        # An SDK instrument in poolscope's scope: ours must join its scope, not add one.
        self.provider.get_meter(SCOPE).create_counter("probe").add(1)
        self.ours = histograms.histogram(NAME, unit="s", description="", bounds=BOUNDS)

    def record(self, value: float, attributes: Any = None, context: Any = None) -> None:
        self.sdk.record(value, attributes, context=context)
        self.ours.record(value, attributes, context)

    def collect(self) -> tuple[list[HistogramDataPoint], list[HistogramDataPoint]]:
        return points(self.sdk_reader.get_metrics_data()), points(self.reader.get_metrics_data())

    def close(self) -> None:
        self.sdk_provider.shutdown()
        self.provider.shutdown()


def points(data: MetricsData | None) -> list[HistogramDataPoint]:
    if data is None:  # the SDK had nothing to collect
        return []
    found = [
        (scope_metrics.scope.name, metric)
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == NAME
    ]
    assert [scope for scope, _ in found] in ([], [SCOPE])
    if not found:
        return []
    return sorted(found[0][1].data.data_points, key=lambda point: sorted(point.attributes.items()))


def same(sdk: list[HistogramDataPoint], ours: list[HistogramDataPoint]) -> None:
    assert len(ours) == len(sdk) > 0
    for theirs, mine in zip(sdk, ours, strict=True):
        assert dict(mine.attributes) == dict(theirs.attributes)
        assert mine.count == theirs.count
        assert mine.sum == pytest.approx(theirs.sum, rel=1e-12)
        assert tuple(mine.bucket_counts) == tuple(theirs.bucket_counts)
        assert tuple(mine.explicit_bounds) == tuple(theirs.explicit_bounds)
        assert (mine.min, mine.max) == (theirs.min, theirs.max)
        assert exemplars(mine) == exemplars(theirs)


def exemplars(point: HistogramDataPoint) -> list[tuple[Any, ...]]:
    return [(e.value, e.span_id, e.trace_id, e.filtered_attributes) for e in point.exemplars]


@pytest.fixture
def pair() -> Iterator[Pair]:
    made = Pair()
    yield made
    made.close()


def test_cumulative_points_are_the_sdks(pair: Pair) -> None:
    for value in VALUES + DROPPED:
        pair.record(value, POOL)
    pair.record(0.5, FAILED)
    pair.record(0.001)  # no attributes at all
    first_sdk, first = pair.collect()
    same(first_sdk, first)
    for value in VALUES[:3]:
        pair.record(value, POOL)
    second_sdk, second = pair.collect()
    same(second_sdk, second)
    # Cumulative: every point keeps its start; the later one counts both rounds.
    assert [p.start_time_unix_nano for p in second] == [p.start_time_unix_nano for p in first]
    assert sum(p.count for p in second) == sum(p.count for p in first) + 3
    assert all(p.time_unix_nano > p.start_time_unix_nano for p in second)


def test_delta_points_are_the_sdks() -> None:
    pair = Pair(delta=True)
    try:
        for value in VALUES:
            pair.record(value, POOL)
        pair.record(0.5, FAILED)
        first_sdk, first = pair.collect()
        same(first_sdk, first)
        pair.record(0.003, POOL)
        second_sdk, second = pair.collect()
        same(second_sdk, second)
        # Only the series that moved, starting where the previous collection ended.
        assert [dict(p.attributes) for p in second] == [POOL]
        pool_first = next(p for p in first if dict(p.attributes) == POOL)
        assert second[0].start_time_unix_nano == pool_first.time_unix_nano
        assert pair.collect() == ([], [])  # nothing new: no points, as the SDK
        pair.record(0.004, FAILED)  # a series idle for a collection starts at the last one
        third_sdk, third = pair.collect()
        same(third_sdk, third)
        assert third[0].start_time_unix_nano > second[0].time_unix_nano
    finally:
        pair.close()


def sampled_context(span_id: int, sampled: bool = True) -> Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    span = NonRecordingSpan(SpanContext(0xABC, span_id, is_remote=False, trace_flags=flags))
    return trace.set_span_in_context(span)


def test_exemplars_are_the_sdks_one_per_bucket_the_last_kept(pair: Pair) -> None:
    pair.record(0.2, POOL, sampled_context(1))
    pair.record(0.2, POOL, sampled_context(2))  # same bucket: replaces the first
    pair.record(3.0, POOL, sampled_context(3))
    pair.record(0.2, POOL, sampled_context(4, sampled=False))  # trace-based: not kept
    pair.record(0.2, POOL)  # no context: not kept
    sdk, ours = pair.collect()
    same(sdk, ours)
    assert [(e.value, e.span_id) for e in ours[0].exemplars] == [(0.2, 2), (3.0, 3)]
    pair.record(0.2, POOL)
    sdk, ours = pair.collect()
    same(sdk, ours)
    assert ours[0].exemplars == []  # reservoirs start afresh at every collection


def test_always_on_keeps_exemplars_without_a_span() -> None:
    pair = Pair(exemplar_filter=AlwaysOnExemplarFilter())
    try:
        pair.record(0.2, POOL)
        pair.record(0.02, None, Context())
        sdk, ours = pair.collect()
        same(sdk, ours)
        assert [e.span_id for p in ours for e in p.exemplars] == [None, None]
    finally:
        pair.close()


def test_a_reader_that_cannot_say_its_temporality_keeps_the_sdks_histograms() -> None:
    histograms = _histograms.HistogramSet(TraceBasedExemplarFilter())
    plain = InMemoryMetricReader()  # no splice: poolscope's points would never reach it
    assert not _readers.serve_histograms([SplicingReader(), plain], histograms)
    assert histograms.collect(plain) == []


@pytest.mark.anyio
async def test_a_provider_with_its_own_histograms_exports_every_offload_once() -> None:
    reader = SplicingReader()
    histograms = _histograms.HistogramSet(TraceBasedExemplarFilter())
    assert _readers.serve_histograms([reader], histograms)
    provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    _histograms.register(provider, histograms)
    poolscope.instrument(meter_provider=provider)
    try:
        for _ in range(5):
            await asyncio.to_thread(sum, [1, 2])
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sum, [3])
        data = reader.get_metrics_data()
    finally:
        poolscope.uninstrument()
        provider.shutdown()
    assert data is not None
    by_name: dict[str, list[Any]] = {}
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                by_name.setdefault(metric.name, []).append((scope_metrics.scope.name, metric))
    for name in (
        semconv.METRIC_TASK_WAIT_DURATION,
        semconv.METRIC_TASK_RUN_DURATION,
        semconv.METRIC_TASK_RESUME_DURATION,
    ):
        assert len(by_name[name]) == 1, name  # poolscope's own, not the SDK's as well
        scope, metric = by_name[name][0]
        assert scope == SCOPE
        assert metric.unit == semconv.UNIT_SECONDS
        counts = {
            point.attributes[semconv.ATTR_EXECUTOR_TYPE]: point.count
            for point in metric.data.data_points
        }
        assert sum(counts.values()) == 6, (name, counts)
        assert tuple(metric.data.data_points[0].explicit_bounds) in (
            semconv.DURATION_BUCKETS,
            semconv.LAG_BUCKETS,
        )
    # The pool gauges still come from the SDK, in the same scope.
    assert [scope for scope, _ in by_name[semconv.METRIC_WORKER_LIMIT]] == [SCOPE]


def test_a_forked_child_starts_its_histograms_from_zero(pair: Pair) -> None:
    pair.ours.record(0.1, POOL)
    _histograms._forget_after_fork()  # what os.fork runs in the child
    pair.ours.record(0.2, POOL)
    _, ours = pair.collect()
    assert [(p.count, p.sum) for p in ours] == [(1, 0.2)]


def test_a_failing_splice_sends_the_sdks_collection_and_logs_once(
    pair: Pair, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(self: _histograms.HistogramSet, reader: object) -> list[Any]:
        raise RuntimeError("splice broke")

    monkeypatch.setattr(_histograms.HistogramSet, "collect", broken)
    pair.record(0.1, POOL)
    for _ in range(2):
        data = pair.reader.get_metrics_data()
        assert data is not None
        names = [
            metric.name
            for resource_metrics in data.resource_metrics
            for scope_metrics in resource_metrics.scope_metrics
            for metric in scope_metrics.metrics
        ]
        assert names == ["probe"]  # the SDK's own, as it made them
    logged = [r for r in caplog.records if "adding poolscope's histograms" in r.getMessage()]
    assert len(logged) == 1
