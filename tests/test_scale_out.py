"""Many processes, one picture: uvicorn --workers, gunicorn --preload, replicas restarting.

Each server serves the naive example app under load and exports OTLP to our
collector; Debian's Prometheus scrapes it. Per process the app must appear as
its own instance with its own busy/limit series that never exceeds its own
limit; the fleet query must count saturated processes; a gunicorn master that
preloaded the app must export nothing itself; and a restarted replica must not
show up as a counter reset in anybody's series.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tools.stack import (
    LOADGEN,
    ROOT,
    Prometheus,
    Service,
    free_port,
    services,
    start_collector,
    start_fake_llm,
    start_prometheus,
    tcp_open,
)
from tools.stackgen import alerts

import poolscope
from _helpers import default_executor_limit
from poolscope import semconv
from poolscope._analysis import _promql as p
from poolscope._analysis import _queries as q

pytestmark = pytest.mark.stack

SERVICE = "naive-llm-app"
LIMIT = default_executor_limit()
LOAD_SECONDS = 25  # the saturation rule looks at the median of the last minute


@dataclass
class Bench:
    start: Callable[..., Service]
    prometheus: Prometheus
    env: dict[str, str]
    directory: Path


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bench]:
    directory = tmp_path_factory.mktemp("scale")
    with services(directory) as start:
        collector = start_collector(start, trace_store_port=free_port())
        prometheus = start_prometheus(start, directory, f"127.0.0.1:{collector['prometheus']}")
        env = {
            "POOLSCOPE_EXAMPLE_LLM_URL": start_fake_llm(start),
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{collector['grpc']}",
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_TRACES_EXPORTER": "none",
        }
        yield Bench(start, prometheus, env, directory)


def _serve(bench: Bench, name: str, argv: list[str], port: int, service: str) -> Service:
    server = bench.start(name, argv, {**bench.env, "OTEL_SERVICE_NAME": service})
    server.wait_ready(lambda: tcp_open(port), timeout=60)
    return server


def _load_argv(port: int, seconds: int, *options: str) -> list[str]:
    """30 closed-loop users on /chat of the server on ``port``."""
    url = f"http://127.0.0.1:{port}"
    return [
        *LOADGEN,
        *options,
        url,
        str(seconds),
        "/chat:30",
    ]


def _load(port: int, seconds: int = LOAD_SECONDS) -> None:
    subprocess.run(
        _load_argv(port, seconds), check=True, capture_output=True, timeout=seconds + 120
    )


def _by_instance(result: list[dict[str, Any]]) -> dict[str, float]:
    return {s["metric"][p.INSTANCE]: float(s["value"][1]) for s in result}


def _saturated_by_hand(bench: Bench, selector: str, limits: dict[str, float]) -> set[str]:
    """The saturation rule computed here from the raw samples, to check the PromQL against."""
    window = alerts.WINDOW
    busy = bench.prometheus.query(f'{p.WORKERS}{{{selector}, {p.WORKER_STATE}="busy"}}[{window}]')
    pending = bench.prometheus.query(f"{p.PENDING}{{{selector}}}[{window}]")
    queued = {s["metric"][p.INSTANCE]: max(float(v) for _, v in s["values"]) for s in pending}
    saturated = set()
    for series in busy:
        instance = series["metric"][p.INSTANCE]
        typical = statistics.median(float(v) for _, v in series["values"])
        if typical >= 0.95 * limits[instance] and queued.get(instance, 0) > 0:
            saturated.add(instance)
    return saturated


def _check_two_workers_each_against_its_own_limit(bench: Bench, job: str) -> None:
    """What every multi-worker server must show."""
    selector = f'job="{job}", {p.POOL}="{semconv.POOL_ASYNCIO_DEFAULT}"'
    limits = _by_instance(bench.prometheus.query(f"{p.LIMIT}{{{selector}}}"))
    assert len(limits) == 2 and set(limits.values()) == {LIMIT}, limits
    busy = f'{p.WORKERS}{{{selector}, {p.WORKER_STATE}="busy"}}'
    peaks = _by_instance(bench.prometheus.query(f"max_over_time({busy}[{LOAD_SECONDS + 10}s])"))
    assert set(peaks) == set(limits)
    assert all(0 < peak <= LIMIT for peak in peaks.values()), peaks  # never above its own
    saturated = _saturated_by_hand(bench, selector, limits)
    assert saturated, "30 users against the workers' 6 threads each saturated none"
    fleet = bench.prometheus.query(q.saturated_processes({p.SERVICE: job}, alerts.WINDOW))
    counts = {s["metric"][p.POOL]: float(s["value"][1]) for s in fleet}
    assert counts.get(semconv.POOL_ASYNCIO_DEFAULT) == len(saturated), fleet
    firing = [
        a
        for a in bench.prometheus.api("alerts")["alerts"]
        if a["labels"]["alertname"] == "PoolscopePoolSaturated"
        and a["labels"][p.SERVICE] == job
        and a["labels"][p.POOL] == semconv.POOL_ASYNCIO_DEFAULT
        and a["state"] == "firing"
    ]
    assert {a["labels"][p.INSTANCE] for a in firing} == saturated
    # and diagnose() reading the same Prometheus names the same processes
    windows = poolscope.windows_from_prometheus(bench.prometheus.url, alerts.WINDOW)
    named = {
        verdict.instance
        for verdict in poolscope.diagnose(*windows).of(poolscope.VerdictKind.POOL_STARVATION)
        if verdict.service == job and verdict.pool == semconv.POOL_ASYNCIO_DEFAULT
    }
    assert named == saturated


def _during_load(port: int, check: Callable[[], Any]) -> None:
    """Run the load in the background; ``check`` must pass near its end, while saturated."""
    load = subprocess.Popen(
        # a connection per request, so the workers sharing the socket all get some
        _load_argv(port, LOAD_SECONDS, "--no-keepalive"),
        stdout=subprocess.DEVNULL,
    )
    with load:
        try:
            time.sleep(LOAD_SECONDS - 4)
            deadline = time.monotonic() + 8
            while True:
                try:
                    check()
                    return
                except AssertionError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1)
        finally:
            load.kill()


def test_uvicorn_workers_are_two_instances_each_against_its_own_limit(bench: Bench) -> None:
    port = free_port()
    job = "scale-uvicorn"
    _serve(
        bench,
        "uvicorn-workers",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "naive_app:app",
            "--app-dir",
            str(ROOT / "examples"),
            "--workers",
            "2",
            "--port",
            str(port),
            "--log-level",
            "warning",
        ],
        port,
        job,
    )
    _during_load(port, lambda: _check_two_workers_each_against_its_own_limit(bench, job))


def test_gunicorn_preload_workers_export_and_the_master_does_not(bench: Bench) -> None:
    port = free_port()
    job = "scale-gunicorn"
    server = _serve(
        bench,
        "gunicorn",
        [
            sys.executable,
            "-m",
            "gunicorn",
            "naive_app:app",
            "--chdir",
            str(ROOT / "examples"),
            "--preload",
            "-w",
            "2",
            "-k",
            "uvicorn_worker.UvicornWorker",
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
        ],
        port,
        job,
    )
    _during_load(port, lambda: _check_two_workers_each_against_its_own_limit(bench, job))
    master = str(server.process.pid)
    pids = {
        s["metric"].get("process_pid")
        for s in bench.prometheus.query(f'{{job="{job}", process_pid!=""}}')
    }
    assert len(pids) == 2 and master not in pids, (master, pids)
    # no series is reported twice under one identity
    duplicates = bench.prometheus.query(
        f"count by (instance, executor_name, executor_worker_state) "
        f'({p.WORKERS}{{job="{job}"}}) > 1'
    )
    assert duplicates == []


def test_a_restarted_replica_is_a_new_instance_not_a_counter_reset(bench: Bench) -> None:
    job = "scale-replicas"
    ports = [free_port(), free_port()]

    def replica(number: int) -> Service:
        return _serve(
            bench,
            f"replica-{number}-{time.monotonic_ns()}",
            [sys.executable, str(ROOT / "examples" / "naive_app.py"), "--port", str(ports[number])],
            ports[number],
            job,
        )

    first, _ = replica(0), replica(1)
    for port in ports:
        _load(port, seconds=4)
    first.stop()
    replica(0)
    for port in ports:
        _load(port, seconds=4)
    time.sleep(3)  # exported and scraped
    window = "5m"
    counts = f'{p.WAIT}_count{{job="{job}"}}'
    instances = {
        s["metric"][p.INSTANCE]
        for s in bench.prometheus.query(f"last_over_time({counts}[{window}])")
    }
    assert len(instances) == 3  # the restarted replica came back as a new instance
    resets = bench.prometheus.query(f"max(resets({counts}[{window}]))")
    assert float(resets[0]["value"][1]) == 0  # so no series ever went backwards
    rates = bench.prometheus.query(f"sum(rate({counts}[1m]))")
    assert 0 < float(rates[0]["value"][1]) < 100  # no reset artefact blowing up the rate
