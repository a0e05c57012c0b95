"""A time-bounded closed-loop load generator, in its own process.

    python tests/_sustain.py [--no-keepalive] URL SECONDS PATH:CONCURRENCY[:PAUSE] ...

For SECONDS, CONCURRENCY workers per PATH each send a GET, wait for the
answer, pause PAUSE seconds (default 0) and go again. Prints the status codes
per path as JSON. Bounded in time, and in count by the closed loop.
``--no-keepalive`` opens a connection per request, so that a server with
several worker processes sharing one socket gets requests in every worker.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections import Counter

import httpx


async def _worker(
    client: httpx.AsyncClient, path: str, pause: float, until: float, seen: Counter[str]
) -> None:
    while time.monotonic() < until:
        try:
            response = await client.get(path, timeout=max(1.0, until - time.monotonic() + 30))
            seen[str(response.status_code)] += 1
        except httpx.HTTPError as error:
            seen[type(error).__name__] += 1
        if pause:
            await asyncio.sleep(pause)


async def main(
    url: str, seconds: float, specs: list[str], *, keepalive: bool = True
) -> dict[str, dict[str, int]]:
    until = time.monotonic() + seconds
    results: dict[str, Counter[str]] = {}
    workers = []
    total = 0
    plan = []
    for spec in specs:
        path, concurrency, *rest = spec.split(":")
        plan.append((path, int(concurrency), float(rest[0]) if rest else 0.0))
        total += int(concurrency)
    limits = httpx.Limits(
        max_connections=total, max_keepalive_connections=total if keepalive else 0
    )
    async with httpx.AsyncClient(base_url=url, limits=limits) as client:
        for path, concurrency, pause in plan:
            seen = results.setdefault(path, Counter())
            workers += [_worker(client, path, pause, until, seen) for _ in range(concurrency)]
        await asyncio.gather(*workers)
    return {path: dict(seen) for path, seen in results.items()}


if __name__ == "__main__":
    arguments = sys.argv[1:]
    keep = "--no-keepalive" not in arguments
    arguments = [a for a in arguments if a != "--no-keepalive"]
    result = asyncio.run(main(arguments[0], float(arguments[1]), arguments[2:], keepalive=keep))
    print(json.dumps(result))
