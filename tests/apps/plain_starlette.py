"""A Starlette app without poolscope, as a user's app may be before they add it.

``/slow`` awaits 50 ms, ``/sync`` sleeps 50 ms in anyio's worker threads,
``/boom`` fails, and ``/metrics`` serves Prometheus text none of which is
poolscope's. Run with ``python tests/apps/plain_starlette.py PORT``.
"""

from __future__ import annotations

import asyncio
import sys
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

DELAY_S = 0.05


async def slow(request: Request) -> PlainTextResponse:
    await asyncio.sleep(DELAY_S)
    return PlainTextResponse("slow")


def sync(request: Request) -> PlainTextResponse:
    time.sleep(DELAY_S)
    return PlainTextResponse("sync")


async def boom(request: Request) -> PlainTextResponse:
    raise RuntimeError("boom")


async def metrics(request: Request) -> PlainTextResponse:
    return PlainTextResponse("# TYPE up gauge\nup 1\n")


app = Starlette(
    routes=[
        Route("/slow", slow),
        Route("/sync", sync),
        Route("/boom", boom),
        Route("/metrics", metrics),
    ]
)

if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
