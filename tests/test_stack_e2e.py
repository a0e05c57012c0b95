"""The bundled stack end to end, with real parts only.

The naive and the fixed example app (real uvicorn, their own processes) serve
real load and export OTLP to *our collector binary*; Debian's Prometheus
scrapes the collector and evaluates our alert rules; the collector forwards
traces to Jaeger v2, built from its Go module. Then every PromQL expression of
every dashboard panel and alert rule is sent to that Prometheus, the Jaeger
search of the dashboard is sent to Jaeger, and the saturation alert must fire
for the naive app and not for the fixed one.

Grafana itself cannot run here: what it would do with these queries (render
them) is not tested; that the queries are right, is.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from tools.stack import (
    LOADGEN,
    ROOT,
    Prometheus,
    cpu_seconds,
    http_get,
    services,
    start_app,
    start_collector,
    start_fake_llm,
    start_jaeger,
    start_prometheus,
    wait_until,
)
from tools.stackgen import alerts, dashboard

from _helpers import default_executor_limit
from poolscope import semconv
from poolscope._analysis import _promql as p

pytestmark = pytest.mark.stack

NAIVE = "naive-llm-app"
FIXED = "fixed-llm-app"
LOAD_SECONDS = 50
DEFAULT_EXECUTOR_LIMIT = default_executor_limit()
LOAD_GENERATOR_CORES = 0.8
"""Above this a (single-threaded) load generator is the limit, not the app."""
ANYIO_LIMIT = 40

# Closed-loop workers per route (PATH:CONCURRENCY[:PAUSE]). The naive app gets
# more callers than its default executor (/chat, /search) and anyio's limiter
# (/summary, /stream) have seats, and an occasional call that blocks its loop.
# Five callers per seat of the default executor: its queue stays long enough
# to keep every worker busy through a blocked loop (no new tasks arrive then)
# and the load generator's round trips on a busy 2-core machine.
NAIVE_LOAD = ["/chat:20", "/search:10", "/summary:45", "/stream:8", "/classify:1:3"]
FIXED_LOAD = ["/chat:10", "/search:5", "/summary:10", "/stream:5", "/classify:1:3"]


@dataclass
class Stack:
    prometheus: Prometheus
    jaeger_url: str
    evaluated_at: float
    """A moment during the load: every query is evaluated there."""
    alerts: list[dict[str, Any]]
    """Prometheus's alerts at ``evaluated_at``."""


def _load(cleanup: ExitStack, url: str, spec: list[str]) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [*LOADGEN, url, str(LOAD_SECONDS), *spec],
        stdout=subprocess.PIPE,
        text=True,
    )
    cleanup.enter_context(process)  # reaped (and its pipe closed) whatever happens
    cleanup.callback(process.kill)
    return process


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    directory = tmp_path_factory.mktemp("stack")
    with services(directory) as start, ExitStack() as cleanup:
        jaeger = start_jaeger(start)
        collector = start_collector(start, trace_store_port=jaeger["otlp"])
        prometheus = start_prometheus(start, directory, f"127.0.0.1:{collector['prometheus']}")
        # a slow model (0.75 s a call) keeps the request rate, and the CPU the load
        # generators and the apps need, well within a 2-core machine shared by the stack
        llm = start_fake_llm(start, "--first-token-ms", "600")
        naive = start_app(start, "naive_app", llm_url=llm, otlp_port=collector["grpc"])
        fixed = start_app(start, "fixed_app", llm_url=llm, otlp_port=collector["grpc"])
        for app in (naive, fixed):  # pools appear on first use
            for spec in NAIVE_LOAD:
                with urllib.request.urlopen(app + spec.split(":")[0], timeout=30) as response:
                    assert response.status == 200
        wait_until(
            lambda: {s["metric"]["job"] for s in prometheus.query(p.LIMIT)} >= {NAIVE, FIXED},
            timeout=30,
            what="both apps' metrics in Prometheus",
        )

        started = time.monotonic()
        loads = {
            NAIVE: _load(cleanup, naive, NAIVE_LOAD),
            FIXED: _load(cleanup, fixed, FIXED_LOAD),
        }
        time.sleep(max(0.0, started + LOAD_SECONDS - 4 - time.monotonic()))
        evaluated_at = time.time() - 2  # scraped by now: export, batch and scrape are 1 s each
        firing = prometheus.api("alerts")["alerts"]
        elapsed = time.monotonic() - started
        for job, process in loads.items():  # a saturated load generator sends bursts
            cores = cpu_seconds(process.pid) / elapsed
            assert cores < LOAD_GENERATOR_CORES, (
                f"the load generator of {job} used {cores:.2f} cores: it, not the app, "
                "was the limit"
            )
        for job, process in loads.items():
            out, _ = process.communicate(timeout=LOAD_SECONDS + 60)
            statuses = json.loads(out)
            failed = {path: s for path, s in statuses.items() if set(s) != {"200"}}
            assert not failed, f"{job} answered errors under load: {failed}"
        time.sleep(3)  # the last spans: batch span processor, collector batch, Jaeger
        yield Stack(prometheus, f"http://127.0.0.1:{jaeger['query']}", evaluated_at, firing)


def _substitute(expr: str, service: str) -> str:
    """What Grafana sends for the dashboard's variables with one service selected."""
    return (
        expr.replace("$trace_service", service)
        .replace("$service", service)
        .replace("$instance", dashboard.ALL)
        .replace("$pool", dashboard.ALL)
        .replace("$__rate_interval", "15s")
        .replace("$__range", f"{LOAD_SECONDS - 6}s")
    )


def _by_job(result: list[dict[str, Any]], job: str) -> list[dict[str, Any]]:
    return [series for series in result if series["metric"].get(p.SERVICE) == job]


def _pools(result: list[dict[str, Any]]) -> dict[str, float]:
    return {series["metric"][p.POOL]: float(series["value"][1]) for series in result}


def test_the_contract_metrics_arrive_with_pool_process_and_service_labels(stack: Stack) -> None:
    at = stack.evaluated_at
    limits = _pools(stack.prometheus.query(f'{p.LIMIT}{{job="{NAIVE}"}}', at))
    assert limits == {
        semconv.POOL_ASYNCIO_DEFAULT: DEFAULT_EXECUTOR_LIMIT,
        semconv.POOL_ANYIO_DEFAULT: ANYIO_LIMIT,
    }
    fixed = _pools(stack.prometheus.query(f'{p.LIMIT}{{job="{FIXED}"}}', at))
    assert fixed["parse"] == 8 and fixed["llm-quota"] == 256
    for metric in (f"{p.WAIT}_bucket", f"{p.RUN}_bucket", f"{p.RESUME}_bucket", p.PENDING):
        series = stack.prometheus.query(f'{metric}{{job="{NAIVE}"}}', at)
        assert {s["metric"][p.POOL] for s in series} >= set(limits), metric
        assert all(s["metric"].get(p.INSTANCE) for s in series), metric
    states = {
        s["metric"][p.WORKER_STATE]
        for s in stack.prometheus.query(f'{p.WORKERS}{{job="{NAIVE}"}}', at)
    }
    assert states == {semconv.WORKER_STATE_BUSY, semconv.WORKER_STATE_IDLE}
    for metric in (f"{p.LAG}_bucket", f"{p.LLM_DURATION}_bucket", f"{p.LLM_TOKENS}_bucket"):
        assert stack.prometheus.query(f'{metric}{{job="{NAIVE}"}}', at), metric


def test_span_metrics_of_wait_spans_carry_the_pool_and_its_limit(stack: Stack) -> None:
    calls = stack.prometheus.query(
        f'{p.SPAN_CALLS}{{job="{NAIVE}", span_name="{semconv.SPAN_WAIT}"}}', stack.evaluated_at
    )
    limits = {s["metric"][p.POOL]: s["metric"][p.WORKER_LIMIT] for s in calls}
    assert limits[semconv.POOL_ASYNCIO_DEFAULT] == str(DEFAULT_EXECUTOR_LIMIT)


def test_the_dashboards_jaeger_search_finds_long_waits_with_their_attributes(stack: Stack) -> None:
    [board] = dashboard.dashboards().values()
    [panel] = [x for x in board["panels"] if (x.get("datasource") or {}).get("type") == "jaeger"]
    [search] = panel["targets"]
    duration = int(search["minDuration"].removesuffix("ms")) * 1000
    params = {
        "service": _substitute(search["service"], NAIVE),
        "operation": search["operation"],
        "minDuration": search["minDuration"],
        "limit": search["limit"],
        "start": int((stack.evaluated_at - 300) * 1e6),
        # traces that ended well before the load did: all their spans have arrived
        "end": int((stack.evaluated_at - 5) * 1e6),
    }
    url = f"{stack.jaeger_url}/api/traces?{urllib.parse.urlencode(params)}"
    traces = wait_until(
        lambda: _complete(http_get(url)["data"]), timeout=30, what="complete Jaeger search results"
    )
    assert len(traces) == search["limit"]
    limits = {
        semconv.POOL_ASYNCIO_DEFAULT: DEFAULT_EXECUTOR_LIMIT,
        semconv.POOL_ANYIO_DEFAULT: ANYIO_LIMIT,
    }
    for trace in traces:
        spans = {span["spanID"]: span for span in trace["spans"]}
        waits = [s for s in spans.values() if s["operationName"] == semconv.SPAN_WAIT]
        assert max(span["duration"] for span in waits) >= duration
        for wait in waits:
            tags = {tag["key"]: tag["value"] for tag in wait["tags"]}
            assert (
                int(tags[semconv.ATTR_EXECUTOR_WORKER_LIMIT])
                == limits[tags[semconv.ATTR_EXECUTOR_NAME]]
            )
            # intact: in its request's trace, beside the run span it waited for
            [parent] = [r["spanID"] for r in wait["references"] if r["refType"] == "CHILD_OF"]
            assert _root(spans, parent)["operationName"].startswith("GET /")
            siblings = {
                s["operationName"]
                for s in spans.values()
                if any(r["spanID"] == parent for r in s["references"])
            }
            assert semconv.SPAN_RUN in siblings


def test_the_wait_p95_prometheus_reads_is_within_10_percent_of_the_spans(stack: Stack) -> None:
    # The dashboard's and the alert's p95 (histogram_quantile over the wait histogram)
    # against the exact p95 of the same pool's executor.wait spans in Jaeger, over the
    # same stretch of the load. The app exports every second and Prometheus scrapes every
    # second: the histogram lags the spans by about two.
    seconds = 24
    end = stack.evaluated_at - 2
    start = end - seconds
    params = {
        "service": NAIVE,
        "operation": semconv.SPAN_WAIT,
        "tags": json.dumps({semconv.ATTR_EXECUTOR_NAME: semconv.POOL_ASYNCIO_DEFAULT}),
        "start": int((start - 30) * 1e6),
        "end": int(end * 1e6),
        "limit": 5000,
    }
    traces = http_get(f"{stack.jaeger_url}/api/traces?{urllib.parse.urlencode(params)}")["data"]
    waits = sorted(
        span["duration"] / 1e6
        for trace in traces
        for span in trace["spans"]
        if span["operationName"] == semconv.SPAN_WAIT
        and {t["key"]: t["value"] for t in span["tags"]}.get(semconv.ATTR_EXECUTOR_NAME)
        == semconv.POOL_ASYNCIO_DEFAULT
        and start <= (span["startTime"] + span["duration"]) / 1e6 <= end
    )
    assert len(waits) >= 100, len(waits)
    exact = waits[math.ceil(0.95 * len(waits)) - 1]
    bucket = p.selector(
        f"{p.WAIT}_bucket", **{p.SERVICE: NAIVE, p.POOL: semconv.POOL_ASYNCIO_DEFAULT}
    )
    expr = f"histogram_quantile(0.95, sum by (le) (increase({bucket}[{seconds}s])))"
    [series] = stack.prometheus.query(expr, end + 2)
    read = float(series["value"][1])
    assert abs(read - exact) / exact <= 0.10, (read, exact, len(waits))


def _complete(traces: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``traces`` if every parent each span names is in its trace, else nothing."""
    for trace in traces:
        ids = {span["spanID"] for span in trace["spans"]}
        for span in trace["spans"]:
            if any(
                r["spanID"] not in ids for r in span["references"] if r["refType"] == "CHILD_OF"
            ):
                return []
    return traces


def _root(spans: dict[str, Any], span_id: str) -> Any:
    span = spans[span_id]
    parents = [r["spanID"] for r in span["references"] if r["refType"] == "CHILD_OF"]
    return _root(spans, parents[0]) if parents else span


def test_wait_exemplars_open_a_trace_in_jaeger(stack: Stack) -> None:
    datasources = yaml.safe_load(
        (ROOT / "grafana" / "provisioning" / "datasources" / "poolscope.yaml").read_text()
    )
    [prometheus] = [d for d in datasources["datasources"] if d["type"] == "prometheus"]
    trace_label = {d["name"] for d in prometheus["jsonData"]["exemplarTraceIdDestinations"]}
    assert len(trace_label) == 1
    [label] = trace_label
    found = stack.prometheus.api(
        "query_exemplars",
        query=f'{p.WAIT}_bucket{{job="{NAIVE}"}}',
        start=stack.evaluated_at - LOAD_SECONDS,
        end=stack.evaluated_at + 5,
    )
    exemplars = [e for series in found for e in series["exemplars"]]
    assert exemplars, "no exemplars on the queue-wait histogram"
    slowest = max(exemplars, key=lambda e: float(e["value"]))
    trace_id = slowest["labels"][label]
    trace = wait_until(
        lambda: http_get(f"{stack.jaeger_url}/api/traces/{trace_id}")["data"],
        timeout=30,
        what=f"trace {trace_id} in Jaeger",
    )
    names = {span["operationName"] for span in trace[0]["spans"]}
    assert semconv.SPAN_WAIT in names


def test_every_dashboard_query_returns_data_for_the_starving_app(stack: Stack) -> None:
    empty = []
    for board in dashboard.dashboards().values():
        for title, ref_id, expr in dashboard.expressions(board):
            result = stack.prometheus.query(_substitute(expr, NAIVE), stack.evaluated_at)
            if not result:
                empty.append(f"{title} [{ref_id}]: {expr}")
    assert not empty, "panels without data:\n" + "\n".join(empty)


def test_the_dashboard_variables_list_both_apps_and_their_pools(stack: Stack) -> None:
    [board] = dashboard.dashboards().values()
    variables = {v["name"]: v["query"] for v in board["templating"]["list"] if v["type"] == "query"}
    for name, query in variables.items():
        match = re.fullmatch(r"label_values\((.+), (\w+)\)", query)
        assert match, (name, query)
        selector = _substitute(match.group(1), NAIVE)
        values = stack.prometheus.api(f"label/{match.group(2)}/values", **{"match[]": selector})
        assert values, (name, query)
        if name in ("service", "trace_service"):
            assert {NAIVE, FIXED} <= set(values)
        if name == "pool":
            assert {semconv.POOL_ASYNCIO_DEFAULT, semconv.POOL_ANYIO_DEFAULT} <= set(values)


def test_every_alert_measures_the_starving_app(stack: Stack) -> None:
    empty = []
    for alert in alerts.ALERTS:
        if not _by_job(stack.prometheus.query(alert.measure, stack.evaluated_at), NAIVE):
            empty.append(f"{alert.name}: {alert.measure}")
    assert not empty, "alert measures without data:\n" + "\n".join(empty)


def test_the_saturation_alert_fires_for_the_naive_app_and_not_the_fixed_one(
    stack: Stack,
) -> None:
    [saturated] = [a for a in alerts.ALERTS if a.name == "PoolscopePoolSaturated"]
    result = stack.prometheus.query(saturated.expr, stack.evaluated_at)
    assert semconv.POOL_ASYNCIO_DEFAULT in _pools(_by_job(result, NAIVE))
    assert _pools(_by_job(result, FIXED)) == {}

    firing = [
        a
        for a in stack.alerts
        if a["labels"]["alertname"] == saturated.name and a["state"] == "firing"
    ]
    naive = {a["labels"][p.POOL]: a for a in firing if a["labels"][p.SERVICE] == NAIVE}
    assert semconv.POOL_ASYNCIO_DEFAULT in naive, stack.alerts
    assert not [a for a in firing if a["labels"][p.SERVICE] == FIXED], firing
    pool_alerts = {"PoolscopePoolSaturated", "PoolscopeQueueWaitHigh", "PoolscopeWaitSpansHigh"}
    fixed_pool_alerts = [
        a
        for a in stack.alerts
        if a["labels"]["alertname"] in pool_alerts and a["labels"][p.SERVICE] == FIXED
    ]
    assert not fixed_pool_alerts
    summary = naive[semconv.POOL_ASYNCIO_DEFAULT]["annotations"]["summary"]
    assert f"Pool {semconv.POOL_ASYNCIO_DEFAULT} (thread_pool) in {NAIVE}" in summary
    assert f"all {DEFAULT_EXECUTOR_LIMIT} workers busy" in summary


def test_top_reads_every_app_and_process_from_the_prometheus_server(stack: Stack) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "poolscope",
            "top",
            stack.prometheus.url,
            "--once",
            "--interval",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if "/" in line and "busy" not in line]
    seen = {(line.split("/")[0], line.split()[1]) for line in rows if " " in line}
    assert (NAIVE, semconv.POOL_ASYNCIO_DEFAULT) in seen
    assert (NAIVE, semconv.POOL_ANYIO_DEFAULT) in seen
    assert (FIXED, "llm-quota") in seen
    assert re.search(
        rf"{re.escape(semconv.POOL_ANYIO_DEFAULT)}\s+\S+\s+\d+/{ANYIO_LIMIT}\s", result.stdout
    )
    # a row per process, with the CPU it used over the last minute, rated by the server
    assert re.search(r"^naive-llm-app/\S+\s+\d+\.\d\d\s", result.stdout, re.MULTILINE)
    assert "figures over the last 1m" in result.stdout


def test_diagnose_reads_every_app_from_the_prometheus_server(stack: Stack, tmp_path: Path) -> None:
    output = tmp_path / "verdicts.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "poolscope",
            "diagnose",
            stack.prometheus.url,
            # the load's steady part, up to the moment the other tests look at (not now:
            # the load is over by the time this test runs)
            f"--duration={LOAD_SECONDS - 16}",
            f"--at={stack.evaluated_at}",
            f"--json={output}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"over the {LOAD_SECONDS - 16} s up to " in result.stdout
    verdicts = json.loads(output.read_text())["verdicts"]
    naive = {(v["kind"], v["pool"]) for v in verdicts if v["service"] == NAIVE}
    assert ("pool_starvation", semconv.POOL_ASYNCIO_DEFAULT) in naive, result.stdout
    assert [v for v in verdicts if v["service"] == FIXED] == [], result.stdout
