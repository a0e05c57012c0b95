"""Invisible to the host: what the patched libraries promise still holds with poolscope on.

Each test is a break found by running those libraries' own test suites with
poolscope active (the compatibility tier, ``tests/compat``), kept here as a
regression test of our own.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import threading
import weakref
from collections.abc import Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Match, Route, WebSocketRoute
from starlette.types import Scope
from starlette.websockets import WebSocket
from websockets.sync.client import connect as connect_ws

import poolscope
from _servers import serve
from conftest import Telemetry, make_telemetry
from poolscope import PoolscopeMiddleware, semconv
from poolscope._asgi._middleware import RollupMiddleware

pytestmark = pytest.mark.servers


def echo(*args: object, **kwargs: object) -> tuple[tuple[object, ...], dict[str, object]]:
    return args, kwargs


class Owner:
    """What a submitted bound method keeps alive."""

    def method(self) -> int:
        return 1


@pytest.fixture(scope="module")
def process_pool() -> Iterator[ProcessPoolExecutor]:
    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(int).result(timeout=60)  # the worker is up
    yield pool
    pool.shutdown(cancel_futures=True)


@pytest.fixture(params=["thread", "process"])
def executor(
    request: pytest.FixtureRequest, process_pool: ProcessPoolExecutor
) -> Iterator[Executor]:
    if request.param == "process":
        yield process_pool
        return
    with ThreadPoolExecutor(1) as pool:
        yield pool


def test_keywords_named_like_the_wrappers_parameters_reach_the_function(
    telemetry: Telemetry, executor: Executor
) -> None:
    future = executor.submit(echo, 1, self=2, fn=3)
    assert future.result(timeout=60) == ((1,), {"self": 2, "fn": 3})


def test_the_submitted_callable_goes_when_its_work_is_done_not_at_the_next_collection(
    telemetry: Telemetry, executor: Executor
) -> None:
    # As without poolscope: the caller still holds the future, and the object the
    # bound method was bound to is freed by reference counting alone.
    owner = Owner()
    freed = threading.Event()
    reference = weakref.ref(owner, lambda _: freed.set())
    gc.disable()
    try:
        future = executor.submit(owner.method)
        del owner
        assert future.result(timeout=60) == 1
        assert freed.wait(timeout=10), gc.get_referrers(reference())
    finally:
        gc.enable()
    del future


def _poolscope_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.partition("-")[0] == "poolscope"]


def test_poolscope_leaves_no_thread_behind_after_uninstrument() -> None:
    found = make_telemetry()
    poolscope.instrument(tracer_provider=found.tracer_provider, meter_provider=found.meter_provider)
    try:
        assert "poolscope" in _poolscope_threads()  # there before the host's work
        with ThreadPoolExecutor(1) as pool:
            pool.submit(int).result(timeout=10)
    finally:
        poolscope.uninstrument()
    assert _poolscope_threads() == []
    # its last records were replayed on the way out
    assert found.points(semconv.METRIC_TASK_RUN_DURATION)


def test_a_record_after_uninstrument_does_not_start_a_thread() -> None:
    found = make_telemetry()
    poolscope.instrument(tracer_provider=found.tracer_provider, meter_provider=found.meter_provider)
    release = threading.Event()
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(release.wait, 10)  # in flight across uninstrument
        poolscope.uninstrument()
        release.set()
        assert running.result(timeout=10) is True
    assert _poolscope_threads() == []


# --- ASGI: one server span, the frameworks' own where they make one ----------------------


def _server_spans(telemetry: Telemetry) -> list[ReadableSpan]:
    return [span for span in telemetry.spans() if span.kind is SpanKind.SERVER]


async def _ok(request: Request) -> PlainTextResponse:
    await asyncio.to_thread(int)  # one wait to roll up
    return PlainTextResponse("ok")


async def _echo_socket(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(await websocket.receive_text())
    await websocket.close()


def test_starlettes_own_middleware_makes_the_only_span_and_carries_the_roll_up(
    telemetry: Telemetry,
) -> None:
    from starlette.middleware.opentelemetry import OpenTelemetryMiddleware as StarletteTelemetry

    app = Starlette(
        routes=[
            Route("/items/{item_id}", _ok),
            Route("/health", _ok),
            WebSocketRoute("/socket", _echo_socket),
        ],
        middleware=[
            Middleware(
                StarletteTelemetry,
                tracer_provider=telemetry.tracer_provider,
                excluded_urls="/health",
            )
        ],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/items/7?q=secret").text == "ok"
        assert client.get("/health").text == "ok"
        with connect_ws(f"{url.replace('http', 'ws')}/socket") as socket:
            socket.send("hi")
            assert socket.recv() == "hi"
    [request] = _server_spans(telemetry)  # none for /health (excluded), none for the socket
    assert request.instrumentation_scope is not None
    assert request.instrumentation_scope.name == "starlette"
    assert request.name == "GET /items/{item_id}"  # Starlette names it
    attributes = request.attributes or {}
    assert attributes[semconv.ATTR_EXECUTOR_TASK_COUNT] == 1
    assert attributes[semconv.ATTR_URL_QUERY] == "q=REDACTED"
    # Starlette names the route only at the end: poolscope matched it at the start
    [run] = telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ASYNCIO_DEFAULT)
    assert (run.attributes or {})[semconv.ATTR_HTTP_ROUTE] == "/items/{item_id}"


def test_a_span_of_another_provider_keeps_what_its_maker_recorded(telemetry: Telemetry) -> None:
    """Starlette's middleware given a provider of its own: poolscope adds the roll-up and
    leaves the attributes alone (the query is redacted only in poolscope's pipeline)."""
    from starlette.middleware.opentelemetry import OpenTelemetryMiddleware as StarletteTelemetry

    theirs = make_telemetry()
    app = Starlette(
        routes=[Route("/items/{item_id}", _ok)],
        middleware=[Middleware(StarletteTelemetry, tracer_provider=theirs.tracer_provider)],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/items/7?format=json").text == "ok"
    [request] = [s for s in theirs.spans() if s.kind is SpanKind.SERVER]
    attributes = request.attributes or {}
    assert attributes[semconv.ATTR_URL_QUERY] == "format=json"
    assert attributes[semconv.ATTR_EXECUTOR_TASK_COUNT] == 1


def test_starlettes_middleware_with_a_no_op_provider_makes_no_span(telemetry: Telemetry) -> None:
    from opentelemetry.trace import NoOpTracerProvider
    from starlette.middleware.opentelemetry import OpenTelemetryMiddleware as StarletteTelemetry

    app = Starlette(
        routes=[Route("/items/{item_id}", _ok)],
        middleware=[Middleware(StarletteTelemetry, tracer_provider=NoOpTracerProvider())],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/items/7").text == "ok"
    assert _server_spans(telemetry) == []
    # and no span of poolscope's own around it (in an app, with the global SDK provider,
    # that one would be exported): the stack is Starlette's, the roll-up inside its middleware
    chain = []
    node: object = app.middleware_stack
    while node is not None:
        chain.append(type(node))
        node = getattr(node, "app", None)
    assert PoolscopeMiddleware not in chain
    assert chain.index(RollupMiddleware) == chain.index(StarletteTelemetry) + 1


class CountingRoute(Route):
    """A route whose matching is the application's own code."""

    calls = 0

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        CountingRoute.calls += 1
        return super().matches(scope)


def test_a_routes_own_matching_runs_once_per_request(telemetry: Telemetry) -> None:
    app = Starlette(
        routes=[CountingRoute("/items/{item_id}", _ok)],
        middleware=[Middleware(PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)],
    )
    CountingRoute.calls = 0
    with serve(app) as url, httpx.Client(base_url=url) as client:
        for _ in range(3):
            assert client.get("/items/7").text == "ok"
    assert CountingRoute.calls == 3  # the router's, not ours too
    names = [span.name for span in _server_spans(telemetry)]
    assert names == ["GET /items/{item_id}"] * 3  # named from the route the router chose


def test_default_span_details_goes_to_opentelemetry_and_names_the_span(
    telemetry: Telemetry,
) -> None:
    app = Starlette(
        routes=[Route("/items/{item_id}", _ok)],
        middleware=[
            Middleware(
                PoolscopeMiddleware,
                tracer_provider=telemetry.tracer_provider,
                default_span_details=lambda scope: ("custom name", {"team": "search"}),
            )
        ],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        assert client.get("/items/7").text == "ok"
    [request] = _server_spans(telemetry)
    assert request.name == "custom name"
    assert (request.attributes or {})["team"] == "search"


def test_a_websocket_span_carries_no_roll_up(telemetry: Telemetry) -> None:
    app = Starlette(
        routes=[WebSocketRoute("/socket", _echo_socket)],
        middleware=[Middleware(PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)],
    )
    with serve(app) as url, connect_ws(f"{url.replace('http', 'ws')}/socket") as socket:
        socket.send("hi")
        assert socket.recv() == "hi"
    [span] = _server_spans(telemetry)
    assert not any(key.startswith("executor.") for key in span.attributes or {})


def test_the_user_agent_is_kept_as_the_http_conventions_recommend(telemetry: Telemetry) -> None:
    app = Starlette(
        routes=[Route("/items/{item_id}", _ok)],
        middleware=[Middleware(PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)],
    )
    with serve(app) as url, httpx.Client(base_url=url) as client:
        client.get("/items/7", headers={"User-Agent": "checker/2.0"})
    [request] = _server_spans(telemetry)
    attributes = request.attributes or {}
    agent = attributes.get(semconv.ATTR_USER_AGENT_ORIGINAL) or attributes.get(
        semconv.ATTR_HTTP_USER_AGENT_OLD
    )
    assert agent == "checker/2.0"


def test_serving_outside_asyncio_starts_no_monitor_and_reports_no_error(
    telemetry: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    # An ASGI app served under trio (Starlette's own suite does): no asyncio loop to watch.
    from poolscope._core import _state

    _state.on_serving_loop()
    assert "internal error" not in caplog.text


def test_an_apps_spans_inside_a_task_keep_the_parent_its_own_provider_exports(
    telemetry: Telemetry,
) -> None:
    """FastAPI given a tracer provider of its own: the app's span inside a sync dependency is
    the child of FastAPI's dependencies span, as without poolscope (a parent in poolscope's
    provider would be missing from the app's traces); poolscope's run span is still made.
    With one provider for both, the run span is the parent of the work it times."""
    from fastapi import Depends, FastAPI

    own = make_telemetry()

    def build(provider: TracerProvider) -> FastAPI:
        app = FastAPI(telemetry={"tracer_provider": provider, "auto_configure": False})

        def user() -> str:  # a sync dependency: anyio's worker runs it
            with provider.get_tracer("app").start_as_current_span("app.work"):
                return "someone"

        @app.get("/work")
        async def work(name: str = Depends(user)) -> str:
            return name

        return app

    with serve(build(own.tracer_provider)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/work").json() == "someone"
    [solving] = own.spans("fastapi.dependencies")
    [mine] = own.spans("app.work")
    assert mine.parent is not None and mine.parent.span_id == solving.context.span_id
    runs = telemetry.spans(semconv.SPAN_RUN, pool=semconv.POOL_ANYIO_DEFAULT)
    assert runs and all(run.context.trace_id == solving.context.trace_id for run in runs)

    shared = make_telemetry()
    poolscope.uninstrument()
    poolscope.instrument(
        tracer_provider=shared.tracer_provider,
        meter_provider=shared.meter_provider,
        wait_span_threshold=0,
    )
    with serve(build(shared.tracer_provider)) as url, httpx.Client(base_url=url) as client:
        assert client.get("/work").json() == "someone"
    [run] = shared.spans(semconv.SPAN_RUN)
    [mine] = shared.spans("app.work")
    assert mine.parent is not None and mine.parent.span_id == run.context.span_id
