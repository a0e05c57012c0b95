"""Assertions shared by the per-path test files."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan

from poolscope import semconv

# Six 100 ms tasks on two workers: two start at once, two after one task, two after two.
GROUND_TRUTH_WAITS_MS = (0, 0, 100, 100, 200, 200)
GROUND_TRUTH_TOLERANCE_MS = 10


def duration_ms(span: ReadableSpan) -> float:
    assert span.start_time is not None
    assert span.end_time is not None
    return (span.end_time - span.start_time) / 1e6


def assert_ground_truth(
    wait_spans: Sequence[ReadableSpan], tolerance_ms: float = GROUND_TRUTH_TOLERANCE_MS
) -> None:
    waits = sorted(duration_ms(span) for span in wait_spans)
    assert len(waits) == len(GROUND_TRUTH_WAITS_MS), waits
    for measured, expected in zip(waits, GROUND_TRUTH_WAITS_MS, strict=True):
        assert abs(measured - expected) <= tolerance_ms, (waits, GROUND_TRUTH_WAITS_MS)
    # Queue position at submit: the last task found at least the three other
    # queued tasks ahead of it (more if the first two had not started yet),
    # and nobody ever saw more workers busy than the limit.
    attributes = [span.attributes for span in wait_spans if span.attributes]
    assert max(a[semconv.ATTR_EXECUTOR_TASK_PENDING] for a in attributes) >= 3
    assert all(
        a[semconv.ATTR_EXECUTOR_WORKER_BUSY] <= a[semconv.ATTR_EXECUTOR_WORKER_LIMIT]
        for a in attributes
    )


class Gate:
    """Lets tasks start and hold their worker until the test opens the gate."""

    def __init__(self, expected_running: int) -> None:
        self._opened = threading.Event()
        self._running = threading.Semaphore(0)
        self._expected = expected_running

    def task(self, value: int = 0) -> int:
        self._running.release()
        assert self._opened.wait(10), "gate never opened"
        return value

    def wait_running(self, count: int | None = None) -> None:
        """Block until ``count`` (default: ``expected_running``) more tasks are running."""
        for _ in range(self._expected if count is None else count):
            assert self._running.acquire(timeout=10), "tasks did not start"

    def open(self) -> None:
        self._opened.set()
