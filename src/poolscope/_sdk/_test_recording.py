"""Every offload while a test runs, from spans kept in memory: no collector, no global provider.

Recording binds poolscope to a tracer provider of its own with an in-memory
exporter, with every offload traced (no wait threshold, traced outside
requests too, no per-request span cap), and gives back whatever poolscope
was bound to before (nothing, or the app's own ``configure()``) when it
ends. The global providers are never touched, and the patches are those of a
normal ``instrument()``.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final, NamedTuple

from opentelemetry.metrics import NoOpMeterProvider
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from .. import _runtime, semconv
from .._config import MAX_SPANS_CAP, Settings
from .._core._state import lock, state
from .._core._telemetry import Telemetry

__all__ = ["Offload", "Recorder", "RecordingReplaced", "recording"]

_RECORD_EVERYTHING: Final = {
    "wait_span_threshold": 0.0,
    "run_spans": True,
    "root_spans": True,
    "max_spans_per_request": MAX_SPANS_CAP,
}


class RecordingReplaced(RuntimeError):
    """poolscope was instrumented or configured again while a recorder was recording."""


class Offload(NamedTuple):
    """One task handed to a pool, as its ``executor.wait`` span saw it."""

    pool: str
    wait: float
    """Seconds from submit until a worker started it."""
    busy: int
    """Workers busy when it was submitted."""
    limit: float
    """The pool's cap (``inf`` for an unbounded one)."""
    pending: int
    """Tasks already queued ahead of it."""

    @property
    def found_full(self) -> bool:
        """It found as many tasks ahead of it, running or queued, as the pool has workers.

        Counting the queued ones too matters for a limiter: tasks started in one
        loop iteration all queue before the first takes a token, so the last
        of 45 on anyio's 40 tokens sees 0 busy and 44 pending.
        """
        return self.busy + self.pending >= self.limit


class Recorder:
    """What every task handed to a pool did while recording: per pool, how long it waited."""

    def __init__(self) -> None:
        self._exporter = InMemorySpanExporter()
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(SimpleSpanProcessor(self._exporter))
        self.bound: Telemetry | None = None
        """What poolscope records into while this recorder records."""

    def offloads(self, pool: str | None = None) -> list[Offload]:
        """Every offload that has started running (of ``pool``, or of every pool)."""
        found = [_offload(span) for span in self._spans(semconv.SPAN_WAIT)]
        return [o for o in found if pool is None or o.pool == pool]

    def waits(self, pool: str | None = None) -> list[float]:
        """Seconds each offload waited for a worker, in the order they started."""
        return [o.wait for o in self.offloads(pool)]

    def runs(self, pool: str | None = None) -> list[float]:
        """Seconds each finished offload ran on its worker."""
        return [
            _seconds(span)
            for span in self._spans(semconv.SPAN_RUN)
            if pool is None or (span.attributes or {}).get(semconv.ATTR_EXECUTOR_NAME) == pool
        ]

    def max_wait(self, pool: str | None = None) -> float:
        """The longest wait for a worker, in seconds (0.0 when nothing was offloaded)."""
        return max(self.waits(pool), default=0.0)

    def pools(self) -> list[str]:
        """Every pool that was handed a task."""
        return sorted({o.pool for o in self.offloads()})

    def saturated(self) -> list[str]:
        """Pools that hit their cap: a task arrived to find every worker taken or promised."""
        return sorted({o.pool for o in self.offloads() if o.found_full})

    def clear(self) -> None:
        """Forget what was recorded so far (say, a warm-up)."""
        self._exporter.clear()

    def summary(self) -> str:
        """One line per pool: tasks, longest wait, cap, busiest moment."""
        lines = []
        for pool in self.pools():
            found = self.offloads(pool)
            worst = max(found, key=lambda o: o.wait)
            cap = "unbounded" if worst.limit == float("inf") else f"{worst.limit:g} workers"
            full = sum(o.found_full for o in found)
            lines.append(
                f"{pool}: {len(found)} tasks, longest wait {worst.wait * 1000:.1f} ms "
                f"({cap}; {full} found the pool full, up to "
                f"{max(o.pending for o in found)} queued ahead)"
            )
        return "\n".join(lines) or "no task was handed to a pool"

    def __repr__(self) -> str:
        counts = ", ".join(f"{pool}: {len(self.offloads(pool))}" for pool in self.pools())
        return f"<Recorder of offloads ({counts or 'none yet'})>"

    def _spans(self, name: str) -> list[ReadableSpan]:
        if self.bound is not None and state.telemetry is not self.bound:
            raise RecordingReplaced(
                "poolscope was instrumented or configured again after the recorder started "
                "(poolscope.configure() or instrument() in the test or in a fixture that ran "
                "after it), so the offloads since went there: create the app before "
                "requesting poolscope_recorder"
            )
        spans = self._exporter.get_finished_spans()
        return sorted((s for s in spans if s.name == name), key=lambda s: s.start_time or 0)


def _seconds(span: ReadableSpan) -> float:
    return ((span.end_time or 0) - (span.start_time or 0)) / 1e9


def _offload(span: ReadableSpan) -> Offload:
    attributes = span.attributes or {}
    limit = attributes.get(semconv.ATTR_EXECUTOR_WORKER_LIMIT, float("inf"))
    return Offload(
        pool=str(attributes.get(semconv.ATTR_EXECUTOR_NAME, "")),
        wait=_seconds(span),
        busy=int(attributes.get(semconv.ATTR_EXECUTOR_WORKER_BUSY, 0)),  # type: ignore[arg-type]
        limit=float(limit),  # type: ignore[arg-type]
        pending=int(attributes.get(semconv.ATTR_EXECUTOR_TASK_PENDING, 0)),  # type: ignore[arg-type]
    )


_active: Recorder | None = None
_active_lock = threading.Lock()


@contextmanager
def recording() -> Iterator[Recorder]:
    """Record every offload until the block ends; nested, the outer recorder goes on."""
    global _active  # noqa: PLW0603 - one recording per process, as there is one poolscope
    with _active_lock:
        outer, _active = _active, _active or Recorder()
    if outer is not None:
        yield outer
        return
    recorder = _active
    try:
        previous = _start(recorder)
        try:
            yield recorder
        finally:
            _stop(recorder, previous)
    finally:
        with _active_lock:
            _active = None


def _start(recorder: Recorder) -> _runtime.Binding:
    """Bind poolscope to the recorder on every path; what it was bound to before."""
    with lock:
        earlier = _runtime.binding()
        base = earlier.telemetry.settings if earlier.telemetry is not None else Settings.resolve()
        settings = dataclasses.replace(base, **_RECORD_EVERYTHING)  # type: ignore[arg-type]
        _runtime.activate(settings, recorder.tracer_provider, NoOpMeterProvider())
        recorder.bound = state.telemetry
    return earlier


def _stop(recorder: Recorder, earlier: _runtime.Binding) -> None:
    with lock:
        if state.telemetry is recorder.bound:
            _runtime.restore(earlier)
    recorder.tracer_provider.shutdown()
