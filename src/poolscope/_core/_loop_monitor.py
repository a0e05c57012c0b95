"""Event-loop lag, utilization, and the callbacks that blocked the loop.

A blocked or saturated event loop is the other silent killer: no queue
anywhere, every request slow, and the fix (move the blocking call off the
loop, or add processes) differs from the fix for a starved pool. Three parts:

* a heartbeat on the loop: a timer every ``loop_interval`` that records how
  late it ran (``asyncio.eventloop.lag``). One timer callback per interval is
  all it costs the loop.
* a clock of the loop's time in ``select`` (:mod:`._loop_clock`): its
  utilization (``asyncio.eventloop.time``) and its thread's CPU
  (``asyncio.eventloop.cpu.time``).
* a watchdog thread that looks at the loop thread's Python stack every
  20 ms (one ``sys._current_frames()`` call, tens of µs), tells its callbacks
  apart (:mod:`._loop_blocks`), and for every single callback that held the
  loop for at least ``loop_block_threshold`` emits an
  ``asyncio.eventloop.blocked`` span over it, with that callback's stack, as
  a child of that callback's own request span where it can read it, and
  records it in ``asyncio.eventloop.block.duration`` by the blocking line.

Everything here runs in the background; a failure is logged once and the
monitor stops, the application carries on.
"""

from __future__ import annotations

import asyncio
import os
import selectors
import sys
import threading
import time
import weakref
from collections.abc import Callable
from types import CodeType, FrameType
from typing import Final

from opentelemetry import trace

from .. import semconv
from .._safety import report_internal_error
from . import _loop_clock
from ._cpu import gc_pauses
from ._loop_blocks import Callback, Evidence, SiteNames, context_of, describe_stack, identify
from ._loop_clock import SampledClock, SelectorClock
from ._recorder import record
from ._telemetry import Telemetry

__all__ = [
    "LoopMonitor",
    "monitor_loop",
    "stop_all",
]

SAMPLE_INTERVAL_S: Final = 0.02
_SAMPLE_INTERVAL_NS: Final = int(SAMPLE_INTERVAL_S * 1e9)
_HANDLE_RUN_CODE: Final = asyncio.events.Handle._run.__code__
_SELECTOR_CODES: Final = frozenset(
    cls.select.__code__
    for cls in vars(selectors).values()
    if isinstance(cls, type) and issubclass(cls, selectors.BaseSelector) and "select" in vars(cls)
)
_sites = SiteNames()


class LoopMonitor:
    """Heartbeat, clock and watchdog state of one event loop."""

    def __init__(self, loop: asyncio.AbstractEventLoop, telemetry: Telemetry) -> None:
        settings = telemetry.settings
        # Weak: the watchdog's registry must not keep a finished loop alive.
        self.loop_ref = weakref.ref(loop)
        self.telemetry = telemetry
        self.interval_s = settings.loop_interval
        self.threshold_ns = int(settings.loop_block_threshold * 1e9)
        self.thread_id = threading.get_ident()
        self.idle_codes: frozenset[CodeType] = frozenset()
        self.base_codes: frozenset[CodeType] = frozenset()
        now = time.monotonic_ns()
        self.ticks = 0
        self.last_tick_ns = now
        self.expected_ns = now
        self.previous_ns = now
        self.clock = _loop_clock.clock_for(loop)
        self.running: Callback | None = None
        self.stopped = False
        self._handle: asyncio.TimerHandle | None = None

    # --- on the loop ------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.expected_ns = time.monotonic_ns() + int(self.interval_s * 1e9)
        self._handle = loop.call_later(self.interval_s, self._tick)

    def _tick(self) -> None:
        now = time.monotonic_ns()
        if not self.idle_codes:
            self.idle_codes, self.base_codes = _loop_codes(sys._getframe(1))
        lag_ns = max(now - self.expected_ns, 0)
        self.last_tick_ns = now
        self.ticks += 1
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
        if frame is None or not loop.is_running() or not self.idle_codes:
            self.running = None  # the thread is not running this loop now
            self.previous_ns = now
            return
        clock = self.clock
        waiting = clock.waiting() if clock.exact else frame.f_code in self.idle_codes
        if isinstance(clock, SampledClock):
            clock.sample(waiting, now)
        seen = None
        if not waiting:
            seen = identify(
                frame,
                base_codes=self.base_codes,
                loop=loop,
                ticks=self.ticks,
                lower_ns=self._began_after(),
                now=now,
            )
        running = self.running
        if running is not None and seen is not None and running.is_(seen):
            running.last_ns = now
            self._progress(running, frame, now)
        else:
            self._end(now)
            self.running = seen
            if seen is not None and now - self.previous_ns >= self.threshold_ns:
                # The watchdog itself was held up (a long collection, no CPU): this
                # callback may not be seen twice, so read its stack while it is here.
                self._progress(seen, frame, now, capture=True)
        self.previous_ns = now

    def _began_after(self) -> int:
        """The latest moment a callback seen now cannot have begun before."""
        lower = self.previous_ns
        if isinstance(self.clock, SelectorClock):
            lower = max(lower, self.clock.last_change_ns())  # it left select after this
        return max(lower, self.last_tick_ns)  # the heartbeat ran before it

    def _progress(
        self, running: Callback, frame: FrameType, now: int, *, capture: bool = False
    ) -> None:
        if running.evidence is None:
            running.evidence = Evidence(self.clock.thread, self.thread_id, now, _SAMPLE_INTERVAL_NS)
        else:
            running.evidence.observe(now)
        if running.report is None and (
            capture or now - running.start_estimate() >= self.threshold_ns
        ):
            # Read the stack now: by the time the loop is free the frames have moved on.
            running.report = describe_stack(frame)
            running.parent = context_of(running)

    def _end(self, now: int) -> None:
        """The callback seen before is over: a block if it lasted the threshold."""
        running, self.running = self.running, None
        if running is None or running.report is None:
            return
        upper = now
        if isinstance(self.clock, SelectorClock):
            changed = self.clock.last_change_ns()
            if running.last_ns < changed < upper:
                upper = changed  # the loop was back in select, or through it, by then
        if running.last_ns < self.last_tick_ns < upper:
            upper = self.last_tick_ns
        start, end = running.start_estimate(), (running.last_ns + upper) // 2
        if end - start >= self.threshold_ns:
            self._emit(running, start, end, now)

    def _emit(self, running: Callback, start_ns: int, end_ns: int, now: int) -> None:
        report = running.report
        assert report is not None
        attributes = dict(report)
        if running.evidence is not None:
            attributes.update(running.evidence.attributes(start_ns, end_ns, now))
        offset = time.time_ns() - time.monotonic_ns()
        span = self.telemetry.tracer.start_span(
            semconv.SPAN_EVENTLOOP_BLOCKED,
            context=running.parent,
            start_time=start_ns + offset,
            attributes=attributes,
        )
        span.end(end_time=end_ns + offset)
        exemplar = trace.set_span_in_context(span) if span.is_recording() else None
        record(
            self.telemetry.block, (end_ns - start_ns) / 1e9, _sites.attributes(attributes), exemplar
        )

    def close(self) -> None:
        """No longer watched: the clock stops, its figures stay counted."""
        _loop_clock.retire(self.clock)


def _loop_codes(tick_caller: FrameType | None) -> tuple[frozenset[CodeType], frozenset[CodeType]]:
    """(idle, base): code objects the loop thread is in when the loop waits for events,
    and the frame below every callback.

    On the stock loop our timer is called from ``Handle._run``, the loop waits
    in a selector's ``select`` and runs callbacks from ``_run_once``; on
    uvloop the timer is called straight from C, and the loop waits, and runs
    callbacks, in C below the frame that started it.
    """
    if tick_caller is None or tick_caller.f_code is _HANDLE_RUN_CODE:
        run_once = tick_caller.f_back if tick_caller is not None else None
        base = frozenset({run_once.f_code}) if run_once is not None else frozenset()
        return _SELECTOR_CODES, base
    return _SELECTOR_CODES | {tick_caller.f_code}, frozenset({tick_caller.f_code})


def _no_loop() -> None:
    return None


class _Watchdog:
    """One thread for every monitored loop of the process."""

    def __init__(self) -> None:
        self.monitors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopMonitor] = (
            weakref.WeakKeyDictionary()
        )
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.last: Callable[[], asyncio.AbstractEventLoop | None] = _no_loop
        """The loop most recently found monitored (weakly)."""

    def add(self, loop: asyncio.AbstractEventLoop, monitor: LoopMonitor) -> None:
        with self.lock:
            self.monitors[loop] = monitor
            gc_pauses.acquire()
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(
                    target=self._run, name="poolscope-loop-watchdog", daemon=True
                )
                self.thread.start()

    def remove(self, loop: asyncio.AbstractEventLoop) -> LoopMonitor | None:
        """Forget ``loop``'s monitor (call with ``lock`` held)."""
        if self.last() is loop:
            self.last = _no_loop
        monitor = self.monitors.pop(loop, None)
        if monitor is not None:
            monitor.close()
            gc_pauses.release()
        return monitor

    def _run(self) -> None:
        while True:
            time.sleep(SAMPLE_INTERVAL_S)
            with self.lock:
                for loop, monitor in list(self.monitors.items()):
                    if monitor.stopped:
                        self.remove(loop)
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
    """Start monitoring the running loop, once per loop. Call on the loop.

    Not on an asyncio loop (an ASGI app served under trio): nothing to monitor.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    if _watchdog.last() is loop:  # every request asks: a call, not a weak-key lookup
        return
    if loop not in _watchdog.monitors:
        monitor = LoopMonitor(loop, telemetry)
        monitor.start(loop)
        _watchdog.add(loop, monitor)
    _watchdog.last = weakref.ref(loop)


def stop_all() -> None:
    with _watchdog.lock:
        monitors = [_watchdog.remove(loop) for loop in list(_watchdog.monitors)]
    for monitor in monitors:
        if monitor is not None:
            monitor.stop()


def _reset_after_fork() -> None:
    # Only the forking thread survives: the watchdog thread is gone, its lock may
    # have been held, and the parent's loops do not run in the child. The
    # child's loops are monitored afresh when they serve.
    _watchdog.lock = threading.Lock()
    _watchdog.thread = None
    _watchdog.last = _no_loop
    _watchdog.monitors = weakref.WeakKeyDictionary()


os.register_at_fork(after_in_child=_reset_after_fork)
