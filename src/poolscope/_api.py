"""The functions of the public API; ``poolscope/__init__.py`` re-exports them."""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any, TypeVar

from . import _runtime
from ._config import PATH_ANYIO, PATH_PROCESS_POOL, PATH_THREAD_POOL
from ._errors import ConfigurationError
from ._instrumentor import PoolscopeInstrumentor
from ._paths._anyio import register_limiter
from ._paths._caps import InstrumentedCapacityLimiter, InstrumentedSemaphore, semaphore_pool
from ._paths._process_pool import register_executor as register_process_executor
from ._paths._thread_pool import register_executor

__all__ = [
    "instrument",
    "instrument_executor",
    "instrument_limiter",
    "instrument_semaphore",
    "uninstrument",
]

ExecutorT = TypeVar("ExecutorT", bound=Executor)


def instrument(**kwargs: Any) -> None:
    """Record every pool of this process. Idempotent; see :class:`PoolscopeInstrumentor`.

    Invalid settings raise :class:`ConfigurationError` here, not later.
    """
    instrumentor = PoolscopeInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        return
    instrumentor.instrument(**kwargs)


def uninstrument() -> None:
    """Stop recording and restore every patched callable. Idempotent."""
    instrumentor = PoolscopeInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    _runtime.deactivate()  # also ends instrument_executor()-only recording


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise ConfigurationError(f"name must be a non-empty string, got {name!r}")
    return name


def instrument_executor(executor: ExecutorT, *, name: str | None = None) -> ExecutorT:
    """Record ``executor`` under ``name`` (works with or without :func:`instrument`).

    Returns the executor itself, so it can wrap the constructor call::

        pdf_pool = poolscope.instrument_executor(ThreadPoolExecutor(4), name="pdf")
    """
    if name is not None:
        _check_name(name)
    if isinstance(executor, ThreadPoolExecutor):
        _runtime.ensure_path(PATH_THREAD_POOL)
        register_executor(executor, name)
    elif isinstance(executor, ProcessPoolExecutor):
        _runtime.ensure_path(PATH_PROCESS_POOL)
        register_process_executor(executor, name)
    else:
        raise ConfigurationError(
            "instrument_executor() takes a ThreadPoolExecutor or ProcessPoolExecutor, "
            f"got {type(executor).__qualname__}"
        )
    return executor


def instrument_limiter(limiter: Any, *, name: str) -> InstrumentedCapacityLimiter:
    """Wrap an anyio ``CapacityLimiter`` so its waits and holds are recorded as pool ``name``."""
    _check_name(name)
    if isinstance(limiter, InstrumentedCapacityLimiter):
        limiter = limiter.wrapped
    if not all(hasattr(limiter, attr) for attr in ("total_tokens", "acquire", "release")):
        raise ConfigurationError(
            f"instrument_limiter() takes an anyio.CapacityLimiter, got {type(limiter).__qualname__}"
        )
    _runtime.ensure_path(PATH_ANYIO)
    return InstrumentedCapacityLimiter(limiter, register_limiter(limiter, name))


def instrument_semaphore(
    semaphore: asyncio.Semaphore, *, name: str, limit: int | None = None
) -> InstrumentedSemaphore:
    """Wrap an ``asyncio.Semaphore`` so its waits and holds are recorded as pool ``name``.

    ``limit`` is the semaphore's initial value; it is read from the semaphore
    when not given, which is right for a fresh (or bounded) semaphore.
    """
    _check_name(name)
    if isinstance(semaphore, InstrumentedSemaphore):
        semaphore = semaphore.wrapped
    if not isinstance(semaphore, asyncio.Semaphore):
        raise ConfigurationError(
            f"instrument_semaphore() takes an asyncio.Semaphore, got {type(semaphore).__qualname__}"
        )
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigurationError(f"limit must be a positive int, got {limit!r}")
    _runtime.ensure_telemetry()
    return InstrumentedSemaphore(semaphore, semaphore_pool(semaphore, name, limit))
