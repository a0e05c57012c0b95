"""PoolscopeMiddleware on real uvicorn, sockets and HTTP client: the per-request roll-up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI
from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Mount, Route

import poolscope
from _helpers import fifo_waits
from _servers import serve
from conftest import Telemetry, make_telemetry
from poolscope import PoolscopeMiddleware, semconv
from poolscope._asgi._middleware import redacted

pytestmark = pytest.mark.servers

CONCURRENCY = 60
TOKENS = 4
BLOCKING_S = 0.2


def server_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    return [span for span in telemetry.spans() if span.kind is SpanKind.SERVER]


def limited_fastapi_app(telemetry: Telemetry) -> FastAPI:
    app = FastAPI()

    @app.get("/limit")
    async def limit() -> dict[str, int]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = TOKENS
        return {"tokens": TOKENS}

    @app.get("/reports/{report_id}")
    def report(report_id: int) -> PlainTextResponse:
        time.sleep(BLOCKING_S)  # a blocking call in a sync endpoint
        # A Response is sent as it is. Returning a dict would make FastAPI
        # validate it in a second worker task, which queues again (see
        # test_fastapi_response_validation_takes_a_second_seat).
        return PlainTextResponse(str(report_id))

    app.add_middleware(
        PoolscopeMiddleware,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    return app


async def _hit(url: str, paths: list[str]) -> list[int]:
    limits = httpx.Limits(max_connections=len(paths) + 1)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        responses = await asyncio.gather(*(client.get(path) for path in paths))
    return [response.status_code for response in responses]


def test_every_request_span_carries_its_wait_by_queue_position(telemetry: Telemetry) -> None:
    with serve(limited_fastapi_app(telemetry)) as url:
        assert asyncio.run(_hit(url, ["/limit"])) == [200]
        statuses = asyncio.run(_hit(url, [f"/reports/{i}" for i in range(CONCURRENCY)]))
    assert statuses == [200] * CONCURRENCY

    requests = [
        s
        for s in server_spans(telemetry)
        if s.attributes and s.attributes.get("http.route") == "/reports/{report_id}"
    ]
    assert len(requests) == CONCURRENCY
    assert {s.name for s in requests} == {"GET /reports/{report_id}"}  # never the raw path
    by_wait = sorted(requests, key=lambda s: s.attributes[semconv.ATTR_EXECUTOR_WAIT_TOTAL])  # type: ignore[index]
    # The requests arrive over `spread` seconds (60 connections on a busy 2-core machine).
    # The one with the p-th smallest wait, or one before it, started p-th or later, when
    # p // TOKENS batches of 200 ms had ended, at the earliest: a 200 ms call never ends
    # early, so its wait is at least that, less how late it may have arrived.
    starts = [span.start_time or 0 for span in requests]
    spread = (max(starts) - min(starts)) / 1e9
    for position, span in enumerate(by_wait):
        assert span.attributes is not None
        nominal = (position // TOKENS) * BLOCKING_S  # the k-th batch waits (k-1) x 200 ms
        measured = span.attributes[semconv.ATTR_EXECUTOR_WAIT_TOTAL]
        assert measured >= nominal - spread - 0.02, (position, measured, nominal, spread)
        assert span.attributes[semconv.ATTR_EXECUTOR_TASK_COUNT] == 1
        assert span.attributes[semconv.ATTR_EXECUTOR_WAIT_MAX] == pytest.approx(measured)
    # Within 20% (plus 50 ms) of what a 4-token FIFO gives with the runs as
    # they happened: a scheduler stall on a loaded machine lengthens a run and
    # every later wait with it. The 50 ms: while the loop accepts and parses
    # 60 simultaneous requests (tens of ms of GIL on 2 cores), even a task
    # with a free token waits for its worker thread to get the GIL.
    rollups = {s.context.span_id: s.attributes[semconv.ATTR_EXECUTOR_WAIT_TOTAL] for s in requests}  # type: ignore[index]
    waits = telemetry.spans(semconv.SPAN_WAIT, pool=semconv.POOL_ANYIO_DEFAULT)
    runs = telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ANYIO_DEFAULT)
    # each task's spans say which route's work waited (the collector's span metrics use it)
    assert {(span.attributes or {}).get(semconv.ATTR_HTTP_ROUTE) for span in waits + runs} == {
        "/reports/{report_id}"
    }
    for wait, expected_ms in fifo_waits(waits, runs, TOKENS):
        assert wait.parent is not None
        measured = rollups[wait.parent.span_id]
        expected = expected_ms / 1000
        assert abs(measured - expected) <= 0.2 * expected + 0.05, (measured, expected)

    by_id = {span.context.span_id: span for span in requests}
    for wait in waits:
        assert wait.parent is not None
        owner = by_id[wait.parent.span_id]  # a child of a request span...
        assert owner.attributes is not None
        # ...and of the right one: its roll-up includes this very wait
        waited = ((wait.end_time or 0) - (wait.start_time or 0)) / 1e9
        assert waited <= owner.attributes[semconv.ATTR_EXECUTOR_WAIT_TOTAL] + 0.002
    assert len(waits) >= CONCURRENCY - TOKENS


def test_fastapi_response_validation_takes_a_second_seat(telemetry: Telemetry) -> None:
    app = FastAPI()

    @app.get("/limit")
    async def limit() -> dict[str, int]:
        anyio.to_thread.current_default_thread_limiter().total_tokens = 1
        return {"tokens": 1}

    @app.get("/validated/{item_id}")
    def validated(item_id: int) -> dict[str, int]:
        time.sleep(0.05)
        return {"item_id": item_id}

    app.add_middleware(PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)
    with serve(app) as url:
        assert asyncio.run(_hit(url, ["/limit"])) == [200]
        assert asyncio.run(_hit(url, [f"/validated/{i}" for i in range(4)])) == [200] * 4
    requests = [s for s in server_spans(telemetry) if s.name == "GET /validated/{item_id}"]
    assert len(requests) == 4
    for request in requests:
        assert request.attributes is not None
        assert request.attributes[semconv.ATTR_EXECUTOR_TASK_COUNT] == 2
    functions = {
        str((s.attributes or {}).get(semconv.ATTR_CODE_FUNCTION_NAME))
        for s in telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ANYIO_DEFAULT)
    }
    assert any(name.endswith("validate") for name in functions), functions
    # With one seat, even the first request queues for its validation behind
    # the endpoints of the others: nobody gets through without waiting.
    assert (
        min(r.attributes[semconv.ATTR_EXECUTOR_WAIT_TOTAL] for r in requests if r.attributes)
        >= 0.04
    )


def streaming_app(telemetry: Telemetry, max_spans: int) -> Starlette:
    def chunks() -> Iterator[bytes]:
        for i in range(20):
            yield f"chunk {i}\n".encode()

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks())

    return Starlette(
        routes=[Route("/stream", stream)],
        middleware=[
            Middleware(
                PoolscopeMiddleware,
                tracer_provider=telemetry.tracer_provider,
                meter_provider=telemetry.meter_provider,
                max_spans_per_request=max_spans,
            )
        ],
    )


def test_a_sync_stream_is_one_request_with_every_chunk_rolled_up_and_bounded_spans(
    telemetry: Telemetry,
) -> None:
    with serve(streaming_app(telemetry, max_spans=10)) as url, httpx.Client(base_url=url) as client:
        response = client.get("/stream")
    assert response.text.count("chunk") == 20
    [request] = server_spans(telemetry)
    assert request.attributes is not None
    # 20 chunks plus the call that finds the iterator exhausted
    assert request.attributes[semconv.ATTR_EXECUTOR_TASK_COUNT] == 21
    task_spans = [
        s
        for s in telemetry.spans()
        if s.name in (semconv.SPAN_WAIT, semconv.SPAN_RUN)
        and s.parent
        and s.parent.span_id == request.context.span_id
    ]
    assert len(task_spans) == 10
    dropped = request.attributes[semconv.ATTR_EXECUTOR_SPANS_DROPPED]
    assert dropped >= 11  # at least the 11 run spans beyond the budget


def test_route_template_through_mounts_and_no_route_for_404(telemetry: Telemetry) -> None:
    async def item(request: Request) -> PlainTextResponse:
        return PlainTextResponse(request.path_params["item_id"])

    app = Starlette(
        routes=[Mount("/api/v1", routes=[Route("/items/{item_id}", item)])],
        middleware=[Middleware(PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/api/v1/items/42").text == "42"
        assert client.get("/nowhere/7").status_code == 404
    names = sorted(span.name for span in server_spans(telemetry))
    assert names == ["GET", "GET /api/v1/items/{item_id}"]
    assert not any("42" in name or "nowhere" in name for name in names)


def test_an_outer_opentelemetry_middleware_is_enriched_not_doubled(telemetry: Telemetry) -> None:
    def slow(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    inner = Starlette(routes=[Route("/slow", slow)], middleware=[Middleware(PoolscopeMiddleware)])
    app = OpenTelemetryMiddleware(inner, tracer_provider=telemetry.tracer_provider)
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/slow").text == "ok"
    [request] = server_spans(telemetry)
    assert request.attributes is not None
    assert request.attributes[semconv.ATTR_EXECUTOR_TASK_COUNT] == 1
    assert len([s for s in telemetry.spans() if s.kind is SpanKind.SERVER]) == 1


def test_fastapi_instrumentor_and_poolscope_make_one_server_span(telemetry: Telemetry) -> None:
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    app = FastAPI()

    @app.get("/users/{user_id}")
    def user(user_id: int) -> dict[str, int]:
        return {"user_id": user_id}

    app.add_middleware(PoolscopeMiddleware)
    FastAPIInstrumentor.instrument_app(app, tracer_provider=telemetry.tracer_provider)
    try:
        with serve(app) as url, httpx.Client(base_url=url) as client:
            assert client.get("/users/3").json() == {"user_id": 3}
    finally:
        FastAPIInstrumentor.uninstrument_app(app)
    [request] = server_spans(telemetry)
    assert request.name == "GET /users/{user_id}"
    assert request.attributes is not None
    assert request.attributes[semconv.ATTR_EXECUTOR_TASK_COUNT] >= 1
    # a second OpenTelemetry middleware would show up as another span of that name
    assert [s.name for s in telemetry.spans()].count("GET /users/{user_id}") == 1


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_to_thread_waits_in_async_endpoints_roll_up(telemetry: Telemetry, loop: str) -> None:
    async def fetch(request: Request) -> PlainTextResponse:
        await asyncio.to_thread(time.sleep, 0.01)
        await asyncio.to_thread(time.sleep, 0.01)
        return PlainTextResponse("fetched")

    app = Starlette(
        routes=[Route("/fetch", fetch)],
        middleware=[Middleware(PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)],
    )
    with serve(app, loop=loop) as url, httpx.Client(base_url=url) as client:
        assert client.get("/fetch").text == "fetched"
    [request] = server_spans(telemetry)
    assert request.attributes is not None
    assert request.attributes[semconv.ATTR_EXECUTOR_TASK_COUNT] == 2
    [resumes] = telemetry.points(
        semconv.METRIC_TASK_RESUME_DURATION, executor__name=semconv.POOL_ASYNCIO_DEFAULT
    )
    assert resumes.count == 2


@pytest.mark.parametrize("capture", [False, True])
def test_query_values_are_redacted_unless_asked_for(capture: bool) -> None:
    found = make_telemetry()
    poolscope.instrument(
        tracer_provider=found.tracer_provider,
        meter_provider=found.meter_provider,
        capture_request_details=capture,
    )

    during: dict[str, object] = {}

    async def chat(request: Request) -> PlainTextResponse:
        # Redacted before the app runs, not as the span ends: a span can end inside
        # the app (FastAPI's own telemetry and http.response.pathsend).
        during.update(getattr(trace.get_current_span(), "attributes", None) or {})
        return PlainTextResponse(request.query_params["q"])

    app = Starlette(
        routes=[Route("/chat", chat)],
        middleware=[Middleware(PoolscopeMiddleware, tracer_provider=found.tracer_provider)],
    )
    try:
        with serve(app) as url, httpx.Client(base_url=url) as client:
            response = client.get(
                "/chat?q=my+secret+prompt&lang=en", headers={"User-Agent": "checker/2.0"}
            )
            assert response.text == "my secret prompt"  # the app still sees it all
    finally:
        poolscope.uninstrument()
    [request] = server_spans(found)
    attributes = dict(request.attributes or {})
    url_attribute = attributes.get(semconv.ATTR_URL_FULL) or attributes[semconv.ATTR_HTTP_URL_OLD]
    agent = attributes.get(semconv.ATTR_USER_AGENT_ORIGINAL) or attributes.get(
        semconv.ATTR_HTTP_USER_AGENT_OLD
    )
    assert agent == "checker/2.0"  # kept either way, as the HTTP conventions recommend
    if capture:
        assert str(url_attribute).endswith("/chat?q=my+secret+prompt&lang=en")
    else:
        assert str(url_attribute).endswith("/chat?q=REDACTED&lang=REDACTED")
        assert "secret" not in repr(attributes)
        assert "secret" not in repr(during) and during  # already while the app ran


@pytest.mark.parametrize(
    ("query", "kept"),
    [
        ("q=my+prompt&lang=en", "q=REDACTED&lang=REDACTED"),
        ("sk-live-abc123", "REDACTED"),  # no "=": all value
        ("q=1&alice%40example.com=", "q=REDACTED&REDACTED"),  # not a parameter name
        ("flag=&x", "flag=REDACTED&REDACTED"),
        ("", ""),
    ],
)
def test_query_redaction_keeps_only_parameter_names(query: str, kept: str) -> None:
    assert redacted({semconv.ATTR_URL_QUERY: query}).get(semconv.ATTR_URL_QUERY, "") == kept


def test_a_made_up_method_does_not_name_the_span(telemetry: Telemetry) -> None:
    async def chat(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(
        routes=[Route("/chat", chat, methods=["TOKEN_ABC123"])],
        middleware=[Middleware(PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.request("TOKEN_abc123", "/chat").text == "ok"
    [request] = server_spans(telemetry)
    assert request.name == "HTTP /chat"


def test_a_sampled_out_request_makes_no_span_and_still_counts_its_tasks() -> None:
    """Production samples a few traces in a hundred: the rest make no span of
    poolscope's (and get no roll-up to write), while the pool metrics count every task."""
    found = make_telemetry()
    sampled_out = TracerProvider(sampler=ParentBased(ALWAYS_OFF), shutdown_on_exit=False)
    sampled_out.add_span_processor(SimpleSpanProcessor(found.exporter))
    poolscope.instrument(
        tracer_provider=sampled_out, meter_provider=found.meter_provider, wait_span_threshold=0
    )

    async def fetch(request: Request) -> PlainTextResponse:
        await asyncio.to_thread(time.sleep, 0.01)
        return PlainTextResponse("fetched")

    app = Starlette(
        routes=[Route("/fetch", fetch)],
        middleware=[Middleware(PoolscopeMiddleware, tracer_provider=sampled_out)],
    )
    try:
        with serve(app) as url, httpx.Client(base_url=url) as client:
            assert [client.get("/fetch").text for _ in range(3)] == ["fetched"] * 3
    finally:
        poolscope.uninstrument()
    assert found.exporter.get_finished_spans() == ()
    [runs] = found.points(
        semconv.METRIC_TASK_RUN_DURATION, executor__name=semconv.POOL_ASYNCIO_DEFAULT
    )
    assert runs.count == 3
