"""The metric readers ``configure()`` makes: the SDK's, plus poolscope's own histograms.

poolscope aggregates its duration histograms itself for the providers it
makes (:mod:`poolscope._core._histograms`, why: one SDK record costs ~8 µs).
These readers add those points to every collection, in poolscope's scope,
before the exporter (OTLP, console) or the Prometheus endpoint sees it, through
the hook the SDK provides for it: ``MetricReader._receive_metrics``, "intended
to be overridden by subclass". If the splice fails, the collection goes out as
the SDK made it, and the failure is logged once.
"""

from __future__ import annotations

import functools
from typing import Any

from opentelemetry.sdk.metrics import Exemplar, ExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics import Histogram as HistogramInstrument
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricExporter,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

from .._core._histograms import AggregatedHistogram, HistogramSet, Point, register
from .._core._recorder import drain
from .._core._telemetry import SCOPE
from .._safety import report_internal_error
from .._version import __version__

__all__ = ["meter_provider", "periodic_reader", "prometheus_reader", "serve_histograms"]


class _WithPoolscopeHistograms(MetricReader):
    """A reader whose collections carry poolscope's own histograms too."""

    poolscope_histograms: HistogramSet | None = None

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        histograms = self.poolscope_histograms
        if histograms is not None:
            try:
                metrics_data = _spliced(metrics_data, histograms, self)
            except Exception:
                report_internal_error("adding poolscope's histograms to a metric collection")
        # the reader class this is mixed into (below) implements it
        super()._receive_metrics(  # type: ignore[safe-super]
            metrics_data, timeout_millis=timeout_millis, **kwargs
        )


class _PeriodicReader(_WithPoolscopeHistograms, PeriodicExportingMetricReader):
    pass


def periodic_reader(exporter: MetricExporter, interval_ms: int) -> PeriodicExportingMetricReader:
    return _PeriodicReader(exporter, export_interval_millis=interval_ms)


@functools.cache
def _prometheus_reader_class() -> type[MetricReader]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader

    class PrometheusReader(_WithPoolscopeHistograms, PrometheusMetricReader):
        pass

    return PrometheusReader


def prometheus_reader() -> MetricReader:
    """A ``PrometheusMetricReader`` (its exporter must be installed)."""
    return _prometheus_reader_class()()


def meter_provider(
    readers: list[MetricReader], exemplar_filter: ExemplarFilter, **options: Any
) -> MeterProvider:
    """A meter provider whose readers (made here) carry poolscope's own histograms;
    ``options`` go to ``MeterProvider``."""
    # Set up before the provider exists: its readers may collect from then on.
    histograms = HistogramSet(exemplar_filter)
    own_histograms = serve_histograms(readers, histograms)
    provider = MeterProvider(metric_readers=readers, exemplar_filter=exemplar_filter, **options)
    if own_histograms:
        register(provider, histograms)
    return provider


def serve_histograms(readers: list[MetricReader], histograms: HistogramSet) -> bool:
    """Collect ``histograms`` for every reader; False, and nothing changed, if one
    of them cannot say its histogram temporality (a changed SDK): the provider
    then keeps the SDK's own histograms."""
    temporalities = {}
    for reader in readers:
        temporality = _histogram_temporality(reader)
        if not isinstance(reader, _WithPoolscopeHistograms) or temporality is None:
            return False
        temporalities[reader] = temporality
    for reader, temporality in temporalities.items():
        histograms.add_reader(reader, delta=temporality is AggregationTemporality.DELTA)
        reader.poolscope_histograms = histograms
    return True


def _histogram_temporality(reader: MetricReader) -> AggregationTemporality | None:
    # Keyed by the SDK's private instrument classes, which subclass the public ones.
    by_class = getattr(reader, "_instrument_class_temporality", None)
    if not isinstance(by_class, dict):
        return None
    for instrument_class, temporality in by_class.items():
        if isinstance(instrument_class, type) and issubclass(instrument_class, HistogramInstrument):
            return temporality if isinstance(temporality, AggregationTemporality) else None
    return None


def _spliced(data: MetricsData, histograms: HistogramSet, reader: MetricReader) -> MetricsData:
    drain()  # the values still queued, so this collection holds every finished task
    collected = histograms.collect(reader)
    if not collected or not data.resource_metrics:
        return data
    temporality = (
        AggregationTemporality.DELTA
        if histograms.delta(reader)
        else AggregationTemporality.CUMULATIVE
    )
    ours = [_metric(histogram, points, temporality) for histogram, points in collected]
    first, *others = data.resource_metrics
    scopes = list(first.scope_metrics)
    for position, scope_metrics in enumerate(scopes):
        if scope_metrics.scope.name == SCOPE:
            scopes[position] = ScopeMetrics(
                scope=scope_metrics.scope,
                metrics=[*scope_metrics.metrics, *ours],
                schema_url=scope_metrics.schema_url,
            )
            break
    else:
        scopes.append(
            ScopeMetrics(
                scope=InstrumentationScope(SCOPE, __version__), metrics=ours, schema_url=""
            )
        )
    resource_metrics = ResourceMetrics(
        resource=first.resource, scope_metrics=scopes, schema_url=first.schema_url
    )
    return MetricsData(resource_metrics=[resource_metrics, *others])


def _metric(
    histogram: AggregatedHistogram, points: list[Point], temporality: AggregationTemporality
) -> Metric:
    return Metric(
        name=histogram.name,
        description=histogram.description,
        unit=histogram.unit,
        data=Histogram(
            data_points=[_data_point(point, histogram.bounds) for point in points],
            aggregation_temporality=temporality,
        ),
    )


def _data_point(point: Point, bounds: tuple[float, ...]) -> HistogramDataPoint:
    # As the SDK's reservoirs fill them: the attributes an exemplar's value had
    # beyond its point's are none here, which the SDK writes as {} (or None
    # for a point without attributes).
    filtered: dict[str, Any] | None = {} if point.attributes else None
    return HistogramDataPoint(
        attributes=point.attributes,
        start_time_unix_nano=point.start_time_unix_nano,
        time_unix_nano=point.time_unix_nano,
        count=point.count,
        sum=point.sum,
        bucket_counts=point.bucket_counts,
        explicit_bounds=bounds,
        min=point.min,
        max=point.max,
        exemplars=[
            Exemplar(filtered, sample.value, sample.time_unix_nano, sample.span_id, sample.trace_id)
            for sample in point.exemplars
        ],
    )
