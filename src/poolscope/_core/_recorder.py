"""Histogram records, moved off the hot path.

One ``Histogram.record`` in the OpenTelemetry SDK costs about 8 µs (attribute
validation, hashing, locking), and every task needs two or three. The offloading
thread or worker instead appends a tuple to a deque (well under a µs), and
the records are replayed into their histograms (the SDK's, or poolscope's own,
:mod:`._histograms`) by poolscope's background thread (:mod:`._background`)
every :data:`FLUSH_INTERVAL_S`, and by every metric collection before it reads
the histograms, so a collection never misses a finished task.

poolscope's own histograms take a value in about a µs, yet queueing it is still
cheaper: recorded at once, the worker and the loop would each write the same
histograms, locks and counters, from two cores, for every task, where the
replay writes them from one thread, in a batch (measured against each other
with ``benchmarks/bench_offload.py``'s workload, recording at once was the
slower of the two).

Records of waits long enough for a span carry the context of the task's
submitter, so the exemplars of ``executor.task.wait.duration`` still point at
the request that waited; other records carry none (an exemplar costs several
µs to sample, and a long wait is what a user clicks through from).

The queue is bounded: if the flusher cannot keep up, records beyond
:data:`MAX_QUEUED` are dropped and counted, and the drop is logged once.
"""

from __future__ import annotations

import collections
import os
import threading
from typing import Any, Final, Protocol

from opentelemetry.context import Context

from .._safety import logger, report_internal_error
from . import _background

__all__ = ["MAX_QUEUED", "Recordable", "drain", "dropped", "record"]

FLUSH_INTERVAL_S: Final = 0.5
MAX_QUEUED = 200_000
_WAKE_AT = 20_000


class Recordable(Protocol):
    """An SDK ``Histogram``, or one of poolscope's own (:mod:`._histograms`)."""

    def record(
        self, amount: float, attributes: Any = None, context: Context | None = None
    ) -> None: ...


_Record = tuple[Recordable, float, dict[str, Any], Context | None]


class _Recorder:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.queue: collections.deque[_Record] = collections.deque()
        self.drain_lock = threading.Lock()
        self.dropped = 0


_recorder = _Recorder()


def record(
    histogram: Recordable, value: float, attributes: dict[str, Any], context: Context | None
) -> None:
    """Queue one histogram record; never blocks, never raises."""
    queue = _recorder.queue
    size = len(queue)
    if size >= _WAKE_AT:  # module globals, read per call so tests can shrink them
        if size >= MAX_QUEUED:
            _count_drop()
            return
        _background.wake()
    queue.append((histogram, value, attributes, context))
    if _background.state.restart_pending:
        _background.ensure_running()


def drain() -> None:
    """Replay every queued record into its histogram (flusher thread and collections)."""
    queue = _recorder.queue
    with _recorder.drain_lock:
        while True:
            try:
                histogram, value, attributes, context = queue.popleft()
            except IndexError:
                return
            try:
                histogram.record(value, attributes, context=context)
            except Exception:
                report_internal_error("recording a histogram value")


def dropped() -> int:
    """Records dropped so far because the queue was full."""
    return _recorder.dropped


def _count_drop() -> None:
    _recorder.dropped += 1
    if _recorder.dropped == 1:
        logger.warning(
            "poolscope: more than %d histogram records queued; dropping records "
            "until the flusher catches up (the count is in poolscope._recorder.dropped())",
            MAX_QUEUED,
        )


def _reset_after_fork() -> None:
    # The drain lock may have been held; records queued before the fork belong
    # to the parent, which flushes them itself.
    _recorder.reset()


os.register_at_fork(after_in_child=_reset_after_fork)
_background.every(FLUSH_INTERVAL_S, drain)
