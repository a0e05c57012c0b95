"""The demo's load generator: N concurrent users for a fixed time, then drain.

Each of ``concurrency`` users sends a GET, waits for the answer and sends the
next, for ``seconds``; then every request in flight is allowed to finish
(up to ``drain_limit``), so the next step starts from an idle app instead of
inheriting the last step's queue. Throughput counts the answers that arrived
within the step; latencies include the requests that finished while
draining, so a starved app's slowest requests are not left out.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field
from typing import Any

__all__ = ["StepLoad", "run_step"]

_BACKOFF_S = 0.1


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
    """Drive ``client`` (an ``httpx.AsyncClient``) over ``paths``, round-robin per user."""
    import httpx

    result = StepLoad(concurrency, time.time(), seconds)
    start = time.monotonic()
    window_end = start + seconds

    async def user(number: int) -> None:
        path = paths[number % len(paths)]
        last_answer = 0.0
        try:
            while time.monotonic() < window_end:
                sent = time.monotonic()
                try:
                    response = await client.get(path)
                except httpx.HTTPError as error:
                    kind = type(error).__name__
                    result.failures[kind] = result.failures.get(kind, 0) + 1
                    await asyncio.sleep(_BACKOFF_S)  # a refusing server is not hammered
                    continue
                done = time.monotonic()
                if response.status_code != 200:
                    kind = f"HTTP {response.status_code}"
                    result.failures[kind] = result.failures.get(kind, 0) + 1
                    continue
                result.latencies.append(done - sent)
                if done <= window_end:
                    result.completed_in_window += 1
                    last_answer = done - start
        finally:  # also when cancelled at the end of the drain
            result.user_seconds += last_answer or seconds

    tasks = [asyncio.create_task(user(n)) for n in range(concurrency)]
    _, pending = await asyncio.wait(tasks, timeout=seconds + drain_limit)
    for task in pending:
        task.cancel()
    result.unfinished = len(pending)
    if pending:
        await asyncio.wait(pending)
    result.ended = time.time()
    return result
