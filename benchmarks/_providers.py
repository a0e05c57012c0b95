"""The SDK providers the offload benchmarks record into, as an app would have them:
made by the app (``batch_providers``), or as ``poolscope.configure()`` makes them
(``configured_providers``, where poolscope aggregates its own histograms)."""

from __future__ import annotations

from typing import Any


def batch_providers() -> tuple[Any, Any]:
    """A tracer provider with batch export to nowhere, a meter provider with a reader
    that is never collected (so no export cost lands in a measured round)."""
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

    class Discard(SpanExporter):
        def export(self, spans: Any) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(BatchSpanProcessor(Discard(), max_queue_size=1 << 16))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    return tracer_provider, meter_provider


def configured_providers(interval_ms: int = 3_600_000) -> tuple[Any, Any]:
    """``batch_providers()``, with the meter provider built as ``poolscope.configure()``
    builds it: its views, its exemplar filter, poolscope's own histograms, and a
    periodic reader exporting to nowhere every ``interval_ms`` (by default once an
    hour: never within a round)."""
    from opentelemetry.sdk.metrics import TraceBasedExemplarFilter
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult

    from poolscope._sdk import _configure, _readers

    class DiscardMetrics(MetricExporter):
        def export(self, metrics_data: Any, timeout_millis: float = 0, **kwargs: Any) -> Any:
            return MetricExportResult.SUCCESS

        def force_flush(self, timeout_millis: float = 0) -> bool:
            return True

        def shutdown(self, timeout_millis: float = 0, **kwargs: Any) -> None:
            return None

    tracer_provider, _ = batch_providers()
    reader = _readers.periodic_reader(DiscardMetrics(), interval_ms=interval_ms)
    meter_provider = _readers.meter_provider(
        [reader], TraceBasedExemplarFilter(), views=_configure._views()
    )
    return tracer_provider, meter_provider
