"""OpenTelemetry's own environment variables mean for poolscope what they mean for the SDK.

Each case runs tests/apps/sdk_settings.py twice under the same variables: once
set up by ``poolscope.configure()``, once by the SDK's own auto-configuration
(``opentelemetry-instrument`` with opentelemetry-distro), and compares what
each process ended up with: resource, exporters, endpoints, headers, interval.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from poolscope._sdk._configure import DEFAULT_METRIC_INTERVAL_MS

pytestmark = pytest.mark.servers

TESTS = Path(__file__).resolve().parent
PROBE = TESTS / "apps" / "sdk_settings.py"
INSTRUMENT = Path(sys.executable).with_name("opentelemetry-instrument")
# set per process, or by the distro alone: never comparable
PER_PROCESS = {"service.instance.id", "process.pid", "telemetry.auto.version"}


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=60,
        env={**clean, "PYTHONPATH": str(TESTS), **env},
        check=False,
        cwd=TESTS,
    )


def _settings(env: dict[str, str], *, by: str) -> dict[str, Any]:
    """What the process was set up with, ``by`` poolscope or by the SDK."""
    argv = [sys.executable, str(PROBE), "configure"]
    if by == "sdk":
        argv = [str(INSTRUMENT), sys.executable, str(PROBE)]
    done = _run(argv, env)
    assert done.returncode == 0, done.stderr
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    for reader in found["metrics"]:
        reader["interval_ms"] = float(reader["interval_ms"])
    return found


def _comparable(resource: dict[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (resource or {}).items() if k not in PER_PROCESS}


@pytest.mark.parametrize(
    "env",
    [
        pytest.param(
            {
                "OTEL_SERVICE_NAME": "checkout",
                "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment.name=ci,team=pools,a=b%20c",
            },
            id="resource",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cret,X-Tenant=blue",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:14317",
                "OTEL_METRIC_EXPORT_INTERVAL": "1234",
            },
            id="grpc-headers-endpoint-interval",
        ),
        pytest.param(
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s3cret",
                "OTEL_EXPORTER_OTLP_TRACES_HEADERS": "api-key=traces-only",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:14318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:24318/custom/traces",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:34318/v1/metrics",
            },
            id="http-per-signal",
        ),
        pytest.param(
            {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRIC_EXPORT_INTERVAL": "60000"},
            id="no-traces",
        ),
    ],
)
def test_the_standard_variables_set_up_what_the_sdk_sets_up(env: dict[str, str]) -> None:
    ours, sdk = _settings(env, by="poolscope"), _settings(env, by="sdk")
    if "OTEL_METRIC_EXPORT_INTERVAL" not in env:
        # the one deliberate difference: 15 s unless told, not the SDK's 60 s, so the
        # dashboards' one-minute rates have points to work with (docs/configuration.md)
        assert {r["interval_ms"] for r in ours["metrics"]} == {DEFAULT_METRIC_INTERVAL_MS}
        assert {r["interval_ms"] for r in sdk["metrics"]} == {60_000}
        for reader in ours["metrics"] + sdk["metrics"]:
            del reader["interval_ms"]
    assert ours["traces"] == sdk["traces"]
    assert ours["metrics"] == sdk["metrics"]
    assert _comparable(ours["resource"]) == _comparable(sdk["resource"])
    assert ours["metric_resource"] == ours["resource"]  # one identity for both signals
    assert ours["poolscope"] and sdk["poolscope"]


def test_the_sdk_switch_makes_configure_install_nothing() -> None:
    code = """
        import json
        from concurrent.futures import ThreadPoolExecutor

        import anyio.to_thread
        from opentelemetry import trace
        from starlette.applications import Starlette

        import poolscope
        from poolscope import ConfigurationError

        submit, run_sync = ThreadPoolExecutor.submit, anyio.to_thread.run_sync
        checked = []  # bad arguments still fail at once (before any call succeeds)
        for bad in (
            lambda: poolscope.configure(otlp_endpoint="localhost:4317"),
            lambda: poolscope.instrument(loop_interval=-1),
        ):
            try:
                bad()
                checked.append(False)
            except ConfigurationError:
                checked.append(True)
        app = Starlette()
        returned = poolscope.configure(app)
        poolscope.instrument()
        print(json.dumps({
            "same_app": returned is app,
            "middleware": len(app.user_middleware),
            "provider": type(trace.get_tracer_provider()).__name__,
            "untouched": ThreadPoolExecutor.submit is submit
            and anyio.to_thread.run_sync is run_sync,
            "arguments_checked": checked,
        }))
    """
    done = _run([sys.executable, "-c", textwrap.dedent(code)], {"OTEL_SDK_DISABLED": "TRUE"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "same_app": True,
        "middleware": 0,
        "provider": "ProxyTracerProvider",
        "untouched": True,
        "arguments_checked": [True, True],
    }


@pytest.mark.parametrize("by", ["poolscope", "sdk"])
def test_with_the_sdk_switch_nothing_records_and_poolscope_stays_off(by: str) -> None:
    found = _settings({"OTEL_SDK_DISABLED": "true"}, by=by)
    assert found["span_recording"] is False
    assert found["poolscope"] is False


@pytest.mark.parametrize(
    ("disabled", "on"),
    [("poolscope", False), ("requests, poolscope", False), ("*", False), ("requests", True)],
)
def test_disabled_instrumentations_keep_the_zero_code_path_off(disabled: str, on: bool) -> None:
    found = _settings({"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": disabled}, by="sdk")
    assert found["poolscope"] is on
    assert found["span_recording"] is True  # the SDK itself is still on
