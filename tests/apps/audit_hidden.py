"""An app that hides every pattern ``poolscope audit`` looks for, one way each.

Each line the audit must flag ends with ``# audit: ITEM`` (the checklist item's
key); nothing else may be flagged. Never served: only imported and read.
"""

from __future__ import annotations

import asyncio
import functools
import time as t
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor as Pool
from contextlib import asynccontextmanager
from functools import partial as bind
from typing import Annotated, Any

import requests as rq
from anthropic import AsyncAnthropic
from fastapi import BackgroundTasks, Depends, FastAPI, Request
from fastapi.responses import FileResponse
from openai import OpenAI as Client

import poolscope

URL = "http://127.0.0.1:9/context"
fetch = functools.partial(rq.get, URL, timeout=5)
offload = bind(asyncio.get_event_loop_policy, None)  # not an offload: nothing to flag
unsized = Pool()  # audit: executors
sized_and_named = poolscope.instrument_executor(Pool(4), name="pdf")
quota = poolscope.instrument_semaphore(asyncio.Semaphore(8), name="llm-quota")
claude = AsyncAnthropic(api_key="not-needed")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.llm = Client(api_key="not-needed")
    yield


app = FastAPI(lifespan=lifespan)


def settings() -> dict[str, str]:  # audit: sync_routes
    return {"region": "eu"}


def write_log(line: str) -> None:
    print(line)


class Context:
    def fetch(self) -> int:
        return len(fetch().content)

    async def gather(self) -> int:
        return self.fetch()  # audit: loop_blocked


@app.get("/ask")
async def ask(request: Request, config: Annotated[dict[str, str], Depends(settings)]) -> Any:
    answer = request.app.state.llm.chat.completions.create(  # audit: loop_blocked, llm_limit
        model="m", messages=[]
    )
    return {"answer": str(answer), **config}


@app.get("/nap")
async def nap(tasks: BackgroundTasks) -> dict[str, bool]:
    t.sleep(0.1)  # audit: loop_blocked
    tasks.add_task(write_log, "napped")  # audit: threaded_responses
    return {"ok": True}


@app.get("/context")
async def context() -> dict[str, int]:
    body = fetch()  # audit: loop_blocked
    return {"length": len(body.content)}


@app.get("/shared")
async def shared() -> dict[str, int]:
    loop = asyncio.get_running_loop()
    run = bind(loop.run_in_executor, None)
    length = await run(Context().fetch)  # audit: default_executor
    return {"length": length}


@app.get("/report")
async def report() -> FileResponse:
    return FileResponse(__file__)  # audit: threaded_responses


@app.get("/claude")
async def ask_claude() -> dict[str, str]:
    async with quota:
        message = await claude.messages.create(model="m", max_tokens=8, messages=[])
    return {"id": message.id}
