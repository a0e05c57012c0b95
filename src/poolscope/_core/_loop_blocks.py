"""Callbacks that held the event loop: told apart, timed, explained.

The watchdog samples the loop thread's stack every 20 ms and tells one
callback from the next:

* on the stock loop every callback runs inside its own ``Handle._run`` frame,
  and the handle is the callback: held by a weak reference, so poolscope
  never keeps a finished callback (or what it refers to) alive;
* on uvloop, whose handles live in C, by the task running and the outermost
  Python frame; if the heartbeat ticked between two samples the loop got to
  run its timers, so the callback there is another one.

A callback seen for at least ``loop_block_threshold`` is a block: many short
callbacks back to back are load, not a block. Its span begins and ends
halfway between the samples that bracket it, narrowed by when the loop left
or entered ``select`` and when the heartbeat ran, so it is timed to about a
sample interval.

What the loop thread did meanwhile (:class:`Evidence`) is read from the
block's second sample to its last: its own CPU time, its wait for a CPU,
garbage collections, and the other threads that ran (a thread running Python
holds the GIL).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import sysconfig
import threading
import traceback
import weakref
from types import CodeType, FrameType
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import trace

from .. import semconv
from .._thresholds import ON_CPU, OTHER_THREADS_CORES
from ._cpu import ThreadClock, gc_pauses, thread_cpu

__all__ = [
    "MAX_BLOCK_SITES",
    "Callback",
    "Evidence",
    "SiteNames",
    "context_of",
    "describe_stack",
    "identify",
]

HANDLE_RUN_CODE: Final = asyncio.events.Handle._run.__code__
MAX_STACK_FRAMES: Final = 32
MAX_BLOCK_SITES: Final = 50
"""Distinct blocking lines metrics may carry; later ones count as ``other``."""
BUSY_THREAD_SHARE: Final = 0.2
"""A thread that ran on a CPU for this share of a block is named on its span."""
MAX_BUSY_THREADS: Final = 5
MIN_CALL_SAMPLES: Final = 3
"""Samples in a system call it takes to call a block a blocking call, whoever held the GIL."""

_current_tasks: dict[Any, Any] | None = getattr(asyncio.tasks, "_current_tasks", None)


def _library_roots() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(standard library, installed packages) directories, for telling the app's own code apart."""
    paths = sysconfig.get_paths()
    stdlib = tuple({paths[k] for k in ("stdlib", "platstdlib") if k in paths})
    packages = {paths[k] for k in ("purelib", "platlib") if k in paths}
    packages.add(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    )  # poolscope
    return stdlib, tuple(packages)


_STDLIB, _PACKAGES = _library_roots()
_LIBRARIES: Final = _STDLIB + _PACKAGES


class Callback:
    """One callback the watchdog saw running: who it is, and the samples around it."""

    __slots__ = (
        "code",
        "evidence",
        "first_ns",
        "handle",
        "last_ns",
        "lower_ns",
        "parent",
        "report",
        "task",
        "ticks",
    )

    def __init__(
        self,
        *,
        handle: weakref.ref[Any] | None,
        task: weakref.ref[Any] | None,
        code: CodeType | None,
        ticks: int,
        lower_ns: int,
        now: int,
    ) -> None:
        self.handle = handle
        self.task = task
        self.code = code
        self.ticks = ticks
        self.lower_ns = lower_ns
        """It began after this: the sample before it, or later news of the loop."""
        self.first_ns = now
        self.last_ns = now
        self.evidence: Evidence | None = None
        self.parent: otel_context.Context | None = None
        self.report: dict[str, Any] | None = None
        """The stack and site, taken once it had run past the threshold."""

    def is_(self, other: Callback) -> bool:
        """The same callback seen again."""
        if self.handle is not None or other.handle is not None:
            mine, theirs = self.handle and self.handle(), other.handle and other.handle()
            return mine is not None and mine is theirs
        mine_task = self.task and self.task()
        theirs_task = other.task and other.task()
        return (
            mine_task is theirs_task
            and self.code is other.code
            and self.ticks == other.ticks
            and self.code is not None
        )

    def start_estimate(self) -> int:
        return (self.lower_ns + self.first_ns) // 2


def identify(
    frame: FrameType,
    *,
    base_codes: frozenset[CodeType],
    loop: asyncio.AbstractEventLoop,
    ticks: int,
    lower_ns: int,
    now: int,
) -> Callback | None:
    """The callback the loop thread runs in ``frame``'s stack, or None (loop bookkeeping)."""
    outermost = None
    current: FrameType | None = frame
    while current is not None:
        code = current.f_code
        if code is HANDLE_RUN_CODE:
            handle = current.f_locals.get("self")
            if handle is None:
                return None
            return Callback(
                handle=weakref.ref(handle),
                task=None,
                code=code,
                ticks=ticks,
                lower_ns=lower_ns,
                now=now,
            )
        if code in base_codes:
            break
        outermost = current
        current = current.f_back
    if outermost is None:
        return None
    task = _current_tasks.get(loop) if _current_tasks is not None else None
    task_ref = weakref.ref(task) if task is not None else None
    return Callback(
        handle=None, task=task_ref, code=outermost.f_code, ticks=ticks, lower_ns=lower_ns, now=now
    )


def context_of(callback: Callback) -> otel_context.Context | None:
    """The OpenTelemetry context the callback runs in, when it can be read from here.

    A ``contextvars.Context`` can be read (not entered) from another thread:
    the stock loop's handle holds its callback's; on uvloop, the running task's
    (Python 3.12+ exposes it).
    """
    ctx = None
    if callback.handle is not None:
        handle = callback.handle()
        ctx = getattr(handle, "_context", None)
    elif callback.task is not None:
        task = callback.task()
        get_context = getattr(task, "get_context", None)
        ctx = get_context() if get_context is not None else None
    runtime_context = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime_context, "_current_context", None)
    if ctx is None or variable is None:
        return None
    found = ctx.get(variable)
    if found is not None and trace.get_current_span(found).is_recording():
        return found  # type: ignore[no-any-return]
    return None


def _is_under(path: str, roots: tuple[str, ...]) -> bool:
    return any(path.startswith(root + os.sep) for root in roots)


def describe_stack(frame: FrameType) -> dict[str, Any]:
    """``code.*`` attributes of the stack that blocks: the whole stack, and its site.

    The site is the innermost frame of the application's own code (outside
    the standard library and installed packages: the line to change), else
    the innermost outside the standard library, else the innermost frame.
    """
    walked = list(itertools.islice(traceback.walk_stack(frame), MAX_STACK_FRAMES))
    summary = traceback.StackSummary.extract(reversed(walked), lookup_lines=True)
    paths = [entry[0].f_code.co_filename for entry in walked]
    chosen = next((i for i, path in enumerate(paths) if not _is_under(path, _LIBRARIES)), None)
    if chosen is None:
        chosen = next((i for i, path in enumerate(paths) if not _is_under(path, _STDLIB)), 0)
    site_frame, line = walked[chosen]
    code = site_frame.f_code
    module = site_frame.f_globals.get("__name__", "")
    return {
        semconv.ATTR_CODE_STACKTRACE: "".join(summary.format()),
        semconv.ATTR_CODE_FUNCTION_NAME: f"{module}.{code.co_qualname}"
        if module
        else code.co_qualname,
        semconv.ATTR_CODE_FILE_PATH: code.co_filename,
        semconv.ATTR_CODE_LINE_NUMBER: line,
    }


class Evidence:
    """What the loop thread and the others did during a block, from its second sample on.

    The block's ``asyncio.eventloop.blocked.cause`` follows from it, in this order:

    * ``gc``: garbage collection ran for most of the block (on any thread: it holds
      the GIL), whatever callback it interrupted;
    * ``cpu``: the loop thread ran on a CPU for most of the block (the callback's work);
    * ``cpu_wait``: it was runnable but waited for a core (the machine is out of CPU);
    * ``call``: most of several samples found it in a system call other than a
      lock wait: a sleep, a socket read (the callback's blocking call);
    * ``gil``: the watchdog itself got the GIL for fewer than half of its samples:
      other threads held it, and the loop waited for it like the watchdog did;
    * ``call`` otherwise: the GIL was free and the loop thread still waited (a
      lock, an event: the callback's own wait).

    Only ``cpu`` and ``call`` are the callback's doing.
    """

    __slots__ = (
        "calls",
        "clock",
        "cpu",
        "interval_ns",
        "known",
        "last",
        "loop_thread",
        "samples",
        "since_ns",
        "threads",
        "waited",
    )

    def __init__(self, clock: ThreadClock, loop_thread: int, now: int, interval_ns: int) -> None:
        self.clock = clock
        self.loop_thread = loop_thread
        self.since_ns = now
        self.interval_ns = interval_ns
        self.cpu = clock.cpu()
        self.waited = clock.run_queue_wait()
        self.threads = thread_cpu(excluded=loop_thread)
        self.last: tuple[int, float, float | None] | None = None
        """(when, CPU, run-queue wait) at the latest sample that still saw the block."""
        self.samples = 0
        self.known = 0
        self.calls = 0

    def observe(self, now: int) -> None:
        """One more sample of the block: its clocks, and is the loop thread in a blocking call?"""
        self.samples += 1
        self.last = (now, self.clock.cpu(), self.clock.run_queue_wait())
        in_call = self.clock.in_blocking_call()
        if in_call is not None:
            self.known += 1
            self.calls += in_call

    def attributes(self, start_ns: int, end_ns: int, now: int) -> dict[str, Any]:
        """The block's evidence, scaled from the part measured to its whole duration.

        The clocks count from the block's second sample to its last: the sample
        that finds it over comes after it, when the loop thread already runs
        other callbacks (under load, waiting for a core), which are not this
        block's doing. Only a block seen at no later sample is measured to then.
        """
        if self.last is not None:
            until, cpu, waited = self.last
        else:
            until, cpu, waited = now, self.clock.cpu(), self.clock.run_queue_wait()
        measured = max(until - self.since_ns, 1) / 1e9
        duration = max(end_ns - start_ns, 0) / 1e9
        on_cpu = max(cpu - self.cpu, 0.0) / measured
        collecting = gc_pauses.overlap(start_ns, end_ns)
        found: dict[str, Any] = {
            semconv.ATTR_EVENTLOOP_BLOCKED_CPU_TIME: round(min(on_cpu, 1.0) * duration, 4),
            semconv.ATTR_EVENTLOOP_BLOCKED_GC_TIME: round(collecting, 4),
        }
        runnable = None
        if waited is not None and self.waited is not None:
            runnable = max(waited - self.waited, 0.0) / measured
            found[semconv.ATTR_EVENTLOOP_BLOCKED_CPU_WAIT] = round(min(runnable, 1.0) * duration, 4)
        busy = []
        others = 0.0
        for ident, (name, seconds) in thread_cpu(excluded=self.loop_thread).items():
            before = self.threads.get(ident)
            used = (seconds - (before[1] if before else 0.0)) / measured
            others += used
            if used >= BUSY_THREAD_SHARE:
                busy.append((used, name))
        if busy:
            busy.sort(reverse=True)
            found[semconv.ATTR_EVENTLOOP_BLOCKED_BUSY_THREADS] = [
                name for _, name in busy[:MAX_BUSY_THREADS]
            ]
        # every sample is taken holding the GIL: the share the watchdog got is how free it was
        expected = max(now - self.since_ns, 0) / self.interval_ns
        gil_free = self.samples + 1 >= ON_CPU * expected  # + 1: the sample that ended it
        if collecting >= ON_CPU * duration:
            cause = semconv.BLOCK_CAUSE_GC
        elif on_cpu >= ON_CPU:
            cause = semconv.BLOCK_CAUSE_CPU
        elif runnable is not None and runnable >= ON_CPU:
            cause = semconv.BLOCK_CAUSE_CPU_WAIT
        elif self.known >= MIN_CALL_SAMPLES and self.calls > self.known / 2:
            cause = semconv.BLOCK_CAUSE_CALL
        elif not gil_free or (self.known < MIN_CALL_SAMPLES and others >= OTHER_THREADS_CORES):
            # the watchdog waited for the GIL too; or too few samples to see a call while
            # other threads ran Python (a short block sampled by luck of the GIL's hand-overs)
            cause = semconv.BLOCK_CAUSE_GIL
        else:
            cause = semconv.BLOCK_CAUSE_CALL
        found[semconv.ATTR_EVENTLOOP_BLOCKED_CAUSE] = cause
        return found


_OTHER_SITE: Final[dict[str, Any]] = {semconv.ATTR_CODE_FUNCTION_NAME: semconv.SITE_OTHER}


class SiteNames:
    """Bounds the blocking lines metrics carry: past :data:`MAX_BLOCK_SITES`, ``other``."""

    def __init__(self, limit: int = MAX_BLOCK_SITES) -> None:
        self.limit = limit
        self._known: dict[tuple[str, str, int, str], dict[str, Any]] = {}
        self._lock = threading.Lock()

    def attributes(self, block: dict[str, Any]) -> dict[str, Any]:
        """The metric attributes of a block's span attributes: its line and cause."""
        cause = str(block.get(semconv.ATTR_EVENTLOOP_BLOCKED_CAUSE, semconv.BLOCK_CAUSE_CALL))
        key = (
            str(block[semconv.ATTR_CODE_FUNCTION_NAME]),
            str(block[semconv.ATTR_CODE_FILE_PATH]),
            int(block[semconv.ATTR_CODE_LINE_NUMBER]),
            cause,
        )
        with self._lock:
            found = self._known.get(key)
            if found is None:
                if len({known[:3] for known in self._known}) >= self.limit:
                    return {**_OTHER_SITE, semconv.ATTR_EVENTLOOP_BLOCKED_CAUSE: cause}
                found = self._known[key] = {
                    semconv.ATTR_CODE_FUNCTION_NAME: key[0],
                    semconv.ATTR_CODE_FILE_PATH: key[1],
                    semconv.ATTR_CODE_LINE_NUMBER: key[2],
                    semconv.ATTR_EVENTLOOP_BLOCKED_CAUSE: cause,
                }
            return found
