"""Turns poolscope on inside a library's own test suite, for a compatibility run.

On ``PYTHONPATH`` only for those runs. A pytest suite loads this module as a
plugin (``-p poolscope_compat``): poolscope comes on at ``pytest_configure``,
after pytest has loaded its own plugins (anyio's among them), as an app would
import it. CPython's test runner has no plugins: ``sitecustomize`` calls
:func:`activate` at start-up instead. ``POOLSCOPE_COMPAT_MODE`` says how
(``default``: ``poolscope.instrument()`` with its defaults; ``spans``: every
span poolscope can make, ``root_spans=True, wait_span_threshold=0``), into SDK
providers whose exporters keep everything in memory. Unset: nothing happens,
and the run is the baseline.
"""

from __future__ import annotations

import os
from typing import Any

MODES = {"default": {}, "spans": {"root_spans": True, "wait_span_threshold": 0}}


def activate() -> None:
    mode = os.environ.get("POOLSCOPE_COMPAT_MODE")
    if not mode:
        return
    if mode not in MODES:
        raise SystemExit(f"POOLSCOPE_COMPAT_MODE must be one of {sorted(MODES)}, got {mode!r}")
    _activate(mode)


def pytest_configure(config: object) -> None:
    activate()


def _activate(mode: str) -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    import poolscope

    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(InMemorySpanExporter()))
    meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
    poolscope.instrument(
        tracer_provider=tracer_provider, meter_provider=meter_provider, **MODES[mode]
    )
    if os.environ.get("POOLSCOPE_COMPAT_ASGI") == "1":
        # opentelemetry-instrumentation-asgi's suite, with PoolscopeMiddleware in place
        # of the OpenTelemetryMiddleware it tests (poolscope keeps its own reference).
        import opentelemetry.instrumentation.asgi as otel_asgi

        otel_asgi.OpenTelemetryMiddleware = _asgi_middleware(otel_asgi)  # type: ignore[misc]


def _asgi_middleware(otel_asgi: Any) -> Any:
    """``PoolscopeMiddleware`` as the suite constructs its middleware. With
    ``POOLSCOPE_COMPAT_UPSTREAM_NAMES=1`` spans are named as upstream names them
    (``{method} {path}`` when no route is known), so that the rest of each
    test, past its span-name assertion, is exercised too."""
    import poolscope

    if os.environ.get("POOLSCOPE_COMPAT_UPSTREAM_NAMES") != "1":
        return poolscope.PoolscopeMiddleware

    def middleware(app: Any, **options: Any) -> Any:
        options.setdefault("default_span_details", otel_asgi.get_default_span_details)
        return poolscope.PoolscopeMiddleware(app, **options)

    return middleware
