"""The real openai SDK against the fake server on a real socket: GenAI spans, streams, errors."""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import openai
import pytest
from fastapi import FastAPI
from opentelemetry.trace import SpanKind, StatusCode

import poolscope
from _helpers import CallerClock, duration_ms
from _servers import serve
from conftest import Telemetry
from poolscope import semconv

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))
import fake_llm

pytestmark = pytest.mark.servers

FIRST_TOKEN_S = 0.1
PER_TOKEN_S = 0.01
TOKENS = 8
PROMPT = "tell me a secret about pools"  # must never appear in telemetry
PROMPT_TOKENS = len(PROMPT.split())  # what the fake server counts
WHOLE_STREAM_MS = (FIRST_TOKEN_S + (TOKENS - 1) * PER_TOKEN_S) * 1000


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    latency = fake_llm.Latency(first_token=FIRST_TOKEN_S, per_token=PER_TOKEN_S, tokens=TOKENS)
    with serve(fake_llm.create_app(latency, seed=7)) as url:
        yield f"{url}/v1"


@pytest.fixture
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(api_key="not-needed", base_url=base_url, max_retries=0) as sdk:
        yield sdk


def messages() -> list[dict[str, str]]:
    return [{"role": "user", "content": PROMPT}]


def assert_no_prompt(telemetry: Telemetry) -> None:
    for span in telemetry.spans():
        values = [str(v) for v in (span.attributes or {}).values()]
        values += [str(v) for event in span.events for v in (event.attributes or {}).values()]
        assert not any("secret" in value for value in values), span.name


def test_chat_completion(telemetry: Telemetry, client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(model="fake-gpt", messages=messages())
    [span] = telemetry.spans("chat fake-gpt")
    attributes = dict(span.attributes or {})
    assert span.kind is SpanKind.CLIENT
    assert attributes[semconv.ATTR_GEN_AI_PROVIDER_NAME] == "openai"
    assert attributes[semconv.ATTR_GEN_AI_OPERATION_NAME] == "chat"
    assert attributes[semconv.ATTR_GEN_AI_RESPONSE_MODEL] == "fake-gpt"
    assert attributes[semconv.ATTR_GEN_AI_RESPONSE_ID] == completion.id
    assert attributes[semconv.ATTR_GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == PROMPT_TOKENS
    assert attributes[semconv.ATTR_GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS
    assert attributes[semconv.ATTR_GEN_AI_USAGE_OUTPUT_TOKENS] == completion.usage.completion_tokens
    assert attributes[semconv.ATTR_SERVER_ADDRESS] == "127.0.0.1"
    assert attributes[semconv.ATTR_GEN_AI_REQUEST_STREAM] is False
    [duration] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert duration.count == 1
    assert_no_prompt(telemetry)


def test_a_stream_span_covers_the_stream_and_times_the_first_chunk(
    telemetry: Telemetry, client: openai.OpenAI
) -> None:
    clock = CallerClock()
    stream = client.chat.completions.create(
        model="fake-gpt", messages=messages(), stream=True, stream_options={"include_usage": True}
    )
    assert telemetry.spans("chat fake-gpt") == []  # still open while the stream is read
    chunks = []
    for chunk in stream:
        clock.chunk()
        chunks.append(chunk)
    assert len(chunks) == TOKENS + 2  # words, the finish chunk, the usage chunk
    [span] = telemetry.spans("chat fake-gpt")
    attributes = dict(span.attributes or {})
    assert duration_ms(span) >= (FIRST_TOKEN_S + (TOKENS - 1) * PER_TOKEN_S) * 1000
    first = attributes[semconv.ATTR_GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert isinstance(first, float)
    clock.assert_first_chunk(first, FIRST_TOKEN_S)
    assert attributes[semconv.ATTR_GEN_AI_USAGE_OUTPUT_TOKENS] == TOKENS
    assert attributes[semconv.ATTR_GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS
    assert attributes[semconv.ATTR_GEN_AI_RESPONSE_FINISH_REASONS] == ("stop",)
    [ttfc] = telemetry.points(semconv.METRIC_GEN_AI_TIME_TO_FIRST_CHUNK)
    assert ttfc.count == 1 and ttfc.sum == first
    assert_no_prompt(telemetry)


@pytest.mark.anyio
async def test_async_client_stream_and_plain(telemetry: Telemetry, base_url: str) -> None:
    async with openai.AsyncOpenAI(api_key="x", base_url=base_url, max_retries=0) as sdk:
        await sdk.chat.completions.create(model="fake-gpt", messages=messages())
        clock = CallerClock()
        stream = await sdk.chat.completions.create(
            model="fake-gpt", messages=messages(), stream=True
        )
        words = []
        async for chunk in stream:
            clock.chunk()
            if chunk.choices and chunk.choices[0].delta.content:
                words.append(chunk)
    assert len(words) == TOKENS
    spans = telemetry.spans("chat fake-gpt")
    assert len(spans) == 2
    streamed = [s for s in spans if (s.attributes or {}).get(semconv.ATTR_GEN_AI_REQUEST_STREAM)]
    [stream_span] = streamed
    first = (stream_span.attributes or {})[semconv.ATTR_GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert isinstance(first, float)
    clock.assert_first_chunk(first, FIRST_TOKEN_S)


def test_a_stream_closed_after_three_chunks_ends_its_span(
    telemetry: Telemetry, client: openai.OpenAI
) -> None:
    with client.chat.completions.create(
        model="fake-gpt", messages=messages(), stream=True
    ) as stream:
        for index, _chunk in enumerate(stream):
            if index == 2:
                break
    [span] = telemetry.spans("chat fake-gpt")
    assert span.status.status_code is not StatusCode.ERROR
    assert semconv.ATTR_ERROR_TYPE not in (span.attributes or {})
    assert duration_ms(span) < (FIRST_TOKEN_S + (TOKENS - 1) * PER_TOKEN_S) * 1000


def test_an_abandoned_stream_ends_its_span_when_collected(
    telemetry: Telemetry, client: openai.OpenAI
) -> None:
    stream = client.chat.completions.create(model="fake-gpt", messages=messages(), stream=True)
    next(iter(stream))
    del stream
    gc.collect()
    assert len(telemetry.spans("chat fake-gpt")) == 1


@pytest.mark.parametrize(
    ("status", "error"), [("429", "openai.RateLimitError"), ("500", "openai.InternalServerError")]
)
def test_server_errors(
    telemetry: Telemetry, client: openai.OpenAI, status: str, error: str
) -> None:
    with pytest.raises(openai.APIStatusError):
        client.chat.completions.create(
            model="fake-gpt", messages=messages(), extra_headers={"x-fake-status": status}
        )
    [span] = telemetry.spans("chat fake-gpt")
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})[semconv.ATTR_ERROR_TYPE] == error
    [duration] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert duration.attributes[semconv.ATTR_ERROR_TYPE] == error


def test_a_timeout_and_the_sdks_retries_are_one_span(telemetry: Telemetry, base_url: str) -> None:
    with openai.OpenAI(api_key="x", base_url=base_url, max_retries=1, timeout=0.05) as sdk:
        with pytest.raises(openai.APITimeoutError):
            sdk.chat.completions.create(model="fake-gpt", messages=messages())
    [span] = telemetry.spans("chat fake-gpt")
    assert (span.attributes or {})[semconv.ATTR_ERROR_TYPE] == "openai.APITimeoutError"
    assert duration_ms(span) >= 100  # two attempts of 50 ms, one span


def test_completions_embeddings_and_responses(telemetry: Telemetry, client: openai.OpenAI) -> None:
    client.completions.create(model="fake-instruct", prompt=PROMPT, max_tokens=3)
    client.embeddings.create(model="fake-embed", input=[PROMPT])
    client.responses.create(model="fake-gpt", input=PROMPT)
    list(client.responses.create(model="fake-gpt", input=PROMPT, stream=True))
    names = sorted(span.name for span in telemetry.spans())
    assert names == [
        "chat fake-gpt",
        "chat fake-gpt",
        "embeddings fake-embed",
        "text_completion fake-instruct",
    ]
    [embedding] = telemetry.spans("embeddings fake-embed")
    assert (embedding.attributes or {})[semconv.ATTR_GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS
    for span in telemetry.spans("chat fake-gpt"):
        attributes = span.attributes or {}
        assert attributes[semconv.ATTR_GEN_AI_USAGE_OUTPUT_TOKENS] == TOKENS
        assert attributes[semconv.ATTR_GEN_AI_RESPONSE_FINISH_REASONS] == ("completed",)
    assert_no_prompt(telemetry)


def test_a_fastapi_endpoint_with_the_sync_client_in_to_thread_pins_workers(
    telemetry: Telemetry, base_url: str
) -> None:
    sdk = openai.OpenAI(api_key="x", base_url=base_url, max_retries=0)
    app = FastAPI()

    @app.get("/limit")
    async def limit() -> dict[str, int]:
        asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(2))
        return {"workers": 2}

    @app.get("/ask")
    async def ask() -> dict[str, str]:
        completion = await asyncio.to_thread(
            sdk.chat.completions.create, model="fake-gpt", messages=messages()
        )
        return {"answer": completion.choices[0].message.content or ""}

    app.add_middleware(poolscope.PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)

    async def load(url: str) -> list[int]:
        async with httpx.AsyncClient(base_url=url, timeout=60) as http:
            assert (await http.get("/limit")).status_code == 200
            responses = await asyncio.gather(*(http.get("/ask") for _ in range(6)))
        return [r.status_code for r in responses]

    with serve(app) as url:
        assert asyncio.run(load(url)) == [200] * 6
    sdk.close()

    requests = [s for s in telemetry.spans() if s.kind is SpanKind.SERVER and s.name == "GET /ask"]
    assert len(requests) == 6
    runs = {s.context.span_id: s for s in telemetry.spans(semconv.SPAN_RUN)}
    waits = telemetry.spans(semconv.SPAN_WAIT, pool=semconv.POOL_ASYNCIO_DEFAULT)
    assert len(waits) >= 4  # six calls through two workers: most queued
    for request in requests:
        attributes = request.attributes or {}
        assert attributes[semconv.ATTR_EXECUTOR_PINNED_LLM] is True
        assert attributes[semconv.ATTR_EXECUTOR_PINNED_LLM_DURATION] >= FIRST_TOKEN_S
    for llm in telemetry.spans("chat fake-gpt"):
        assert llm.parent is not None
        run = runs[llm.parent.span_id]  # request -> executor.run -> chat fake-gpt
        assert run.parent is not None
        assert run.parent.span_id in {r.context.span_id for r in requests}
        assert (llm.attributes or {})[semconv.ATTR_EXECUTOR_NAME] == semconv.POOL_ASYNCIO_DEFAULT
    assert_no_prompt(telemetry)


def hooked_classes() -> list[type]:
    from openai import _base_client, _response, _streaming

    return [
        _base_client.SyncAPIClient,
        _base_client.AsyncAPIClient,
        _streaming.Stream,
        _streaming.AsyncStream,
        _response.APIResponse,
        _response.AsyncAPIResponse,
    ]


def test_uninstrument_restores_the_sdk_exactly() -> None:
    poolscope.uninstrument()
    before = [dict(owner.__dict__) for owner in hooked_classes()]
    poolscope.instrument()
    assert [dict(owner.__dict__) for owner in hooked_classes()] != before
    poolscope.uninstrument()
    assert [dict(owner.__dict__) for owner in hooked_classes()] == before


def test_the_objects_the_sdk_returns_are_its_own(client: openai.OpenAI) -> None:
    with client.chat.completions.create(
        model="fake-gpt", messages=messages(), stream=True
    ) as stream:
        assert type(stream) is openai.Stream
        assert type(stream.response).__module__.startswith("httpx")
        list(stream)
    raw = client.chat.completions.with_raw_response.create(model="fake-gpt", messages=messages())
    assert type(raw).__module__ == "openai._legacy_response"


def usage_points(telemetry: Telemetry, kind: str) -> list[float]:
    return [
        point.sum
        for point in telemetry.points(semconv.METRIC_GEN_AI_TOKEN_USAGE)
        if point.attributes[semconv.ATTR_GEN_AI_TOKEN_TYPE] == kind
    ]


def test_raw_responses_are_calls_that_last_until_their_body_is_read(
    telemetry: Telemetry, client: openai.OpenAI
) -> None:
    raw = client.chat.completions.with_raw_response.create(model="fake-gpt", messages=messages())
    assert raw.parse().usage is not None  # read when the call returned: already one span
    [plain] = telemetry.spans("chat fake-gpt")
    assert (plain.attributes or {})[semconv.ATTR_GEN_AI_USAGE_OUTPUT_TOKENS] == TOKENS

    clock = CallerClock()
    raw_stream = client.chat.completions.with_raw_response.create(
        model="fake-gpt", messages=messages(), stream=True
    )
    assert len(telemetry.spans("chat fake-gpt")) == 1  # its body not read yet
    words = []
    for chunk in raw_stream.parse():
        clock.chunk()
        if chunk.choices and chunk.choices[0].delta.content:
            words.append(chunk)
    assert len(words) == TOKENS
    streamed = telemetry.spans("chat fake-gpt")[1]
    attributes = streamed.attributes or {}
    assert attributes[semconv.ATTR_GEN_AI_REQUEST_STREAM] is True
    first = attributes[semconv.ATTR_GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert isinstance(first, float)
    clock.assert_first_chunk(first, FIRST_TOKEN_S)
    assert duration_ms(streamed) >= WHOLE_STREAM_MS
    assert_no_prompt(telemetry)


def test_streaming_responses_are_calls_that_end_with_their_body(
    telemetry: Telemetry, client: openai.OpenAI
) -> None:
    completions = client.chat.completions.with_streaming_response
    with completions.create(model="fake-gpt", messages=messages()) as response:
        assert telemetry.spans("chat fake-gpt") == []  # the body is still to be read
        assert response.parse().usage is not None
    with completions.create(model="fake-gpt", messages=messages(), stream=True) as response:
        lines = [line for line in response.iter_lines() if line.startswith("data: {")]
        assert telemetry.spans("chat fake-gpt")[1:] == []
    assert len(lines) == TOKENS + 1
    plain, streamed = telemetry.spans("chat fake-gpt")
    # parse() read the body: the call knows what it said
    assert (plain.attributes or {})[semconv.ATTR_GEN_AI_USAGE_OUTPUT_TOKENS] == TOKENS
    # the application read the stream's lines itself: the call lasted until it closed them
    assert duration_ms(streamed) >= WHOLE_STREAM_MS
    assert usage_points(telemetry, semconv.GEN_AI_TOKEN_TYPE_OUTPUT) == [TOKENS]


def test_the_stream_helpers(telemetry: Telemetry, client: openai.OpenAI) -> None:
    with client.chat.completions.stream(
        model="fake-gpt", messages=messages(), stream_options={"include_usage": True}
    ) as chat_stream:
        final = chat_stream.get_final_completion()
    assert final.choices[0].message.content
    with client.responses.stream(model="fake-gpt", input=PROMPT) as responses_stream:
        response = responses_stream.get_final_response()
    assert response.output_text
    spans = telemetry.spans("chat fake-gpt")
    assert len(spans) == 2
    for span in spans:
        attributes = span.attributes or {}
        assert attributes[semconv.ATTR_GEN_AI_REQUEST_STREAM] is True
        assert attributes[semconv.ATTR_GEN_AI_USAGE_OUTPUT_TOKENS] == TOKENS
        assert attributes[semconv.ATTR_GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS
        assert duration_ms(span) >= WHOLE_STREAM_MS
    [ttfc] = telemetry.points(semconv.METRIC_GEN_AI_TIME_TO_FIRST_CHUNK)
    assert ttfc.count == 2
    assert_no_prompt(telemetry)


def test_parse_is_a_call(telemetry: Telemetry, client: openai.OpenAI) -> None:
    completion = client.chat.completions.parse(model="fake-gpt", messages=messages())
    [span] = telemetry.spans("chat fake-gpt")
    assert (span.attributes or {})[semconv.ATTR_GEN_AI_RESPONSE_ID] == completion.id


@pytest.mark.anyio
async def test_the_async_helpers(telemetry: Telemetry, base_url: str) -> None:
    async with openai.AsyncOpenAI(api_key="x", base_url=base_url, max_retries=0) as sdk:
        raw = await sdk.chat.completions.with_raw_response.create(
            model="fake-gpt", messages=messages()
        )
        assert raw.parse().usage is not None
        async with sdk.chat.completions.with_streaming_response.create(
            model="fake-gpt", messages=messages()
        ) as response:
            assert len(telemetry.spans("chat fake-gpt")) == 1
            await response.parse()
        async with sdk.chat.completions.stream(
            model="fake-gpt", messages=messages(), stream_options={"include_usage": True}
        ) as stream:
            async for _event in stream:
                pass
        async with sdk.responses.stream(model="fake-gpt", input=PROMPT) as events:
            await events.get_final_response()
    spans = telemetry.spans("chat fake-gpt")
    assert len(spans) == 4
    for span in spans:
        assert (span.attributes or {})[semconv.ATTR_GEN_AI_USAGE_OUTPUT_TOKENS] == TOKENS


def test_other_api_calls_are_no_llm_calls(telemetry: Telemetry, client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):  # the fake server has no models endpoint
        client.models.list()
    assert telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION) == []
    assert [s for s in telemetry.spans() if s.kind is SpanKind.CLIENT] == []


def test_content_is_captured_only_when_switched_on_and_capped(
    telemetry: Telemetry, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    poolscope.uninstrument()
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    poolscope.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        content_max_length=200,
    )
    completion = client.chat.completions.create(model="fake-gpt", messages=messages())
    list(client.chat.completions.create(model="fake-gpt", messages=messages(), stream=True))
    plain, streamed = telemetry.spans("chat fake-gpt")
    for span in (plain, streamed):
        attributes = span.attributes or {}
        inputs = json.loads(str(attributes[semconv.ATTR_GEN_AI_INPUT_MESSAGES]))
        assert inputs == [{"role": "user", "parts": [{"type": "text", "content": PROMPT}]}]
        outputs = json.loads(str(attributes[semconv.ATTR_GEN_AI_OUTPUT_MESSAGES]))
        assert outputs[0]["parts"][0]["content"] == completion.choices[0].message.content
        assert outputs[0]["finish_reason"] == "stop"

    poolscope.uninstrument()
    poolscope.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        content_max_length=40,
    )
    client.chat.completions.create(model="fake-gpt", messages=messages())
    capped = telemetry.spans("chat fake-gpt")[-1]
    text = str((capped.attributes or {})[semconv.ATTR_GEN_AI_INPUT_MESSAGES])
    assert len(text) == 40 + len("…[truncated]") and text.endswith("…[truncated]")


def test_a_bad_capture_switch_is_named() -> None:
    from poolscope._config import Settings

    with pytest.raises(poolscope.ConfigurationError, match="OTEL_INSTRUMENTATION_GENAI_CAPTURE"):
        Settings.resolve(
            environ={"OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "yes please"}
        )


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize(
    "poolscope_first", [True, False], ids=["poolscope-first", "openai-v2-first"]
)
def test_with_opentelemetry_instrumentation_openai_v2_there_is_one_span_enriched(
    telemetry: Telemetry, client: openai.OpenAI, poolscope_first: bool, stream: bool
) -> None:
    from openai.resources.chat.completions import Completions
    from opentelemetry.instrumentation.openai_v2 import OpenAIInstrumentor

    providers = {
        "tracer_provider": telemetry.tracer_provider,
        "meter_provider": telemetry.meter_provider,
    }
    poolscope.uninstrument()
    original = Completions.__dict__["create"]
    if poolscope_first:
        poolscope.instrument(**providers)
        OpenAIInstrumentor().instrument(**providers)
    else:
        OpenAIInstrumentor().instrument(**providers)
        poolscope.instrument(**providers)
    try:
        pool = poolscope.instrument_executor(ThreadPoolExecutor(1), name="llm-workers")
        with pool, telemetry.tracer.start_as_current_span("request"):

            def ask() -> None:
                result = client.chat.completions.create(
                    model="fake-gpt", messages=messages(), stream=stream
                )
                if stream:
                    assert len(list(result)) == TOKENS + 1

            pool.submit(ask).result()
    finally:
        OpenAIInstrumentor().uninstrument()
        poolscope.uninstrument()
    assert Completions.__dict__["create"] is original
    [span] = telemetry.spans("chat fake-gpt")
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name != "poolscope"  # theirs, not a second one of ours
    assert (span.attributes or {})[semconv.ATTR_EXECUTOR_NAME] == "llm-workers"


def test_a_consumer_that_raises_mid_stream_still_ends_the_span(
    telemetry: Telemetry, client: openai.OpenAI
) -> None:
    def consume() -> None:
        with client.chat.completions.create(
            model="fake-gpt", messages=messages(), stream=True
        ) as stream:
            for _chunk in stream:
                raise KeyError("the consumer's own bug")

    with pytest.raises(KeyError):
        consume()
    [span] = telemetry.spans("chat fake-gpt")
    # the LLM call itself did not fail: no error on its span
    assert span.status.status_code is not StatusCode.ERROR


@pytest.mark.anyio
async def test_an_async_stream_closed_early_ends_its_span(
    telemetry: Telemetry, base_url: str
) -> None:
    async with openai.AsyncOpenAI(api_key="x", base_url=base_url, max_retries=0) as sdk:
        stream = await sdk.chat.completions.create(
            model="fake-gpt", messages=messages(), stream=True
        )
        async for _chunk in stream:
            break
        await stream.close()
    [span] = telemetry.spans("chat fake-gpt")
    assert duration_ms(span) < (FIRST_TOKEN_S + (TOKENS - 1) * PER_TOKEN_S) * 1000
    [ttfc] = telemetry.points(semconv.METRIC_GEN_AI_TIME_TO_FIRST_CHUNK)
    assert ttfc.count == 1


def test_an_agent_span_around_the_call_does_not_suppress_the_chat_span(
    telemetry: Telemetry, client: openai.OpenAI
) -> None:
    with telemetry.tracer.start_as_current_span(
        "invoke_agent planner",
        kind=SpanKind.CLIENT,
        attributes={semconv.ATTR_GEN_AI_OPERATION_NAME: "invoke_agent"},
    ):
        client.chat.completions.create(model="fake-gpt", messages=messages())
    [chat] = telemetry.spans("chat fake-gpt")
    [agent] = telemetry.spans("invoke_agent planner")
    assert chat.parent is not None and chat.parent.span_id == agent.context.span_id
