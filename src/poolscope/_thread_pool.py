"""``concurrent.futures.ThreadPoolExecutor``, and with it the event loop's default executor.

``loop.run_in_executor`` and ``asyncio.to_thread`` end in ``executor.submit``,
and ``Executor.map`` calls ``submit`` too, so one class-level patch covers
every thread pool. The task's wait is submit → a worker thread picks it up.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from . import _runtime, semconv
from ._config import PATH_THREAD_POOL
from ._patch import Patch
from ._pools import Pool, generated_name, pool_for, register, thread_name_prefix_name
from ._safety import report_internal_error
from ._task import Task

__all__ = ["patches", "register_executor"]

# uvloop keeps its default executor out of reach of Python code, so its
# run_in_executor(None, ...) raises this flag around the submit it makes.
_default_executor_hint = threading.local()


def _automatic_name(executor: ThreadPoolExecutor) -> str:
    if getattr(_default_executor_hint, "active", False):
        return semconv.POOL_ASYNCIO_DEFAULT
    loop = asyncio.events._get_running_loop()
    if loop is not None and getattr(loop, "_default_executor", None) is executor:
        return semconv.POOL_ASYNCIO_DEFAULT
    prefix: str | None = getattr(executor, "_thread_name_prefix", None)
    if prefix == "asyncio":  # what asyncio names the default executor it creates
        return semconv.POOL_ASYNCIO_DEFAULT
    return thread_name_prefix_name(prefix) or generated_name(semconv.EXECUTOR_TYPE_THREAD_POOL)


def register_executor(executor: ThreadPoolExecutor, name: str | None) -> Pool:
    max_workers: int = executor._max_workers
    pool = register(
        executor,
        name or _automatic_name(executor),
        semconv.EXECUTOR_TYPE_THREAD_POOL,
        lambda: max_workers,
    )
    if name is not None and pool.name != name:
        pool.rename(name)
    return pool


def _wrap_submit(original: Callable[..., Future[Any]]) -> Callable[..., Future[Any]]:
    @functools.wraps(original)
    def submit(
        self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        telemetry = _runtime.state.telemetry
        if telemetry is None:
            return original(self, fn, *args, **kwargs)
        try:
            pool = pool_for(self)
            if pool is None:
                if PATH_THREAD_POOL not in _runtime.state.auto:
                    return original(self, fn, *args, **kwargs)
                pool = register_executor(self, None)
            task = Task(pool, telemetry, fn)
            work = task.wrap(fn)
        except Exception:
            report_internal_error("ThreadPoolExecutor.submit")
            return original(self, fn, *args, **kwargs)
        try:
            future = original(self, work, *args, **kwargs)
        except BaseException:
            task.discard()
            raise
        future.add_done_callback(task.on_future_done)
        return future

    return submit


def _wrap_uvloop_run_in_executor(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def run_in_executor(self: Any, executor: Any, func: Callable[..., Any], *args: Any) -> Any:
        if executor is not None:
            return original(self, executor, func, *args)
        _default_executor_hint.active = True
        try:
            return original(self, None, func, *args)
        finally:
            _default_executor_hint.active = False

    return run_in_executor


def patches() -> list[Patch]:
    found = [Patch(ThreadPoolExecutor, "submit", _wrap_submit(ThreadPoolExecutor.submit))]
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return found
    found.append(
        Patch(
            uvloop.Loop,
            "run_in_executor",
            _wrap_uvloop_run_in_executor(uvloop.Loop.run_in_executor),
        )
    )
    return found
