"""anyio's worker threads: ``anyio.to_thread.run_sync`` and everything built on it.

Starlette and FastAPI send sync endpoints, sync dependencies, sync streaming
chunks, file I/O and background tasks through ``anyio.to_thread.run_sync``,
which they bind by name at import time. poolscope therefore hooks one level
lower, at the asyncio backend's ``run_sync_in_worker_thread``, which every
caller reaches however it imported ``run_sync``. Waiting for a token of the
``CapacityLimiter`` is the queue wait.
"""

from __future__ import annotations

import functools
import importlib
import weakref
from collections.abc import Callable
from typing import Any

from .. import semconv
from .._config import PATH_ANYIO
from .._core import _state
from .._core._patch import Patch
from .._core._pools import Pool, pool_for, register
from .._core._task import Task
from .._safety import report_internal_error
from ._caps import InstrumentedCapacityLimiter

__all__ = ["patches", "register_limiter"]


def register_limiter(limiter: Any, name: str | None, *, default: bool = False) -> Pool:
    """The pool of an anyio ``CapacityLimiter``; its limit is read live (limiters resize)."""
    ref = weakref.ref(limiter)

    def read_limit() -> float:
        current = ref()
        return 0.0 if current is None else float(current.total_tokens)

    if name is None and default:
        name = semconv.POOL_ANYIO_DEFAULT
    pool = register(limiter, name, semconv.EXECUTOR_TYPE_LIMITER, read_limit)
    if name is not None and pool.name != name and not default:
        pool.rename(name)
    return pool


def _unwrap_limiter(limiter: Any) -> Any:
    # An InstrumentedCapacityLimiter passed as limiter= is measured here, per
    # task; hand anyio the real limiter so the wait is not counted twice.
    if isinstance(limiter, InstrumentedCapacityLimiter):
        return limiter.wrapped
    return limiter


def _pool_of(backend: Any, limiter: Any) -> Pool | None:
    if limiter is None:
        default = backend.current_default_thread_limiter()
        return pool_for(default) or register_limiter(default, None, default=True)
    pool = pool_for(limiter)
    if pool is None and PATH_ANYIO in _state.state.auto:
        default = limiter is backend.current_default_thread_limiter()
        pool = register_limiter(limiter, None, default=default)
    return pool


def _wrap_run_sync_in_worker_thread(original: Any) -> Any:
    bound_original: Callable[..., Any] = original.__func__

    @functools.wraps(bound_original)
    async def run_sync_in_worker_thread(
        cls: Any,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        abandon_on_cancel: bool = False,
        limiter: Any = None,
    ) -> Any:
        telemetry = _state.state.telemetry
        if telemetry is None:
            return await bound_original(cls, func, args, abandon_on_cancel, limiter)
        task = None
        try:
            limiter = _unwrap_limiter(limiter)
            pool = (
                _pool_of(cls, limiter)
                if PATH_ANYIO in _state.state.auto or limiter is not None
                else None
            )
            if pool is None:
                return await bound_original(cls, func, args, abandon_on_cancel, limiter)
            task = Task(pool, telemetry, func)
            work = task.wrap(func)
            task.awaited = task.traced  # its spans are settled here, by task.resumed()
        except Exception:
            if task is not None:
                task.discard()
            report_internal_error("anyio.to_thread.run_sync")
            return await bound_original(cls, func, args, abandon_on_cancel, limiter)
        try:
            result = await bound_original(cls, work, args, abandon_on_cancel, limiter)
        except BaseException as exc:
            # Still waiting means the worker never picked it up.
            cancelled = isinstance(exc, cls.cancelled_exception_class())
            task.abandon(cancelled=cancelled, error=None if cancelled else exc)
            task.resumed()  # the function raised: its result was still picked up
            raise
        task.resumed()
        return result

    return classmethod(run_sync_in_worker_thread)


def patches() -> list[Patch]:
    try:
        backend = importlib.import_module("anyio._backends._asyncio").AsyncIOBackend
    except (ImportError, AttributeError):  # no anyio, or anyio 3 (no AsyncIOBackend)
        return []
    original = backend.__dict__.get("run_sync_in_worker_thread")
    if not isinstance(original, classmethod):
        return []
    return [Patch(backend, "run_sync_in_worker_thread", _wrap_run_sync_in_worker_thread(original))]
