"""The article's "before": an LLM app that starves its hidden worker pools.

Every route looks harmless, and each one pushes blocking work into a small
pool nobody sized:

* ``GET /chat`` is ``async`` but calls the *sync* OpenAI client through
  ``run_in_executor(None, ...)``: the loop's default executor, ``min(32, cpu + 4)``
  threads (6 on a 2-core machine).
* ``GET /search`` is ``async`` and fetches its context with ``requests`` (a *sync*
  HTTP client) through ``asyncio.to_thread``: the same default executor, each
  worker held for the whole round trip.
* ``GET /summary`` is a plain ``def`` route: Starlette runs it in anyio's
  worker threads, 40 tokens shared by every sync route, dependency and file
  response of the process.
* ``GET /classify`` is ``async`` and calls the *sync* client directly: no pool
  at all, the event loop itself stops for the whole call.
* ``GET /stream`` is a ``def`` route returning a *sync* generator over a
  streamed completion: anyio runs the route, then every chunk, in a worker
  thread, and the thread is pinned for the whole stream.

Start the fake LLM server, then the app (both on 127.0.0.1)::

    python examples/fake_llm.py --port 8001
    python examples/naive_app.py --port 8000

or ``uvicorn naive_app:app --app-dir examples``. The LLM server's address comes
from ``POOLSCOPE_EXAMPLE_LLM_URL`` (default http://127.0.0.1:8001); telemetry
goes where the standard ``OTEL_EXPORTER_OTLP_*`` variables say (the bundled
collector listens on 127.0.0.1:4317).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator

import openai
import requests
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

import poolscope
from _example_app import llm_url, run, search_payload

SERVICE_NAME = "naive-llm-app"

llm = openai.OpenAI(base_url=f"{llm_url()}/v1", api_key="not-needed", max_retries=0)
http = requests.Session()

app = FastAPI(title="poolscope example: naive")


def _ask(question: str) -> str:
    completion = llm.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": question}]
    )
    return completion.choices[0].message.content or ""


def fetch_context(query: str) -> int:
    response = http.post(f"{llm_url()}/v1/embeddings", json=search_payload(query), timeout=60)
    response.raise_for_status()
    return len(response.json()["data"][0]["embedding"])


@app.get("/chat")
async def chat(q: str = "why is my app slow") -> dict[str, str]:
    loop = asyncio.get_running_loop()
    answer = await loop.run_in_executor(None, _ask, q)
    return {"answer": answer}


@app.get("/search")
async def search(q: str = "thread pool starvation") -> dict[str, int]:
    dimensions = await asyncio.to_thread(fetch_context, q)
    return {"dimensions": dimensions}


@app.get("/classify")
async def classify(q: str = "is this urgent") -> dict[str, str]:
    return {"label": _ask(q)}  # blocks the event loop: every request of the process waits


@app.get("/summary")
def summary(q: str = "summarise the incident") -> dict[str, str]:
    return {"summary": _ask(q)}


@app.get("/stream")
def stream(q: str = "tell me a story") -> StreamingResponse:
    def chunks() -> Iterator[str]:
        events = llm.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": q}], stream=True
        )
        for event in events:
            if event.choices and event.choices[0].delta.content:
                yield event.choices[0].delta.content

    return StreamingResponse(chunks(), media_type="text/plain")


poolscope.configure(app, service_name=os.environ.get("OTEL_SERVICE_NAME") or SERVICE_NAME)

if __name__ == "__main__":
    run(app, "the naive example app")
