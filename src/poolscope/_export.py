"""Export failures reported once per outage, with a count of what was dropped.

When the collector is down, every OTLP export attempt logs a warning per retry,
for as long as the outage lasts: an app's log drowns in them. The exporters
that :func:`poolscope.configure` creates are wrapped here. While one of their
exports runs, the OTLP exporter's own log records are held back; the first
failure is reported once, with the exporter's own message, and the return of
the collector once, with how many spans or metric points were dropped in
between. Export itself, its retries and its bounded queues stay the SDK's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from ._safety import logger

__all__ = [
    "ExportHealth",
    "ReportingMetricExporter",
    "ReportingSpanExporter",
    "health",
    "reporting",
]

_EXPORTER_LOGGERS = "opentelemetry.exporter"


class _HeldBack(threading.local):
    """The export running on this thread, if one of ours: its records are held back."""

    health: ExportHealth | None = None


_held_back = _HeldBack()


class _HoldBackFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        health = _held_back.health
        if health is None:
            return True
        health.note(record)
        return False


_filter = _HoldBackFilter()


def _hold_back_exporter_logs() -> None:
    """Put the filter on every exporter logger that exists now (records do not
    pass through a parent logger's filters, so each needs its own)."""
    for name, candidate in list(logging.Logger.manager.loggerDict.items()):
        ours = name.startswith(_EXPORTER_LOGGERS) and isinstance(candidate, logging.Logger)
        if ours and _filter not in candidate.filters:  # type: ignore[union-attr]
            candidate.addFilter(_filter)  # type: ignore[union-attr]


class ExportHealth:
    """One exporter's state: failing or not, and what it dropped."""

    def __init__(self, what: str, endpoint: str) -> None:
        self.what = what
        self.endpoint = endpoint
        self.lock = threading.Lock()
        self.failing = False
        self.dropped = 0  # items lost, over the process's life
        self.dropped_in_outage = 0
        self.outages = 0
        self.last_message: str | None = None

    def note(self, record: logging.LogRecord) -> None:
        """Keep the exporter's last word on this export: the reason it failed."""
        if record.levelno >= logging.WARNING:
            try:
                self.last_message = record.getMessage()
            except Exception:  # a malformed record must not break the export thread
                self.last_message = str(record.msg)

    @contextmanager
    def exporting(self) -> Iterator[None]:
        self.last_message = None
        previous, _held_back.health = _held_back.health, self
        try:
            yield
        finally:
            _held_back.health = previous

    def done(self, ok: bool, items: int) -> None:
        with self.lock:
            if ok:
                if not self.failing:
                    return
                self.failing = False
                lost = self.dropped_in_outage
            else:
                self.dropped += items
                self.dropped_in_outage += items
                if self.failing:
                    return
                self.failing = True
                self.outages += 1
                self.dropped_in_outage = items
                lost = items
        if ok:
            logger.warning(
                "poolscope: %s export to %s works again; %d %s were dropped while it failed",
                self.what,
                self.endpoint,
                lost,
                self.what,
            )
        else:
            logger.warning(
                "poolscope: cannot export %s to %s (%s); dropping %s until it works again "
                "(the app is not slowed; this is reported once per outage)",
                self.what,
                self.endpoint,
                self.last_message or "the exporter gave no reason",
                self.what,
            )


_registry: dict[str, ExportHealth] = {}


def health(what: str) -> ExportHealth | None:
    """The health of the last exporter of ``what`` (``spans``, ``metric points``) made here."""
    return _registry.get(what)


def _tracked(what: str, endpoint: str) -> ExportHealth:
    _hold_back_exporter_logs()
    found = _registry[what] = ExportHealth(what, endpoint)
    return found


class ReportingSpanExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, endpoint: str) -> None:
        self.inner = inner
        self.health = _tracked("spans", endpoint)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.health.exporting():
            result = self.inner.export(spans)
        self.health.done(result is SpanExportResult.SUCCESS, len(spans))
        return result

    def shutdown(self) -> None:
        with self.health.exporting():
            self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        flushed: bool = self.inner.force_flush(timeout_millis)
        return flushed


def _points(data: MetricsData) -> int:
    return sum(
        len(metric.data.data_points)
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
    )


class ReportingMetricExporter(MetricExporter):
    def __init__(self, inner: MetricExporter, endpoint: str) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.health = _tracked("metric points", endpoint)

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        with self.health.exporting():
            result = self.inner.export(metrics_data, timeout_millis=timeout_millis, **kwargs)
        self.health.done(result is MetricExportResult.SUCCESS, _points(metrics_data))
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return self.inner.force_flush(timeout_millis)

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        with self.health.exporting():
            self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


_WRAPPERS: dict[str, Callable[[Any, str], Any]] = {
    "trace": ReportingSpanExporter,
    "metric": ReportingMetricExporter,
}


def reporting(signal: str, exporter: Any, endpoint: str) -> Any:
    """``exporter`` wrapped so its failures are reported once per outage."""
    return _WRAPPERS[signal](exporter, endpoint)
