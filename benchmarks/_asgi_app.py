"""The app bench_asgi.py loads into uvicorn, set up per ``POOLSCOPE_BENCH_CONFIG``.

bare: no telemetry. otel: OpenTelemetryMiddleware alone. otel-asyncio: the
same, and opentelemetry-instrumentation-asyncio's span per ``to_thread`` of
``time.sleep`` (what OpenTelemetry alone offers to see an offload; it sees no
wait, no pool, and not anyio's worker threads). poolscope: the full
poolscope setup (executor instrumentation, loop monitor, PoolscopeMiddleware).
poolscope-no-run-spans: the same with ``run_spans=False`` (wait spans, metrics
and the roll-up stay). poolscope-no-loop-monitor: full poolscope without the
event-loop signals (lag, utilization, blocks): what those cost per request.
Both instrumented configurations use the same SDK providers, built as
``poolscope.configure()`` builds them, exporting to exporters that discard, so
the figures are the instrumentation's own cost.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route


async def offload(request: Request) -> PlainTextResponse:
    await asyncio.to_thread(time.sleep, 0.001)  # a short blocking call, offloaded
    return PlainTextResponse("offloaded")


def sync(request: Request) -> PlainTextResponse:
    time.sleep(0.001)  # a sync endpoint: runs in anyio's worker threads
    return PlainTextResponse("sync")


async def plain(request: Request) -> PlainTextResponse:
    return PlainTextResponse("async")


def _providers() -> tuple[Any, Any]:
    # As poolscope.configure() makes them (OpenTelemetry's own request histogram
    # goes through the SDK in both), exporting metrics every 15 s, to nowhere.
    from _providers import configured_providers

    return configured_providers(interval_ms=15_000)


def build() -> Any:
    app = Starlette(
        routes=[Route("/offload", offload), Route("/sync", sync), Route("/async", plain)]
    )
    config = os.environ.get("POOLSCOPE_BENCH_CONFIG", "bare")
    if config == "bare":
        return app
    tracer_provider, meter_provider = _providers()
    if config in ("otel", "otel-asyncio"):
        from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

        if config == "otel-asyncio":  # and a span (and a duration) per to_thread of time.sleep
            from opentelemetry.instrumentation.asyncio import AsyncioInstrumentor

            os.environ["OTEL_PYTHON_ASYNCIO_TO_THREAD_FUNCTION_NAMES_TO_TRACE"] = "sleep"
            AsyncioInstrumentor().instrument(
                tracer_provider=tracer_provider, meter_provider=meter_provider
            )
        return OpenTelemetryMiddleware(
            app, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
    if config in ("poolscope", "poolscope-no-run-spans", "poolscope-no-loop-monitor"):
        import poolscope

        poolscope.instrument(
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            run_spans=config != "poolscope-no-run-spans",
            loop_monitor=config != "poolscope-no-loop-monitor",
        )
        return poolscope.PoolscopeMiddleware(
            app, tracer_provider=tracer_provider, meter_provider=meter_provider
        )
    raise SystemExit(f"unknown POOLSCOPE_BENCH_CONFIG {config!r}")


app = build()
