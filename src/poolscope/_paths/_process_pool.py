"""``concurrent.futures.ProcessPoolExecutor``: wait and run measured across the process boundary.

The submitted function is wrapped in a picklable :class:`_TimedCall` that
stamps start and end inside the worker process and ships them back with the
result, or with the exception it raised. The caller gets a
:class:`_ResultFuture` that unwraps them, so it sees exactly the result or
exception of its function (with the remote traceback as ``__cause__``, as
``ProcessPoolExecutor`` gives it).

The worker's start is only learnt when the result comes back, so the live
busy/pending gauges of a process pool are derived from tasks in flight
(see ``Pool.derived``); the histograms and spans are exact.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from opentelemetry import context, propagate

from .. import semconv
from .._config import PATH_PROCESS_POOL
from .._core._patch import Patch
from .._core._pools import Pool, register
from .._core._task import Task
from ._executor import submit_recorded

__all__ = ["patches", "register_executor"]

try:  # how the executor itself sends a worker's exception back, remote traceback and all
    from concurrent.futures.process import _ExceptionWithTraceback
except ImportError:  # pragma: no cover - a future Python that moved it: the bare exception

    def _ExceptionWithTraceback(exc: BaseException, tb: Any) -> BaseException:  # type: ignore[no-redef]
        return exc


class _Timed:
    """What a wrapped call returns across the pipe: its result or error, and its timing.

    The error travels as a value, not raised: its timing then survives any
    pickling the exception class does (a custom ``__reduce__`` drops attributes).
    """

    __slots__ = ("error", "result", "run_ns", "started_epoch_ns")

    def __init__(self, result: Any, started_epoch_ns: int, run_ns: int, error: Any = None) -> None:
        self.result = result
        self.started_epoch_ns = started_epoch_ns
        self.run_ns = run_ns
        self.error = error

    def __reduce__(self) -> tuple[Any, ...]:
        return (_Timed, (self.result, self.started_epoch_ns, self.run_ns, self.error))


class _TimedCall:
    """Runs in the worker process: stamps start and end, joins the caller's trace."""

    __slots__ = ("carrier", "fn")

    def __init__(self, fn: Callable[..., Any], carrier: dict[str, str]) -> None:
        self.fn = fn
        self.carrier = carrier

    def __reduce__(self) -> tuple[Any, ...]:
        return (_TimedCall, (self.fn, self.carrier))

    def __call__(self, /, *args: Any, **kwargs: Any) -> _Timed:
        started_epoch = time.time_ns()
        started = time.monotonic_ns()
        token = context.attach(propagate.extract(self.carrier)) if self.carrier else None
        try:
            result = self.fn(*args, **kwargs)
        except BaseException as exc:
            run_ns = time.monotonic_ns() - started
            # Wrapped as the executor wraps what a worker raises: unpickled, it is
            # the exception again, with the remote traceback as its __cause__.
            remote = _ExceptionWithTraceback(exc, exc.__traceback__)  # type: ignore[arg-type]
            return _Timed(None, started_epoch, run_ns, remote)
        finally:
            if token is not None:
                context.detach(token)
        return _Timed(result, started_epoch, time.monotonic_ns() - started)


class _ResultFuture(Future[Any]):
    """The future handed to the caller; cancelling it cancels the real one.

    It lets go of the real one once settled: the real future's callback holds
    this one, and a cycle between them would keep the submitted callable (and
    what it is bound to) alive until the cyclic garbage collector ran, where
    without poolscope it goes when the work item is done.
    """

    def __init__(self, inner: Future[Any]) -> None:
        super().__init__()
        self._inner: Future[Any] | None = inner

    def cancel(self) -> bool:
        inner = self._inner
        if inner is None:  # settled: as done as the real one
            return super().cancel()
        if inner.cancel():
            return super().cancel()
        return False


def _settle(task: Task, outer: _ResultFuture, inner: Future[Any]) -> None:
    try:
        _settle_outcome(task, outer, inner)
    finally:
        outer._inner = None
        task.release_callable()


def _settle_outcome(task: Task, outer: Future[Any], inner: Future[Any]) -> None:
    if inner.cancelled():
        task.abandon(cancelled=True)
        Future.cancel(outer)
        # concurrent.futures.wait() only counts a cancelled future as done once
        # it was "notified", which executors do for the futures they own.
        outer.set_running_or_notify_cancel()
        return
    error = inner.exception()
    if error is not None:  # never ran, or its outcome could not be sent back
        task.abandon(cancelled=False, error=error)
        outer.set_exception(error)
        return
    timed = inner.result()
    if isinstance(timed, _Timed):
        task.finish_remote(timed.started_epoch_ns, timed.run_ns, timed.error)
        if timed.error is not None:
            outer.set_exception(timed.error)
        else:
            outer.set_result(timed.result)
    else:  # pragma: no cover - only if another wrapper changed the result
        task.discard()
        outer.set_result(timed)


def register_executor(executor: ProcessPoolExecutor, name: str | None) -> Pool:
    max_workers: int = executor._max_workers  # type: ignore[attr-defined]
    pool = register(
        executor,
        name,
        semconv.EXECUTOR_TYPE_PROCESS_POOL,
        lambda: max_workers,
        derived=True,
    )
    if name is not None and pool.name != name:
        pool.rename(name)
    return pool


def _timed_call(task: Task, fn: Callable[..., Any]) -> _TimedCall:
    """``fn`` as the worker process runs it: timed there, in the submitter's trace."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, task.parent)
    return _TimedCall(fn, carrier)


def _result_future(task: Task, inner: Future[Any]) -> Future[Any]:
    outer = _ResultFuture(inner)
    inner.add_done_callback(functools.partial(_settle, task, outer))
    return outer


def _wrap_submit(original: Callable[..., Future[Any]]) -> Callable[..., Future[Any]]:
    @functools.wraps(original)
    def submit(
        self: ProcessPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        return submit_recorded(
            original,
            self,
            fn,
            args,
            kwargs,
            path=PATH_PROCESS_POOL,
            register=register_executor,
            prepare=_timed_call,
            where="ProcessPoolExecutor.submit",
            settle=_result_future,
        )

    return submit


def patches() -> list[Patch]:
    return [Patch(ProcessPoolExecutor, "submit", _wrap_submit(ProcessPoolExecutor.submit))]
