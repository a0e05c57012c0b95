"""poolscope.llm_call: GenAI spans and metrics for any client, and the pinned-worker finding."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import poolscope
from _servers import serve
from conftest import Telemetry
from poolscope import semconv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import fake_llm

pytestmark = pytest.mark.servers


def test_a_call_makes_a_client_span_and_the_genai_metrics(telemetry: Telemetry) -> None:
    with poolscope.llm_call(
        provider="anthropic", model="claude-x", server_address="api.example", server_port=443
    ) as call:
        call.set_usage(input_tokens=12, output_tokens=30)
        call.set_response(model="claude-x-2026", id="msg_1", finish_reasons=["end_turn"])
    [span] = telemetry.spans("chat claude-x")
    assert span.kind is SpanKind.CLIENT
    assert dict(span.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "anthropic",
        "gen_ai.request.model": "claude-x",
        "gen_ai.request.stream": False,
        "server.address": "api.example",
        "server.port": 443,
        "gen_ai.response.model": "claude-x-2026",
        "gen_ai.response.id": "msg_1",
        "gen_ai.response.finish_reasons": ("end_turn",),
        "gen_ai.usage.input_tokens": 12,
        "gen_ai.usage.output_tokens": 30,
    }
    [duration] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert duration.count == 1
    assert list(duration.explicit_bounds) == list(semconv.GEN_AI_DURATION_BUCKETS)
    tokens = {
        p.attributes[semconv.ATTR_GEN_AI_TOKEN_TYPE]: p.sum
        for p in telemetry.points(semconv.METRIC_GEN_AI_TOKEN_USAGE)
    }
    assert tokens == {"input": 12, "output": 30}


def test_a_failed_call_has_error_type_and_reraises(telemetry: Telemetry) -> None:
    with pytest.raises(TimeoutError), poolscope.llm_call(provider="openai", model="m"):
        raise TimeoutError("upstream too slow")
    [span] = telemetry.spans("chat m")
    assert span.status.status_code is StatusCode.ERROR
    # the one error policy, as on the task spans (tests/test_thread_pool.py)
    assert span.status.description == "TimeoutError: upstream too slow"
    assert [event.name for event in span.events] == ["exception"]
    assert (span.attributes or {})[semconv.ATTR_ERROR_TYPE] == "TimeoutError"
    [duration] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert duration.attributes[semconv.ATTR_ERROR_TYPE] == "TimeoutError"


def test_a_stream_records_time_to_first_chunk(telemetry: Telemetry) -> None:
    with poolscope.llm_call(provider="openai", model="m", stream=True) as call:
        time.sleep(0.05)  # the behaviour under test is a duration: the first chunk after ~50 ms
        call.first_chunk()
        time.sleep(0.02)
        call.first_chunk()  # later chunks do not move it
    [span] = telemetry.spans("chat m")
    first = (span.attributes or {})[semconv.ATTR_GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert 0.045 <= first <= 0.065
    [ttfc] = telemetry.points(semconv.METRIC_GEN_AI_TIME_TO_FIRST_CHUNK)
    assert ttfc.count == 1 and 0.045 <= ttfc.sum <= 0.065


@pytest.mark.anyio
async def test_decorates_sync_and_async_functions(telemetry: Telemetry) -> None:
    @poolscope.llm_call(provider="p", model="embed-1", operation="embeddings")
    def embed(text: str) -> list[float]:
        return [float(len(text))]

    @poolscope.llm_call(provider="p", model="chat-1")
    async def chat(text: str) -> str:
        await asyncio.sleep(0)
        return text.upper()

    assert embed("abc") == [3.0]
    assert await chat("hi") == "HI"
    assert await chat("again") == "AGAIN"
    assert len(telemetry.spans("embeddings embed-1")) == 1
    assert len(telemetry.spans("chat chat-1")) == 2


def test_bad_arguments_are_named() -> None:
    with pytest.raises(poolscope.ConfigurationError, match="provider must be a non-empty string"):
        poolscope.llm_call(provider="", model="m")
    with pytest.raises(poolscope.ConfigurationError, match="model must be a non-empty string"):
        poolscope.llm_call(provider="p", model=None)  # type: ignore[arg-type]


def test_a_sync_llm_call_in_to_thread_pins_a_worker_and_the_request_says_so(
    telemetry: Telemetry,
) -> None:
    # The generic API around a client poolscope does not instrument by itself:
    # leave the openai path out, so llm_call() makes the only LLM span.
    poolscope.uninstrument()
    poolscope.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        paths=["thread_pool", "anyio"],
    )
    llm_app = fake_llm.create_app(fake_llm.Latency(first_token=0.1, per_token=0.005, tokens=4))
    with serve(llm_app) as llm_url:
        client = openai.OpenAI(api_key="not-needed", base_url=f"{llm_url}/v1", max_retries=0)

        def ask() -> str:
            with poolscope.llm_call(provider="openai", model="fake-gpt") as call:
                completion = client.chat.completions.create(
                    model="fake-gpt", messages=[{"role": "user", "content": "hello"}]
                )
                assert completion.usage is not None
                call.set_usage(
                    input_tokens=completion.usage.prompt_tokens,
                    output_tokens=completion.usage.completion_tokens,
                )
            return completion.choices[0].message.content or ""

        async def summarize(request: Request) -> PlainTextResponse:
            return PlainTextResponse(await asyncio.to_thread(ask))

        app = Starlette(
            routes=[Route("/summarize", summarize)],
            middleware=[
                Middleware(poolscope.PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)
            ],
        )
        with serve(app) as url, httpx.Client(base_url=url, timeout=30) as http:
            assert http.get("/summarize").status_code == 200
        client.close()

    [request] = [s for s in telemetry.spans() if s.kind is SpanKind.SERVER]
    [run] = telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ASYNCIO_DEFAULT)
    [llm] = telemetry.spans("chat fake-gpt")
    assert run.parent is not None and run.parent.span_id == request.context.span_id
    assert llm.parent is not None and llm.parent.span_id == run.context.span_id
    assert (llm.attributes or {})[semconv.ATTR_EXECUTOR_NAME] == semconv.POOL_ASYNCIO_DEFAULT
    attributes = request.attributes or {}
    assert attributes[semconv.ATTR_EXECUTOR_PINNED_LLM] is True
    held = attributes[semconv.ATTR_EXECUTOR_PINNED_LLM_DURATION]
    llm_seconds = ((llm.end_time or 0) - (llm.start_time or 0)) / 1e9
    assert held == pytest.approx(llm_seconds, abs=0.005)
    assert held >= 0.1  # the fake model's first-token delay
    [pinned] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert pinned.attributes[semconv.ATTR_EXECUTOR_NAME] == semconv.POOL_ASYNCIO_DEFAULT
    assert pinned.sum == pytest.approx(llm_seconds, abs=0.005)
