"""Nested offloads, and the self-deadlock they cause in a full pool.

A task that submits work to its own pool and waits for the result holds one
worker while it waits for another. When every worker does that at once, no
queued task can ever start: the pool is deadlocked, and the requests behind it
hang without an error. Nothing ends, so no span would ever be exported.

Each task submitted from a worker of the same pool is marked nested (spans get
``executor.task.nested`` = true) and watched while it waits: poolscope's
background thread, while nested tasks wait, looks for the deadlock's
signature: the pool is full, and every busy worker runs a task that has nested work still
waiting, for longer than :data:`DEADLOCK_AFTER_S`, and is itself blocked
waiting (in ``threading.Condition.wait``, where ``Future.result`` waits). Then each of those waiting
tasks gets its wait span at once, ended now, with an error status and
``error.type`` = ``nested_offload_deadlock``, and a warning is logged once per
pool. If the pool recovers (say the outer tasks time out), the tasks start and
are recorded as usual, without a second wait span.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING, Final

from .._safety import logger
from . import _background

if TYPE_CHECKING:
    from ._pools import Pool
    from ._task import Task

__all__ = ["DEADLOCK_AFTER_S", "watch"]

DEADLOCK_AFTER_S: Final = 1.0
"""How long every worker must have been stuck behind nested work before it is called a deadlock."""

_CHECK_INTERVAL_S: Final = 0.1


class _Watch:
    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.lock = threading.Lock()
        self.waiting: list[Task] = []
        self.warned: set[str] = set()

    def add(self, task: Task) -> None:
        with self.lock:
            self.waiting.append(task)
        if _background.state.restart_pending:
            _background.ensure_running()

    def watching(self) -> bool:
        return bool(self.waiting)

    def check(self) -> None:
        with self.lock:
            self.waiting = [task for task in self.waiting if task.is_waiting()]
            waiting = list(self.waiting)
        if waiting:
            self._check(waiting)

    def _check(self, waiting: list[Task]) -> None:
        cutoff = time.monotonic_ns() - int(DEADLOCK_AFTER_S * 1e9)
        by_pool: dict[int, list[Task]] = {}
        for task in waiting:
            by_pool.setdefault(id(task.pool), []).append(task)
        for tasks in by_pool.values():
            pool = tasks[0].pool
            if _deadlocked(pool, tasks, cutoff):
                self._report(pool, tasks)

    def _report(self, pool: Pool, tasks: list[Task]) -> None:
        flagged = [task for task in tasks if task.flag_deadlock()]
        if not flagged or pool.name in self.warned:
            return
        self.warned.add(pool.name)
        logger.warning(
            "poolscope: pool %r looks deadlocked: all %s workers run tasks that submitted work "
            "to the same pool and it cannot start (first: %s); give nested work its own pool",
            pool.name,
            pool.limit(),
            flagged[0].function_name(),
        )


def _deadlocked(pool: Pool, tasks: list[Task], cutoff: int) -> bool:
    """Every worker is busy, and each runs a task whose nested work waits since
    ``cutoff`` while the task itself is blocked waiting (a full pool of tasks that
    fired off nested work and carry on is only saturated)."""
    with pool.lock:
        busy = pool.busy
    if busy == 0 or busy < pool.limit():
        return False
    frames = sys._current_frames()
    holders = {
        id(task.outer)
        for task in tasks
        if task.submitted <= cutoff
        and task.outer is not None
        and task.outer.is_running()
        and _blocked(frames.get(task.outer_thread))
    }
    return busy <= len(holders)


_THREADING_FILE: Final = threading.__file__


def _blocked(frame: FrameType | None) -> bool:
    """The thread is inside ``threading.Condition.wait``: what ``Future.result``,
    ``concurrent.futures.wait``, ``Event.wait`` and ``queue.Queue.get`` block in."""
    code = frame.f_code if frame is not None else None
    return code is not None and code.co_name == "wait" and code.co_filename == _THREADING_FILE


_watch = _Watch()


def watch(task: Task) -> None:
    """Watch a nested task until it starts or is abandoned."""
    _watch.add(task)


def _reset_after_fork() -> None:
    _watch.reset()  # the parent's tasks are not ours


os.register_at_fork(after_in_child=_reset_after_fork)
_background.every(_CHECK_INTERVAL_S, _watch.check, wanted=_watch.watching)
