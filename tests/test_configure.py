"""poolscope.configure(): one call, validated early, never replaces the application's providers.

OpenTelemetry's global providers can be set once per process, so each case
runs in a fresh interpreter.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.servers

TESTS = Path(__file__).resolve().parent


def run(
    code: str, env: dict[str, str] | None = None, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**clean, "PYTHONPATH": str(TESTS), **(env or {})},
        check=False,
        cwd=TESTS,
    )


def closed_port() -> int:
    """A loopback port nobody listens on: the collector is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_configure_twice_is_harmless_and_sets_up_the_sdk() -> None:
    result = run(
        f"""
        import poolscope
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.metrics import MeterProvider

        poolscope.configure(service_name="orders", otlp_endpoint="http://127.0.0.1:{closed_port()}")
        first = trace.get_tracer_provider(), metrics.get_meter_provider()
        poolscope.configure(service_name="orders")
        assert (trace.get_tracer_provider(), metrics.get_meter_provider()) == first
        assert isinstance(first[0], TracerProvider) and isinstance(first[1], MeterProvider)
        assert first[0].resource.attributes["service.name"] == "orders"
        print("ok")
        """,
        env={"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=test"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_the_applications_own_providers_are_kept() -> None:
    result = run(
        """
        import asyncio
        import poolscope
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        exporter = InMemorySpanExporter()
        mine = TracerProvider()
        mine.add_span_processor(SimpleSpanProcessor(exporter))
        trace.set_tracer_provider(mine)
        poolscope.configure(service_name="ignored")
        assert trace.get_tracer_provider() is mine

        async def main():
            with mine.get_tracer("app").start_as_current_span("request"):
                await asyncio.to_thread(sum, [1, 2])

        asyncio.run(main())
        print(sorted(span.name for span in exporter.get_finished_spans()))
        """,
        env={
            "OTEL_METRICS_EXPORTER": "none",  # no collector here to flush metrics to at exit
            # the first to_thread starts the executor's first thread: on a busy machine
            # that can take over the default 1 ms, and add a wait span to the trace
            "OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS": "60000",
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['executor.run', 'request']"


BAD_SETTINGS = [
    ('otlp_endpoint="localhost:4317"', {}, "otlp_endpoint must be an http:// or https:// URL"),
    ('otlp_endpoint="http://:4317"', {}, "otlp_endpoint must be an http:// or https:// URL"),
    ('otlp_endpoint="http://127.0.0.1:99999"', {}, "otlp_endpoint must be"),
    ('otlp_protocol="http/json"', {}, "otlp_protocol: expected one of ['grpc', 'http/protobuf']"),
    ("", {"OTEL_EXPORTER_OTLP_PROTOCOL": "udp"}, "OTEL_EXPORTER_OTLP_PROTOCOL: expected one of"),
    ("", {"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4317"}, "OTEL_EXPORTER_OTLP_ENDPOINT must be"),
    (
        "",
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        "OTEL_TRACES_EXPORTER: poolscope.configure() supports",
    ),
    ("prometheus_port=-1", {}, "prometheus_port must be a port number"),
    (
        "",
        {"OTEL_POOLSCOPE_PROMETHEUS_PORT": "http"},
        "OTEL_POOLSCOPE_PROMETHEUS_PORT must be a port",
    ),
    ("", {"OTEL_METRIC_EXPORT_INTERVAL": "soon"}, "OTEL_METRIC_EXPORT_INTERVAL must be"),
    (
        "",
        {"OTEL_METRICS_EXEMPLAR_FILTER": "sometimes"},
        "OTEL_METRICS_EXEMPLAR_FILTER: expected one of ['trace_based', 'always_on', 'always_off']",
    ),
    ("wait_span_threshold=-2", {}, "wait_span_threshold must be a number of seconds"),
    ('service_name=""', {}, "service_name must be a non-empty string"),
    ("app=42", {}, "app must be an ASGI application"),
    ("", {"OTEL_BSP_MAX_QUEUE_SIZE": "100"}, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE (512) must not"),
    ("", {"OTEL_BSP_MAX_QUEUE_SIZE": "-5"}, "OTEL_BSP_MAX_QUEUE_SIZE must be a positive"),
]


def test_bad_settings_fail_at_configure_with_the_setting_named() -> None:
    # One interpreter for all cases: each one must fail before anything is set up.
    cases = json.dumps([[call, env] for call, env, _ in BAD_SETTINGS])
    result = run(
        f"""
        import json, os, poolscope
        for call, env in json.loads({cases!r}):
            saved = dict(os.environ)
            os.environ.update(env)
            try:
                eval(f"poolscope.configure({{call}})")
            except poolscope.ConfigurationError as error:
                print(str(error).replace("\\n", " "))
            else:
                print("no error")
            finally:
                os.environ.clear()
                os.environ.update(saved)
        """
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == len(BAD_SETTINGS)
    for line, (call, env, message) in zip(lines, BAD_SETTINGS, strict=True):
        assert message in line, (call, env, line)


def test_an_unreachable_collector_never_slows_or_breaks_requests() -> None:
    result = run(
        f"""
        import os, time, httpx, poolscope
        from _servers import serve
        from starlette.applications import Starlette
        from starlette.responses import PlainTextResponse
        from starlette.routing import Route

        def hello(request):
            return PlainTextResponse("hello")

        def p50_p99(app):
            latencies = []
            with serve(app) as url, httpx.Client(base_url=url) as client:
                for _ in range(100):
                    started = time.perf_counter()
                    assert client.get("/hello").text == "hello"
                    latencies.append(time.perf_counter() - started)
            latencies.sort()
            return latencies[50], latencies[98]

        baseline = p50_p99(Starlette(routes=[Route("/hello", hello)]))
        app = poolscope.configure(
            Starlette(routes=[Route("/hello", hello)]),
            service_name="down-collector",
            otlp_endpoint="http://127.0.0.1:{closed_port()}",
        )
        print(*baseline, *p50_p99(app), flush=True)
        os._exit(0)  # skip the exit-time flush, which retries against the dead collector
        """,
        env={"OTEL_BSP_SCHEDULE_DELAY": "50", "OTEL_METRIC_EXPORT_INTERVAL": "200"},
    )
    assert result.returncode == 0, result.stderr
    base_p50, base_p99, p50, p99 = (float(x) for x in result.stdout.split())
    # Export to the dead collector is retried in background threads: requests
    # take what they take without any telemetry (plus poolscope's and
    # OpenTelemetry's per-request work, well under the slack allowed here).
    assert p50 <= base_p50 * 1.25 + 0.005, (base_p50, p50)
    assert p99 <= base_p99 * 1.5 + 0.01, (base_p99, p99)


def test_prometheus_endpoint_serves_the_contract_on_loopback() -> None:
    port = closed_port()
    result = run(
        f"""
        import asyncio, urllib.request, poolscope
        from concurrent.futures import ThreadPoolExecutor

        poolscope.configure(service_name="scraped", prometheus_port={port})
        pool = poolscope.instrument_executor(ThreadPoolExecutor(3), name="pdf")
        pool.submit(sum, [1, 2]).result()
        body = urllib.request.urlopen("http://127.0.0.1:{port}/metrics").read().decode()
        print(body)
        """,
        env={"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
    )
    assert result.returncode == 0, result.stderr
    body = result.stdout
    assert 'executor_worker_limit{executor_name="pdf",executor_type="thread_pool"' in body
    assert "executor_task_wait_duration_seconds_bucket" in body
    assert 'le="0.0005"' in body  # the package's buckets, not the SDK's millisecond defaults
