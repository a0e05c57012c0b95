"""The article's "after": the same LLM app, with nothing left waiting for a seat.

Same routes as ``naive_app.py``; what changed:

* the LLM calls use the *async* OpenAI client, so they hold no thread at all;
* the document fetch uses an *async* HTTP client;
* the blocking work that is left (parsing the fetched documents) runs in a
  dedicated, named executor sized for it, so it cannot starve anyone else and
  shows up under its own name;
* an ``asyncio.Semaphore`` caps concurrent LLM calls at the provider's quota,
  and poolscope reports its waits like any other pool's.

::

    python examples/fake_llm.py --port 8001
    python examples/fixed_app.py --port 8002

or ``uvicorn fixed_app:app --app-dir examples``; settings as for ``naive_app.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import openai
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

import poolscope
from _example_app import llm_url, run, search_payload

SERVICE_NAME = "fixed-llm-app"
LLM_QUOTA = 256  # concurrent calls the provider allows us
PARSE_WORKERS = 8

llm = openai.AsyncOpenAI(base_url=f"{llm_url()}/v1", api_key="not-needed", max_retries=0)
http = httpx.AsyncClient(base_url=llm_url(), timeout=60)
parse_pool = poolscope.instrument_executor(
    ThreadPoolExecutor(PARSE_WORKERS, thread_name_prefix="parse"), name="parse"
)
llm_quota = poolscope.instrument_semaphore(asyncio.Semaphore(LLM_QUOTA), name="llm-quota")

app = FastAPI(title="poolscope example: fixed")


async def _ask(question: str) -> str:
    async with llm_quota:
        completion = await llm.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": question}]
        )
    return completion.choices[0].message.content or ""


def _parse_documents(raw: bytes) -> int:
    return len(json.loads(raw)["data"][0]["embedding"])


@app.get("/chat")
async def chat(q: str = "why is my app slow") -> dict[str, str]:
    return {"answer": await _ask(q)}


@app.get("/search")
async def search(q: str = "thread pool starvation") -> dict[str, int]:
    response = await http.post("/v1/embeddings", json=search_payload(q))
    response.raise_for_status()
    loop = asyncio.get_running_loop()
    dimensions = await loop.run_in_executor(parse_pool, _parse_documents, response.content)
    return {"dimensions": dimensions}


@app.get("/classify")
async def classify(q: str = "is this urgent") -> dict[str, str]:
    return {"label": await _ask(q)}


@app.get("/summary")
async def summary(q: str = "summarise the incident") -> dict[str, str]:
    return {"summary": await _ask(q)}


@app.get("/stream")
async def stream(q: str = "tell me a story") -> StreamingResponse:
    async def chunks() -> AsyncIterator[str]:
        async with llm_quota:
            events = await llm.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": q}], stream=True
            )
            async for event in events:
                if event.choices and event.choices[0].delta.content:
                    yield event.choices[0].delta.content

    return StreamingResponse(chunks(), media_type="text/plain")


poolscope.configure(app, service_name=os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME)

if __name__ == "__main__":
    run(app, "the fixed example app")
