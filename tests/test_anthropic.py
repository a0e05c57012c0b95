"""The real anthropic SDK against the fake server on a real socket, with its own tracing on and off.

With the SDK's tracing on, each call has exactly one span, the SDK's, with the
pool added; with it off, poolscope's own GenAI span. The GenAI metrics come
from poolscope either way.
"""

from __future__ import annotations

import asyncio
import gc
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import pytest
from opentelemetry import trace as trace_api
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
MODEL = "fake-claude"
PROMPT = "tell me a secret about pools"  # must never appear in telemetry by default
PROMPT_TOKENS = len(PROMPT.split())  # what the fake server counts
SDK_SCOPE = "com.anthropic.sdk.python"
OUR_SPAN = f"chat {MODEL}"
WHOLE_STREAM_MS = (FIRST_TOKEN_S + (TOKENS - 1) * PER_TOKEN_S) * 1000


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    latency = fake_llm.Latency(first_token=FIRST_TOKEN_S, per_token=PER_TOKEN_S, tokens=TOKENS)
    with serve(fake_llm.create_app(latency, seed=7)) as url:
        yield url


@pytest.fixture(params=["sdk-tracing", "tracing-off", "tracing-off-by-env"])
def tracing(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    if request.param == "tracing-off-by-env":
        monkeypatch.setenv("ANTHROPIC_OPEN_TELEMETRY", "false")
    return str(request.param)


def client_options(tracing: str, telemetry: Telemetry, base_url: str) -> dict[str, Any]:
    options: dict[str, Any] = {"api_key": "not-needed", "base_url": base_url, "max_retries": 0}
    if tracing == "sdk-tracing":
        options["open_telemetry"] = {"tracer_provider": telemetry.tracer_provider}
    elif tracing == "tracing-off":
        options["open_telemetry"] = False
    return options


@pytest.fixture
def client(tracing: str, telemetry: Telemetry, base_url: str) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(**client_options(tracing, telemetry, base_url)) as sdk:
        yield sdk


def ask(**extra: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": PROMPT}],
        **extra,
    }


def the_span(telemetry: Telemetry, tracing: str) -> Any:
    """The call's one span: the SDK's with its tracing on, else poolscope's."""
    spans = [s for s in telemetry.spans() if s.kind is SpanKind.CLIENT]
    assert len(spans) == 1, [(s.name, s.instrumentation_scope) for s in spans]
    [span] = spans
    assert span.instrumentation_scope is not None
    if tracing == "sdk-tracing":
        assert span.name == "anthropic.messages.create"
        assert span.instrumentation_scope.name == SDK_SCOPE
    else:
        assert span.name == OUR_SPAN
        assert span.instrumentation_scope.name == "poolscope"
        attributes = span.attributes or {}
        assert attributes[semconv.ATTR_GEN_AI_PROVIDER_NAME] == "anthropic"
        assert attributes[semconv.ATTR_GEN_AI_OPERATION_NAME] == "chat"
        assert attributes[semconv.ATTR_SERVER_ADDRESS] == "127.0.0.1"
    return span


def assert_no_prompt(telemetry: Telemetry) -> None:
    for span in telemetry.spans():
        values = [str(v) for v in (span.attributes or {}).values()]
        values += [str(v) for event in span.events for v in (event.attributes or {}).values()]
        assert not any("secret" in value for value in values), span.name


def assert_metrics(telemetry: Telemetry, *, output_tokens: int = TOKENS) -> None:
    [duration] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert duration.count == 1
    assert duration.attributes[semconv.ATTR_GEN_AI_PROVIDER_NAME] == "anthropic"
    assert duration.attributes[semconv.ATTR_GEN_AI_REQUEST_MODEL] == MODEL
    assert duration.attributes[semconv.ATTR_GEN_AI_RESPONSE_MODEL] == MODEL
    tokens = {
        point.attributes[semconv.ATTR_GEN_AI_TOKEN_TYPE]: point.sum
        for point in telemetry.points(semconv.METRIC_GEN_AI_TOKEN_USAGE)
    }
    assert tokens == {
        semconv.GEN_AI_TOKEN_TYPE_INPUT: PROMPT_TOKENS,
        semconv.GEN_AI_TOKEN_TYPE_OUTPUT: output_tokens,
    }


def test_a_message(telemetry: Telemetry, client: anthropic.Anthropic, tracing: str) -> None:
    message = client.messages.create(**ask())
    span = the_span(telemetry, tracing)
    attributes = span.attributes or {}
    assert attributes["gen_ai.response.id"] == message.id
    assert attributes[semconv.ATTR_GEN_AI_USAGE_OUTPUT_TOKENS] == message.usage.output_tokens
    assert message.usage.input_tokens == PROMPT_TOKENS
    if tracing != "sdk-tracing":
        assert attributes[semconv.ATTR_GEN_AI_RESPONSE_FINISH_REASONS] == ("end_turn",)
        assert attributes[semconv.ATTR_GEN_AI_USAGE_INPUT_TOKENS] == PROMPT_TOKENS
    assert_metrics(telemetry)
    assert_no_prompt(telemetry)


def test_a_stream_lasts_as_long_as_it_is_read_and_times_the_first_chunk(
    telemetry: Telemetry, client: anthropic.Anthropic, tracing: str
) -> None:
    clock = CallerClock()
    stream = client.messages.create(**ask(stream=True))
    assert [s for s in telemetry.spans() if s.kind is SpanKind.CLIENT] == []  # still open
    deltas = 0
    for event in stream:
        if event.type == "content_block_delta":
            clock.chunk()
            deltas += 1
    assert deltas == TOKENS
    span = the_span(telemetry, tracing)
    assert duration_ms(span) >= WHOLE_STREAM_MS
    [first] = telemetry.points(semconv.METRIC_GEN_AI_TIME_TO_FIRST_CHUNK)
    assert first.count == 1
    clock.assert_first_chunk(first.sum, FIRST_TOKEN_S)
    [duration] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert duration.sum >= WHOLE_STREAM_MS / 1000
    assert_metrics(telemetry)
    assert_no_prompt(telemetry)


def test_the_stream_helper(telemetry: Telemetry, client: anthropic.Anthropic, tracing: str) -> None:
    clock = CallerClock()
    pieces = []
    with client.messages.stream(**ask()) as stream:
        for piece in stream.text_stream:
            clock.chunk()
            pieces.append(piece)
        final = stream.get_final_message()
    assert len("".join(pieces).split()) == TOKENS
    assert final.usage.output_tokens == TOKENS
    the_span(telemetry, tracing)
    [first] = telemetry.points(semconv.METRIC_GEN_AI_TIME_TO_FIRST_CHUNK)
    clock.assert_first_chunk(first.sum, FIRST_TOKEN_S)
    assert_metrics(telemetry)


@pytest.mark.parametrize(("status", "kind"), [("429", "rate_limit_error"), ("500", "api_error")])
def test_an_error_is_its_error_type_on_the_span_and_the_metric(
    telemetry: Telemetry, client: anthropic.Anthropic, tracing: str, status: str, kind: str
) -> None:
    with pytest.raises(anthropic.APIStatusError):
        client.messages.create(**ask(), extra_headers={"x-fake-status": status})
    span = the_span(telemetry, tracing)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})[semconv.ATTR_ERROR_TYPE] == kind
    [duration] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert duration.attributes[semconv.ATTR_ERROR_TYPE] == kind


def test_a_stream_closed_early_ends_the_call(
    telemetry: Telemetry, client: anthropic.Anthropic, tracing: str
) -> None:
    with client.messages.create(**ask(stream=True)) as stream:
        for event in stream:
            if event.type == "content_block_delta":
                break
    span = the_span(telemetry, tracing)
    assert duration_ms(span) < WHOLE_STREAM_MS
    assert semconv.ATTR_ERROR_TYPE not in (span.attributes or {})
    [duration] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert duration.count == 1 and semconv.ATTR_ERROR_TYPE not in duration.attributes


def test_a_dropped_stream_ends_the_call_when_collected(
    telemetry: Telemetry, client: anthropic.Anthropic, tracing: str
) -> None:
    stream = client.messages.create(**ask(stream=True))
    next(iter(stream))
    del stream
    gc.collect()
    the_span(telemetry, tracing)
    [duration] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert duration.count == 1


def test_raw_and_streaming_responses_are_calls_too(
    telemetry: Telemetry, client: anthropic.Anthropic, tracing: str
) -> None:
    raw = client.messages.with_raw_response.create(**ask())
    assert raw.parse().usage.output_tokens == TOKENS
    with client.messages.with_streaming_response.create(**ask()) as streamed:
        assert streamed.parse().usage.output_tokens == TOKENS
    spans = [s for s in telemetry.spans() if s.kind is SpanKind.CLIENT]
    assert len(spans) == 2
    # the raw response was read when the call returned, the streamed one by the
    # application's parse() after it: both say their model and usage
    [duration] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert duration.count == 2
    assert duration.attributes[semconv.ATTR_GEN_AI_RESPONSE_MODEL] == MODEL
    [output] = [
        point.sum
        for point in telemetry.points(semconv.METRIC_GEN_AI_TOKEN_USAGE)
        if point.attributes[semconv.ATTR_GEN_AI_TOKEN_TYPE] == semconv.GEN_AI_TOKEN_TYPE_OUTPUT
    ]
    assert output == 2 * TOKENS


@pytest.mark.anyio
async def test_the_async_client(telemetry: Telemetry, base_url: str, tracing: str) -> None:
    async with anthropic.AsyncAnthropic(**client_options(tracing, telemetry, base_url)) as sdk:
        await sdk.messages.create(**ask())
        stream = await sdk.messages.create(**ask(stream=True))
        kinds = [event.type async for event in stream]
        async with sdk.messages.stream(**ask()) as helper:
            text = "".join([piece async for piece in helper.text_stream])
        early = await sdk.messages.create(**ask(stream=True))
        async for event in early:
            if event.type == "content_block_delta":
                break
        await early.close()
    assert kinds.count("content_block_delta") == TOKENS
    assert len(text.split()) == TOKENS
    spans = [s for s in telemetry.spans() if s.kind is SpanKind.CLIENT]
    assert len(spans) == 4
    [duration] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert duration.count == 4
    [first] = telemetry.points(semconv.METRIC_GEN_AI_TIME_TO_FIRST_CHUNK)
    assert first.count == 3


def test_a_sync_client_on_a_worker_pins_it_and_is_no_http_call(
    telemetry: Telemetry, client: anthropic.Anthropic, tracing: str
) -> None:
    pool = poolscope.instrument_executor(ThreadPoolExecutor(1), name="llm-workers")
    with pool, telemetry.tracer.start_as_current_span("request"):
        pool.submit(client.messages.create, **ask()).result()
    span = the_span(telemetry, tracing)  # the one CLIENT span: no HTTP span of httpx2 too
    assert (span.attributes or {})[semconv.ATTR_EXECUTOR_NAME] == "llm-workers"
    [duration] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert duration.attributes[semconv.ATTR_EXECUTOR_NAME] == "llm-workers"
    assert telemetry.points(semconv.METRIC_EXECUTOR_IO_DURATION) == []


def test_a_sync_client_in_a_starlette_request_pins_the_request(
    telemetry: Telemetry, client: anthropic.Anthropic, tracing: str
) -> None:
    import httpx
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def answer(request: Request) -> PlainTextResponse:
        message = await asyncio.to_thread(client.messages.create, **ask())
        return PlainTextResponse(message.content[0].text)  # type: ignore[union-attr]

    app = Starlette(routes=[Route("/answer", answer)])
    app.add_middleware(poolscope.PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)
    with serve(app) as url:
        assert httpx.get(f"{url}/answer", timeout=30).status_code == 200
    [request] = [s for s in telemetry.spans() if s.kind is SpanKind.SERVER]
    attributes = request.attributes or {}
    assert attributes[semconv.ATTR_EXECUTOR_PINNED_LLM] is True
    assert attributes[semconv.ATTR_EXECUTOR_PINNED_LLM_DURATION] >= FIRST_TOKEN_S
    assert semconv.ATTR_EXECUTOR_PINNED_IO not in attributes
    call = the_span_under(telemetry, tracing)
    assert (call.attributes or {})[semconv.ATTR_EXECUTOR_NAME] == semconv.POOL_ASYNCIO_DEFAULT


def the_span_under(telemetry: Telemetry, tracing: str) -> Any:
    name = "anthropic.messages.create" if tracing == "sdk-tracing" else OUR_SPAN
    [span] = telemetry.spans(name)
    return span


def test_content_is_captured_only_when_switched_on(
    telemetry: Telemetry, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    poolscope.uninstrument()
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    poolscope.instrument(
        tracer_provider=telemetry.tracer_provider, meter_provider=telemetry.meter_provider
    )
    options = client_options("tracing-off", telemetry, base_url)
    with anthropic.Anthropic(**options) as sdk:
        message = sdk.messages.create(**ask(system="be brief"))
        list(sdk.messages.create(**ask(stream=True)))
    plain, streamed = telemetry.spans(OUR_SPAN)
    answer = message.content[0].text  # type: ignore[union-attr]
    for span in (plain, streamed):
        attributes = span.attributes or {}
        inputs = json.loads(str(attributes[semconv.ATTR_GEN_AI_INPUT_MESSAGES]))
        assert inputs[-1] == {"role": "user", "parts": [{"type": "text", "content": PROMPT}]}
        outputs = json.loads(str(attributes[semconv.ATTR_GEN_AI_OUTPUT_MESSAGES]))
        assert outputs[0]["parts"][0]["content"] == answer
        assert outputs[0]["finish_reason"] == "end_turn"
    assert json.loads(str((plain.attributes or {})[semconv.ATTR_GEN_AI_INPUT_MESSAGES]))[0] == {
        "role": "system",
        "parts": [{"type": "text", "content": "be brief"}],
    }


def test_other_api_calls_are_no_llm_calls(
    telemetry: Telemetry, client: anthropic.Anthropic, tracing: str
) -> None:
    with pytest.raises(anthropic.NotFoundError):  # the fake server has no models endpoint
        client.models.list()
    assert telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION) == []
    assert telemetry.spans(OUR_SPAN) == []


def test_uninstrument_restores_the_sdk_exactly() -> None:
    from anthropic._base_client import AsyncAPIClient, SyncAPIClient

    originals = [owner.__dict__["_request"] for owner in (SyncAPIClient, AsyncAPIClient)]
    poolscope.instrument()
    assert [o.__dict__["_request"] for o in (SyncAPIClient, AsyncAPIClient)] != originals
    poolscope.uninstrument()
    assert [o.__dict__["_request"] for o in (SyncAPIClient, AsyncAPIClient)] == originals


def test_with_the_sdks_tracing_on_and_its_span_sampled_out_poolscope_makes_none(
    telemetry: Telemetry, base_url: str
) -> None:
    from opentelemetry.sdk.trace import TracerProvider, sampling

    dropping = TracerProvider(sampler=sampling.ALWAYS_OFF)
    options = {"api_key": "x", "base_url": base_url, "max_retries": 0}
    for provider in (dropping, trace_api.NoOpTracerProvider()):
        with anthropic.Anthropic(**options, open_telemetry={"tracer_provider": provider}) as sdk:
            sdk.messages.create(**ask())
    assert telemetry.spans() == []  # the SDK's tracing decided: no span of poolscope's either
    [duration] = telemetry.points(semconv.METRIC_GEN_AI_OPERATION_DURATION)
    assert duration.count == 2


def test_an_app_that_does_not_import_the_sdk_does_not_pay_for_it() -> None:
    # importing the SDK takes about a second and adds 160,000 objects to every collection:
    # poolscope patches it when the app imports it, not before
    script = """
import sys
import poolscope
poolscope.instrument()
assert "anthropic" not in sys.modules and "openai" not in sys.modules
import anthropic._base_client as base
original = base.SyncAPIClient.__dict__["_request"]
assert original.__wrapped__.__qualname__ == "SyncAPIClient._request"
poolscope.uninstrument()
assert base.SyncAPIClient.__dict__["_request"] is original.__wrapped__
poolscope.instrument()
assert base.SyncAPIClient.__dict__["_request"].__wrapped__ is original.__wrapped__
print("ok")
"""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout.strip() == "ok", done.stderr
