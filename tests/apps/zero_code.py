"""An app with no observability code at all, for the opentelemetry-instrument test."""

from __future__ import annotations

import asyncio
import time

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


def sync_report(request: Request) -> PlainTextResponse:
    time.sleep(0.01)
    return PlainTextResponse("report")


async def async_fetch(request: Request) -> PlainTextResponse:
    await asyncio.to_thread(time.sleep, 0.01)
    return PlainTextResponse("fetched")


app = Starlette(routes=[Route("/reports/{report_id}", sync_report), Route("/fetch", async_fetch)])
