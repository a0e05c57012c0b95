"""A local fake LLM server, OpenAI- and Anthropic-compatible: real HTTP, no network, no API key.

Serves what the examples and tests call with the real ``openai`` SDK:

* ``POST /v1/chat/completions`` (streaming and not; ``stream_options.include_usage``)
* ``POST /v1/completions`` (streaming and not)
* ``POST /v1/embeddings``
* ``POST /v1/responses`` (streaming and not)

and with the real ``anthropic`` SDK (its ``base_url`` is the server's root):

* ``POST /v1/messages`` (streaming and not, its server-sent events in the API's order)

Latency is shaped like a real model's: a delay before the first token, then a
delay per token, each with optional jitter. ``usage`` counts are real counts
of what was sent and returned (whitespace-separated words of the prompt; the
completion's generated words), so tests can compare them.

Per request, headers override the server's settings: ``x-fake-first-token-ms``,
``x-fake-per-token-ms``, ``x-fake-tokens`` (completion length), and
``x-fake-status`` (answer with that HTTP error instead, e.g. 429 or 500, in
the API's own error shape).

    python examples/fake_llm.py --port 8001 --first-token-ms 300 --per-token-ms 20

or in a test::

    app = fake_llm.create_app(fake_llm.Latency(first_token=0.05, per_token=0.005))
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, replace
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

__all__ = ["Latency", "create_app", "main"]

_WORDS = (
    "the pool was full so the request waited for a worker while the cpu stayed idle",
    "and nobody knew why until the wait showed up in the trace",
)
_VOCABULARY = " ".join(_WORDS).split()


@dataclass(frozen=True)
class Latency:
    """Seconds before the first token, seconds per further token, and ± jitter (a fraction)."""

    first_token: float = 0.2
    per_token: float = 0.01
    jitter: float = 0.0
    tokens: int = 16

    def __post_init__(self) -> None:
        for name in ("first_token", "per_token", "jitter"):
            if getattr(self, name) < 0:
                raise ValueError(f"Latency.{name} must be >= 0, got {getattr(self, name)!r}")
        if self.tokens < 1:
            raise ValueError(f"Latency.tokens must be >= 1, got {self.tokens!r}")


def _override(latency: Latency, headers: Mapping[str, str]) -> Latency:
    changes: dict[str, Any] = {}
    if "x-fake-first-token-ms" in headers:
        changes["first_token"] = float(headers["x-fake-first-token-ms"]) / 1000
    if "x-fake-per-token-ms" in headers:
        changes["per_token"] = float(headers["x-fake-per-token-ms"]) / 1000
    if "x-fake-tokens" in headers:
        changes["tokens"] = int(headers["x-fake-tokens"])
    return replace(latency, **changes) if changes else latency


class _Model:
    """Generates the words of a completion, with the configured timing."""

    def __init__(self, latency: Latency, rng: random.Random) -> None:
        self.latency = latency
        self.rng = rng

    async def pause(self, seconds: float) -> None:
        if self.latency.jitter and seconds:
            seconds *= 1 + self.rng.uniform(-self.latency.jitter, self.latency.jitter)
        await asyncio.sleep(max(seconds, 0.0))

    async def words(self, count: int) -> AsyncIterator[str]:
        await self.pause(self.latency.first_token)
        for index in range(count):
            if index:
                await self.pause(self.latency.per_token)
            yield _VOCABULARY[index % len(_VOCABULARY)]

    async def text(self, count: int) -> str:
        return " ".join([word async for word in self.words(count)])


def _prompt_tokens(value: Any) -> int:
    """Whitespace-separated words in every string of the request's prompt part."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, Mapping):
        return sum(_prompt_tokens(v) for k, v in value.items() if k in ("content", "text"))
    if isinstance(value, list):
        return sum(_prompt_tokens(item) for item in value)
    return 0


def _sse(payload: Mapping[str, Any] | str, event: str | None = None) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return (f"event: {event}\n" if event else "") + f"data: {data}\n\n"


class _FakeLLM:
    """The endpoints; each answers like the real API, timed by its ``Latency``."""

    def __init__(self, latency: Latency, seed: int | None) -> None:
        self.latency = latency
        self.rng = random.Random(seed)  # noqa: S311 - fake data, not security
        self.ids = itertools.count(1)

    async def parse(
        self, request: Request, *, anthropic: bool = False
    ) -> tuple[dict[str, Any], _Model, int] | Response:
        status = request.headers.get("x-fake-status")
        if status:
            code = int(status)
            message = f"fake error {code}"
            envelope: dict[str, Any] = (
                {
                    "type": "error",
                    "error": {"type": _ANTHROPIC_ERRORS.get(code, "api_error"), "message": message},
                }
                if anthropic
                else {"error": {"message": message, "type": "fake_error", "code": code}}
            )
            return JSONResponse(
                envelope,
                status_code=code,
                headers={"retry-after": "0"} if code == 429 else {},
            )
        body: dict[str, Any] = await request.json()
        model = _Model(_override(self.latency, request.headers), self.rng)
        limit = (
            body.get("max_tokens")
            or body.get("max_completion_tokens")
            or body.get("max_output_tokens")
        )
        count = min(int(limit), model.latency.tokens) if limit else model.latency.tokens
        return body, model, count

    async def chat_completions(self, request: Request) -> Response:
        parsed = await self.parse(request)
        if isinstance(parsed, Response):
            return parsed
        body, model, count = parsed
        prompt = _prompt_tokens(body.get("messages", []))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": count,
            "total_tokens": prompt + count,
        }
        head = {
            "id": f"chatcmpl-fake{next(self.ids)}",
            "created": int(time.time()),
            "model": body["model"],
        }
        if not body.get("stream"):
            message = {"role": "assistant", "content": await model.text(count)}
            choice = {"index": 0, "finish_reason": "stop", "message": message}
            return JSONResponse(
                {**head, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
        chunk = {**head, "object": "chat.completion.chunk"}

        async def events() -> AsyncIterator[str]:
            first = True
            async for word in model.words(count):
                delta = {"role": "assistant", "content": word} if first else {"content": " " + word}
                first = False
                choice = {"index": 0, "delta": delta, "finish_reason": None}
                yield _sse({**chunk, "choices": [choice]})
            yield _sse({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if (body.get("stream_options") or {}).get("include_usage"):
                yield _sse({**chunk, "choices": [], "usage": usage})
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    async def completions(self, request: Request) -> Response:
        parsed = await self.parse(request)
        if isinstance(parsed, Response):
            return parsed
        body, model, count = parsed
        prompt = _prompt_tokens(body.get("prompt", ""))
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": count,
            "total_tokens": prompt + count,
        }
        head = {
            "id": f"cmpl-fake{next(self.ids)}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": body["model"],
        }

        def choice(text: str, finish_reason: str | None) -> dict[str, Any]:
            return {"index": 0, "text": text, "finish_reason": finish_reason, "logprobs": None}

        if not body.get("stream"):
            text = await model.text(count)
            return JSONResponse({**head, "usage": usage, "choices": [choice(text, "stop")]})

        async def events() -> AsyncIterator[str]:
            async for word in model.words(count):
                yield _sse({**head, "choices": [choice(word + " ", None)]})
            yield _sse({**head, "choices": [choice("", "stop")]})
            if (body.get("stream_options") or {}).get("include_usage"):
                yield _sse({**head, "choices": [], "usage": usage})
            yield _sse("[DONE]")

        return StreamingResponse(events(), media_type="text/event-stream")

    async def embeddings(self, request: Request) -> Response:
        parsed = await self.parse(request)
        if isinstance(parsed, Response):
            return parsed
        body, model, _ = parsed
        inputs = body["input"] if isinstance(body["input"], list) else [body["input"]]
        await model.pause(model.latency.first_token)
        tokens = _prompt_tokens(inputs)
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": [round(self.rng.uniform(-1, 1), 6) for _ in range(8)],
            }
            for i in range(len(inputs))
        ]
        return JSONResponse(
            {
                "object": "list",
                "model": body["model"],
                "data": data,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            }
        )

    async def responses(self, request: Request) -> Response:
        parsed = await self.parse(request)
        if isinstance(parsed, Response):
            return parsed
        body, model, count = parsed
        ident, created = f"resp_fake{next(self.ids)}", int(time.time())
        prompt = _prompt_tokens(body.get("input", ""))
        usage = {
            "input_tokens": prompt,
            "output_tokens": count,
            "total_tokens": prompt + count,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens_details": {"reasoning_tokens": 0},
        }

        def part(text: str) -> dict[str, Any]:
            return {"type": "output_text", "text": text, "annotations": []}

        def message(status: str, text: str | None) -> dict[str, Any]:
            return {
                "id": f"msg_{ident}",
                "type": "message",
                "role": "assistant",
                "status": status,
                "content": [] if text is None else [part(text)],
            }

        def response(status: str, text: str | None) -> dict[str, Any]:
            return {
                "id": ident,
                "object": "response",
                "created_at": created,
                "model": body["model"],
                "status": status,
                "output": [] if text is None else [message("completed", text)],
                "parallel_tool_calls": True,
                "tool_choice": "auto",
                "tools": [],
                "usage": usage if status == "completed" else None,
            }

        if not body.get("stream"):
            return JSONResponse(response("completed", await model.text(count)))

        async def events() -> AsyncIterator[str]:
            # the events of one text message, in the order the API sends them
            sequence = itertools.count()
            where = {"output_index": 0, "item_id": f"msg_{ident}"}
            yield _event(
                "response.created", next(sequence), {"response": response("in_progress", None)}
            )
            yield _event(
                "response.output_item.added",
                next(sequence),
                {"output_index": 0, "item": message("in_progress", None)},
            )
            yield _event(
                "response.content_part.added",
                next(sequence),
                {**where, "content_index": 0, "part": part("")},
            )
            words: list[str] = []
            async for word in model.words(count):
                piece = word if not words else " " + word
                words.append(piece)
                delta = {**where, "content_index": 0, "delta": piece, "logprobs": []}
                yield _event("response.output_text.delta", next(sequence), delta)
            text = "".join(words)
            yield _event(
                "response.output_text.done",
                next(sequence),
                {**where, "content_index": 0, "text": text, "logprobs": []},
            )
            yield _event(
                "response.content_part.done",
                next(sequence),
                {**where, "content_index": 0, "part": part(text)},
            )
            yield _event(
                "response.output_item.done",
                next(sequence),
                {"output_index": 0, "item": message("completed", text)},
            )
            yield _event(
                "response.completed", next(sequence), {"response": response("completed", text)}
            )

        return StreamingResponse(events(), media_type="text/event-stream")

    async def messages(self, request: Request) -> Response:
        """Anthropic's Messages API: a ``message``, or its stream of events."""
        parsed = await self.parse(request, anthropic=True)
        if isinstance(parsed, Response):
            return parsed
        body, model, count = parsed
        prompt = _prompt_tokens(body.get("messages", [])) + _prompt_tokens(body.get("system", ""))
        stop_reason = "max_tokens" if count == body.get("max_tokens") else "end_turn"
        message: dict[str, Any] = {
            "id": f"msg_fake{next(self.ids)}",
            "type": "message",
            "role": "assistant",
            "model": body["model"],
            "stop_sequence": None,
        }
        if not body.get("stream"):
            return JSONResponse(
                {
                    **message,
                    "content": [{"type": "text", "text": await model.text(count)}],
                    "stop_reason": stop_reason,
                    "usage": {"input_tokens": prompt, "output_tokens": count},
                }
            )

        async def events() -> AsyncIterator[str]:
            started = {**message, "content": [], "stop_reason": None}
            started["usage"] = {"input_tokens": prompt, "output_tokens": 1}
            yield _sse({"type": "message_start", "message": started}, "message_start")
            block = {"type": "text", "text": ""}
            yield _sse(
                {"type": "content_block_start", "index": 0, "content_block": block},
                "content_block_start",
            )
            yield _sse({"type": "ping"}, "ping")
            first = True
            async for word in model.words(count):
                delta = {"type": "text_delta", "text": word if first else " " + word}
                first = False
                yield _sse(
                    {"type": "content_block_delta", "index": 0, "delta": delta},
                    "content_block_delta",
                )
            yield _sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
            yield _sse(
                {
                    "type": "message_delta",
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": count},
                },
                "message_delta",
            )
            yield _sse({"type": "message_stop"}, "message_stop")

        return StreamingResponse(events(), media_type="text/event-stream")


_ANTHROPIC_ERRORS = {
    400: "invalid_request_error",
    401: "authentication_error",
    404: "not_found_error",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}
"""The ``error.type`` of Anthropic's error envelope, by status."""


def _event(kind: str, sequence: int, fields: Mapping[str, Any]) -> str:
    return _sse({"type": kind, "sequence_number": sequence, **fields}, kind)


def create_app(latency: Latency | None = None, *, seed: int | None = None) -> Starlette:
    """The fake server as an ASGI app (serve it with uvicorn)."""
    fake = _FakeLLM(latency or Latency(), seed)
    return Starlette(
        routes=[
            Route("/v1/chat/completions", fake.chat_completions, methods=["POST"]),
            Route("/v1/completions", fake.completions, methods=["POST"]),
            Route("/v1/embeddings", fake.embeddings, methods=["POST"]),
            Route("/v1/responses", fake.responses, methods=["POST"]),
            Route("/v1/messages", fake.messages, methods=["POST"]),
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="OpenAI- and Anthropic-compatible fake LLM server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument("--first-token-ms", type=float, default=200)
    parser.add_argument("--per-token-ms", type=float, default=10)
    parser.add_argument("--jitter", type=float, default=0.0, help="± fraction, e.g. 0.1")
    parser.add_argument("--tokens", type=int, default=16, help="completion length")
    parser.add_argument("--seed", type=int, default=None)
    args = parser.parse_args(argv)
    import uvicorn

    latency = Latency(
        args.first_token_ms / 1000, args.per_token_ms / 1000, args.jitter, args.tokens
    )
    uvicorn.run(
        create_app(latency, seed=args.seed),
        host=args.host,
        port=args.port,
        log_level="warning",
        timeout_keep_alive=75,  # clients keep their connections between bursts
    )


if __name__ == "__main__":
    main()
