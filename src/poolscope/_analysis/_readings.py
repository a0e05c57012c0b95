"""Reading poolscope's metrics back, as the windows :func:`poolscope.diagnose` judges.

Two sources:

* an app's own Prometheus endpoint (``configure(prometheus_port=...)``):
  :func:`read` gives a :class:`Snapshot` of its cumulative figures, and
  :func:`windows` turns two snapshots (and the samples taken between them)
  into pool and process windows, computing rates and percentiles the way
  PromQL's ``rate`` and ``histogram_quantile`` do;
* a Prometheus server holding many apps and instances:
  :func:`windows_from_prometheus` asks it for the same windows over a range,
  with the very queries the alerts and dashboards use (:mod:`._queries`).

``poolscope demo``, ``poolscope top`` and ``poolscope diagnose`` read this way.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

from .. import semconv
from .._thresholds import LAG_THRESHOLD_S
from . import _promql as p
from . import _queries as q
from ._diagnose import BlockSite, PoolWindow, ProcessWindow

__all__ = [
    "Histogram",
    "PoolReading",
    "ProcessReading",
    "Snapshot",
    "SourceError",
    "Windows",
    "io_target",
    "is_prometheus_server",
    "read",
    "windows",
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

    def at(self, bounds: Sequence[float]) -> Histogram:
        """The same counts on fewer buckets: ``bounds``, each one of this histogram's bounds."""
        cumulative = dict(self.buckets)
        kept = [(b, cumulative[b]) for b in bounds if b in cumulative]
        if self.buckets and math.isinf(self.buckets[-1][0]):
            kept.append(self.buckets[-1])
        return Histogram(tuple(kept), self.count, self.sum)

    def share_above(self, bound: float) -> float | None:
        """The share of the values above ``bound``, which must be a bucket bound."""
        if not self.count:
            return None
        at = dict(self.buckets).get(bound)
        return None if at is None else max(self.count - at, 0.0) / self.count

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
    llm_seconds: float = 0.0
    """Seconds of LLM calls made on this pool's workers, so far."""
    io_calls: Mapping[str, Histogram] = field(default_factory=dict)
    """The blocking HTTP calls made on this pool's workers, so far, by :func:`io_target`."""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.service, self.instance, self.pool)


def io_target(library: str, address: str, port: str) -> str:
    """Where blocking HTTP calls went, as a verdict names it: ``requests → 127.0.0.1:8001``."""
    return f"{library} → {address}:{port}" if port else f"{library} → {address}"


Site = tuple[str, str, int, str]
"""A blocking line and what held the loop there: (function, file, line, cause)."""


@dataclass(frozen=True)
class ProcessReading:
    """One process (its CPU, its event loop) at one moment: cumulative figures."""

    service: str
    instance: str
    cpu: float | None = None
    """CPU seconds, every mode."""
    loop_active: float | None = None
    loop_idle: float | None = None
    loop_cpu: float | None = None
    lag: Histogram = field(default_factory=Histogram)
    blocks: Mapping[Site, Histogram] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """Every pool and process a source reported at ``taken_at`` (monotonic seconds)."""

    taken_at: float
    pools: Mapping[tuple[str, str, str], PoolReading]
    processes: Mapping[tuple[str, str], ProcessReading]


class Windows(NamedTuple):
    """What :func:`poolscope.diagnose` takes: ``diagnose(*windows)``."""

    pools: list[PoolWindow]
    processes: list[ProcessWindow]


# --- An app's own endpoint (Prometheus text exposition) ----------------------------

_GAUGES: Final = {p.LIMIT: "limit", p.PENDING: "pending"}
_POOL_HISTOGRAMS: Final = {p.WAIT: "wait", p.RUN: "run"}


class _Histograms:
    """Histogram samples (``_bucket``, ``_count``, ``_sum``) collected by key."""

    def __init__(self) -> None:
        self.values: dict[tuple[Any, ...], dict[str, Any]] = {}

    def add(self, key: tuple[Any, ...], suffix: str, le: str | None, value: float) -> None:
        target = self.values.setdefault(key, {"buckets": {}, "count": 0.0, "sum": 0.0})
        if suffix == "_bucket" and le is not None:
            bound = float(le)
            target["buckets"][bound] = target["buckets"].get(bound, 0.0) + value
        elif suffix == "_count":
            target["count"] += value
        elif suffix == "_sum":
            target["sum"] += value

    def get(self, key: tuple[Any, ...]) -> Histogram:
        found = self.values.get(key)
        if found is None:
            return Histogram()
        return Histogram(tuple(sorted(found["buckets"].items())), found["count"], found["sum"])


def _histogram_part(name: str, base: str) -> str | None:
    """``_bucket``, ``_count`` or ``_sum`` when ``name`` is a sample of histogram ``base``."""
    suffix = name.removeprefix(base)
    return suffix if suffix != name and suffix in ("_bucket", "_count", "_sum") else None


class _Exposition:
    """The samples of one endpoint, sorted into what a snapshot holds."""

    def __init__(self) -> None:
        self.gauges: dict[str, dict[str, Any]] = {}
        self.counters: dict[str, float] = {}
        self.llm: dict[str, float] = {}
        self.histograms = _Histograms()

    def add(self, name: str, labels: Mapping[str, str], value: float) -> None:
        pool = labels.get(p.POOL, "")
        if pool and (name in _GAUGES or name == p.WORKERS):
            entry = self.gauges.setdefault(pool, {})
            entry["type"] = labels.get(p.POOL_TYPE, "")
            if name in _GAUGES:
                entry[_GAUGES[name]] = value
            elif labels.get(p.WORKER_STATE) == semconv.WORKER_STATE_BUSY:
                entry["busy"] = value
            return
        counter = _COUNTERS.get(name)
        if counter is not None:
            key = labels.get(counter, "") if counter else name
            if counter != p.CPU_MODE or key:  # process.cpu.time by cpu.mode only
                self.counters[key or name] = self.counters.get(key or name, 0.0) + value
            return
        if pool and _histogram_part(name, p.LLM_DURATION) == "_sum":
            self.llm[pool] = self.llm.get(pool, 0.0) + value
            return
        part = _histogram_part(name, p.IO_DURATION)
        if pool and part:
            target = io_target(*(labels.get(label, "") for label in p.IO_TARGET_KEY))
            self.histograms.add(("io", pool, target), part, labels.get("le"), value)
            return
        self._histogram(name, labels, pool, value)

    def _histogram(self, name: str, labels: Mapping[str, str], pool: str, value: float) -> None:
        le = labels.get("le")
        for base, kind in _POOL_HISTOGRAMS.items():
            part = _histogram_part(name, base)
            if part and pool:
                self.histograms.add((kind, pool), part, le, value)
        part = _histogram_part(name, p.LAG)
        if part:
            self.histograms.add(("lag",), part, le, value)
        part = _histogram_part(name, p.BLOCK)
        if part:
            site = (
                labels.get(p.CODE_FUNCTION, ""),
                labels.get(p.CODE_FILE, ""),
                int(labels.get(p.CODE_LINE) or 0),
                labels.get(p.BLOCK_CAUSE, semconv.BLOCK_CAUSE_CALL),
            )
            self.histograms.add(("block", site), part, le, value)

    def snapshot(self, service: str, instance: str) -> Snapshot:
        histograms, counters = self.histograms, self.counters
        pools = {
            (service, instance, pool): PoolReading(
                service,
                instance,
                pool,
                type=entry.get("type", ""),
                limit=entry.get("limit", 0.0),
                busy=entry.get("busy", 0.0),
                pending=entry.get("pending", 0.0),
                wait=histograms.get(("wait", pool)),
                run=histograms.get(("run", pool)),
                llm_seconds=self.llm.get(pool, 0.0),
                io_calls={
                    key[2]: histograms.get(key)
                    for key in histograms.values
                    if key[0] == "io" and key[1] == pool
                },
            )
            for pool, entry in self.gauges.items()
        }
        cpu = [value for mode, value in counters.items() if mode in _CPU_MODES]
        process = ProcessReading(
            service,
            instance,
            cpu=sum(cpu) if cpu else None,
            loop_active=counters.get(semconv.EVENTLOOP_STATE_ACTIVE),
            loop_idle=counters.get(semconv.EVENTLOOP_STATE_IDLE),
            loop_cpu=counters.get(p.LOOP_CPU),
            lag=histograms.get(("lag",)),
            blocks={k[1]: histograms.get(k) for k in histograms.values if k[0] == "block"},
        )
        return Snapshot(time.monotonic(), pools, {(service, instance): process})


_COUNTERS: Final = {p.PROCESS_CPU: p.CPU_MODE, p.LOOP_TIME: p.LOOP_STATE, p.LOOP_CPU: ""}
"""Counters read, and the label that splits each ("" for none)."""
_CPU_MODES: Final = frozenset({semconv.CPU_MODE_USER, semconv.CPU_MODE_SYSTEM})


_GAUGE_SERIES: Final = (p.TARGET_INFO, p.WORKERS, p.LIMIT, p.PENDING)
_READ_SERIES: Final = (
    *_GAUGE_SERIES,
    p.WAIT,
    p.RUN,
    p.LAG,
    p.BLOCK,
    p.LOOP_TIME,
    p.LOOP_CPU,
    p.PROCESS_CPU,
    f"{p.LLM_DURATION}_sum",
    p.IO_DURATION,
)
"""What a snapshot holds. An app's endpoint serves much more (request-latency buckets per
route, the SDK's own series): parsing only these keeps a reader's cost down while it
samples an app under load."""


def _only(text: str, series: tuple[str, ...]) -> str:
    """The sample lines of ``series`` in ``text`` (metadata lines dropped: not needed)."""
    return "".join(line for line in text.splitlines(keepends=True) if line.startswith(series))


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
    found = _Exposition()
    for sample in samples:
        if sample.name == p.TARGET_INFO:  # the resource: who this process is
            service = sample.labels.get(p.SERVICE_NAME, "")
            instance = sample.labels.get(p.SERVICE_INSTANCE_ID, instance)
        else:
            found.add(sample.name, sample.labels, sample.value)
    return found.snapshot(service, instance)


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


def _check_url(url: str) -> urllib.parse.SplitResult:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SourceError(f"expected an http:// URL, got {url!r}")
    return parts


def is_prometheus_server(url: str) -> bool:
    """A URL of a Prometheus server (its API), rather than an app's /metrics."""
    path = urllib.parse.urlsplit(url).path.rstrip("/")
    return not path.endswith("/metrics")


def read(url: str, *, timeout: float = 5.0, gauges_only: bool = False) -> Snapshot:
    """Read every pool and process from an app's Prometheus endpoint (a URL ending in /metrics).

    ``gauges_only``: just busy, pending and limit (a sample between two full reads).
    """
    parts = _check_url(url)
    if is_prometheus_server(url):
        raise SourceError(f"{url} is not an app's /metrics endpoint")
    text = _only(_get(url, timeout), _GAUGE_SERIES if gauges_only else _READ_SERIES)
    return _parse_exposition(text, instance=parts.netloc)


def _rate(later: float | None, earlier: float | None, seconds: float) -> float | None:
    if later is None or earlier is None or seconds <= 0:
        return None
    return max(later - earlier, 0.0) / seconds  # a restarted process counts from zero


def windows(
    before: Snapshot,
    after: Snapshot,
    samples: Sequence[Snapshot] = (),
    *,
    load: float | None = None,
    service: str = "",
) -> Windows:
    """What happened between two snapshots of one endpoint.

    Gauges (busy, pending) come from ``samples`` taken in between (medians
    and peaks), or from ``after`` alone; histograms and counters are the
    difference between ``after`` and ``before``. ``service`` names an app
    whose metrics carry no ``service.name``.
    """
    duration = after.taken_at - before.taken_at
    seen = [*samples] or [after]
    pools = []
    for key, reading in after.pools.items():
        previous = before.pools.get(key)
        wait = reading.wait.since(previous.wait if previous else None)
        run = reading.run.since(previous.run if previous else None)
        found = [s.pools[key] for s in seen if key in s.pools] or [reading]
        pools.append(
            PoolWindow(
                pool=reading.pool,
                limit=reading.limit,
                busy_peak=max(r.busy for r in found),
                busy_typical=statistics.median(r.busy for r in found),
                demand_typical=statistics.median(r.busy + r.pending for r in found),
                pending_peak=max(r.pending for r in found),
                tasks=wait.count,
                wait_seconds=wait.sum,
                run_seconds=run.sum,
                duration=duration,
                wait_p95=wait.quantile(0.95),
                run_p95=run.quantile(0.95),
                llm_seconds=max(reading.llm_seconds - (previous.llm_seconds if previous else 0), 0),
                **_io_figures(reading, previous),
                load=load,
                start=before.taken_at,
                service=reading.service or service,
                instance=reading.instance,
                type=reading.type,
            )
        )
    processes = [
        _process_window(
            process,
            before.processes.get(key),
            before=before,
            after=after,
            load=load,
            service=service,
        )
        for key, process in after.processes.items()
    ]
    return Windows(pools, processes)


def _io_figures(reading: PoolReading, previous: PoolReading | None) -> dict[str, Any]:
    """``io_seconds``, ``io_target`` and ``io_p50`` of a pool's window."""
    earlier = previous.io_calls if previous else {}
    calls = {target: h.since(earlier.get(target)) for target, h in reading.io_calls.items()}
    return _io_window(
        {target: h.sum for target, h in calls.items()},
        sum(calls.values(), Histogram()).quantile(0.5),
    )


def _io_window(seconds: Mapping[str, float], p50: float | None) -> dict[str, Any]:
    held = {target: value for target, value in seconds.items() if value > 0}
    if not held:
        return {}
    return {
        "io_seconds": sum(held.values()),
        "io_target": max(held, key=held.__getitem__),
        "io_p50": p50,
    }


def _process_window(
    reading: ProcessReading,
    earlier: ProcessReading | None,
    *,
    before: Snapshot,
    after: Snapshot,
    load: float | None,
    service: str,
) -> ProcessWindow:
    duration = after.taken_at - before.taken_at

    def rate(name: str) -> float | None:
        return _rate(getattr(reading, name), getattr(earlier, name, None), duration)

    active, idle = rate("loop_active"), rate("loop_idle")
    looped = (active or 0.0) + (idle or 0.0)
    utilization = (active or 0.0) / looped if looped > 0 else None
    lag = reading.lag.since(earlier.lag if earlier else None)
    blocks = []
    for site, histogram in reading.blocks.items():
        done = histogram.since(earlier.blocks.get(site) if earlier else None)
        if done.count:
            blocks.append(BlockSite(*site[:3], done.count, done.sum, cause=site[3]))
    return ProcessWindow(
        duration=duration,
        cpu=rate("cpu"),
        loop_utilization=utilization,
        loop_cpu=rate("loop_cpu"),
        lag_p99=lag.quantile(0.99),
        late_share=lag.share_above(LAG_THRESHOLD_S),
        blocks=tuple(blocks),
        load=load,
        start=before.taken_at,
        service=reading.service or service,
        instance=reading.instance,
    )


# --- A Prometheus server (many services and instances) -------------------------------


def _query(base: str, expr: str, timeout: float, at: float | None = None) -> list[dict[str, Any]]:
    params = {"query": expr} if at is None else {"query": expr, "time": f"{at:.3f}"}
    url = f"{base}/api/v1/query?{urllib.parse.urlencode(params)}"
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


def _by_key(
    base: str,
    queries: Mapping[str, str],
    key: Sequence[str],
    timeout: float,
    at: float | None,
) -> dict[tuple[str, ...], dict[str, float]]:
    values: dict[tuple[str, ...], dict[str, float]] = {}
    for name, expr in queries.items():
        for series in _query(base, expr, timeout, at):
            labels = series["metric"]
            value = float(series["value"][1])
            if not math.isnan(value):
                values.setdefault(tuple(labels.get(label, "") for label in key), {})[name] = value
    return values


def _seconds(window: str) -> int:
    if not re.fullmatch(r"[1-9]\d*[smh]", window):
        raise SourceError(f"window must be a Prometheus duration such as 5m, got {window!r}")
    return int(window[:-1]) * {"s": 1, "m": 60, "h": 3600}[window[-1]]


def windows_from_prometheus(
    url: str, window: str = "5m", *, at: float | None = None, timeout: float = 10.0
) -> Windows:
    """What every pool and process did over the last ``window``, from a Prometheus server.

    The input :func:`poolscope.diagnose` takes (``diagnose(*windows)``): one
    ``PoolWindow`` per (service, instance, pool) and one ``ProcessWindow``
    per (service, instance), computed by Prometheus with the queries the
    alerts use (median busy over the window against the pool's own limit).
    ``at`` (Unix seconds) ends the window at that moment instead of now: the
    minutes of an incident, read afterwards.
    """
    _check_url(url)
    if at is not None and not (math.isfinite(at) and 0 < at <= time.time() + 60):
        raise SourceError(f"at must be a Unix time, not in the future, got {at!r}")
    base = url.rstrip("/")
    seconds = _seconds(window)
    m = q.NO_MATCHERS
    pool_values = _by_key(
        base,
        {
            "limit": q.limit(m),
            "busy_peak": q.peak_busy(m, window),
            "busy_typical": q.typical_busy(m, window),
            "pending_peak": q.peak_pending(m, window),
            "tasks": q.tasks(m, window),
            "wait_seconds": q.wait_seconds(m, window),
            "run_seconds": q.run_seconds(m, window),
            "wait_p95": q.wait_quantile(0.95, m, window),
            "run_p95": q.run_quantile(0.95, m, window),
        },
        p.POOL_KEY,
        timeout,
        at,
    )
    llm = _by_key(base, {"llm": q.llm_pinned_seconds(m, window)}, p.POOL_KEY[:3], timeout, at)
    io_p50 = _by_key(base, {"p50": q.io_quantile(0.5, m, window)}, p.POOL_KEY[:3], timeout, at)
    io_seconds: dict[tuple[str, ...], dict[str, float]] = {}
    for key, found in _by_key(
        base,
        {"seconds": q.io_seconds_by_target(m, window)},
        (*p.POOL_KEY[:3], *p.IO_TARGET_KEY),
        timeout,
        at,
    ).items():
        io_seconds.setdefault(key[:3], {})[io_target(*key[3:])] = found.get("seconds", 0.0)
    pools = [
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
            run_p95=found.get("run_p95"),
            llm_seconds=llm.get((service, instance, pool), {}).get("llm", 0.0),
            **_io_window(
                io_seconds.get((service, instance, pool), {}),
                io_p50.get((service, instance, pool), {}).get("p50"),
            ),
            service=service,
            instance=instance,
            type=pool_type,
        )
        for (service, instance, pool, pool_type), found in sorted(pool_values.items())
        if "limit" in found
    ]
    process_values = _by_key(
        base,
        {
            "cpu": q.process_cpu_cores(m, window),
            "loop_utilization": q.loop_utilization(m, window),
            "loop_cpu": q.loop_cpu_cores(m, window),
            "lag_p99": q.loop_lag(0.99, m, window),
            "late_share": q.late_heartbeats(m, window),
        },
        p.LOOP_KEY,
        timeout,
        at,
    )
    sites: dict[tuple[str, ...], list[BlockSite]] = {}
    block_values = _by_key(
        base,
        {"count": q.block_count(m, window), "seconds": q.block_seconds(m, window)},
        (*p.LOOP_KEY, *p.SITE_KEY),
        timeout,
        at,
    )
    for (service, instance, function, path, line, cause), found in block_values.items():
        if found.get("count"):
            site = BlockSite(
                function,
                path,
                int(line or 0),
                found["count"],
                found.get("seconds", 0.0),
                cause=cause or semconv.BLOCK_CAUSE_CALL,
            )
            sites.setdefault((service, instance), []).append(site)
    processes = [
        ProcessWindow(
            duration=float(seconds),
            cpu=found.get("cpu"),
            loop_utilization=found.get("loop_utilization"),
            loop_cpu=found.get("loop_cpu"),
            lag_p99=found.get("lag_p99"),
            late_share=found.get("late_share"),
            blocks=tuple(sites.get((service, instance), ())),
            service=service,
            instance=instance,
        )
        for (service, instance), found in sorted(process_values.items())
    ]
    return Windows(pools, processes)
