"""One task's life in a pool: submitted, started, ended (or abandoned).

Timestamps are taken where the event happens: submit on the caller's side,
start and end inside the worker. Only the monotonic clock is read on the hot
path; spans are built from those readings, the wait span after the fact.

A task whose caller awaits it on an event loop (``run_in_executor``,
``to_thread``, anyio's ``run_sync``) leaves the wait span and the end of its
run span to the loop, built when the awaiting coroutine resumes: the same
spans with the same timestamps, there before the caller goes on, but not on
the worker. Python on a worker thread runs several times slower than the same
code on the loop (its cache is cold, and it takes the GIL from the loop), so
the fewer lines a worker runs, the less the loop is held up. A caller that
stops awaiting (a cancellation) hands them back to the worker.

Every method here may run in a user's request path, so none of them raises:
counter updates are plain arithmetic under the pool lock, and everything that
touches OpenTelemetry is guarded by :func:`report_internal_error`.
"""

from __future__ import annotations

import contextvars
import enum
import functools
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final, ParamSpec, TypeVar

from opentelemetry import context, trace
from opentelemetry.trace import Span, Status, StatusCode

from .. import semconv
from .._safety import report_internal_error
from . import _nested, _state
from ._pools import Pool, pool_for
from ._recorder import record
from ._rollup import current_rollup
from ._telemetry import Telemetry, context_inside

__all__ = [
    "Task",
    "TaskState",
    "begin",
    "blocking_call",
    "current_task",
    "error_type",
    "function_name",
    "mark_error",
]

P = ParamSpec("P")
R = TypeVar("R")


class TaskState(enum.IntEnum):
    """Where a task is: it leaves ``WAITING`` once, to run or to be abandoned."""

    WAITING = 0
    RUNNING = 1
    DONE = 2
    ABANDONED = 3


# module constants: the hot path compares against these (a global read, not an attribute)
WAITING: Final = TaskState.WAITING
RUNNING: Final = TaskState.RUNNING
DONE: Final = TaskState.DONE
ABANDONED: Final = TaskState.ABANDONED

_monotonic_ns = time.monotonic_ns
_NS_PER_S: Final = 1e9


def _epoch_offset_ns() -> int:
    return time.time_ns() - _monotonic_ns()


def error_type(exc: BaseException) -> str:
    """``error.type`` value: the exception's fully qualified class name."""
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def _context_run_target(fn: object) -> Callable[..., Any] | None:
    """The real function of ``partial(ctx.run, func, ...)``, as ``asyncio.to_thread`` builds."""
    if type(fn) is functools.partial:
        inner = fn.func
        if getattr(inner, "__name__", None) == "run" and isinstance(
            getattr(inner, "__self__", None), contextvars.Context
        ):
            target: Callable[..., Any] = fn.args[0]
            return target
    return None


def function_name(fn: object) -> str:
    """``code.function.name``: the fully qualified name of what the task runs."""
    for _ in range(8):  # unwrap partials, bounded against pathological nesting
        target = _context_run_target(fn)
        if target is not None:
            fn = target
        elif isinstance(fn, functools.partial):
            fn = fn.func
        else:
            break
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    module = getattr(fn, "__module__", None) or type(fn).__module__
    return f"{module}.{qualname}" if module else str(qualname)


current_task: Final[contextvars.ContextVar[Task | None]] = contextvars.ContextVar(
    "poolscope_current_task", default=None
)
"""The pool task the current thread is running, for code that wants to know (LLM calls)."""

blocking_call: Final[contextvars.ContextVar[str | None]] = contextvars.ContextVar(
    "poolscope_blocking_call", default=None
)
"""The blocking client call (``"llm"``, ``"http"``) this context is inside. What it does
itself (an LLM SDK's own HTTP requests, a redirect) is part of it, not a call of its own."""


def begin(
    owner: object,
    fn: object,
    path: str,
    register: Callable[[Any, str | None], Pool],
) -> Task | None:
    """The task for handing ``fn`` to ``owner``, or None when it is not recorded.

    Recorded when poolscope is on and the pool is known (registered by the
    user), or when every pool on ``path`` is recorded; then an unknown pool is
    registered on first sight, unless OpenTelemetry itself made it.
    """
    telemetry = _state.state.telemetry
    if telemetry is None:
        return None
    pool = pool_for(owner)
    if pool is None:
        if path not in _state.state.auto or _is_opentelemetrys_own(fn):
            return None
        pool = register(owner, None)
    return Task(pool, telemetry, fn)


def _is_opentelemetrys_own(fn: object) -> bool:
    """The SDK's own short-lived pools (resource detection, also in every forked
    child) are the telemetry pipeline, not the app: not recorded unless registered.
    (Instrumentations' wrappers around the app's functions are the app's work.)
    Resource detectors from other packages count as the SDK's too."""
    if function_name(fn).startswith("opentelemetry.sdk."):
        return True
    detector = getattr(fn, "__self__", None)
    return any(
        cls.__name__ == "ResourceDetector" and cls.__module__ == "opentelemetry.sdk.resources"
        for cls in type(detector).__mro__
    )


class Task:
    """Bookkeeping for one offloaded call; see the module docstring."""

    __slots__ = (
        "attributes",
        "awaited",
        "busy_at_submit",
        "ended",
        "flagged",
        "func",
        "offset",
        "outer",
        "outer_thread",
        "parent",
        "pending_at_submit",
        "pool",
        "rollup",
        "run_span",
        "started",
        "state",
        "submitted",
        "telemetry",
        "traced",
        "wait_span_due",
    )

    def __init__(self, pool: Pool, telemetry: Telemetry, func: object) -> None:
        self.submitted = _monotonic_ns()
        self.pool = pool
        self.telemetry = telemetry
        self.func = func
        self.state = WAITING
        self.started = 0
        self.ended = 0
        self.offset = 0  # epoch - monotonic, read once per task: see _start_spans
        self.run_span: Span | None = None
        self.attributes: dict[str, Any] | None = None  # the spans', made once: see _span_attributes
        # Awaited on an event loop, which builds the wait span and ends the run span
        # at the resume; set before the submit, cleared when the caller stops waiting.
        self.awaited = False
        self.wait_span_due: dict[str, Any] | None = None  # the attributes of a wait span to build
        self.rollup = current_rollup.get()
        parent = context.get_current()
        self.parent = parent
        self.traced = telemetry.root_spans or trace.get_current_span(parent).is_recording()
        self.flagged = False  # reported as deadlocked by the nested-offload watch
        outer = current_task.get()
        # A coroutine scheduled from a worker carries its context, and this task
        # with it, long after the task ended: only a running one is an outer.
        nested = outer is not None and outer.pool is pool and outer.state == RUNNING
        self.outer = outer if nested else None
        self.outer_thread = threading.get_ident() if nested else 0  # the outer's worker
        with pool.lock:
            self.busy_at_submit, self.pending_at_submit = pool.counts()
            pool.pending += 1
        if self.outer is not None:
            try:
                _nested.watch(self)
            except Exception:  # the pending count is taken: this task must go on
                report_internal_error("watching a nested offload")

    # --- wrapping --------------------------------------------------------------

    def wrap(self, fn: Callable[P, R]) -> Callable[P, R]:
        """Return a callable that runs ``fn`` and records start and end around it."""
        target = _context_run_target(fn)
        if target is not None:
            # asyncio.to_thread runs the function inside a copied context; our
            # run span must be current *inside* it, so wrap the inner function.
            # That copy is the submitter's context already: only a span needs attaching.
            assert isinstance(fn, functools.partial)
            wrapped: Callable[P, R] = functools.partial(
                fn.func, self._wrap_plain(target, attach=self.traced), *fn.args[1:], **fn.keywords
            )
            return wrapped
        return self._wrap_plain(fn)

    def _wrap_plain(self, fn: Callable[P, R], *, attach: bool = True) -> Callable[P, R]:
        def run_task(*args: P.args, **kwargs: P.kwargs) -> R:
            token = self.start(attach=attach)
            running = current_task.set(self)
            try:
                result = fn(*args, **kwargs)
            except BaseException as exc:
                current_task.reset(running)
                self.finish(token, exc)
                raise
            current_task.reset(running)
            self.finish(token, None)
            return result

        return run_task

    # --- life cycle -------------------------------------------------------------

    def start(self, *, attach: bool = True) -> object | None:
        """Mark the task running; return a context token to pass to :meth:`finish`.

        With ``attach``, the run span (or the submitter's context) becomes
        current here until :meth:`finish`; that must then run in this context.
        """
        now = _monotonic_ns()
        pool = self.pool
        with pool.lock:
            waited = self.state == WAITING
            if waited:
                pool.pending -= 1
            pool.busy += 1
            self.state = RUNNING
            awaited = self.awaited
        self.started = now
        try:
            if waited:
                self._record_wait(now - self.submitted, pool.attributes)
            if self.traced:
                return self._start_spans(now, waited, attach, awaited)
            if attach and self.parent:
                return context.attach(self.parent)
        except Exception:
            report_internal_error("recording the start of a task")
        return None

    def finish(self, token: object | None, exc: BaseException | None) -> None:
        """Mark the task ended (in the worker, right after the function returned)."""
        now = _monotonic_ns()
        self.ended = now
        pool = self.pool
        with pool.lock:
            pool.busy -= 1
            self.state = DONE
            # an error is marked here, where the exception is: rare, and not worth a hand-over
            settle = not self.awaited or exc is not None
            if settle:
                self.awaited = False
        try:
            attributes = pool.attributes
            if exc is not None:
                attributes = {**attributes, semconv.ATTR_ERROR_TYPE: error_type(exc)}
            record(self.telemetry.run, (now - self.started) / _NS_PER_S, attributes, None)
            if settle and self.traced:
                self._settle_spans(exc)
        except Exception:
            report_internal_error("recording the end of a task")
        finally:
            if token is not None:
                context.detach(token)  # type: ignore[arg-type]

    def abandon(self, *, cancelled: bool, error: BaseException | None = None) -> None:
        """The task will never start: cancelled while waiting, or its pool broke."""
        now = _monotonic_ns()
        pool = self.pool
        if not self._leave_waiting(ABANDONED):
            return
        try:
            if cancelled:
                attributes = pool.cancelled_attributes
            elif error is not None:
                attributes = {**pool.attributes, semconv.ATTR_ERROR_TYPE: error_type(error)}
            else:
                attributes = pool.attributes
            long_wait = self._record_wait(now - self.submitted, attributes)
            if self.traced and long_wait and not self.flagged and self._may_span():
                offset = _epoch_offset_ns()
                span = self._wait_span(offset)
                if cancelled:
                    span.set_attribute(semconv.ATTR_EXECUTOR_TASK_CANCELLED, True)
                elif error is not None:
                    mark_error(span, error)
                span.end(end_time=now + offset)
        except Exception:
            report_internal_error("recording an abandoned task")

    def on_future_done(self, future: Future[Any]) -> None:
        """Done callback of the submitted future: done but never started means never run.

        That is a cancel while waiting (``Future.cancel``, ``shutdown(cancel_futures=True)``)
        or a broken pool failing its queued work.
        """
        if self.state == WAITING:
            if future.cancelled():
                self.abandon(cancelled=True)
            else:
                self.abandon(cancelled=False, error=future.exception())
        self.release_callable()

    def release_callable(self) -> None:
        """Let go of the submitted callable once the task is over: the caller's future
        keeps this task (as a done callback), and without poolscope it would not keep
        the callable, nor what a bound method is bound to."""
        self.func = None

    def resumed(self) -> None:
        """The awaiting coroutine is running again, or stopped waiting (on the event loop).

        Done: record the resume and settle the spans the worker left. Not done
        (cancelled while waiting or running): whoever ends the task settles them.
        """
        now = _monotonic_ns()
        if self.stop_awaiting():
            try:
                resume_ns = now - self.ended
                record(self.telemetry.resume, resume_ns / _NS_PER_S, self.pool.attributes, None)
            except Exception:
                report_internal_error("recording a task's resume")

    def stop_awaiting(self) -> bool:
        """No coroutine waits for this task any more: settle the spans the worker left,
        or leave them to the worker if it has not finished. True if the task is done."""
        if not self.awaited:  # it only ever turns False: nothing left to hand over
            return self.state == DONE
        with self.pool.lock:
            done = self.state == DONE
            settle = done and self.awaited
            self.awaited = False
        if settle:
            self._settle_spans(None)
        return done

    def on_awaited_future_done(self, future: object) -> None:
        """Done callback of the asyncio future that ``run_in_executor`` returned."""
        self.resumed()

    def discard(self) -> None:
        """The submit itself failed: undo the pending count, record nothing."""
        self._leave_waiting(ABANDONED)

    def finish_remote(self, started_epoch_ns: int, run_ns: int, exc: BaseException | None) -> None:
        """Record a task that ran in another process, from the times it reported."""
        self.ended = _monotonic_ns()
        pool = self.pool
        if not self._leave_waiting(DONE):
            return
        try:
            offset = _epoch_offset_ns()
            submitted_epoch = self.submitted + offset
            waited = max(started_epoch_ns - submitted_epoch, 0)
            started_local = self.submitted + waited
            long_wait = self._record_wait(waited, pool.attributes)
            attributes = pool.attributes
            if exc is not None:
                attributes = {**attributes, semconv.ATTR_ERROR_TYPE: error_type(exc)}
            record(self.telemetry.run, run_ns / _NS_PER_S, attributes, None)
            if not self.traced:
                return
            if long_wait and self._may_span():
                self._wait_span(offset).end(end_time=started_local + offset)
            if self.telemetry.run_spans and self._may_span():
                span = self._run_span(started_local + offset)
                if exc is not None:
                    mark_error(span, exc)
                span.end(end_time=started_local + offset + run_ns)
        except Exception:
            report_internal_error("recording a process pool task")

    def _leave_waiting(self, to: TaskState) -> bool:
        """Leave ``WAITING`` for ``to`` (done elsewhere, or abandoned); False if it had left."""
        pool = self.pool
        with pool.lock:
            if self.state != WAITING:
                return False
            pool.pending -= 1
            self.state = to
        return True

    def _record_wait(self, wait_ns: int, attributes: dict[str, Any]) -> bool:
        """Record the wait, however it ended; True if long enough for a span of its own."""
        telemetry = self.telemetry
        long_wait = wait_ns >= telemetry.wait_threshold_ns
        # An exemplar links the wait histogram to this trace; worth its cost only
        # for a wait long enough to get a span of its own.
        record(telemetry.wait, wait_ns / _NS_PER_S, attributes, self.parent if long_wait else None)
        if self.rollup is not None:
            self.rollup.add_wait(wait_ns)
        return long_wait

    # --- nested offloads (see _nested) --------------------------------------------

    def is_waiting(self) -> bool:
        return self.state == WAITING

    def is_running(self) -> bool:
        return self.state == RUNNING

    def function_name(self) -> str:
        return function_name(self.func)

    def flag_deadlock(self) -> bool:
        """Report this waiting task as stuck in a self-deadlock; False if already done."""
        with self.pool.lock:
            if self.state != WAITING or self.flagged:
                return False
            self.flagged = True
        try:
            if self.traced:
                offset = _epoch_offset_ns()
                span = self._wait_span(offset)
                span.set_attribute(semconv.ATTR_ERROR_TYPE, semconv.ERROR_NESTED_DEADLOCK)
                span.set_status(
                    Status(
                        StatusCode.ERROR,
                        f"every worker of {self.pool.name!r} runs a task that submitted "
                        "work to the same pool: none can start",
                    )
                )
                span.end(end_time=_monotonic_ns() + offset)
        except Exception:
            report_internal_error("reporting a nested-offload deadlock")
        return True

    # --- spans ------------------------------------------------------------------

    def _may_span(self) -> bool:
        return self.rollup is None or self.rollup.take_span()

    def _start_spans(self, now: int, waited: bool, attach: bool, awaited: bool) -> object | None:
        telemetry = self.telemetry
        # Read once, kept for the run span's end: two readings differ by however
        # long the thread was switched out between their two clock reads, and the
        # run span would end early by that much (found by the schedule tests).
        offset = self.offset = _epoch_offset_ns()
        long_wait = now - self.submitted >= telemetry.wait_threshold_ns
        if waited and long_wait and not self.flagged and self._may_span():
            if awaited:
                # built by whoever settles the task's spans, with what is true now
                self.wait_span_due = self._wait_attributes()
            else:
                self._wait_span(offset).end(end_time=now + offset)
        if not (telemetry.run_spans and self._may_span()):
            return context.attach(self.parent) if attach else None
        span = self.run_span = self._run_span(now + offset)
        return context.attach(context_inside(span, self.parent)) if attach else None

    def _settle_spans(self, exc: BaseException | None) -> None:
        """Build the wait span left due and end the run span, once, at the task's times.

        Each part reports its own failure under the name it has where it is not
        left to the loop (the start, the end of a task), and never raises.
        """
        attributes, self.wait_span_due = self.wait_span_due, None
        if attributes is not None:
            try:
                self._wait_span(self.offset, attributes).end(end_time=self.started + self.offset)
            except Exception:
                report_internal_error("recording the start of a task")
        span = self.run_span
        if span is not None:
            self.run_span = None
            try:
                if exc is not None:
                    mark_error(span, exc)
                span.end(end_time=self.ended + self.offset)
            except Exception:
                report_internal_error("recording the end of a task")

    def _span_attributes(self) -> dict[str, Any]:
        """What both spans of the task carry; made once (the wait span adds to a copy)."""
        attributes = self.attributes
        if attributes is not None:
            return attributes
        attributes = dict(self.pool.attributes)
        attributes[semconv.ATTR_EXECUTOR_NAME] = self.pool.name  # unbounded names belong here
        if self.func is not None:
            attributes[semconv.ATTR_CODE_FUNCTION_NAME] = function_name(self.func)
        if self.outer is not None:
            attributes[semconv.ATTR_EXECUTOR_TASK_NESTED] = True
        route = self.rollup.route if self.rollup is not None else None
        if route is not None:
            attributes[semconv.ATTR_HTTP_ROUTE] = route  # which route's work waited
        self.attributes = attributes
        return attributes

    def _wait_attributes(self) -> dict[str, Any]:
        """The wait span's attributes, the pool's cap as it is when the wait ends."""
        attributes = dict(self._span_attributes())
        attributes[semconv.ATTR_EXECUTOR_WORKER_LIMIT] = self.pool.limit()
        attributes[semconv.ATTR_EXECUTOR_WORKER_BUSY] = self.busy_at_submit
        attributes[semconv.ATTR_EXECUTOR_TASK_PENDING] = self.pending_at_submit
        return attributes

    def _wait_span(self, offset: int, attributes: dict[str, Any] | None = None) -> Span:
        return self.telemetry.tracer.start_span(
            semconv.SPAN_WAIT,
            context=self.parent,
            start_time=self.submitted + offset,
            attributes=self._wait_attributes() if attributes is None else attributes,
        )

    def _run_span(self, start_epoch_ns: int) -> Span:
        return self.telemetry.tracer.start_span(
            semconv.SPAN_RUN,
            context=self.parent,
            start_time=start_epoch_ns,
            attributes=self._span_attributes(),
        )


def mark_error(span: Span, exc: BaseException, kind: str | None = None) -> None:
    """The one error policy of poolscope's spans: the exception event, ``error.type``
    (``kind``, else the exception's class), and an error status described
    ``"{type}: {message}"``, as the SDK's own ``start_as_current_span`` sets it
    for a span ended by an exception, so that a failure reads alike on every
    span of the trace."""
    span.record_exception(exc)
    span.set_attribute(semconv.ATTR_ERROR_TYPE, kind or error_type(exc))
    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
