"""Real uvicorn serving real Starlette and FastAPI apps: every offload path is seen and named."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import FileResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route

from _servers import serve
from conftest import Telemetry
from poolscope import semconv

pytestmark = pytest.mark.servers


def starlette_app(static_file: Path) -> Starlette:
    def sync_endpoint(request: Request) -> PlainTextResponse:
        time.sleep(0.01)
        return PlainTextResponse("sync")

    async def to_thread_endpoint(request: Request) -> PlainTextResponse:
        await asyncio.to_thread(time.sleep, 0.01)
        return PlainTextResponse("to-thread")

    async def file_endpoint(request: Request) -> FileResponse:
        return FileResponse(static_file)

    async def background_endpoint(request: Request) -> PlainTextResponse:
        return PlainTextResponse("queued", background=BackgroundTask(time.sleep, 0.001))

    async def stream_endpoint(request: Request) -> StreamingResponse:
        return StreamingResponse(iter([b"a", b"b", b"c"]))

    return Starlette(
        routes=[
            Route("/sync", sync_endpoint),
            Route("/to-thread", to_thread_endpoint),
            Route("/file", file_endpoint),
            Route("/background", background_endpoint),
            Route("/stream", stream_endpoint),
        ]
    )


def settings_dependency() -> dict[str, str]:
    return {"region": "eu"}


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/items/{item_id}")
    def read_item(
        item_id: int, settings: Annotated[dict[str, str], Depends(settings_dependency)]
    ) -> dict[str, object]:
        return {"item_id": item_id, **settings}

    return app


def run_counts(telemetry: Telemetry, pool: str) -> int:
    return sum(
        p.count for p in telemetry.points(semconv.METRIC_TASK_RUN_DURATION, executor__name=pool)
    )


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_starlette_paths_under_uvicorn(telemetry: Telemetry, tmp_path: Path, loop: str) -> None:
    static_file = tmp_path / "hello.txt"
    static_file.write_text("hello")
    with serve(starlette_app(static_file), loop=loop) as url, httpx.Client(base_url=url) as client:
        for path, body in [
            ("/sync", "sync"),
            ("/to-thread", "to-thread"),
            ("/file", "hello"),
            ("/background", "queued"),
            ("/stream", "abc"),
        ]:
            response = client.get(path)
            assert response.status_code == 200
            assert response.text == body
        anyio_runs = run_counts(telemetry, semconv.POOL_ANYIO_DEFAULT)
    # sync endpoint 1, file response >= 2 (open, stat/read, close), background 1, stream 4
    assert anyio_runs >= 8, anyio_runs
    assert run_counts(telemetry, semconv.POOL_ASYNCIO_DEFAULT) == 1


def test_fastapi_sync_dependency_and_endpoint_under_uvicorn(telemetry: Telemetry) -> None:
    with serve(fastapi_app()) as url, httpx.Client(base_url=url) as client:
        response = client.get("/items/7")
    assert response.json() == {"item_id": 7, "region": "eu"}
    names = {
        point.attributes[semconv.ATTR_EXECUTOR_NAME]
        for point in telemetry.points(semconv.METRIC_TASK_RUN_DURATION)
    }
    assert names == {semconv.POOL_ANYIO_DEFAULT}
    # the sync dependency and the sync endpoint each took a worker
    assert run_counts(telemetry, semconv.POOL_ANYIO_DEFAULT) >= 2


def test_sync_endpoints_starve_the_anyio_limiter_under_concurrent_load(
    telemetry: Telemetry,
) -> None:
    import anyio.to_thread

    async def shrink(request: Request) -> PlainTextResponse:
        anyio.to_thread.current_default_thread_limiter().total_tokens = (
            2  # the server loop's limiter
        )
        return PlainTextResponse("shrunk")

    def slow(request: Request) -> PlainTextResponse:
        time.sleep(0.1)
        return PlainTextResponse("done")

    app = Starlette(routes=[Route("/shrink", shrink), Route("/slow", slow)])

    async def load(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            assert (await client.get("/shrink")).status_code == 200
            responses = await asyncio.gather(*(client.get("/slow") for _ in range(6)))
        return [r.status_code for r in responses]

    with serve(app) as url:
        statuses = asyncio.run(load(url))
    assert statuses == [200] * 6
    [waits] = telemetry.points(
        semconv.METRIC_TASK_WAIT_DURATION, executor__name=semconv.POOL_ANYIO_DEFAULT
    )
    assert waits.count == 6
    # six 100 ms calls through two tokens: the last two waited about 200 ms
    assert waits.max >= 0.15, waits.max
    assert waits.sum >= 0.5, waits.sum
