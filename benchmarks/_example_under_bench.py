"""An example app as bench_app.py serves it: ``POOLSCOPE_BENCH_APP`` in ``POOLSCOPE_BENCH_CONFIG``.

The apps call ``poolscope.configure()``, ``instrument_executor()`` and
``instrument_semaphore()`` at import. For every configuration but
``poolscope`` those lines are taken out: the module is executed with its
``import poolscope`` bound to a stand-in whose functions return what they are
given, so the app is the same code without poolscope, not a copy of it.

bare: no telemetry. otel: ``OpenTelemetryMiddleware`` around the app, with SDK
providers exporting OTLP as the environment says, set as the global ones. poolscope: the app as
written (its own ``configure()``). zero-code: the app without poolscope's
lines, run by bench_app.py under ``opentelemetry-instrument``, which loads
poolscope through its entry point.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONFIGS = ("bare", "otel", "poolscope", "zero-code")


def _without_poolscope() -> types.ModuleType:
    standin = types.ModuleType("poolscope")
    standin.configure = lambda app=None, **_: app  # type: ignore[attr-defined]
    standin.instrument_executor = lambda executor, **_: executor  # type: ignore[attr-defined]
    standin.instrument_semaphore = lambda semaphore, **_: semaphore  # type: ignore[attr-defined]
    return standin


def _load(name: str, *, with_poolscope: bool) -> Any:
    sys.path.insert(0, str(EXAMPLES))  # the examples import their shared helper
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    real = sys.modules.get("poolscope")
    if not with_poolscope:
        sys.modules["poolscope"] = _without_poolscope()
    try:
        spec.loader.exec_module(module)
    finally:
        if not with_poolscope:
            if real is None:
                del sys.modules["poolscope"]
            else:
                sys.modules["poolscope"] = real
    return module.app


def _otel_alone(app: Any) -> Any:
    """OpenTelemetry's ASGI middleware with the SDK's OTLP exporters, set from the
    environment, and the providers made global as an app sets them up (FastAPI's own
    telemetry then records into them, as it does under ``configure()``)."""
    from opentelemetry import metrics, trace
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    resource = Resource.create()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    reader = PeriodicExportingMetricReader(OTLPMetricExporter())
    meter_provider = MeterProvider(metric_readers=[reader], resource=resource)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    return OpenTelemetryMiddleware(
        app, tracer_provider=tracer_provider, meter_provider=meter_provider
    )


def build() -> Any:
    name = os.environ["POOLSCOPE_BENCH_APP"]
    config = os.environ["POOLSCOPE_BENCH_CONFIG"]
    if config not in CONFIGS:
        raise SystemExit(f"unknown POOLSCOPE_BENCH_CONFIG {config!r}; expected one of {CONFIGS}")
    app = _load(name, with_poolscope=config == "poolscope")
    return _otel_alone(app) if config == "otel" else app


def __getattr__(name: str) -> Any:
    # built when uvicorn asks for it, so that bench_app.py can import CONFIGS from here
    if name == "app":
        app = globals()["app"] = build()
        return app
    raise AttributeError(name)
