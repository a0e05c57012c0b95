"""Live state of every instrumented pool: name, cap, busy and pending counts.

A :class:`Pool` is the bookkeeping for one executor, limiter or semaphore. Its
counters are changed under a per-pool lock by the submitting and the worker
threads, and read by the metric reader's thread through :func:`snapshot_all`,
which only touches the captured ``Pool`` objects, never an event loop.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import os
import re
import threading
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Final

from .. import semconv
from .._config import DEFAULT_MAX_POOL_NAMES
from .._safety import logger

__all__ = [
    "Pool",
    "PoolSnapshot",
    "fresh_names",
    "metric_name",
    "pool_for",
    "register",
    "set_name_limit",
    "snapshot_all",
    "thread_name_prefix_name",
]

LimitReader = Callable[[], float]

_AUTO_THREAD_PREFIX: Final = re.compile(r"ThreadPoolExecutor-\d+")


class _NameGuard:
    """Bounds the pool names metrics carry: past ``limit`` distinct names, ``other``.

    A name made per request or per id (``instrument_executor(name=f"pool-{id}")``
    in a loop) would otherwise add metric series without end. Spans keep the
    name as given; the well-known loop pools are never folded.
    """

    ALWAYS: Final = frozenset({semconv.POOL_ASYNCIO_DEFAULT, semconv.POOL_ANYIO_DEFAULT})

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen: set[str] = set()
        self.lock = threading.Lock()
        self.folded = 0

    def for_metrics(self, name: str) -> str:
        if name in self.ALWAYS:
            return name
        with self.lock:
            if name in self.seen:
                return name
            if len(self.seen) < self.limit:
                self.seen.add(name)
                return name
            self.folded += 1
            first = self.folded == 1
        if first:
            logger.warning(
                "poolscope: more than %d distinct pool names; further pools (here %r) are "
                "counted in metrics as %r (set OTEL_POOLSCOPE_MAX_POOL_NAMES to change the cap)",
                self.limit,
                name,
                semconv.POOL_OTHER,
            )
        return semconv.POOL_OTHER


_names = _NameGuard(DEFAULT_MAX_POOL_NAMES)


def metric_name(name: str) -> str:
    """The name a pool called ``name`` gets in metrics: itself, or ``other`` past the cap."""
    return _names.for_metrics(name)


@contextlib.contextmanager
def fresh_names() -> Iterator[None]:
    """No pool name seen yet while inside, and the guard as it was afterwards.

    For test suites: one process names far more pools than the cap lets through,
    and each test must start under the cap as an application does.
    """
    guard = _names
    with guard.lock:
        saved = (guard.limit, set(guard.seen), guard.folded)
        guard.seen.clear()
        guard.folded = 0
    try:
        yield
    finally:
        with guard.lock:
            guard.limit, guard.seen, guard.folded = saved


def set_name_limit(limit: int) -> None:
    """Apply the ``max_pool_names`` setting to pools named from now on."""
    _names.limit = limit


class Pool:
    """Counters for one pool. ``derived`` pools only know tasks in flight.

    A process pool's worker start happens in another process and is learnt
    only when the result comes back, so its busy and pending figures are
    derived from tasks in flight: busy = min(in flight, limit).
    """

    __slots__ = (
        "attributes",
        "busy",
        "cancelled_attributes",
        "derived",
        "lock",
        "name",
        "ordinal",
        "pending",
        "read_limit",
        "type",
    )

    def __init__(
        self, name: str, type: str, read_limit: LimitReader, *, derived: bool = False
    ) -> None:
        self.type = type
        self.read_limit = read_limit
        self.derived = derived
        self.lock = threading.Lock()
        self.busy = 0
        self.pending = 0
        self.ordinal: int | None = None  # set for generated names, given back on collection
        self.rename(name)

    def rename(self, name: str) -> None:
        self.name = name  # spans carry the name as given
        # Built once: the hot path passes these same dicts to every record().
        self.attributes: dict[str, str | bool] = {
            semconv.ATTR_EXECUTOR_NAME: _names.for_metrics(name),
            semconv.ATTR_EXECUTOR_TYPE: self.type,
        }
        self.cancelled_attributes: dict[str, str | bool] = {
            **self.attributes,
            semconv.ATTR_EXECUTOR_TASK_CANCELLED: True,
        }

    def limit(self) -> int | float:
        """The cap right now: an int, or ``math.inf`` for an unbounded limiter."""
        try:
            value = self.read_limit()
        except Exception:
            return 0
        return int(value) if math.isfinite(value) else value

    def counts(self) -> tuple[int, int]:
        """Return (busy, pending); call with ``lock`` held for a consistent pair."""
        if not self.derived:
            return self.busy, self.pending
        in_flight = self.busy + self.pending
        busy = min(in_flight, int(self.limit()))
        return busy, in_flight - busy

    def __repr__(self) -> str:
        return f"<Pool {self.name!r} type={self.type} busy={self.busy} pending={self.pending}>"


@dataclass(frozen=True, slots=True)
class PoolSnapshot:
    """Figures of all live pools sharing one (name, type), summed."""

    name: str
    type: str
    busy: int
    pending: int
    limit: int | float

    @property
    def attributes(self) -> dict[str, str]:
        return {semconv.ATTR_EXECUTOR_NAME: self.name, semconv.ATTR_EXECUTOR_TYPE: self.type}


class _Registry:
    """Pools keyed by the identity of the object they describe.

    Entries are dropped by a ``weakref.finalize`` on the owner, which runs
    before the owner's id can be reused. Lookups are a plain dict read.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pools: dict[int, Pool] = {}

    def get(self, owner: object) -> Pool | None:
        return self._pools.get(id(owner))

    def add(self, owner: object, pool: Pool) -> Pool:
        key = id(owner)
        with self._lock:
            existing = self._pools.get(key)
            if existing is not None:
                return existing
            self._pools[key] = pool
        weakref.finalize(owner, self._forget, key, pool)
        return pool

    def _forget(self, key: int, pool: Pool) -> None:
        with self._lock:
            if self._pools.get(key) is pool:
                del self._pools[key]
        if pool.ordinal is not None:
            _give_back_ordinal(pool.type, pool.ordinal)

    def pools(self) -> list[Pool]:
        with self._lock:
            return list(self._pools.values())

    def reset_after_fork(self) -> None:
        """In a forked child: only the forking thread exists, so no task of the
        parent runs or waits here, and the parent's event loops do not run.
        Pools of those loops (named for the loop) are forgotten, to be registered
        again by the child's own loops; pools the application made keep their
        names, with empty counts. Every lock is new: another thread may have
        held one at the fork."""
        self._lock = threading.Lock()
        for key, pool in list(self._pools.items()):
            pool.lock = threading.Lock()
            pool.busy = pool.pending = 0
            if pool.name in _PER_LOOP_POOLS:
                del self._pools[key]


_PER_LOOP_POOLS: Final = frozenset({semconv.POOL_ASYNCIO_DEFAULT, semconv.POOL_ANYIO_DEFAULT})
_registry = _Registry()
_ordinals_in_use: dict[str, set[int]] = {}
_locks = {"ordinals": threading.Lock()}  # replaced after fork


def _take_ordinal(type: str) -> int:
    """The lowest number no live unnamed pool of ``type`` has.

    Numbers of collected pools are given back, so an app that makes a pool
    per request keeps reusing ``thread_pool-1`` instead of minting a new
    metric series every time: the names stay as few as the pools alive at once.
    """
    with _locks["ordinals"]:
        in_use = _ordinals_in_use.setdefault(type, set())
        number = next(n for n in itertools.count(1) if n not in in_use)
        in_use.add(number)
        return number


def _give_back_ordinal(type: str, number: int) -> None:
    with _locks["ordinals"]:
        _ordinals_in_use.get(type, set()).discard(number)


def thread_name_prefix_name(prefix: str | None) -> str | None:
    """The executor's ``thread_name_prefix`` if a person chose it, else None."""
    if not prefix or _AUTO_THREAD_PREFIX.fullmatch(prefix):
        return None
    return prefix


def pool_for(owner: object) -> Pool | None:
    return _registry.get(owner)


def register(
    owner: object,
    name: str | None,
    type: str,
    read_limit: LimitReader,
    *,
    derived: bool = False,
) -> Pool:
    """Return the pool of ``owner``, creating it on first sight.

    Without a ``name`` the pool gets a generated one, ``thread_pool-1``,
    ``limiter-2``: the lowest number free among live unnamed pools of its type.
    """
    pool = _registry.get(owner)
    if pool is not None:
        return pool
    ordinal = None
    if name is None:
        ordinal = _take_ordinal(type)
        name = f"{type}-{ordinal}"
    pool = Pool(name, type, read_limit, derived=derived)
    pool.ordinal = ordinal
    added = _registry.add(owner, pool)
    if added is not pool and ordinal is not None:  # lost a race to another thread
        _give_back_ordinal(type, ordinal)
    return added


def snapshot_all() -> list[PoolSnapshot]:
    """Figures of every live pool, summed per (name, type).

    Pools share a name legitimately: each event loop has its own default
    executor and anyio limiter, all called ``asyncio.default`` / ``anyio.default``.
    """
    totals: dict[tuple[str, str], PoolSnapshot] = {}
    for pool in _registry.pools():
        with pool.lock:
            busy, pending = pool.counts()
        limit = pool.limit()
        key = (pool.name, pool.type)
        seen = totals.get(key)
        if seen is not None:
            busy, pending, limit = seen.busy + busy, seen.pending + pending, seen.limit + limit
        totals[key] = PoolSnapshot(pool.name, pool.type, busy, pending, limit)
    return [totals[key] for key in sorted(totals)]


def _reset_after_fork() -> None:
    _locks["ordinals"] = threading.Lock()
    _names.lock = threading.Lock()
    _registry.reset_after_fork()


os.register_at_fork(after_in_child=_reset_after_fork)
