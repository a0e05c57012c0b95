"""Event-loop lag, and which line blocked the loop.

A blocked event loop is the other silent killer: no queue anywhere, every
request slow, and the fix (move the blocking call off the loop) differs from
the fix for a starved pool. Two parts:

* a heartbeat on the loop: a timer every ``loop_interval`` that records how
  late it ran (``asyncio.eventloop.lag``). One timer callback per interval is
  all it costs the loop.
* a watchdog thread that looks at the loop thread's Python stack every
  20 ms (one ``sys._current_frames()`` call, tens of µs). It notes when the
  loop was last idle (waiting in its selector) and, once the loop has been
  busy longer than ``loop_block_threshold``, keeps
  the stack it sees: that is the code blocking the loop. When the heartbeat
  comes back, the watchdog emits an ``asyncio.eventloop.blocked`` span over
  the block, with that stack, as a child of the blocked task's span where it
  can find it (the stock asyncio loop), else as a root span.

Everything here runs in the background; a failure is logged once and the
monitor stops, the application carries on.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import selectors
import sys
import threading
import time
import traceback
import weakref
from types import CodeType, FrameType
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace

from . import semconv
from ._recorder import record
from ._safety import report_internal_error
from ._telemetry import Telemetry

__all__ = ["monitor_loop", "stop_all"]

_SAMPLE_INTERVAL_S: Final = 0.02
_MAX_STACK_FRAMES: Final = 32
_HANDLE_RUN_CODE: Final = asyncio.events.Handle._run.__code__
_SELECTOR_CODES: Final = frozenset(
    cls.select.__code__
    for cls in vars(selectors).values()
    if isinstance(cls, type) and issubclass(cls, selectors.BaseSelector) and "select" in vars(cls)
)


class _Block:
    """A block in progress: when it began, what the loop thread was running, whose request."""

    __slots__ = ("attributes", "parent", "started_ns")

    def __init__(
        self, started_ns: int, frame: FrameType, parent: otel_context.Context | None
    ) -> None:
        self.started_ns = started_ns
        self.parent = parent
        # Read the stack now: by the time the loop is free the frames have moved on.
        walked = list(itertools.islice(traceback.walk_stack(frame), _MAX_STACK_FRAMES))
        summary = traceback.StackSummary.extract(reversed(walked), lookup_lines=True)
        innermost, line = walked[0]
        code = innermost.f_code
        module = innermost.f_globals.get("__name__", "")
        self.attributes: dict[str, Any] = {
            semconv.ATTR_CODE_STACKTRACE: "".join(summary.format()),
            semconv.ATTR_CODE_FUNCTION_NAME: f"{module}.{code.co_qualname}"
            if module
            else code.co_qualname,
            semconv.ATTR_CODE_FILE_PATH: code.co_filename,
            semconv.ATTR_CODE_LINE_NUMBER: line,
        }


class LoopMonitor:
    """Heartbeat and watchdog state of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, telemetry: Telemetry) -> None:
        settings = telemetry.settings
        # Weak: the watchdog's registry must not keep a finished loop alive.
        self.loop_ref = weakref.ref(loop)
        self.telemetry = telemetry
        self.interval_s = settings.loop_interval
        self.threshold_ns = int(settings.loop_block_threshold * 1e9)
        self.thread_id = threading.get_ident()
        self.idle_codes: frozenset[CodeType] = frozenset()
        now = time.monotonic_ns()
        self.last_tick_ns = now
        self.last_idle_ns = now
        self.expected_ns = now
        self.block: _Block | None = None
        self.stopped = False
        self._handle: asyncio.TimerHandle | None = None

    # --- on the loop ------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.expected_ns = time.monotonic_ns() + int(self.interval_s * 1e9)
        self._handle = loop.call_later(self.interval_s, self._tick)

    def _tick(self) -> None:
        now = time.monotonic_ns()
        if not self.idle_codes:
            self.idle_codes = _idle_codes(sys._getframe(1))
        lag_ns = max(now - self.expected_ns, 0)
        self.last_tick_ns = now
        if self.stopped:
            return
        record(self.telemetry.lag, lag_ns / 1e9, {}, None)
        self.expected_ns = now + int(self.interval_s * 1e9)
        loop = self.loop_ref()
        if loop is not None:
            self._handle = loop.call_later(self.interval_s, self._tick)

    def stop(self) -> None:
        self.stopped = True
        handle, loop = self._handle, self.loop_ref()
        if handle is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(handle.cancel)

    # --- on the watchdog thread -------------------------------------------------

    def sample(self, frames: dict[int, FrameType], now: int) -> None:
        loop = self.loop_ref()
        if loop is None or loop.is_closed():
            self.stopped = True
            return
        frame = frames.get(self.thread_id)
        if frame is None or not loop.is_running():
            self.block = None  # the thread is not running this loop now
            return
        if frame.f_code in self.idle_codes:
            self.last_idle_ns = now
        block = self.block
        if block is not None:
            if self.last_tick_ns > block.started_ns:
                self.block = None
                self._emit(block, self.last_tick_ns)
            return
        busy_since = max(self.last_tick_ns, self.last_idle_ns)
        if now - busy_since >= self.threshold_ns and self.idle_codes:
            self.block = _Block(busy_since, frame, _task_context(frame))

    def _emit(self, block: _Block, ended_ns: int) -> None:
        offset = time.time_ns() - time.monotonic_ns()
        span = self.telemetry.tracer.start_span(
            semconv.SPAN_EVENTLOOP_BLOCKED,
            context=block.parent,
            start_time=block.started_ns + offset,
            attributes=block.attributes,
        )
        span.end(end_time=ended_ns + offset)


def _idle_codes(tick_caller: FrameType | None) -> frozenset[CodeType]:
    """Code objects the loop thread is in when the loop waits for events.

    On the stock loop our timer is called from ``Handle._run`` and the loop
    waits in a selector's ``select``; on uvloop the timer is called straight
    from C, and the loop waits in C below the frame that started it.
    """
    if tick_caller is None:
        return _SELECTOR_CODES
    if tick_caller.f_code is _HANDLE_RUN_CODE:
        return _SELECTOR_CODES
    return _SELECTOR_CODES | {tick_caller.f_code}


def _task_context(frame: FrameType) -> otel_context.Context | None:
    """The OpenTelemetry context of the callback that blocks the loop, if reachable.

    The stock loop runs each callback from ``Handle._run``, whose handle holds
    the callback's context; a ``contextvars.Context`` can be read (not entered)
    from another thread.
    """
    current: FrameType | None = frame
    while current is not None:
        if current.f_code is _HANDLE_RUN_CODE:
            handle = current.f_locals.get("self")
            runtime_context = getattr(otel_context, "_RUNTIME_CONTEXT", None)
            variable = getattr(runtime_context, "_current_context", None)
            ctx = getattr(handle, "_context", None)
            if variable is None or ctx is None:
                return None
            found = ctx.get(variable)
            if found is not None and trace.get_current_span(found).is_recording():
                return found  # type: ignore[no-any-return]
            return None
        current = current.f_back
    return None


class _Watchdog:
    """One thread for every monitored loop of the process."""

    def __init__(self) -> None:
        self.monitors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopMonitor] = (
            weakref.WeakKeyDictionary()
        )
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None

    def add(self, loop: asyncio.AbstractEventLoop, monitor: LoopMonitor) -> None:
        with self.lock:
            self.monitors[loop] = monitor
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="poolscope-loop-watchdog", daemon=True
                )
                self.thread.start()

    def _run(self) -> None:
        while True:
            time.sleep(_SAMPLE_INTERVAL_S)
            with self.lock:
                for loop, monitor in list(self.monitors.items()):
                    if monitor.stopped:
                        del self.monitors[loop]
                monitors = list(self.monitors.values())
                if not monitors:  # nothing to watch: end; add() starts a new thread
                    self.thread = None
                    return
            try:
                frames = sys._current_frames()
                now = time.monotonic_ns()
                for monitor in monitors:
                    monitor.sample(frames, now)
                del frames
            except Exception:
                report_internal_error("the event-loop watchdog")


_watchdog = _Watchdog()


def monitor_loop(telemetry: Telemetry) -> None:
    """Start monitoring the running loop, once per loop. Call on the loop."""
    loop = asyncio.get_running_loop()
    if loop in _watchdog.monitors:
        return
    monitor = LoopMonitor(loop, telemetry)
    monitor.start(loop)
    _watchdog.add(loop, monitor)


def stop_all() -> None:
    with _watchdog.lock:
        monitors = list(_watchdog.monitors.values())
        _watchdog.monitors.clear()
    for monitor in monitors:
        monitor.stop()


def _reset_after_fork() -> None:
    # Only the forking thread survives: the watchdog thread is gone, its lock may
    # have been held, and the parent's loops do not run in the child. The
    # child's loops are monitored afresh when they serve.
    _watchdog.lock = threading.Lock()
    _watchdog.thread = None
    _watchdog.monitors = weakref.WeakKeyDictionary()


os.register_at_fork(after_in_child=_reset_after_fork)
