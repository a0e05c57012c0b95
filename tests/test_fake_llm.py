"""The fake OpenAI-compatible server answers the real openai SDK, with the timing it is told."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from _servers import serve

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import fake_llm

pytestmark = pytest.mark.servers

FIRST_TOKEN_S = 0.1
PER_TOKEN_S = 0.01


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    app = fake_llm.create_app(
        fake_llm.Latency(first_token=FIRST_TOKEN_S, per_token=PER_TOKEN_S, tokens=8), seed=1
    )
    with serve(app) as url:
        yield f"{url}/v1"


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="not-needed", base_url=base_url, max_retries=0) as sdk:
        yield sdk


def test_chat_completion_with_real_usage(client: openai.OpenAI) -> None:
    started = time.perf_counter()
    completion = client.chat.completions.create(
        model="fake-gpt", messages=[{"role": "user", "content": "say five words please now"}]
    )
    elapsed = time.perf_counter() - started
    assert completion.model == "fake-gpt"
    assert completion.choices[0].finish_reason == "stop"
    assert len(completion.choices[0].message.content.split()) == 8  # type: ignore[union-attr]
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (5, 8)
    assert elapsed >= FIRST_TOKEN_S + 7 * PER_TOKEN_S


def test_chat_stream_first_chunk_timing_and_usage(client: openai.OpenAI) -> None:
    started = time.perf_counter()
    stream = client.chat.completions.create(
        model="fake-gpt",
        messages=[{"role": "user", "content": "stream it"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    first_at = None
    words, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            first_at = first_at or time.perf_counter() - started
            words.append(chunk.choices[0].delta.content)
        usage = chunk.usage or usage
    assert first_at is not None and abs(first_at - FIRST_TOKEN_S) < 0.05
    assert len("".join(words).split()) == 8
    assert usage is not None and usage.completion_tokens == 8 and usage.prompt_tokens == 2


def test_completions_embeddings_and_responses(client: openai.OpenAI) -> None:
    text = client.completions.create(model="fake-instruct", prompt="one two three", max_tokens=3)
    assert text.usage is not None and (text.usage.prompt_tokens, text.usage.completion_tokens) == (
        3,
        3,
    )
    vectors = client.embeddings.create(model="fake-embed", input=["a b", "c"])
    assert len(vectors.data) == 2 and vectors.usage.prompt_tokens == 3
    response = client.responses.create(model="fake-gpt", input="hello there")
    assert response.output_text and response.usage is not None
    assert (response.usage.input_tokens, response.usage.output_tokens) == (2, 8)
    streamed = [
        event.type for event in client.responses.create(model="fake-gpt", input="hi", stream=True)
    ]
    assert streamed[0] == "response.created" and streamed[-1] == "response.completed"
    assert streamed.count("response.output_text.delta") == 8


def test_errors_on_request(client: openai.OpenAI) -> None:
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(
            model="fake-gpt",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-status": "429"},
        )
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(
            model="fake-gpt",
            messages=[{"role": "user", "content": "x"}],
            extra_headers={"x-fake-status": "500"},
        )


@pytest.mark.anyio
async def test_async_client_stream(base_url: str) -> None:
    async with openai.AsyncOpenAI(api_key="not-needed", base_url=base_url, max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="fake-gpt",
            messages=[{"role": "user", "content": "hi"}],
            stream=True,
            extra_headers={"x-fake-first-token-ms": "20", "x-fake-tokens": "3"},
        )
        words = [
            chunk.choices[0].delta.content
            async for chunk in stream
            if chunk.choices and chunk.choices[0].delta.content
        ]
    assert len(words) == 3


def test_bad_latency_is_refused() -> None:
    with pytest.raises(ValueError, match=r"Latency\.first_token must be >= 0"):
        fake_llm.Latency(first_token=-1)
