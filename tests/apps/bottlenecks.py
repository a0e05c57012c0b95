"""One app, one route per bottleneck the diagnosis must tell apart.

* ``/burn``: fully async, about 10 ms of CPU per request in 1 ms slices: under
  enough connections the process runs out of CPU, and nothing blocks its loop.
* ``/block``: ``async def`` that calls ``time.sleep(0.3)``: each request blocks
  the event loop, on the line marked ``BLOCKING_LINE``.
* ``/crunch``: hands 50 ms of pure-Python CPU work to an 8-thread pool: the
  workers hold the GIL that the event loop needs.
* ``/ping``: answers at once.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

BURN_SLICES = 10
SLICE_S = 0.001
BLOCK_S = 0.3
CRUNCH_S = 0.05
CRUNCH_WORKERS = 8


def _spin(seconds: float) -> int:
    """Run Python bytecode (holding the GIL) for ``seconds`` of the thread's own CPU time."""
    end = time.thread_time() + seconds
    turns = 0
    while time.thread_time() < end:
        turns += 1
    return turns


async def burn(request: Request) -> PlainTextResponse:
    for _ in range(BURN_SLICES):
        _spin(SLICE_S)
        await asyncio.sleep(0)
    return PlainTextResponse("burnt")


async def block(request: Request) -> PlainTextResponse:
    time.sleep(BLOCK_S)  # BLOCKING_LINE: the mistake under test
    return PlainTextResponse("blocked")


async def crunch(request: Request) -> PlainTextResponse:
    loop = asyncio.get_running_loop()
    turns = await loop.run_in_executor(request.app.state.crunch_pool, _spin, CRUNCH_S)
    return PlainTextResponse(str(turns))


async def ping(request: Request) -> PlainTextResponse:
    return PlainTextResponse("pong")


def create_app() -> Starlette:
    """The app; shut ``app.state.crunch_pool`` down when done with it."""
    app = Starlette(
        routes=[
            Route("/burn", burn),
            Route("/block", block),
            Route("/crunch", crunch),
            Route("/ping", ping),
        ]
    )
    app.state.crunch_pool = ThreadPoolExecutor(CRUNCH_WORKERS, thread_name_prefix="crunch")
    return app
