"""What every ``Executor.submit`` patch shares: the guard that keeps the host's call
intact, and what ``loop.run_in_executor`` tells the ``submit`` it makes.

The guard's rule: if recording a task fails, the task is submitted exactly as
without poolscope (and the failure reported once); an error of the submit
itself (a shut-down pool, a full queue) is the caller's, raised unchanged.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

from .._core._pools import Pool
from .._core._task import Task, begin
from .._safety import report_internal_error

__all__ = ["run_in_executor_call", "submit_recorded"]

ExecutorT = TypeVar("ExecutorT", bound=Executor)


class _RunInExecutorCall(threading.local):
    """What ``run_in_executor`` tells the ``submit`` it makes, and learns back.

    ``default``: the call was ``run_in_executor(None, ...)``, so the executor is
    the loop's default (uvloop keeps it out of reach of Python code).
    ``task``: the task ``submit`` created, to time the awaiting coroutine's resume
    (and to settle its spans then).
    """

    inside = False
    default = False
    task: Task | None = None


run_in_executor_call = _RunInExecutorCall()


def submit_recorded(
    original: Callable[..., Future[Any]],
    executor: ExecutorT,
    fn: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    path: str,
    register: Callable[[ExecutorT, str | None], Pool],
    prepare: Callable[[Task, Callable[..., Any]], Callable[..., Any]],
    settle: Callable[[Task, Future[Any]], Future[Any]],
    where: str,
) -> Future[Any]:
    """``original(executor, fn, *args, **kwargs)``, with the task recorded.

    ``prepare`` makes the callable submitted in place of ``fn``; ``settle``
    takes the future ``original`` returned and gives the caller's; ``where``
    names the patched method in the one report of a failure.
    """
    task = None
    try:
        task = begin(executor, fn, path, register)
        if task is None:
            return original(executor, fn, *args, **kwargs)
        work = prepare(task, fn)
        # awaited on the loop: its spans are settled there (see Task.resumed)
        task.awaited = task.traced and run_in_executor_call.inside
    except Exception:
        if task is not None:
            task.discard()
        report_internal_error(where)
        return original(executor, fn, *args, **kwargs)
    try:
        future = original(executor, work, *args, **kwargs)
    except BaseException:
        task.discard()
        raise
    result = settle(task, future)
    if run_in_executor_call.inside:
        run_in_executor_call.task = task
    return result
