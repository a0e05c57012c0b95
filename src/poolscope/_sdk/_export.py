"""Export failures reported once per outage, with a count of what was dropped.

When the collector is down, every OTLP export attempt logs a warning per retry,
for as long as the outage lasts: an app's log drowns in them. The exporters
that :func:`poolscope.configure` creates are wrapped here. While one of their
exports runs, the OTLP exporter's own log records are held back; the first
failure is reported once, with the exporter's own message, and the return of
the collector once, with how many spans or metric points were dropped in
between. Export itself, its retries and its bounded queues stay the SDK's.

At exit, the SDK flushes what it holds, and against a dead collector each
flush retries for the exporter's whole timeout (10 s by default), delaying
every restart of the app. :func:`give_up_at_exit` shuts a failing exporter down
first, which ends its retries: the app exits at once, the rest counted as
dropped. A failing collector that accepts connections again keeps the flush.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit

from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from .._safety import logger

__all__ = [
    "ExportHealth",
    "ReportingMetricExporter",
    "ReportingSpanExporter",
    "give_up_at_exit",
    "register_exit_hook",
    "reporting",
]

_EXPORTER_LOGGERS: Final = "opentelemetry.exporter"
_PROBE_TIMEOUT_S: Final = 0.5  # at exit: a collector that does not answer by then is down
_MAX_HELD: Final = 50  # records held per export; a retrying export logs a few


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


def _parts(endpoint: str) -> SplitResult:
    """An endpoint as a URL, or as the ``host:port`` that gRPC exporters take."""
    return urlsplit(endpoint if "//" in endpoint else f"//{endpoint}")


def _without_userinfo(endpoint: str) -> str:
    parts = _parts(endpoint)
    if "@" not in parts.netloc:
        return endpoint
    return endpoint.replace(parts.netloc, parts.netloc.rpartition("@")[2], 1)


class ExportHealth:
    """One exporter's state: failing or not, and what it dropped."""

    def __init__(self, what: str, endpoint: str) -> None:
        self.what = what
        self.endpoint = _without_userinfo(endpoint)  # it is logged
        self.lock = threading.Lock()
        self.failing = False
        self.dropped_in_outage = 0
        self.last_message: str | None = None
        self.in_export = False
        self.held: list[logging.LogRecord] = []

    def note(self, record: logging.LogRecord) -> None:
        """Hold the record until the export's outcome is known; keep the first
        warning as the reason, should it fail."""
        if len(self.held) < _MAX_HELD:
            self.held.append(record)
        if record.levelno >= logging.WARNING and self.last_message is None:
            try:
                self.last_message = record.getMessage()
            except Exception:  # a malformed record must not break the export thread
                self.last_message = str(record.msg)

    def release_held(self) -> None:
        """The export worked: what the exporter said on the way is logged after all."""
        held, self.held = self.held, []
        for record in held:
            logging.getLogger(record.name).handle(record)

    @contextmanager
    def holding_back(self) -> Iterator[None]:
        """The exporter's log records on this thread go to :meth:`note`."""
        previous, _held_back.health = _held_back.health, self
        try:
            yield
        finally:
            _held_back.health = previous

    @contextmanager
    def exporting(self) -> Iterator[None]:
        self.last_message = None
        self.held = []
        self.in_export = True
        try:
            with self.holding_back():
                yield
        finally:
            self.in_export = False

    def in_trouble(self) -> bool:
        """Failing, or in an export that is retrying (it logged a warning). A slow
        export of a healthy collector is neither, and keeps its final flush."""
        return self.failing or (self.in_export and self.last_message is not None)

    @property
    def authority(self) -> str:
        """host:port of the endpoint: the spans and metrics of one collector share it."""
        return _parts(self.endpoint).netloc or self.endpoint

    def done(self, ok: bool, items: int) -> None:
        if ok and not self.failing:
            # retried and got through: what the exporter said on the way is news;
            # the end of a reported outage says "works again" itself, once
            self.release_held()
        self.held = []
        with self.lock:
            if ok:
                if not self.failing:
                    return
                self.failing = False
                lost = self.dropped_in_outage
            else:
                if self.failing:
                    self.dropped_in_outage += items
                    return
                self.failing = True
                self.dropped_in_outage = lost = items
        if ok:
            logger.warning(
                "poolscope: %s export to %s works again; %d %s in failed exports were "
                "dropped (not counting what the full queue refused)",
                self.what,
                self.endpoint,
                lost,
                self.what,
            )
        else:
            logger.warning(
                "poolscope: cannot export %s to %s (%s); dropping %s until it works again "
                "(reported once per outage)",
                self.what,
                self.endpoint,
                self.last_message or "the exporter gave no reason",
                self.what,
            )


_exporters: list[ReportingSpanExporter | ReportingMetricExporter] = []
_exit_hook = {"registered": False}


def _tracked(what: str, endpoint: str) -> ExportHealth:
    _hold_back_exporter_logs()
    return ExportHealth(what, endpoint)


def _accepts_connections(authority: str) -> bool:
    """Whether the collector at ``host:port`` is back: a collector that failed and
    has recovered since the last export keeps the app's final flush."""
    parts = _parts(authority)
    try:
        if parts.hostname is None or parts.port is None:
            return False
        with socket.create_connection((parts.hostname, parts.port), timeout=_PROBE_TIMEOUT_S):
            return True
    except (OSError, ValueError):
        return False


def give_up_at_exit() -> None:
    """Shut down exporters whose collector is down, before the SDK's exit-time flush."""
    troubled = {e.health.authority for e in _exporters if e.health.in_trouble()}
    down = {authority for authority in troubled if not _accepts_connections(authority)}
    for exporter in list(_exporters):
        if exporter.health.authority in down:
            with contextlib.suppress(Exception), exporter.health.holding_back():
                exporter.inner.shutdown()  # at exit, nothing is worth a traceback


def _reset_after_fork() -> None:
    # A forked child starts with its own export history; the parent's export
    # thread may have held a lock, or been mid-export, at the fork.
    for exporter in _exporters:
        exporter.health = ExportHealth(exporter.health.what, exporter.health.endpoint)


os.register_at_fork(after_in_child=_reset_after_fork)


def register_exit_hook() -> None:
    """Run :func:`give_up_at_exit` before the providers' own exit hooks (registered
    earlier; ``atexit`` runs the last registered first)."""
    if not _exit_hook["registered"]:
        _exit_hook["registered"] = True
        atexit.register(give_up_at_exit)


class ReportingSpanExporter(SpanExporter):
    """A span exporter whose failures are reported once per outage (see the module)."""

    def __init__(self, inner: SpanExporter, endpoint: str) -> None:
        self.inner = inner
        self.health = _tracked("spans", endpoint)
        _exporters.append(self)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        with self.health.exporting():
            result = self.inner.export(spans)
        self.health.done(result is SpanExportResult.SUCCESS, len(spans))
        return result

    def shutdown(self) -> None:
        with self.health.holding_back():
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
    """A metric exporter whose failures are reported once per outage (see the module)."""

    def __init__(self, inner: MetricExporter, endpoint: str) -> None:
        super().__init__(
            preferred_temporality=inner._preferred_temporality,
            preferred_aggregation=inner._preferred_aggregation,
        )
        self.inner = inner
        self.health = _tracked("metric points", endpoint)
        _exporters.append(self)

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
        with self.health.holding_back():
            self.inner.shutdown(timeout_millis=timeout_millis, **kwargs)


_WRAPPERS: dict[str, Callable[[Any, str], Any]] = {
    "trace": ReportingSpanExporter,
    "metric": ReportingMetricExporter,
}


def reporting(signal: str, exporter: Any, endpoint: str) -> Any:
    """``exporter`` wrapped so its failures are reported once per outage."""
    return _WRAPPERS[signal](exporter, endpoint)
