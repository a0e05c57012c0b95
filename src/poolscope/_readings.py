"""Reading poolscope's metrics back: from an app's Prometheus endpoint or a Prometheus server.

``poolscope top`` and ``poolscope demo`` read pools this way: one
:class:`Snapshot` per read, with each pool's gauges and cumulative
histograms, keyed by (instance, pool). Two snapshots give what happened in
between (:meth:`Histogram.since`): rates and percentiles, the way PromQL's
``rate`` and ``histogram_quantile`` compute them.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from . import _promql as p
from . import semconv
from ._diagnose import PoolWindow

__all__ = [
    "Histogram",
    "PoolReading",
    "Snapshot",
    "SourceError",
    "read",
    "windows_from_prometheus",
]


class SourceError(Exception):
    """The metrics source could not be read (unreachable, not Prometheus, ...)."""


@dataclass(frozen=True)
class Histogram:
    """A cumulative histogram: ``(upper bound, cumulative count)`` pairs, count and sum."""

    buckets: tuple[tuple[float, float], ...] = ()
    count: float = 0.0
    sum: float = 0.0

    def since(self, earlier: Histogram | None) -> Histogram:
        """What was recorded after ``earlier`` (a counter reset counts from zero)."""
        if earlier is None or earlier.count > self.count:
            return self
        before = dict(earlier.buckets)
        return Histogram(
            tuple((le, n - before.get(le, 0.0)) for le, n in self.buckets),
            self.count - earlier.count,
            self.sum - earlier.sum,
        )

    def __add__(self, other: Histogram) -> Histogram:
        merged: dict[float, float] = dict(self.buckets)
        for le, n in other.buckets:
            merged[le] = merged.get(le, 0.0) + n
        return Histogram(
            tuple(sorted(merged.items())), self.count + other.count, self.sum + other.sum
        )

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket, as ``histogram_quantile`` does."""
        if not self.count or not self.buckets:
            return None
        rank = q * self.count
        lower, below = 0.0, 0.0
        for le, cumulative in self.buckets:
            if cumulative >= rank:
                if math.isinf(le):
                    return lower  # above the last finite bound: report that bound
                share = (rank - below) / (cumulative - below) if cumulative > below else 1.0
                return lower + (le - lower) * share
            lower, below = le, cumulative
        return lower

    def bars(self) -> list[tuple[float, float]]:
        """Per-bucket (not cumulative) counts by upper bound."""
        result, below = [], 0.0
        for le, cumulative in self.buckets:
            result.append((le, cumulative - below))
            below = cumulative
        return result


@dataclass(frozen=True)
class PoolReading:
    """One pool in one process at one moment."""

    service: str
    instance: str
    pool: str
    type: str = ""
    limit: float = 0.0
    busy: float = 0.0
    pending: float = 0.0
    wait: Histogram = field(default_factory=Histogram)
    run: Histogram = field(default_factory=Histogram)

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.service, self.instance, self.pool)


@dataclass(frozen=True)
class Snapshot:
    """Every pool and event loop a source reported at ``taken_at`` (monotonic seconds)."""

    taken_at: float
    pools: Mapping[tuple[str, str, str], PoolReading]
    lag: Mapping[tuple[str, str], Histogram]
    """Event-loop lag by (service, instance)."""


# --- Building snapshots -------------------------------------------------------------


class _Builder:
    """Collects gauge values and histogram samples by (service, instance, pool)."""

    def __init__(self) -> None:
        self.gauges: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.histograms: dict[tuple[str, tuple[str, ...]], dict[str, Any]] = {}

    def gauge(self, key: tuple[str, str, str], pool_type: str, name: str, value: float) -> None:
        entry = self.gauges.setdefault(key, {})
        entry["type"] = pool_type
        entry[name] = value

    def histogram_sample(
        self, kind: str, key: tuple[str, ...], suffix: str, le: str | None, value: float
    ) -> None:
        target = self.histograms.setdefault((kind, key), {"buckets": {}, "count": 0.0, "sum": 0.0})
        if suffix == "_bucket" and le is not None:
            bound = float(le)
            target["buckets"][bound] = target["buckets"].get(bound, 0.0) + value
        elif suffix == "_count":
            target["count"] += value
        elif suffix == "_sum":
            target["sum"] += value

    def _histogram(self, kind: str, key: tuple[str, ...]) -> Histogram:
        values = self.histograms.get((kind, key))
        if values is None:
            return Histogram()
        return Histogram(tuple(sorted(values["buckets"].items())), values["count"], values["sum"])

    def snapshot(self) -> Snapshot:
        readings = {}
        for (service, instance, pool), entry in self.gauges.items():
            key = (service, instance, pool)
            readings[key] = PoolReading(
                service,
                instance,
                pool,
                type=entry.get("type", ""),
                limit=entry.get("limit", 0.0),
                busy=entry.get("busy", 0.0),
                pending=entry.get("pending", 0.0),
                wait=self._histogram("wait", key),
                run=self._histogram("run", key),
            )
        lag = {
            (key[0], key[1]): self._histogram("lag", key)
            for kind, key in self.histograms
            if kind == "lag"
        }
        return Snapshot(time.monotonic(), readings, lag)


_HISTOGRAMS: Final = ((p.WAIT, "wait"), (p.RUN, "run"), (p.LAG, "lag"))
_GAUGES: Final = {p.LIMIT: "limit", p.PENDING: "pending"}


# --- Prometheus text exposition (an app's own endpoint) -----------------------------


def _parse_exposition(text: str, *, instance: str) -> Snapshot:
    try:
        from prometheus_client.parser import text_string_to_metric_families
    except ImportError:
        raise SourceError(
            "reading a Prometheus endpoint needs prometheus-client: "
            "pip install 'poolscope[prometheus]'"
        ) from None
    try:
        samples = [s for family in text_string_to_metric_families(text) for s in family.samples]
    except ValueError as error:
        raise SourceError(f"not a Prometheus text exposition: {error}") from None
    service = ""
    for sample in samples:
        if sample.name == p.TARGET_INFO:  # the resource: who this process is
            service = sample.labels.get(p.SERVICE_NAME, "")
            instance = sample.labels.get(p.SERVICE_INSTANCE_ID, instance)
    builder = _Builder()
    for sample in samples:
        labels = sample.labels
        pool = labels.get(p.POOL, "")
        key = (service, instance, pool)
        if sample.name in _GAUGES and pool:
            builder.gauge(key, labels.get(p.POOL_TYPE, ""), _GAUGES[sample.name], sample.value)
        elif sample.name == p.WORKERS and pool:
            if labels.get(p.WORKER_STATE) == semconv.WORKER_STATE_BUSY:
                builder.gauge(key, labels.get(p.POOL_TYPE, ""), "busy", sample.value)
        else:
            for base, kind in _HISTOGRAMS:
                if sample.name.startswith(base + "_") and (pool or kind == "lag"):
                    suffix = sample.name.removeprefix(base)
                    histogram_key = (service, instance) if kind == "lag" else key
                    builder.histogram_sample(
                        kind, histogram_key, suffix, labels.get("le"), sample.value
                    )
    return builder.snapshot()


# --- A Prometheus server (many services and instances) -------------------------------


def _query(base: str, expr: str, timeout: float) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
    not_prometheus = SourceError(
        f"{base} does not look like a Prometheus server (for an app's own endpoint, "
        "give its URL ending in /metrics)"
    )
    try:
        document = json.loads(_get(url, timeout))
    except ValueError:
        raise not_prometheus from None
    if not isinstance(document, dict) or "status" not in document:
        raise not_prometheus
    if document["status"] != "success":
        raise SourceError(f"Prometheus rejected {expr!r}: {document.get('error')}")
    try:
        result = document["data"]["result"]
        for series in result:  # the shape every caller relies on
            dict(series["metric"])
            float(series["value"][1])
    except (KeyError, TypeError, ValueError, IndexError):
        raise not_prometheus from None
    checked: list[dict[str, Any]] = result
    return checked


def _parse_server(base: str, timeout: float) -> Snapshot:
    builder = _Builder()
    busy = p.selector(p.WORKERS, **{p.WORKER_STATE: semconv.WORKER_STATE_BUSY})
    for name, expr in (("limit", p.LIMIT), ("pending", p.PENDING), ("busy", busy)):
        for series in _query(base, f"max {p.by(*p.POOL_KEY)} ({expr})", timeout):
            labels = series["metric"]
            pool_key = (
                labels.get(p.SERVICE, ""),
                labels.get(p.INSTANCE, ""),
                labels.get(p.POOL, ""),
            )
            builder.gauge(pool_key, labels.get(p.POOL_TYPE, ""), name, float(series["value"][1]))
    for base_name, kind in _HISTOGRAMS:
        keys = p.LOOP_KEY if kind == "lag" else p.POOL_KEY
        for suffix in ("_bucket", "_count", "_sum"):
            grouping = (*keys, "le") if suffix == "_bucket" else keys
            expr = f"sum {p.by(*grouping)} ({base_name}{suffix})"
            for series in _query(base, expr, timeout):
                labels = series["metric"]
                key = tuple(labels.get(label, "") for label in keys[:3])
                builder.histogram_sample(
                    kind, key, suffix, labels.get("le"), float(series["value"][1])
                )
    return builder.snapshot()


# --- Either ------------------------------------------------------------------------------


def _get(url: str, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310
            body: bytes = response.read()
            return body.decode("utf-8", errors="replace")
    except urllib.error.HTTPError as error:
        raise SourceError(f"{url} answered HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise SourceError(f"cannot reach {url}: {reason}") from None


def is_prometheus_server(url: str) -> bool:
    """A URL of a Prometheus server (its API), rather than an app's /metrics."""
    path = urllib.parse.urlsplit(url).path.rstrip("/")
    return not path.endswith("/metrics")


def read(url: str, *, timeout: float = 5.0) -> Snapshot:
    """Read every pool from ``url``: an app's ``/metrics`` or a Prometheus server's base URL."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceError(f"expected an http:// URL, got {url!r}")
    if is_prometheus_server(url):
        return _parse_server(url.rstrip("/"), timeout)
    return _parse_exposition(_get(url, timeout), instance=parts.netloc)


def windows_from_prometheus(
    url: str, window: str = "5m", *, timeout: float = 10.0
) -> list[PoolWindow]:
    """What every pool of every process did over the last ``window``, from a Prometheus server.

    The input :func:`poolscope.diagnose` takes, one ``PoolWindow`` per
    (service, instance, pool), computed by Prometheus with the same rule the
    alert uses (median busy over the window against the pool's own limit).
    """
    base = url.rstrip("/")
    if not re.fullmatch(r"\d+[smh]", window):
        raise SourceError(f"window must be a Prometheus duration such as 5m, got {window!r}")
    seconds = int(window[:-1]) * {"s": 1, "m": 60, "h": 3600}[window[-1]]
    by = p.by(*p.POOL_KEY)
    busy = p.selector(p.WORKERS, **{p.WORKER_STATE: semconv.WORKER_STATE_BUSY})
    queries = {
        "limit": f"max {by} ({p.LIMIT})",
        "busy_peak": f"max {by} (max_over_time({busy}[{window}]))",
        "busy_typical": f"max {by} (quantile_over_time(0.5, {busy}[{window}]))",
        "pending_peak": f"max {by} (max_over_time({p.PENDING}[{window}]))",
        "tasks": f"sum {by} (increase({p.WAIT}_count[{window}]))",
        "wait_seconds": f"sum {by} (increase({p.WAIT}_sum[{window}]))",
        "run_seconds": f"sum {by} (increase({p.RUN}_sum[{window}]))",
        "wait_p95": (
            f"histogram_quantile(0.95, sum {p.by(*p.POOL_KEY, 'le')} "
            f"(rate({p.WAIT}_bucket[{window}])))"
        ),
    }
    values: dict[tuple[str, ...], dict[str, Any]] = {}
    for name, expr in queries.items():
        for series in _query(base, expr, timeout):
            labels = series["metric"]
            key = tuple(labels.get(label, "") for label in p.POOL_KEY)
            value = float(series["value"][1])
            if not math.isnan(value):
                values.setdefault(key, {})[name] = value
    return [
        PoolWindow(
            pool=pool,
            limit=found.get("limit", 0.0),
            busy_peak=found.get("busy_peak", 0.0),
            busy_typical=found.get("busy_typical"),
            pending_peak=found.get("pending_peak", 0.0),
            tasks=found.get("tasks", 0.0),
            wait_seconds=found.get("wait_seconds", 0.0),
            run_seconds=found.get("run_seconds", 0.0),
            duration=float(seconds),
            wait_p95=found.get("wait_p95"),
            service=service,
            instance=instance,
            type=pool_type,
        )
        for (service, instance, pool, pool_type), found in sorted(values.items())
        if "limit" in found
    ]
