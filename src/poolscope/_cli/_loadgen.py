"""The one load generator: closed-loop users for a bounded time, then drain.

Each user sends a GET, waits for the answer, pauses (if asked) and sends the
next, until ``seconds`` have passed (or it sent ``requests``); then every
request in flight is allowed to finish (up to ``drain_limit``), so the next
step starts from an idle app instead of inheriting the last step's queue.
Throughput counts the answers that arrived within the step; latencies include
the requests that finished while draining, so a starved app's slowest requests
are not left out. Every answer and error is counted per path.

The demo calls :func:`run_step`; tests and benchmarks run it in a process of
its own, so that it does not share the server's GIL::

    python -m poolscope._cli._loadgen [--no-keepalive] [--requests N] \\
        URL SECONDS PATH:USERS[:PAUSE] ...

which prints ``{path: {status or error: count}}`` as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StepLoad", "Users", "drive", "main", "run_step"]

_BACKOFF_S = 0.1


@dataclass(frozen=True)
class Users:
    """``count`` users on ``path``, each pausing ``pause`` seconds between requests."""

    path: str
    count: int
    pause: float = 0.0

    @classmethod
    def parse(cls, spec: str) -> Users:
        """``PATH:USERS[:PAUSE]``, as the command line takes it."""
        path, _, rest = spec.partition(":")
        count, _, pause = rest.partition(":")
        try:
            users = cls(path, int(count), float(pause or 0))
        except ValueError:
            raise ValueError(f"expected PATH:USERS[:PAUSE], got {spec!r}") from None
        if not path.startswith("/") or users.count < 1 or users.pause < 0:
            raise ValueError(f"expected PATH:USERS[:PAUSE], got {spec!r}")
        return users


@dataclass
class StepLoad:
    concurrency: int
    started: float
    """Wall-clock start (epoch seconds), to line up with span timestamps."""
    seconds: float
    latencies: list[float] = field(default_factory=list)
    """Seconds, of every request answered with 200."""
    completed_in_window: int = 0
    user_seconds: float = 0.0
    """Summed over the users: seconds from the start of the step to the user's last answer
    inside the window, or the whole window for a user who got none."""
    failures: dict[str, int] = field(default_factory=dict)
    """Requests not answered with 200, by status (``HTTP 503``) or error type."""
    statuses: dict[str, dict[str, int]] = field(default_factory=dict)
    """Path -> every outcome (``"200"``, ``"503"``, ``"ReadTimeout"``) -> count."""
    unfinished: int = 0
    ended: float = 0.0

    @property
    def throughput(self) -> float:
        """Answers per second: answers in the window over the user-seconds they took, times users.

        A user's answers come back to back, so its rate is its answers over the
        time to its last one. Pooled that way, a step of a few round trips does
        not read low (two 1.4 s answers in a 4 s step are 2 in 2.8 s, not in
        4 s), and a user who got no answer in the window counts the whole window.
        """
        if not self.completed_in_window or not self.user_seconds:
            return 0.0
        return self.concurrency * self.completed_in_window / self.user_seconds

    @property
    def lost(self) -> int:
        """Requests that failed or were still unanswered when the drain ended."""
        return sum(self.failures.values()) + self.unfinished

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile of the answered requests' latencies."""
        if not self.latencies:
            return None
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    @property
    def total_latency(self) -> float:
        return sum(self.latencies)


async def run_step(
    client: Any,
    paths: tuple[str, ...],
    concurrency: int,
    seconds: float,
    *,
    drain_limit: float = 30.0,
) -> StepLoad:
    """``concurrency`` users over ``paths``, user n on ``paths[n % len(paths)]``."""
    users = [
        Users(path, len(range(index, concurrency, len(paths))))
        for index, path in enumerate(paths)
        if index < concurrency
    ]
    return await drive(client, users, seconds, drain_limit=drain_limit)


async def drive(
    client: Any,
    users: Sequence[Users],
    seconds: float,
    *,
    requests: int | None = None,
    drain_limit: float = 30.0,
) -> StepLoad:
    """Drive ``client`` (an ``httpx.AsyncClient``) with ``users`` for ``seconds``, each
    user sending at most ``requests`` if given."""
    import httpx

    concurrency = sum(group.count for group in users)
    result = StepLoad(concurrency, time.time(), seconds)
    start = time.monotonic()
    window_end = start + seconds

    def count(path: str, outcome: str) -> None:
        seen = result.statuses.setdefault(path, {})
        seen[outcome] = seen.get(outcome, 0) + 1

    async def user(path: str, pause: float) -> None:
        last_answer = 0.0
        sent_count = 0
        try:
            while time.monotonic() < window_end and (requests is None or sent_count < requests):
                sent_count += 1
                sent = time.monotonic()
                try:
                    response = await client.get(path)
                except httpx.HTTPError as error:
                    kind = type(error).__name__
                    count(path, kind)
                    result.failures[kind] = result.failures.get(kind, 0) + 1
                    await asyncio.sleep(_BACKOFF_S)  # a refusing server is not hammered
                    continue
                done = time.monotonic()
                count(path, str(response.status_code))
                if response.status_code != 200:
                    kind = f"HTTP {response.status_code}"
                    result.failures[kind] = result.failures.get(kind, 0) + 1
                else:
                    result.latencies.append(done - sent)
                    if done <= window_end:
                        result.completed_in_window += 1
                        last_answer = done - start
                if pause:
                    await asyncio.sleep(pause)
        finally:  # also when cancelled at the end of the drain
            result.user_seconds += last_answer or seconds

    tasks = [
        asyncio.create_task(user(group.path, group.pause))
        for group in users
        for _ in range(group.count)
    ]
    _, pending = await asyncio.wait(tasks, timeout=seconds + drain_limit)
    for task in pending:
        task.cancel()
    result.unfinished = len(pending)
    if pending:
        await asyncio.wait(pending)
    result.ended = time.time()
    return result


async def _run(
    url: str, seconds: float, users: list[Users], requests: int | None, keepalive: bool
) -> StepLoad:
    import httpx

    total = sum(group.count for group in users)
    limits = httpx.Limits(
        max_connections=total, max_keepalive_connections=total if keepalive else 0
    )
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=seconds + 60) as client:
        return await drive(client, users, seconds, requests=requests)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m poolscope._cli._loadgen",
        description="Closed-loop GET load, bounded in time (and in requests per user).",
    )
    parser.add_argument("url")
    parser.add_argument("seconds", type=float)
    parser.add_argument("users", nargs="+", metavar="PATH:USERS[:PAUSE]")
    parser.add_argument("--requests", type=int, default=None, help="at most this many per user")
    parser.add_argument(
        "--no-keepalive",
        action="store_true",
        help="a connection per request, so that every worker process of a server gets some",
    )
    options = parser.parse_args(argv)
    try:
        users = [Users.parse(spec) for spec in options.users]
    except ValueError as error:
        parser.error(str(error))
    if not 0 < options.seconds <= 3600:
        parser.error(f"SECONDS must be above 0 and at most 3600, got {options.seconds:g}")
    load = asyncio.run(
        _run(options.url, options.seconds, users, options.requests, not options.no_keepalive)
    )
    print(json.dumps(load.statuses))
    return 0


if __name__ == "__main__":
    sys.exit(main())
