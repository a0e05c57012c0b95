"""poolscope's own histograms, aggregated here instead of in the SDK.

A value replayed into an SDK ``Histogram.record`` costs about 8 µs (a
``Measurement``, the exemplar filter, an attribute copy and hash, two locks),
and every awaited offload makes three. Where poolscope owns the meter provider
(the one :func:`poolscope.configure` makes), it owns the views and the readers
too, so its duration histograms are aggregated here, at about 1.2 µs a value,
and the readers splice the points into each collection
(:mod:`poolscope._sdk._readers`). A provider the application made keeps the
SDK's own histograms: its views and readers are the application's.

The points are the SDK's explicit-bucket points: the same bucket rule
(``bisect_left``: a value equal to a bound falls in that bound's bucket),
count, sum, min and max; cumulative or delta as the reader asks, with the
SDK's start times; one exemplar per bucket, the last one sampled by the
provider's exemplar filter, cleared at every collection. Values that are
negative or not finite are dropped, as the SDK drops them.

This module needs the OpenTelemetry API only: what it hands a reader is plain
data (:class:`Point`), which :mod:`poolscope._sdk._readers` turns into SDK
objects.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from bisect import bisect_left
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from opentelemetry import trace
from opentelemetry.context import Context

__all__ = [
    "AggregatedHistogram",
    "ExemplarFilter",
    "HistogramSet",
    "Point",
    "Sample",
    "for_provider",
    "register",
]

_Key = frozenset[tuple[str, Any]]
_INF = math.inf
_NO_ATTRIBUTES: _Key = frozenset()


class ExemplarFilter(Protocol):
    """What the SDK's exemplar filters do (``opentelemetry.sdk.metrics.*ExemplarFilter``)."""

    def should_sample(
        self, value: float, time_unix_nano: int, attributes: Any, context: Context
    ) -> bool: ...


class Sample(NamedTuple):
    """An exemplar: one value, when it was recorded, and the span it was recorded in."""

    value: float
    time_unix_nano: int
    span_id: int | None
    trace_id: int | None


@dataclass(frozen=True, slots=True)
class Point:
    """One series of one histogram at a collection, as the SDK's ``HistogramDataPoint``."""

    attributes: dict[str, Any]
    start_time_unix_nano: int
    time_unix_nano: int
    count: int
    sum: float
    bucket_counts: tuple[int, ...]
    min: float
    max: float
    exemplars: tuple[Sample, ...]


class _Series:
    """The running aggregate of one attribute set, for one reader."""

    __slots__ = ("attributes", "counts", "exemplars", "maximum", "minimum", "start", "total")

    def __init__(self, attributes: dict[str, Any], buckets: int, start: int) -> None:
        self.attributes = attributes
        self.start = start
        self.counts = [0] * buckets
        self.total = 0.0
        self.minimum = math.inf
        self.maximum = -math.inf
        self.exemplars: dict[int, Sample] | None = None

    def point(self, start: int, now: int) -> Point:
        exemplars = self.exemplars
        self.exemplars = None  # the SDK's reservoirs start afresh at every collection
        return Point(
            attributes=self.attributes,
            start_time_unix_nano=start,
            time_unix_nano=now,
            count=sum(self.counts),
            sum=self.total,
            bucket_counts=tuple(self.counts),
            min=self.minimum,
            max=self.maximum,
            exemplars=tuple(exemplars[i] for i in sorted(exemplars)) if exemplars else (),
        )


class _Reader:
    """One reader, as the histograms see it: its temporality, and when it last collected."""

    __slots__ = ("delta", "last_collect")

    def __init__(self, delta: bool, now: int) -> None:
        self.delta = delta
        self.last_collect = now


class AggregatedHistogram:
    """A histogram with the SDK instrument's ``record`` signature, aggregated in place."""

    __slots__ = (
        "_first_seen",
        "_owner",
        "_series",
        "bounds",
        "description",
        "name",
        "unit",
    )

    def __init__(
        self, owner: HistogramSet, name: str, unit: str, description: str, bounds: Sequence[float]
    ) -> None:
        self._owner = owner
        self.name = name
        self.unit = unit
        self.description = description
        self.bounds = tuple(bounds)
        self._series: list[dict[_Key, _Series]] = []  # one per reader, in the set's order
        self._first_seen: dict[_Key, int] = {}

    def record(
        self,
        amount: float,
        attributes: Mapping[str, Any] | None = None,
        context: Context | None = None,
    ) -> None:
        if not 0 <= amount < _INF:  # also false for NaN
            return
        owner = self._owner
        key = frozenset(attributes.items()) if attributes else _NO_ATTRIBUTES
        index = bisect_left(self.bounds, amount)
        if context is None and not owner.sample_without_context:
            sample = None  # most records: no context, and a filter that keeps none without
        else:
            sample = owner.sample(amount, attributes, context)
        with owner.lock:
            for series_by_key in self._series:
                series = series_by_key.get(key)
                if series is None:
                    series = series_by_key[key] = self._new_series(key, attributes)
                series.counts[index] += 1
                series.total += amount
                series.minimum = min(series.minimum, amount)
                series.maximum = max(series.maximum, amount)
                if sample is not None:
                    if series.exemplars is None:
                        series.exemplars = {}
                    series.exemplars[index] = sample

    def _new_series(self, key: _Key, attributes: Mapping[str, Any] | None) -> _Series:
        # A copy: the caller may change its dict later (the SDK copies too).
        first_seen = self._first_seen.setdefault(key, time.time_ns())
        return _Series(dict(attributes or {}), len(self.bounds) + 1, first_seen)

    def _collect(self, position: int, reader: _Reader, now: int) -> list[Point]:
        series_by_key = self._series[position]
        if not reader.delta:
            return [series.point(series.start, now) for series in series_by_key.values()]
        self._series[position] = {}
        # A delta point starts at the reader's previous collection, or when its
        # attribute set was first seen if that was later.
        return [
            series.point(max(series.start, reader.last_collect), now)
            for series in series_by_key.values()
        ]

    def _add_reader(self) -> None:
        self._series.append({})

    def _forget(self) -> None:
        self._series = [{} for _ in self._series]
        self._first_seen = {}


class HistogramSet:
    """The aggregated histograms of one meter provider, and the readers that export them."""

    def __init__(self, exemplar_filter: ExemplarFilter) -> None:
        self.lock = threading.Lock()
        self._filter = exemplar_filter
        # A value recorded without a context is sampled, or not, the same way every
        # time (the SDK would ask with the flusher thread's context, which is empty).
        self.sample_without_context = exemplar_filter.should_sample(0.0, 0, {}, Context())
        self._histograms: list[AggregatedHistogram] = []
        self._readers: dict[object, tuple[int, _Reader]] = {}  # reader: its position, state
        _sets.add(self)

    def sample(
        self, value: float, attributes: Mapping[str, Any] | None, context: Context | None
    ) -> Sample | None:
        """The exemplar of this value, if the filter keeps it."""
        if context is None:
            if not self.sample_without_context:
                return None
            return Sample(value, time.time_ns(), None, None)
        now = time.time_ns()
        if not self._filter.should_sample(value, now, attributes, context):
            return None
        span_context = trace.get_current_span(context).get_span_context()
        if not span_context.is_valid:
            return Sample(value, now, None, None)
        return Sample(value, now, span_context.span_id, span_context.trace_id)

    def histogram(
        self, name: str, *, unit: str, description: str, bounds: Sequence[float]
    ) -> AggregatedHistogram:
        with self.lock:
            for found in self._histograms:
                if found.name == name:
                    return found
            histogram = AggregatedHistogram(self, name, unit, description, bounds)
            for _ in self._readers:
                histogram._add_reader()
            self._histograms.append(histogram)
            return histogram

    def add_reader(self, reader: object, *, delta: bool) -> None:
        """Collect for ``reader`` from now on; ``delta``: its histogram temporality."""
        with self.lock:
            if reader in self._readers:
                return
            self._readers[reader] = (len(self._readers), _Reader(delta, time.time_ns()))
            for histogram in self._histograms:
                histogram._add_reader()

    def collect(self, reader: object) -> list[tuple[AggregatedHistogram, list[Point]]]:
        """The points of every histogram with any, for ``reader``."""
        found = self._readers.get(reader)
        if found is None:
            return []
        position, state = found
        now = time.time_ns()
        with self.lock:
            collected = [
                (histogram, points)
                for histogram in self._histograms
                if (points := histogram._collect(position, state, now))
            ]
            state.last_collect = now
        return collected

    def delta(self, reader: object) -> bool:
        found = self._readers.get(reader)
        return found is not None and found[1].delta

    def _forget(self) -> None:
        """In a forked child: the parent's values are the parent's (see ``_sdk._configure``)."""
        self.lock = threading.Lock()  # another thread may have held it at the fork
        now = time.time_ns()
        for histogram in self._histograms:
            histogram._forget()
        for _, state in self._readers.values():
            state.last_collect = now


_sets: weakref.WeakSet[HistogramSet] = weakref.WeakSet()
_by_provider: weakref.WeakKeyDictionary[object, HistogramSet] = weakref.WeakKeyDictionary()


def register(provider: object, histograms: HistogramSet) -> None:
    """Aggregate poolscope's histograms for ``provider`` in ``histograms``; call it
    before the provider's instruments are made (:func:`poolscope.instrument`)."""
    _by_provider[provider] = histograms


def for_provider(provider: object) -> HistogramSet | None:
    return _by_provider.get(provider)


def _forget_after_fork() -> None:
    for histograms in list(_sets):
        histograms._forget()


os.register_at_fork(after_in_child=_forget_after_fork)
