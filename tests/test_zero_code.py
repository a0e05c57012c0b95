"""`opentelemetry-instrument uvicorn app:app` gives what `poolscope.configure(app)` gives.

The app under test (tests/apps/zero_code.py) has no observability code. The
server runs in its own process under the real ``opentelemetry-instrument``
launcher, exporting spans to the console exporter, which this test parses.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from poolscope import semconv

APPS = Path(__file__).resolve().parent / "apps"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def console_spans(output: str) -> list[dict[str, Any]]:
    """The JSON objects the console span exporter printed, one per span."""
    decoder = json.JSONDecoder()
    spans, index = [], 0
    while (start := output.find("{", index)) != -1:
        try:
            value, index = decoder.raw_decode(output, start)
        except json.JSONDecodeError:
            index = start + 1
            continue
        if isinstance(value, dict) and "context" in value:
            spans.append(value)
    return spans


def test_opentelemetry_instrument_uvicorn_gives_the_roll_up_and_the_pools() -> None:
    port = free_port()
    instrument = Path(sys.executable).parent / "opentelemetry-instrument"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "OTEL_TRACES_EXPORTER": "console",
        "OTEL_METRICS_EXPORTER": "none",
        "OTEL_LOGS_EXPORTER": "none",
        "OTEL_SERVICE_NAME": "zero-code",
        "OTEL_POOLSCOPE_WAIT_SPAN_THRESHOLD_MS": "0",
        "PYTHONPATH": str(APPS),
    }
    server = subprocess.Popen(
        [
            str(instrument),
            sys.executable,
            "-m",
            "uvicorn",
            "zero_code:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            while True:
                try:
                    assert client.get("/reports/7").text == "report"
                    break
                except httpx.TransportError:
                    assert server.poll() is None, server.stderr.read() if server.stderr else ""
                    assert time.monotonic() < deadline, "server did not start"
                    time.sleep(0.1)
            assert client.get("/fetch").text == "fetched"
    finally:
        server.send_signal(signal.SIGINT)  # uvicorn shuts down; the SDK flushes at exit
        stdout, stderr = server.communicate(timeout=30)

    spans = console_spans(stdout)
    servers = {s["name"]: s for s in spans if s["kind"] == "SpanKind.SERVER"}
    assert set(servers) == {"GET /reports/{report_id}", "GET /fetch"}, (
        list(servers),
        stderr[-2000:],
    )
    report = servers["GET /reports/{report_id}"]["attributes"]
    assert report[semconv.ATTR_HTTP_ROUTE] == "/reports/{report_id}"
    assert report[semconv.ATTR_EXECUTOR_TASK_COUNT] == 1
    assert semconv.ATTR_EXECUTOR_WAIT_TOTAL in report
    fetch = servers["GET /fetch"]["attributes"]
    assert fetch[semconv.ATTR_EXECUTOR_TASK_COUNT] == 1
    pools = {
        s["attributes"][semconv.ATTR_EXECUTOR_NAME] for s in spans if s["name"] == semconv.SPAN_RUN
    }
    assert pools == {semconv.POOL_ANYIO_DEFAULT, semconv.POOL_ASYNCIO_DEFAULT}
