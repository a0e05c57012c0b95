"""The scale-out layout: apps -> agent collector -> gateway collector -> trace store.

Both collectors are our build with the repository's ``collector/agent.yaml``
and ``collector/gateway.yaml``. The gateway must keep every trace with a long
``executor.wait`` span and drop the fast ones (the test keeps 0% of the rest),
while its span metrics still count every request: they are computed before
sampling.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from tools.stack import (
    LOADGEN,
    http_get,
    services,
    start_app,
    start_collector,
    start_fake_llm,
    start_jaeger,
)

from poolscope import semconv
from poolscope._analysis import _promql as p

pytestmark = pytest.mark.stack

SLOW_NS = 100_000_000  # the gateway's threshold for a long wait, 100 ms


def _load(url: str, seconds: int, spec: str) -> int:
    out = subprocess.run(
        [*LOADGEN, url, str(seconds), spec],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    statuses: dict[str, dict[str, int]] = json.loads(out)
    [(_, seen)] = statuses.items()
    assert set(seen) == {"200"}, statuses
    return seen["200"]


def _text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        body: bytes = response.read()
        return body.decode()


def test_the_gateway_keeps_the_traces_that_waited_and_counts_every_span(tmp_path: Path) -> None:
    with services(tmp_path) as start:
        jaeger = start_jaeger(start)
        gateway = start_collector(
            start,
            trace_store_port=jaeger["otlp"],
            config="gateway.yaml",
            env={"POOLSCOPE_TAIL_DECISION_WAIT": "2s", "POOLSCOPE_TAIL_KEEP_PERCENT": "0"},
        )
        agent = start_collector(start, trace_store_port=gateway["grpc"], config="agent.yaml")
        app = start_app(start, "naive_app", llm_url=start_fake_llm(start), otlp_port=agent["grpc"])
        started = time.time()
        served = _load(app, 3, "/chat:1")  # one user, six threads: nobody waits
        served += _load(app, 4, "/chat:20")  # twenty users: most wait
        time.sleep(6)  # the gateway's 2 s decision wait, batches, flushes

        params = {
            "service": "naive-llm-app",
            "operation": "GET /chat",
            "limit": 5000,
            "start": int((started - 5) * 1e6),
            "end": int(time.time() * 1e6),
        }
        query = f"http://127.0.0.1:{jaeger['query']}/api/traces?{urllib.parse.urlencode(params)}"
        traces = http_get(query)["data"]
        metrics = _text(f"http://127.0.0.1:{gateway['prometheus']}/metrics")

    assert 0 < len(traces) < served
    for trace in traces:
        waits = [s for s in trace["spans"] if s["operationName"] == semconv.SPAN_WAIT]
        assert max(s["duration"] * 1000 for s in waits) >= SLOW_NS, trace["traceID"]
    # span metrics before sampling: every request counted, kept or not
    route = f'{p.SPAN_NAME}="GET /chat"'
    calls = re.search(
        rf'{p.SPAN_CALLS}\{{[^}}]*job="naive-llm-app"[^}}]*{route}[^}}]*\}} (\d+)', metrics
    )
    assert calls is not None and int(calls.group(1)) == served
    # the apps' own metrics came through agent and gateway too
    pool = f'{p.POOL}="{semconv.POOL_ASYNCIO_DEFAULT}"'
    assert re.search(rf"{p.LIMIT}\{{[^}}]*{pool}", metrics)
