"""A load generator in its own process, so it does not share the server's GIL.

    python tests/_load.py URL PATH CONCURRENCY ROUNDS

Sends ROUNDS waves of CONCURRENCY concurrent GETs, each wave after the last
completed; prints the status codes as JSON.
"""

from __future__ import annotations

import asyncio
import json
import sys

import httpx


async def main(url: str, path: str, concurrency: int, rounds: int) -> list[int]:
    limits = httpx.Limits(max_connections=concurrency)
    statuses: list[int] = []
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        for _ in range(rounds):
            responses = await asyncio.gather(*(client.get(path) for _ in range(concurrency)))
            statuses.extend(response.status_code for response in responses)
    return statuses


if __name__ == "__main__":
    target, route, count, waves = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    print(json.dumps(asyncio.run(main(target, route, count, waves))))
