"""``concurrent.futures.ThreadPoolExecutor``, and with it the event loop's default executor.

``loop.run_in_executor`` and ``asyncio.to_thread`` end in ``executor.submit``,
and ``Executor.map`` calls ``submit`` too, so one class-level patch covers
every thread pool. The task's wait is submit → a worker thread picks it up.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import importlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from .. import semconv
from .._config import PATH_THREAD_POOL
from .._core._patch import Patch
from .._core._pools import Pool, register, thread_name_prefix_name
from .._core._task import Task
from .._safety import report_internal_error
from ._executor import run_in_executor_call, submit_recorded

__all__ = [
    "patches",
    "register_executor",
    "run_in_executor_call",
]


# Python 3.14's InterpreterPoolExecutor subclasses ThreadPoolExecutor but runs
# tasks in subinterpreters, where poolscope's wrapper closure cannot go.
_PASS_THROUGH: frozenset[type] = frozenset(
    cls
    for cls in (getattr(concurrent.futures, "InterpreterPoolExecutor", None),)
    if isinstance(cls, type)
)


def _automatic_name(executor: ThreadPoolExecutor) -> str | None:
    """The loop-default name, or the prefix a person chose; None: generate one."""
    if run_in_executor_call.default:
        return semconv.POOL_ASYNCIO_DEFAULT
    loop = asyncio.events._get_running_loop()
    if loop is not None and getattr(loop, "_default_executor", None) is executor:
        return semconv.POOL_ASYNCIO_DEFAULT
    prefix: str | None = getattr(executor, "_thread_name_prefix", None)
    if prefix == "asyncio":  # what asyncio names the default executor it creates
        return semconv.POOL_ASYNCIO_DEFAULT
    return thread_name_prefix_name(prefix)


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


def _settled_by_done_callback(task: Task, future: Future[Any]) -> Future[Any]:
    future.add_done_callback(task.on_future_done)
    return future


def _wrap_submit(original: Callable[..., Future[Any]]) -> Callable[..., Future[Any]]:
    @functools.wraps(original)
    def submit(
        self: ThreadPoolExecutor, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        if type(self) in _PASS_THROUGH:
            return original(self, fn, *args, **kwargs)
        return submit_recorded(
            original,
            self,
            fn,
            args,
            kwargs,
            path=PATH_THREAD_POOL,
            register=register_executor,
            prepare=Task.wrap,
            where="ThreadPoolExecutor.submit",
            settle=_settled_by_done_callback,
        )

    return submit


def _wrap_run_in_executor(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def run_in_executor(self: Any, executor: Any, func: Callable[..., Any], *args: Any) -> Any:
        call = run_in_executor_call
        if call.inside:  # re-entered (a subclass calling super): the outer call handles it
            return original(self, executor, func, *args)
        call.inside = True
        call.default = executor is None
        try:
            future = original(self, executor, func, *args)
        except BaseException:
            task = call.task
            if task is not None:
                task.stop_awaiting()  # nothing will await it: the worker settles its spans
            raise
        finally:
            call.inside = call.default = False
            task, call.task = call.task, None
        if task is not None:
            try:
                future.add_done_callback(task.on_awaited_future_done)
            except Exception:
                task.stop_awaiting()
                report_internal_error("loop.run_in_executor")
        return future

    return run_in_executor


def patches() -> list[Patch]:
    loops: list[Any] = [asyncio.BaseEventLoop]
    with contextlib.suppress(ImportError):
        loops.append(importlib.import_module("uvloop").Loop)
    found = [Patch(ThreadPoolExecutor, "submit", _wrap_submit(ThreadPoolExecutor.submit))]
    found.extend(
        Patch(loop, "run_in_executor", _wrap_run_in_executor(loop.run_in_executor))
        for loop in loops
    )
    return found
