"""Per-request roll-up: every queue wait of the tasks a request submitted, summed.

The ASGI middleware opens a :class:`RequestRollup` in the request's context;
each task submitted from that context (the sync endpoint itself, every chunk
of a sync streaming response, ``to_thread`` calls in async endpoints) adds its
wait when a worker picks it up, and the time its blocking calls (LLM, HTTP)
held the worker. The middleware writes the totals on the server
span. The roll-up also holds the request's span budget, so a response of
thousands of sync chunks cannot produce thousands of spans, and its route, so
that each task's spans say which route's work waited.
"""

from __future__ import annotations

import os
import threading
from contextvars import ContextVar
from typing import Final

__all__ = ["RequestRollup", "current_rollup"]


class RequestRollup:
    _lock = threading.Lock()
    """One lock for every roll-up: held for a few additions, it costs less than a lock
    allocated per request."""

    __slots__ = (
        "pinned_io_ns",
        "pinned_llm_ns",
        "route",
        "span_budget",
        "spans_dropped",
        "task_count",
        "wait_max_ns",
        "wait_total_ns",
    )

    def __init__(self, span_budget: int, route: str | None = None) -> None:
        self.route = route
        """The request's ``http.route``, for the spans of the tasks it submits."""
        self.wait_total_ns = 0
        self.wait_max_ns = 0
        self.task_count = 0
        self.span_budget = span_budget
        self.spans_dropped = 0
        self.pinned_llm_ns = 0
        self.pinned_io_ns = 0

    def add_wait(self, wait_ns: int) -> None:
        """Called from worker threads and the loop alike."""
        with self._lock:
            self.task_count += 1
            self.wait_total_ns += wait_ns
            self.wait_max_ns = max(self.wait_max_ns, wait_ns)

    def add_pinned(self, held_ns: int) -> None:
        """An LLM call held a pool worker for ``held_ns`` while serving this request."""
        with self._lock:
            self.pinned_llm_ns += held_ns

    def add_pinned_io(self, held_ns: int) -> None:
        """A blocking HTTP call held a pool worker for ``held_ns`` while serving this request."""
        with self._lock:
            self.pinned_io_ns += held_ns

    def take_span(self) -> bool:
        """True if the request may emit one more task span; counts the ones it may not."""
        with self._lock:
            if self.span_budget > 0:
                self.span_budget -= 1
                return True
            self.spans_dropped += 1
            return False


current_rollup: Final[ContextVar[RequestRollup | None]] = ContextVar(
    "poolscope_request_rollup", default=None
)


def _reset_after_fork() -> None:
    RequestRollup._lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_reset_after_fork)
