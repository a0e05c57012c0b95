"""Where the CPU went: the process, each thread, the run queue, garbage collection.

The readings that tell a starved pool from a process out of CPU, and a loop
that ran Python from one that waited for the GIL or for a core:

* :func:`process_cpu`: the process's user and system CPU seconds (``os.times``).
* :class:`ThreadClock`: one thread's CPU seconds, read from any thread
  (``pthread_getcpuclockid``), and on Linux the seconds it was runnable but
  waited for a CPU (``/proc/self/task/<tid>/schedstat``).
* :func:`thread_cpu`: every Python thread's CPU seconds, by name.
* :func:`machine_cpu`: the whole machine's busy and total CPU seconds (Linux).
* :data:`gc_pauses`: garbage collections of at least a millisecond, timed
  through ``gc.callbacks`` while an event loop is monitored.

A reading that the platform cannot give is ``None``; nothing here raises.
"""

from __future__ import annotations

import collections
import contextlib
import gc
import os
import threading
import time
from typing import Any, Final

__all__ = ["GcPauses", "ThreadClock", "gc_pauses", "machine_cpu", "process_cpu", "thread_cpu"]

_GC_PAUSE_KEPT_NS: Final = 1_000_000
"""Shorter collections (most young-generation ones) are not kept: they explain no block."""


def process_cpu() -> tuple[float, float]:
    """(user, system) CPU seconds of this process, all its threads."""
    times = os.times()
    return times.user, times.system


def _cpu_clock(ident: int) -> int | None:
    try:
        return time.pthread_getcpuclockid(ident)
    except (AttributeError, OSError):  # not on this platform, or the thread is gone
        return None


_FUTEX: Final = {"x86_64": 202, "aarch64": 98}.get(os.uname().machine)
"""The futex system call's number on this machine: a thread waiting for a lock (the GIL too)."""


class ThreadClock:
    """The CPU clock of one thread, made on that thread and read from any other."""

    __slots__ = ("_clock", "_schedstat", "_syscall", "last")

    def __init__(self) -> None:
        self._clock = _cpu_clock(threading.get_ident())
        task = f"/proc/self/task/{threading.get_native_id()}"
        self._schedstat = f"{task}/schedstat" if os.path.exists(f"{task}/schedstat") else None
        self._syscall = f"{task}/syscall" if _FUTEX and os.path.exists(f"{task}/syscall") else None
        self.last = 0.0
        """The last CPU reading: what a thread that has ended used in all."""

    def cpu(self) -> float:
        """CPU seconds the thread has used; the last reading once it has ended."""
        if self._clock is not None:
            try:
                self.last = time.clock_gettime(self._clock)
            except OSError:  # the thread ended, its clock with it
                self._clock = None
        return self.last

    def in_blocking_call(self) -> bool | None:
        """Whether the thread sits in a system call other than a lock wait; Linux only.

        A thread off the CPU is either in a blocking call (a sleep, a socket
        read: some system call) or waiting for a lock, the GIL among them (a
        futex wait, or the moments between two of its timed waits).
        """
        if self._syscall is None:
            return None
        try:
            with open(self._syscall) as current:
                number = current.read().split(maxsplit=1)[0]
        except (OSError, IndexError):
            self._syscall = None
            return None
        return number.isdigit() and number != str(_FUTEX)

    def run_queue_wait(self) -> float | None:
        """Seconds the thread was runnable but not running (waiting for a CPU); Linux only."""
        if self._schedstat is None:
            return None
        try:
            with open(self._schedstat) as stats:
                return int(stats.read().split()[1]) / 1e9
        except (OSError, ValueError, IndexError):
            self._schedstat = None
            return None


def thread_cpu(excluded: int = 0) -> dict[int, tuple[str, float]]:
    """CPU seconds of every live Python thread but ``excluded``: ident -> (name, seconds)."""
    found = {}
    for thread in threading.enumerate():
        ident = thread.ident
        if ident is None or ident == excluded:
            continue
        clock = _cpu_clock(ident)
        if clock is None:
            continue
        try:
            found[ident] = (thread.name, time.clock_gettime(clock))
        except OSError:
            continue
    return found


class GcPauses:
    """Recent garbage-collection pauses, recorded while anyone needs them.

    The callback runs on whichever thread collects, holding the GIL, so every
    other thread (the event loop's too) waits for the whole pause.
    """

    def __init__(self, kept: int = 256) -> None:
        self.pauses: collections.deque[tuple[int, int]] = collections.deque(maxlen=kept)
        self._started = 0
        self._users = 0
        self._lock = threading.Lock()

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        now = time.monotonic_ns()
        if phase == "start":
            self._started = now
        elif self._started and now - self._started >= _GC_PAUSE_KEPT_NS:
            self.pauses.append((self._started, now))

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1:
                gc.callbacks.append(self._callback)

    def release(self) -> None:
        with self._lock:
            if self._users == 0:
                return
            self._users -= 1
            if self._users == 0:
                with contextlib.suppress(ValueError):  # someone else cleared the list
                    gc.callbacks.remove(self._callback)

    def overlap(self, start_ns: int, end_ns: int) -> float:
        """Seconds of garbage collection between ``start_ns`` and ``end_ns`` (monotonic)."""
        total = 0
        for began, ended in list(self.pauses):
            total += max(0, min(ended, end_ns) - max(began, start_ns))
        return total / 1e9

    def reset_after_fork(self) -> None:
        # The child monitors no loop yet: it starts from no users, and the
        # callback copied with the parent's gc.callbacks goes.
        self._lock = threading.Lock()
        self._users = 0
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


gc_pauses = GcPauses()
os.register_at_fork(after_in_child=gc_pauses.reset_after_fork)


def machine_cpu() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine, all cores, since boot; Linux only.

    A load test runs its load generator on the same machine as the app: when
    the machine is out of CPU, the figures say so instead of blaming the app.
    """
    try:
        with open("/proc/stat") as stats:
            fields = stats.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(value) for value in fields[1:9]]  # user nice system idle iowait irq softirq steal
    idle = ticks[3] + ticks[4]
    hertz = os.sysconf("SC_CLK_TCK")
    return (sum(ticks) - idle) / hertz, sum(ticks) / hertz
