"""poolscope's one background thread, alive exactly while poolscope is on.

Periodic work (replaying histogram records, watching nested offloads) runs
here rather than in threads of its own that come and go: a host that checks
its threads (CPython's test runner flags any thread a test leaves running,
even for a moment) sees one thread that was there before its work and is
gone after ``uninstrument()``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Final

from .._safety import report_internal_error

__all__ = [
    "ensure_running",
    "every",
    "start",
    "state",
    "stop",
    "wake",
]

THREAD_NAME: Final = "poolscope"


class _Job:
    __slots__ = ("due", "interval", "run", "wanted")

    def __init__(
        self, interval: float, run: Callable[[], None], wanted: Callable[[], bool] | None
    ) -> None:
        self.interval = interval
        self.run = run
        self.wanted = wanted
        self.due = 0.0

    def is_wanted(self) -> bool:
        return self.wanted is None or self.wanted()


class _Background:
    def __init__(self) -> None:
        self.jobs: list[_Job] = []
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.wakeup = threading.Event()
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None
        self.enabled = False
        # a forked child of an instrumented process, its thread not started yet: the
        # hot path reads this, and calls ensure_running() only when it is set
        self.restart_pending = False

    def start(self) -> None:
        with self.lock:
            self.enabled = True
            if self.thread is None:
                self.stopping = threading.Event()
                self.thread = threading.Thread(
                    target=self._run, args=(self.stopping,), name=THREAD_NAME, daemon=True
                )
                self.thread.start()

    def _run(self, stopping: threading.Event) -> None:
        while not stopping.is_set():
            now = time.monotonic()
            jobs = [job for job in self.jobs if job.is_wanted()]
            for job in jobs:
                if now >= job.due:
                    job.due = now + job.interval
                    try:
                        job.run()
                    except Exception:
                        report_internal_error("poolscope's background work")
            nearest = min((job.due for job in jobs), default=now + 1.0)
            self.wakeup.wait(max(nearest - time.monotonic(), 0.0))
            if self.wakeup.is_set():
                self.wakeup.clear()
                for job in self.jobs:  # woken for a reason: everything runs now
                    job.due = 0.0


state = _Background()
"""The thread's state; the hot path reads ``state.restart_pending``."""


def every(
    interval: float, run: Callable[[], None], *, wanted: Callable[[], bool] | None = None
) -> None:
    """Run ``run`` every ``interval`` seconds on the background thread, while
    ``wanted()`` says so (checked at each wake-up); registered at import time."""
    state.jobs.append(_Job(interval, run, wanted))


def start() -> None:
    """Start the thread (idempotent); from ``instrument()``."""
    state.start()


def ensure_running() -> None:
    """A forked child of an instrumented process starts its own thread on first use."""
    state.restart_pending = False
    if state.thread is None and state.enabled:
        state.start()


def wake() -> None:
    """Run every job now (the record queue is long)."""
    if not state.wakeup.is_set():  # setting a set Event still takes its lock
        state.wakeup.set()


def stop(timeout: float = 5.0) -> None:
    """Stop the thread and run every job once more; from ``uninstrument()``."""
    with state.lock:
        state.enabled = False
        thread, state.thread = state.thread, None
        state.stopping.set()
        state.wakeup.set()
    if thread is not None and thread is not threading.current_thread():
        thread.join(timeout)
    for job in list(state.jobs):
        try:
            job.run()
        except Exception:
            report_internal_error("poolscope's background work")


def _reset_after_fork() -> None:
    # The thread did not survive the fork and its lock may have been held; the
    # child keeps poolscope on, and starts a thread of its own when it is used.
    enabled = state.enabled
    state.reset()
    state.enabled = state.restart_pending = enabled


os.register_at_fork(after_in_child=_reset_after_fork)
