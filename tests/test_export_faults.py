"""The collector killed, restarted and killed again under load: requests never fail,
each outage is reported once, memory stays bounded and export resumes by itself.

The short version of ``benchmarks/export_faults.py`` (whose long run compares
throughput and latency with a no-export baseline; see docs/reliability.md),
with the real collector, the fixed example app under uvicorn and the fake LLM
server. The exporter timeout is cut to 2 s so that a few seconds of outage
are seen as one.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from benchmarks import export_faults
from tools import stack as _stack

SECONDS = 30
RSS_BOUND_MB = 64
"""Growth allowed over the outages: bounded queues (2,048 spans) and gRPC buffers,
far below what a run that kept every dropped span would need."""


def test_collector_outages_are_reported_once_each_and_export_resumes(tmp_path: Path) -> None:
    _stack.binary("collector")
    args = argparse.Namespace(seconds=SECONDS, users=20, export_timeout=2.0)
    run = export_faults.run("faults", args, tmp_path)

    assert run.failures == 0
    assert all(phase.requests > 0 for phase in run.phases), run.phases
    # Each phase says what the app, the load driver and the machine used, so a
    # run can tell when the machine was the limit.
    cores = os.cpu_count() or 1
    for phase in run.phases:
        assert phase.app_cpu_ms_per_request > 0, phase
        assert 0 < phase.driver_cores <= cores, phase
        assert phase.driver_cores < phase.machine_cores <= cores * 1.05, phase
    # Two outages (killed at 20%, and at 50% to the end): one line as each starts
    # and one as export works again after the restart, per signal; the OTLP
    # exporter's per-retry warnings are held back.
    ours = [line for line in run.export_log if line.startswith("poolscope:")]
    others = [line for line in run.export_log if not line.startswith("poolscope:")]
    assert others == []
    for what in ("spans", "metric points"):
        assert sum(f"cannot export {what} to" in line for line in ours) == 2, ours
        assert sum(f"{what} export to" in line and "works again" in line for line in ours) == 2
    dropped = [line for line in ours if "spans in failed exports were dropped" in line]
    assert len(dropped) == 2, ours
    assert all(int(line.split("; ")[1].split()[0]) > 0 for line in dropped), dropped
    assert run.resumed == {"spans": True, "metric points": True, "collector received spans": True}
    healthy_rss = run.phases[0].max_rss_mb
    assert max(phase.max_rss_mb for phase in run.phases) - healthy_rss < RSS_BOUND_MB, run.rss_mb


EXIT_PROBE = textwrap.dedent(
    """
    import sys, time
    from concurrent.futures import ThreadPoolExecutor
    import poolscope

    poolscope.configure(service_name="exit-probe", otlp_endpoint=sys.argv[1], root_spans=True)
    with ThreadPoolExecutor(2) as pool:
        for _ in range(100):
            pool.submit(int).result()
    time.sleep(3)  # export fails in the meantime, and is reported
    print("exiting", flush=True)
    with ThreadPoolExecutor(2) as pool:  # spans still queued at exit
        for _ in range(100):
            pool.submit(int).result()
    """
)


def test_an_app_whose_collector_is_down_exits_at_once() -> None:
    """Without poolscope's exit hook, the SDK's exit-time flush retries against the
    dead collector for the exporter's whole timeout (10 s here), once per signal."""
    process = subprocess.Popen(
        [sys.executable, "-c", EXIT_PROBE, f"http://127.0.0.1:{_stack.free_port()}"],
        env={
            **os.environ,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            "OTEL_METRIC_EXPORT_INTERVAL": "500",
            "OTEL_EXPORTER_OTLP_TIMEOUT": "10",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline() == "exiting\n"
    exiting = time.monotonic()
    _, stderr = process.communicate(timeout=60)
    took = time.monotonic() - exiting
    assert process.returncode == 0, stderr
    assert took < 3, (took, stderr)
    assert stderr.count("poolscope: cannot export spans") == 1, stderr
    others = [line for line in stderr.splitlines() if not line.startswith("poolscope:")]
    assert others == []  # the exporter's own retry warnings were held back


def test_at_exit_only_a_collector_that_refuses_connections_is_given_up() -> None:
    """Both exporters failed their last export; one collector is back (it accepts
    connections), so that app's final flush is kept. The other is shut down."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    from poolscope._sdk import _export

    back = socket.create_server(("127.0.0.1", 0))
    endpoints = {
        "back": f"127.0.0.1:{back.getsockname()[1]}",
        "down": f"127.0.0.1:{_stack.free_port()}",
    }
    exporters = {
        name: _export.ReportingSpanExporter(OTLPSpanExporter(endpoint=url, insecure=True), url)
        for name, url in endpoints.items()
    }
    try:
        for exporter in exporters.values():
            exporter.health.done(False, 1)
        _export.give_up_at_exit()
        assert exporters["down"].inner._shutdown  # type: ignore[attr-defined]
        assert not exporters["back"].inner._shutdown  # type: ignore[attr-defined]
    finally:
        for exporter in exporters.values():
            _export._exporters.remove(exporter)
            exporter.shutdown()
        back.close()


def test_a_retry_that_got_through_is_logged_unless_it_ended_a_reported_outage(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from poolscope._sdk._export import ExportHealth

    exporter_log = logging.getLogger("opentelemetry.exporter.otlp.test")
    caplog.set_level(logging.WARNING)
    health = ExportHealth("spans", "127.0.0.1:4317")
    health.note(
        exporter_log.makeRecord(exporter_log.name, logging.WARNING, "", 0, "retrying", (), None)
    )
    health.done(ok=True, items=10)  # a healthy exporter's retry: the warning is news
    assert [r.getMessage() for r in caplog.records] == ["retrying"]
    caplog.clear()
    health.done(ok=False, items=10)  # an outage, reported once
    health.note(
        exporter_log.makeRecord(exporter_log.name, logging.WARNING, "", 0, "retrying", (), None)
    )
    health.done(ok=True, items=10)  # the export that ended it retried on the way
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and "retrying" not in messages, messages
    assert "works again" in messages[1]
