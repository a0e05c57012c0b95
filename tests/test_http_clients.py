"""Blocking HTTP calls on a pool's worker, with the real client libraries against a real
loopback server: requests, httpx (and httpx2), urllib3, urllib.request."""

from __future__ import annotations

import asyncio
import http.server
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import httpx2
import pytest
import requests
import urllib3
from opentelemetry.trace import SpanKind, StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import poolscope
from _servers import serve
from conftest import Telemetry, make_telemetry
from poolscope import semconv

pytestmark = pytest.mark.servers

DELAY_S = 0.05
SECRET = "sk-do-not-log"


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out at once, no delayed-ACK stall

    def do_GET(self) -> None:
        status = 404 if self.path.startswith("/missing") else 200
        time.sleep(DELAY_S)
        body = b"context"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _requests(url: str) -> int:
    with requests.Session() as session:
        return session.get(url, timeout=10).status_code


def _httpx(url: str) -> int:
    with httpx.Client(timeout=10) as client:
        return client.get(url).status_code


def _httpx2(url: str) -> int:
    with httpx2.Client(timeout=10) as client:
        return client.get(url).status_code


def _urllib3(url: str) -> int:
    with urllib3.PoolManager() as manager:
        return manager.request("GET", url, retries=False).status


def _urllib(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code


CLIENTS: dict[str, Callable[[str], int]] = {
    "requests": _requests,
    "httpx": _httpx,
    "httpx2": _httpx2,
    "urllib3": _urllib3,
    "urllib": _urllib,
}


def _on_worker(telemetry: Telemetry, call: Callable[[str], int], url: str) -> int:
    pool = poolscope.instrument_executor(ThreadPoolExecutor(1), name="fetchers")
    with pool, telemetry.tracer.start_as_current_span("request"):
        return pool.submit(call, url).result()


def _client_spans(telemetry: Telemetry) -> list[Any]:
    return [s for s in telemetry.spans() if s.kind is SpanKind.CLIENT]


@pytest.mark.parametrize("library", CLIENTS)
def test_a_call_on_a_worker_is_a_client_span_with_the_pool(
    telemetry: Telemetry, upstream: str, library: str
) -> None:
    url = f"{upstream}/context?q=pools&token={SECRET}"
    assert _on_worker(telemetry, CLIENTS[library], url) == 200
    [span] = _client_spans(telemetry)
    attributes = dict(span.attributes or {})
    assert span.name == "GET"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "poolscope"
    assert attributes[semconv.ATTR_HTTP_REQUEST_METHOD] == "GET"
    assert attributes[semconv.ATTR_SERVER_ADDRESS] == "127.0.0.1"
    assert attributes[semconv.ATTR_SERVER_PORT] == int(upstream.rpartition(":")[2])
    assert attributes[semconv.ATTR_URL_FULL] == f"{upstream}/context?q=REDACTED&token=REDACTED"
    assert attributes[semconv.ATTR_HTTP_RESPONSE_STATUS_CODE] == 200
    assert attributes[semconv.ATTR_EXECUTOR_NAME] == "fetchers"
    assert attributes[semconv.ATTR_EXECUTOR_IO_LIBRARY] == library
    assert semconv.ATTR_ERROR_TYPE not in attributes
    [run] = telemetry.spans(semconv.SPAN_RUN, pool="fetchers")
    assert span.parent is not None and span.parent.span_id == run.context.span_id
    assert (span.end_time or 0) - (span.start_time or 0) >= DELAY_S * 1e9
    [point] = telemetry.points(semconv.METRIC_EXECUTOR_IO_DURATION)
    assert point.count == 1
    assert point.sum >= DELAY_S
    assert dict(point.attributes) == {
        semconv.ATTR_EXECUTOR_NAME: "fetchers",
        semconv.ATTR_EXECUTOR_IO_LIBRARY: library,
        semconv.ATTR_HTTP_REQUEST_METHOD: "GET",
        semconv.ATTR_SERVER_ADDRESS: "127.0.0.1",
        semconv.ATTR_SERVER_PORT: int(upstream.rpartition(":")[2]),
    }
    for recorded in telemetry.spans():
        assert SECRET not in str(recorded.attributes)


@pytest.mark.parametrize("library", CLIENTS)
def test_a_call_off_any_worker_is_not_recorded(
    telemetry: Telemetry, upstream: str, library: str
) -> None:
    with telemetry.tracer.start_as_current_span("request"):
        assert CLIENTS[library](f"{upstream}/context") == 200
    assert _client_spans(telemetry) == []
    assert telemetry.points(semconv.METRIC_EXECUTOR_IO_DURATION) == []


@pytest.mark.parametrize("library", CLIENTS)
def test_an_error_status_is_the_calls_error_type(
    telemetry: Telemetry, upstream: str, library: str
) -> None:
    assert _on_worker(telemetry, CLIENTS[library], f"{upstream}/missing") == 404
    [span] = _client_spans(telemetry)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})[semconv.ATTR_ERROR_TYPE] == "404"
    [point] = telemetry.points(semconv.METRIC_EXECUTOR_IO_DURATION)
    assert point.attributes[semconv.ATTR_ERROR_TYPE] == "404"


def test_a_call_that_raises_raises_as_without_poolscope_and_is_recorded(
    telemetry: Telemetry,
) -> None:
    with socket_closed_port() as port:
        with pytest.raises(requests.ConnectionError):
            _on_worker(telemetry, _requests, f"http://127.0.0.1:{port}/")
    [span] = _client_spans(telemetry)
    assert span.status.status_code is StatusCode.ERROR
    assert (span.attributes or {})[semconv.ATTR_ERROR_TYPE] == "requests.exceptions.ConnectionError"


def socket_closed_port() -> Any:
    """A port on 127.0.0.1 nothing listens on (bound, then closed)."""
    import contextlib
    import socket

    @contextlib.contextmanager
    def closed() -> Iterator[int]:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        yield port

    return closed()


def test_credentials_in_the_url_never_reach_the_span(telemetry: Telemetry, upstream: str) -> None:
    url = upstream.replace("http://", f"http://alice:{SECRET}@") + "/context"
    assert _on_worker(telemetry, _requests, url) == 200
    [span] = _client_spans(telemetry)
    full = str((span.attributes or {})[semconv.ATTR_URL_FULL])
    assert SECRET not in full and "alice" not in full
    assert full == upstream.replace("http://", "http://REDACTED:REDACTED@") + "/context"


def test_query_values_are_kept_when_request_details_are_captured(upstream: str) -> None:
    telemetry = make_telemetry()
    poolscope.instrument(
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
        capture_request_details=True,
    )
    try:
        _on_worker(telemetry, _httpx, f"{upstream}/context?q=pools")
    finally:
        poolscope.uninstrument()
    [span] = _client_spans(telemetry)
    assert (span.attributes or {})[semconv.ATTR_URL_FULL] == f"{upstream}/context?q=pools"


def test_the_http_requests_of_an_llm_call_are_part_of_it(
    telemetry: Telemetry, upstream: str
) -> None:
    def ask() -> int:
        with poolscope.llm_call(provider="acme", model="m1"):
            return _requests(f"{upstream}/context")

    _on_worker(telemetry, lambda _url: ask(), upstream)
    assert [s.name for s in _client_spans(telemetry)] == ["chat m1"]
    assert telemetry.points(semconv.METRIC_EXECUTOR_IO_DURATION) == []


def test_requests_on_top_of_urllib3_is_one_call(telemetry: Telemetry, upstream: str) -> None:
    _on_worker(telemetry, _requests, f"{upstream}/context")
    [span] = _client_spans(telemetry)
    assert (span.attributes or {})[semconv.ATTR_EXECUTOR_IO_LIBRARY] == "requests"


def test_the_request_that_handed_the_call_to_a_pool_is_pinned_by_io(
    telemetry: Telemetry, upstream: str
) -> None:
    async def search(request: Request) -> PlainTextResponse:
        status = await asyncio.to_thread(_requests, f"{upstream}/context")
        return PlainTextResponse(str(status))

    async def plain(request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/search", search), Route("/plain", plain)])
    app.add_middleware(poolscope.PoolscopeMiddleware, tracer_provider=telemetry.tracer_provider)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as client:
        assert client.get("/search").text == "200"
        assert client.get("/plain").text == "ok"
    servers = {s.name: s for s in telemetry.spans() if s.kind is SpanKind.SERVER}
    pinned = servers["GET /search"].attributes or {}
    assert pinned[semconv.ATTR_EXECUTOR_PINNED_IO] is True
    [call] = [s for s in _client_spans(telemetry) if s.name == "GET"]
    call_seconds = ((call.end_time or 0) - (call.start_time or 0)) / 1e9
    assert pinned[semconv.ATTR_EXECUTOR_PINNED_IO_DURATION] == pytest.approx(
        call_seconds, abs=0.005
    )
    assert pinned[semconv.ATTR_EXECUTOR_PINNED_IO_DURATION] >= DELAY_S
    assert semconv.ATTR_EXECUTOR_PINNED_LLM not in pinned
    assert (call.attributes or {})[semconv.ATTR_EXECUTOR_NAME] == semconv.POOL_ASYNCIO_DEFAULT
    assert semconv.ATTR_EXECUTOR_PINNED_IO not in (servers["GET /plain"].attributes or {})


# --- with OpenTelemetry's own instrumentation of the library -------------------------


def _instrumentor(library: str) -> Any:
    if library == "requests":
        from opentelemetry.instrumentation.requests import RequestsInstrumentor

        return RequestsInstrumentor()
    if library == "httpx":
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        return HTTPXClientInstrumentor()
    if library == "urllib3":
        from opentelemetry.instrumentation.urllib3 import URLLib3Instrumentor

        return URLLib3Instrumentor()
    from opentelemetry.instrumentation.urllib import URLLibInstrumentor

    return URLLibInstrumentor()


PATCHED = {
    "requests": (requests.adapters.HTTPAdapter, "send"),
    "httpx": (httpx.HTTPTransport, "handle_request"),
    "urllib3": (urllib3.connectionpool.HTTPConnectionPool, "urlopen"),
    "urllib": (urllib.request.AbstractHTTPHandler, "do_open"),
}
INSTRUMENTED = {
    "requests": (requests.Session, "send"),
    "httpx": (httpx.HTTPTransport, "handle_request"),
    "urllib3": (urllib3.connectionpool.HTTPConnectionPool, "urlopen"),
    "urllib": (urllib.request.OpenerDirector, "open"),
}


@pytest.mark.parametrize("poolscope_first", [True, False], ids=["poolscope-first", "otel-first"])
@pytest.mark.parametrize("library", ["requests", "httpx", "urllib3", "urllib"])
def test_with_opentelemetrys_instrumentation_there_is_one_span_theirs_enriched(
    upstream: str, library: str, poolscope_first: bool
) -> None:
    telemetry = make_telemetry()
    providers = {
        "tracer_provider": telemetry.tracer_provider,
        "meter_provider": telemetry.meter_provider,
    }
    originals = {
        name: vars(owner)[attribute]
        for name, (owner, attribute) in {**PATCHED, **INSTRUMENTED}.items()
    }
    theirs = _instrumentor(library)
    if poolscope_first:
        poolscope.instrument(**providers)
        theirs.instrument(**providers)
    else:
        theirs.instrument(**providers)
        poolscope.instrument(**providers)
    try:
        assert _on_worker(telemetry, CLIENTS[library], f"{upstream}/context?token={SECRET}") == 200
    finally:
        theirs.uninstrument()
        poolscope.uninstrument()
    [span] = _client_spans(telemetry)
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name.startswith("opentelemetry.instrumentation.")
    assert (span.attributes or {})[semconv.ATTR_EXECUTOR_NAME] == "fetchers"
    [point] = telemetry.points(semconv.METRIC_EXECUTOR_IO_DURATION)
    assert point.attributes[semconv.ATTR_EXECUTOR_IO_LIBRARY] == library
    for name, (owner, attribute) in {**PATCHED, **INSTRUMENTED}.items():
        assert vars(owner)[attribute] is originals[name], f"{name} not restored"


@pytest.mark.parametrize("library", CLIENTS)
def test_uninstrument_restores_the_libraries_exactly(library: str, upstream: str) -> None:
    owners = {**PATCHED, "httpx2": (httpx2.HTTPTransport, "handle_request")}
    owner, attribute = owners[library]
    original = vars(owner)[attribute]
    telemetry = make_telemetry()
    poolscope.instrument(tracer_provider=telemetry.tracer_provider)
    assert vars(owner)[attribute] is not original
    poolscope.uninstrument()
    assert vars(owner)[attribute] is original
    with ThreadPoolExecutor(1) as pool:
        assert pool.submit(CLIENTS[library], f"{upstream}/context").result() == 200
    assert _client_spans(telemetry) == []
