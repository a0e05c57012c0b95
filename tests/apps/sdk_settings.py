"""Print, as JSON, what OpenTelemetry was set up with in this process.

``python sdk_settings.py configure`` calls ``poolscope.configure()`` first;
``opentelemetry-instrument python sdk_settings.py`` lets the SDK's own
auto-configuration (opentelemetry-distro) do it. tests/test_otel_switches.py
compares the two under the same ``OTEL_*`` variables.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from opentelemetry import metrics, trace


def _unwrapped(exporter: Any) -> Any:
    """The SDK's exporter inside poolscope's reporting wrapper, if any."""
    return getattr(exporter, "inner", None) or getattr(exporter, "_inner", None) or exporter


def _headers(exporter: Any) -> dict[str, str]:
    """The headers it sends: the gRPC exporter's own, the HTTP exporter's client's."""
    raw = (
        getattr(exporter, "_headers", None)
        or getattr(getattr(exporter, "_client", None), "_headers", None)
        or {}
    )
    items = raw.items() if isinstance(raw, dict) else raw
    return {str(key).lower(): str(value) for key, value in items}


def _exporter(exporter: Any) -> dict[str, Any]:
    exporter = _unwrapped(exporter)
    return {
        "class": f"{type(exporter).__module__}.{type(exporter).__qualname__}",
        "endpoint": getattr(exporter, "_endpoint", None),
        "headers": _headers(exporter),
    }


def poolscope_active() -> bool:
    """Whether poolscope instrumented this process (imported only once something did)."""
    runtime = sys.modules.get("poolscope._runtime")
    return runtime is not None and bool(runtime.is_active())


def settings() -> dict[str, Any]:
    tracer_provider: Any = trace.get_tracer_provider()
    meter_provider: Any = metrics.get_meter_provider()
    found: dict[str, Any] = {
        "resource": dict(getattr(tracer_provider, "resource", None).attributes)
        if hasattr(tracer_provider, "resource")
        else None,
        "span_recording": trace.get_tracer("probe").start_span("probe").is_recording(),
        "poolscope": poolscope_active(),
        "traces": [],
        "metrics": [],
    }
    processors = getattr(
        getattr(tracer_provider, "_active_span_processor", None), "_span_processors", ()
    )
    for processor in processors:
        batch = getattr(processor, "_batch_processor", None)
        exporter = getattr(batch, "_exporter", None) or getattr(processor, "span_exporter", None)
        if exporter is not None:
            found["traces"].append(_exporter(exporter))
    sdk_config = getattr(meter_provider, "_sdk_config", None)
    for reader in getattr(meter_provider, "_metric_readers", ()):
        exporter = getattr(reader, "_exporter", None)
        if exporter is not None:
            found["metrics"].append(
                {
                    **_exporter(exporter),
                    "interval_ms": getattr(reader, "_export_interval_millis", None),
                }
            )
    if found["resource"] is not None:
        found["metric_resource"] = dict(sdk_config.resource.attributes) if sdk_config else None
    return found


if __name__ == "__main__":
    if sys.argv[1:] == ["configure"]:
        import poolscope

        poolscope.configure()
    print(json.dumps(settings(), sort_keys=True, default=str))
