"""Caps the application adds itself: ``asyncio.Semaphore`` and anyio's ``CapacityLimiter``.

"At most 16 LLM calls at once" is a pool too: waiting to acquire is the queue
wait, holding is the run. Used as ``async with``, the hold is an
``executor.run`` span that is current inside the block, so the calls made
while holding become its children.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

from .. import semconv
from .._core import _state
from .._core._pools import Pool, register
from .._core._task import Task
from .._safety import report_internal_error

__all__ = [
    "InstrumentedCapacityLimiter",
    "InstrumentedSemaphore",
    "semaphore_pool",
]


def _current_holder() -> object:
    try:
        return asyncio.current_task() or "no-task"
    except RuntimeError:
        return "no-loop"


class _Holds:
    """Tasks holding the cap right now, per holder, to pair releases with acquires."""

    __slots__ = ("_by_holder", "pool")

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._by_holder: dict[object, list[tuple[Task, object | None]]] = {}

    async def acquire(
        self, acquire: Callable[[], Awaitable[Any]], holder: object, *, attach: bool
    ) -> None:
        telemetry = _state.state.telemetry
        if telemetry is None:
            await acquire()
            return
        try:
            task = Task(self.pool, telemetry, None)
        except Exception:
            report_internal_error("acquiring an instrumented cap")
            await acquire()
            return
        try:
            await acquire()
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            task.abandon(cancelled=cancelled, error=None if cancelled else exc)
            raise
        token = task.start(attach=attach)
        self._by_holder.setdefault(holder, []).append((task, token))

    def acquired_nowait(self, holder: object) -> None:
        telemetry = _state.state.telemetry
        if telemetry is None:
            return
        try:
            task = Task(self.pool, telemetry, None)
        except Exception:
            report_internal_error("acquiring an instrumented cap")
            return
        self._by_holder.setdefault(holder, []).append((task, task.start(attach=False)))

    def released(self, holder: object, exc: BaseException | None = None) -> None:
        by_holder = self._by_holder
        held = by_holder.get(holder)
        if held:
            task, token = held.pop()
            key = holder
        else:
            # Released by a task that holds nothing (allowed for semaphores):
            # close the oldest hold taken with acquire(). A hold taken with
            # ``async with`` has its context attached in its own task and is
            # closed only by that task, so it is never taken here.
            found = next(
                ((k, i) for k, v in by_holder.items() for i, (_, t) in enumerate(v) if t is None),
                None,
            )
            if found is None:
                return  # nothing we can pair: acquired before instrumentation, or raw
            key, index = found
            held = by_holder[key]
            task, token = held.pop(index)
        if not held:
            del by_holder[key]
        task.finish(token, exc)


class _InstrumentedCap:
    """What both wrappers share: ``async with``, and release paired with its acquire."""

    __slots__ = ("_holds", "wrapped")

    def __init__(self, wrapped: Any, pool: Pool) -> None:
        self.wrapped = wrapped
        self._holds = _Holds(pool)

    def release(self) -> None:
        self.wrapped.release()
        self._holds.released(_current_holder())

    async def __aenter__(self) -> None:
        await self._holds.acquire(self.wrapped.acquire, _current_holder(), attach=True)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.wrapped.release()
        self._holds.released(_current_holder(), exc)


class InstrumentedSemaphore(_InstrumentedCap):
    """An ``asyncio.Semaphore`` whose waits and holds are recorded as a pool.

    Made by :func:`poolscope.instrument_semaphore`; use it where you used the
    semaphore (``async with``, ``acquire()``/``release()``).
    """

    __slots__ = ()
    wrapped: asyncio.Semaphore

    async def acquire(self) -> bool:
        await self._holds.acquire(self.wrapped.acquire, _current_holder(), attach=False)
        return True

    def locked(self) -> bool:
        return self.wrapped.locked()


class InstrumentedCapacityLimiter(_InstrumentedCap):
    """An anyio ``CapacityLimiter`` whose waits and holds are recorded as a pool.

    Made by :func:`poolscope.instrument_limiter`. It can be passed as
    ``limiter=`` to ``anyio.to_thread.run_sync``; the thread path then records
    each task once, with the limiter's name. ``total_tokens`` can be changed
    at run time and the reported limit follows.
    """

    __slots__ = ()

    @property
    def total_tokens(self) -> float:
        return float(self.wrapped.total_tokens)

    @total_tokens.setter
    def total_tokens(self, value: float) -> None:
        self.wrapped.total_tokens = value

    @property
    def borrowed_tokens(self) -> int:
        return int(self.wrapped.borrowed_tokens)

    @property
    def available_tokens(self) -> float:
        return float(self.wrapped.available_tokens)

    def statistics(self) -> Any:
        return self.wrapped.statistics()

    async def acquire(self) -> None:
        await self._holds.acquire(self.wrapped.acquire, _current_holder(), attach=False)

    def acquire_nowait(self) -> None:
        self.wrapped.acquire_nowait()
        self._holds.acquired_nowait(_current_holder())

    async def acquire_on_behalf_of(self, borrower: object) -> None:
        await self._holds.acquire(
            lambda: self.wrapped.acquire_on_behalf_of(borrower), borrower, attach=False
        )

    def release_on_behalf_of(self, borrower: object) -> None:
        self.wrapped.release_on_behalf_of(borrower)
        self._holds.released(borrower)


def semaphore_pool(semaphore: asyncio.Semaphore, name: str, limit: int | None) -> Pool:
    if limit is None:
        # A BoundedSemaphore remembers its cap; a plain one is assumed fresh.
        limit = int(getattr(semaphore, "_bound_value", None) or semaphore._value)
    cap = limit
    pool = register(semaphore, name, semconv.EXECUTOR_TYPE_SEMAPHORE, lambda: cap)
    if pool.name != name:
        pool.rename(name)
    return pool
