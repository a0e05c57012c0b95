"""Data safety: by default no request content, prompt or completion is exported.

poolscope runs inside apps that handle personal data and credentials. Every
byte both example apps export under the demo's load (OTLP traces, metrics and
logs, captured as the raw requests and decoded, and their Prometheus
endpoints) is searched for markers planted in what the load sends (query
string, headers, body), for the apps' prompts and the fake LLM's completion,
and for API keys. The search is shown to find a marker planted in every kind
of OTLP field, and to find the prompt once content capture is switched on.
Also: the span PoolscopeMiddleware makes itself, the Prometheus endpoint's
listening address, and what the compose file could still expose.

Covered elsewhere, not repeated here: compose ports published on 127.0.0.1
only and no Grafana admin password (``test_stack_files``); the Prometheus
endpoint serving on 127.0.0.1 (``test_configure``, which cannot tell a
loopback bind from a wildcard one); content capture's formats and cap
in-process (``test_openai``).
"""

from __future__ import annotations

import ast
import asyncio
import gzip
import ipaddress
import os
import re
import subprocess
import sys
import threading
import urllib.request
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from google.protobuf.message import Message
from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from tools.stack import ROOT, free_port, services, start_app, tcp_open

import poolscope
from _servers import serve
from conftest import Telemetry
from poolscope import semconv
from poolscope._cli._demo._model import SCENARIOS, DemoSettings
from poolscope._cli._loadgen import StepLoad, run_step

EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))
APPS = ("naive_app", "fixed_app")
ROUTES = {"/chat", "/search", "/classify", "/summary", "/stream"}
USERS = (4, 12)  # the demo's steps, cut down: every path variant below gets a user
STEP_SECONDS = 1.5
CAPTURE_VARIABLE = "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT"

_RUN = uuid.uuid4().hex[:12]
QUERY_SECRET = f"querysecret{_RUN}"  # also the prompt of the requests that send it
AUTH_SECRET = f"authsecret{_RUN}"
COOKIE_SECRET = f"cookiesecret{_RUN}"
HEADER_SECRET = f"headersecret{_RUN}"
BODY_SECRET = f"bodysecret{_RUN}"
ENV_API_KEY = f"sk-envkeysecret{_RUN}"
HEADERS = {
    "Authorization": f"Bearer {AUTH_SECRET}",
    "Cookie": f"session={COOKIE_SECRET}",
    "X-Api-Key": HEADER_SECRET,
    # The User-Agent is exported, as the HTTP conventions recommend (user_agent.original):
    # it names the client software, it is not a credential.
    "User-Agent": "client/1.0",
}

DECODERS: dict[str, type[Message]] = {
    "/v1/traces": ExportTraceServiceRequest,
    "/v1/metrics": ExportMetricsServiceRequest,
    "/v1/logs": ExportLogsServiceRequest,
}


def example_prompts() -> dict[str, str]:
    """Route -> the prompt it sends when no ``q`` is given, read from both apps' source."""
    prompts: dict[str, str] = {}
    for app in APPS:
        found: dict[str, str] = {}
        for node in ast.walk(ast.parse((EXAMPLES / f"{app}.py").read_text())):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            routes = [
                d.args[0].value
                for d in node.decorator_list
                if isinstance(d, ast.Call) and d.args and isinstance(d.args[0], ast.Constant)
            ]
            if routes and node.args.args and node.args.args[-1].arg == "q":
                [default] = node.args.defaults
                assert isinstance(default, ast.Constant) and isinstance(default.value, str)
                found[str(routes[0])] = default.value
        assert set(found) == ROUTES, (app, found)
        prompts.update(found)
    return prompts


def fake_completion(tokens: int) -> str:
    """The text the fake LLM answers with (streamed, it is the same words in chunks)."""
    import fake_llm  # examples/, as test_fake_llm imports it

    words = fake_llm._VOCABULARY
    return " ".join(words[i % len(words)] for i in range(tokens))


REQUEST_SECRETS = {
    "query string": QUERY_SECRET,
    "Authorization header": AUTH_SECRET,
    "Cookie header": COOKIE_SECRET,
    "X-Api-Key header": HEADER_SECRET,
    "request body": BODY_SECRET,
}


def markers(completion: str) -> dict[str, str]:
    """What must never be exported by default, by what it is."""
    found = {
        **REQUEST_SECRETS,
        "OPENAI_API_KEY": ENV_API_KEY,
        "the apps' LLM API key": "not-needed",  # both apps' api_key=
        "completion": completion,
    }
    found.update({f"prompt of {route}": text for route, text in example_prompts().items()})
    return found


# --- Capturing every export ------------------------------------------------------


class OtlpSink:
    """An OTLP/HTTP receiver on loopback that keeps every request body as sent."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, bytes]] = []
        lock = threading.Lock()
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                with lock:
                    sink.bodies.append((self.path, body))
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")  # an empty Export*ServiceResponse
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> OtlpSink:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def strings(message: Message, path: str) -> Iterator[tuple[str, str]]:
    """Every string (and bytes) field anywhere in ``message``, with its path.

    Attribute key-values are named by their key: ``spans[3].attributes[http.route]``.
    """
    for descriptor, value in message.ListFields():
        name = f"{path}.{descriptor.name}"
        items = list(value) if descriptor.is_repeated else [value]
        for index, item in enumerate(items):
            where = f"{name}[{index}]" if descriptor.is_repeated else name
            if isinstance(item, KeyValue):
                where = f"{name}[{item.key}]"
                yield where, item.key
            if isinstance(item, Message):
                yield from strings(item, where)
            elif isinstance(item, str):
                yield where, item
            elif isinstance(item, bytes):
                yield where, item.decode("utf-8", "replace")


@dataclass(frozen=True)
class Field:
    service: str
    where: str
    text: str


def exported_fields(bodies: list[tuple[str, bytes]]) -> list[Field]:
    """Every string of every export request, under the ``service.name`` that sent it."""
    fields: list[Field] = []
    for path, body in bodies:
        request = DECODERS[path].FromString(body)
        for descriptor, groups in request.ListFields():  # resource_spans, resource_metrics, ...
            for index, group in enumerate(groups):
                service = next(
                    (
                        a.value.string_value
                        for a in group.resource.attributes
                        if a.key == "service.name"
                    ),
                    "?",
                )
                root = f"{descriptor.name}[{index}]"
                fields.extend(Field(service, w, t) for w, t in strings(group, root))
    return fields


@dataclass(frozen=True)
class Leak:
    what: str
    service: str
    where: str
    example: str

    def __str__(self) -> str:
        return f"{self.what} in {self.service} {self.where}: {self.example!r}"


def leaks(fields: list[Field], secrets: dict[str, str]) -> list[Leak]:
    """Each place (field path without indices) a secret was found, once, with an example."""
    seen: dict[tuple[str, str, str], Leak] = {}
    for f in fields:
        for what, secret in secrets.items():
            if secret in f.text:
                where = re.sub(r"\[\d+\]", "", f.where)
                seen.setdefault(
                    (what, f.service, where), Leak(what, f.service, where, f.text[:200])
                )
    return list(seen.values())


def raw_leaks(bodies: list[tuple[str, bytes]], secrets: dict[str, str]) -> set[str]:
    """The secrets found anywhere in the raw bytes: a check on the decoding walk itself."""
    return {what for what, s in secrets.items() for _, body in bodies if s.encode() in body}


def attribute(fields: list[Field], service: str, key: str) -> set[str]:
    """The string values ``service`` exported under attribute ``key`` (any signal)."""
    suffix = f"attributes[{key}].value.string_value"
    return {f.text for f in fields if f.service == service and f.where.endswith(suffix)}


# --- Running the apps -----------------------------------------------------------


@dataclass
class Exported:
    bodies: list[tuple[str, bytes]]
    scrapes: dict[str, str]
    loads: list[StepLoad] = field(default_factory=list)

    @property
    def fields(self) -> list[Field]:
        return exported_fields(self.bodies)


class _Marked:
    """Stands in for the load generator's client: every GET also carries a body."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def get(self, path: str) -> httpx.Response:
        return await self.client.request("GET", path, content=BODY_SECRET)


Drive = Callable[[str, _Marked], Awaitable[list[StepLoad]]]


def run_apps(directory: Path, drive: Drive, *, capture: bool) -> Exported:
    """Both example apps against the fake LLM at the demo's timings, exporting to a sink.

    ``drive`` loads each app; its Prometheus endpoint is scraped after, then the
    apps are stopped, which flushes the last spans and metrics.
    """
    demo = DemoSettings()
    exported = Exported([], {})
    with OtlpSink() as sink, services(directory) as start:
        llm_port = free_port()
        llm = start(
            "fake_llm",
            [
                sys.executable,
                str(EXAMPLES / "fake_llm.py"),
                f"--port={llm_port}",
                f"--first-token-ms={demo.first_token_ms}",
                f"--per-token-ms={demo.per_token_ms}",
                f"--tokens={demo.tokens}",
            ],
        )
        llm.wait_ready(lambda: tcp_open(llm_port))
        apps = {}
        for app in APPS:
            metrics_port = free_port()
            url = start_app(
                start,
                app,
                llm_url=f"http://127.0.0.1:{llm_port}",
                otlp_port=sink.port,
                extra_env={
                    "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                    "OTEL_SERVICE_NAME": app,
                    "OTEL_POOLSCOPE_PROMETHEUS_PORT": str(metrics_port),
                    "OPENAI_API_KEY": ENV_API_KEY,
                    CAPTURE_VARIABLE: "true" if capture else "",
                },
            )
            apps[app] = (url, metrics_port)

        async def load() -> None:
            for url, _ in apps.values():
                limits = httpx.Limits(max_connections=max(USERS) + 10)
                async with httpx.AsyncClient(
                    base_url=url, headers=HEADERS, limits=limits, timeout=60
                ) as client:
                    exported.loads.extend(await drive(url, _Marked(client)))

        asyncio.run(load())
        for app, (_, metrics_port) in apps.items():
            request = urllib.request.Request(
                f"http://127.0.0.1:{metrics_port}/metrics",
                headers={"Accept": "application/openmetrics-text; version=1.0.0"},
            )
            with urllib.request.urlopen(request, timeout=10) as response:
                exported.scrapes[app] = response.read().decode()
    exported.bodies = list(sink.bodies)
    return exported


def listening_addresses(port: int) -> set[str]:
    """Addresses a TCP socket listens on at ``port``, from the kernel's tables (Linux)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)  # 32-bit words in host (little-endian) order
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.add(str(ipaddress.ip_address(words)))
    return found


async def demo_load(url: str, client: _Marked) -> list[StepLoad]:
    """The demo's scenarios and load generator, each path also with a secret query."""
    loads = []
    for scenario in SCENARIOS:
        paths = tuple(v for p in scenario.paths for v in (p, f"{p}?q={QUERY_SECRET}"))
        for users in USERS:
            loads.append(await run_step(client, paths, users, STEP_SECONDS))
    for path in ("/classify", f"/classify?q={QUERY_SECRET}"):  # the one route the demo skips
        response = await client.get(path)
        assert response.status_code == 200, (url, path, response.text)
    return loads


# --- Tests ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    return run_apps(tmp_path_factory.mktemp("default"), demo_load, capture=False)


def _plant(bodies: list[tuple[str, bytes]], secret: str) -> list[tuple[str, bytes]]:
    """One real trace and one real metrics export with ``secret`` in each kind of field."""
    planted = KeyValue(key="planted", value=AnyValue(string_value=secret))
    traces = ExportTraceServiceRequest.FromString(next(b for p, b in bodies if p == "/v1/traces"))
    group = traces.resource_spans[0]
    group.resource.attributes.append(planted)
    group.scope_spans[0].scope.attributes.append(planted)
    span = group.scope_spans[0].spans[0]
    span.name = f"GET /{secret}"
    span.status.message = secret
    span.attributes.append(KeyValue(key="nested", value=AnyValue()))
    span.attributes[-1].value.array_value.values.append(AnyValue(string_value=secret))
    span.events.add(name="event").attributes.append(planted)
    span.links.add(trace_id=span.trace_id, span_id=span.span_id).attributes.append(planted)
    exports = [ExportMetricsServiceRequest.FromString(b) for p, b in bodies if p == "/v1/metrics"]
    metrics, histogram = next(
        (request, m.histogram)
        for request in exports
        for g in request.resource_metrics
        for s in g.scope_metrics
        for m in s.metrics
        if m.WhichOneof("data") == "histogram"
    )
    point = histogram.data_points[0]
    point.attributes.append(planted)
    point.exemplars.add(as_double=1.0).filtered_attributes.append(planted)
    return [
        ("/v1/traces", traces.SerializeToString()),
        ("/v1/metrics", metrics.SerializeToString()),
    ]


@pytest.mark.stack
def test_the_search_finds_a_secret_in_every_kind_of_exported_field(
    default_run: Exported,
) -> None:
    """Without this, a walk that skipped a kind of field would pass as clean."""
    secret = f"plantedsecret{_RUN}"
    bodies = _plant(default_run.bodies, secret)
    found = {re.sub(r"\[\d+\]", "", f.where) for f in exported_fields(bodies) if secret in f.text}
    kinds = {
        "resource.attributes[planted]",
        "scope.attributes[planted]",
        "spans.name",
        "spans.status.message",
        "spans.attributes[nested].value.array_value.values.string_value",
        "spans.events.attributes[planted]",
        "spans.links.attributes[planted]",
        "histogram.data_points.attributes[planted]",
        "histogram.data_points.exemplars.filtered_attributes[planted]",
    }
    missed = {k for k in kinds if not any(k in where for where in found)}
    assert not missed, (missed, found)
    assert raw_leaks(bodies, {"planted": secret}) == {"planted"}


@pytest.mark.stack
def test_nothing_the_requests_carry_is_exported_by_default(default_run: Exported) -> None:
    """The issue's promise, checked on everything the apps send out, not on chosen fields."""
    run = default_run
    answered = [len(load.latencies) for load in run.loads]
    assert all(answered) and not any(load.lost for load in run.loads), [
        (load.concurrency, load.failures, load.unfinished) for load in run.loads
    ]
    # The search looks where the apps' telemetry is: both apps' traces and
    # metrics arrived, with the attributes the load should have produced.
    paths = {path for path, _ in run.bodies}
    assert {"/v1/traces", "/v1/metrics"} <= paths <= set(DECODERS), paths
    fields = run.fields
    for app in APPS:
        assert attribute(fields, app, semconv.ATTR_HTTP_ROUTE) >= ROUTES, app
        assert attribute(fields, app, semconv.ATTR_GEN_AI_REQUEST_MODEL) == {"fake-model"}, app
        assert semconv.POOL_ASYNCIO_DEFAULT in attribute(fields, app, semconv.ATTR_EXECUTOR_NAME)
        assert "executor_worker_limit" in run.scrapes[app]

    secrets = markers(fake_completion(DemoSettings().tokens))
    found = [str(leak) for leak in leaks(fields, secrets)]
    found += [
        f"{what} in the Prometheus endpoint of {app}"
        for app, text in run.scrapes.items()
        for what, secret in secrets.items()
        if secret in text
    ]
    assert not found, "\n".join(found)
    assert not raw_leaks(run.bodies, secrets)


@pytest.mark.stack
def test_with_content_capture_on_the_prompt_and_completion_are_exported(
    tmp_path: Path,
) -> None:
    """The same apps and search with capture on find the prompt: off by default means off."""

    async def few(url: str, client: _Marked) -> list[StepLoad]:
        for path in ("/chat", "/summary", "/stream"):
            response = await client.get(f"{path}?q={QUERY_SECRET}")
            assert response.status_code == 200, (url, path, response.text)
        return []

    run = run_apps(tmp_path, few, capture=True)
    secrets = {"prompt": QUERY_SECRET, "completion": fake_completion(DemoSettings().tokens)}
    found = {(leak.what, leak.service, leak.where) for leak in leaks(run.fields, secrets)}
    span_attribute = "resource_spans.scope_spans.spans.attributes[{}].value.string_value"
    for app in APPS:
        assert ("prompt", app, span_attribute.format(semconv.ATTR_GEN_AI_INPUT_MESSAGES)) in found
        assert (
            "completion",
            app,
            span_attribute.format(semconv.ATTR_GEN_AI_OUTPUT_MESSAGES),
        ) in found


def test_poolscopes_own_server_span_carries_no_request_content(telemetry: Telemetry) -> None:
    """The span PoolscopeMiddleware makes itself (OpenTelemetry's ASGI middleware, as
    configure() sets it up): what a Starlette app, or a FastAPI without its own
    telemetry, exports. The example apps' FastAPI makes its own server span instead."""

    async def chat(request: Request) -> PlainTextResponse:
        await request.body()
        return PlainTextResponse("ok")

    app = Starlette(routes=[Route("/chat", chat)])
    app.add_middleware(
        poolscope.PoolscopeMiddleware,
        tracer_provider=telemetry.tracer_provider,
        meter_provider=telemetry.meter_provider,
    )
    with serve(app) as url:
        response = httpx.get(f"{url}/chat?q={QUERY_SECRET}", headers=HEADERS, timeout=10)
        assert response.status_code == 200
        httpx.request("GET", f"{url}/chat", content=BODY_SECRET, timeout=10)
    spans = telemetry.spans()
    metrics = telemetry.reader.get_metrics_data()
    assert metrics is not None
    bodies = [
        ("/v1/traces", encode_spans(spans).SerializeToString()),
        ("/v1/metrics", encode_metrics(metrics).SerializeToString()),
    ]
    fields = exported_fields(bodies)
    assert "/chat" in {
        f.text
        for f in fields
        if f.where.endswith(f"attributes[{semconv.ATTR_HTTP_ROUTE}].value.string_value")
    }
    found = [str(leak) for leak in leaks(fields, REQUEST_SECRETS)]
    assert not found, "\n".join(found)


def test_the_prometheus_endpoint_listens_on_loopback_unless_told_otherwise() -> None:
    """The kernel's listening address, not a request to 127.0.0.1 (that a wildcard answers too)."""
    for env, expected in (
        ({}, "127.0.0.1"),
        ({"OTEL_POOLSCOPE_PROMETHEUS_HOST": "127.0.0.2"}, "127.0.0.2"),
    ):
        port = free_port()
        child = subprocess.Popen(
            [
                sys.executable,
                "-c",
                f"import sys, poolscope; poolscope.configure(prometheus_port={port}); "
                "print('up', flush=True); sys.stdin.read()",
            ],
            env={
                **_clean_env(),
                "OTEL_TRACES_EXPORTER": "none",
                "OTEL_METRICS_EXPORTER": "none",
                **env,
            },
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "up"
            assert listening_addresses(port) == {expected}, env
        finally:
            child.communicate(timeout=30)
        assert child.returncode == 0


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def test_no_compose_service_bypasses_loopback_or_sets_a_credential() -> None:
    """``network_mode: host`` ignores the 127.0.0.1 of ``ports``; a secret in the file is shared."""
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    credential = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_KEY|CREDENTIAL", re.IGNORECASE)
    for name, service in compose["services"].items():
        assert service.get("network_mode") != "host", name
        environment = service.get("environment") or {}
        names = [str(e).split("=")[0] for e in environment]  # a mapping or KEY=value items
        assert not [n for n in names if credential.search(n)], (name, environment)
