"""``poolscope demo`` with its default settings, and its report in a real headless Chromium.

One run of the real command (three processes on loopback, real load, about
three minutes here) feeds every test in this module. The figures asserted
come from that run's own ``--json`` output.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tools.stack import (
    binary,
    free_port,
    services,
    start_app,
    start_collector,
    start_fake_llm,
)

from _helpers import default_executor_limit
from poolscope import semconv
from poolscope._cli._demo._model import SCENARIOS, DemoSettings

pytestmark = pytest.mark.stack

DEFAULT_EXECUTOR_LIMIT = default_executor_limit()
ANYIO_LIMIT = 40
STEPS = (1, 5, 10, 25, 50, 100)  # the demo's default
TOP = max(STEPS)


@dataclass
class Demo:
    elapsed: float
    stdout: str
    results: dict[str, Any]
    report: Path


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    directory = tmp_path_factory.mktemp("demo")
    report, figures = directory / "report.html", directory / "results.json"
    started = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "poolscope",
            "demo",
            f"--output={report}",
            f"--json={figures}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr[-3000:]
    return Demo(elapsed, result.stdout, json.loads(figures.read_text()), report)


def http_get_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        text: str = response.read().decode()
        return text


def _step(demo: Demo, app: str, scenario: str, users: int) -> dict[str, Any]:
    [step] = [
        s
        for s in demo.results["steps"]
        if (s["app"], s["scenario"], s["users"]) == (app, scenario, users)
    ]
    return step


def test_the_demo_finishes_within_four_minutes_with_every_request_answered(demo: Demo) -> None:
    assert demo.elapsed < 240, f"the demo took {demo.elapsed:.0f} s"
    steps = demo.results["steps"]
    assert len(steps) == 2 * 2 * 6
    assert all(not s["failures"] and not s["unfinished"] for s in steps), [
        (s["failures"], s["unfinished"]) for s in steps
    ]


def test_the_machine_had_cpu_to_spare_and_says_so(demo: Demo) -> None:
    # The figures are the apps', not the machine's: every step left CPU free, the
    # fixed app far from its own limit even at the top step.
    for step in demo.results["steps"]:
        assert not step["machine_exhausted"], step
        assert step["app_cpu"] is not None and step["load_generator_cpu"] > 0
    fixed = _step(demo, "fixed", "async routes", TOP)
    assert fixed["app_cpu"] < 0.6, fixed
    assert "the apps, not the machine, set every figure" in demo.stdout


def test_the_fixed_app_serves_ten_times_the_naive_apps_async_routes_at_100_users(
    demo: Demo,
) -> None:
    naive = _step(demo, "naive", "async routes", TOP)
    fixed = _step(demo, "fixed", "async routes", TOP)
    assert fixed["throughput"] >= 10 * naive["throughput"], (naive, fixed)
    assert fixed["p95"] < naive["p95"]


def test_on_sync_routes_the_fix_is_bounded_by_anyios_forty_seats(demo: Demo) -> None:
    # 100 users against 40 worker threads: the naive app serves 40 at a time,
    # so the fix gains about 100/40 = 2.5x here, not 10x.
    naive = _step(demo, "naive", "sync routes", TOP)
    fixed = _step(demo, "fixed", "sync routes", TOP)
    assert fixed["throughput"] >= 2 * naive["throughput"], (naive, fixed)
    assert naive["wait_share"] > 0.2 and fixed["wait_share"] < 0.05


def test_the_naive_app_starves_both_pools_and_the_fixed_app_gets_no_verdict(demo: Demo) -> None:
    verdicts = demo.results["diagnosis"]["naive"]["verdicts"]
    assert {v["kind"] for v in verdicts} == {"pool_starvation"}, verdicts
    naive = {v["pool"]: v for v in verdicts}
    assert set(naive) == {semconv.POOL_ASYNCIO_DEFAULT, semconv.POOL_ANYIO_DEFAULT}
    assert naive[semconv.POOL_ASYNCIO_DEFAULT]["limit"] == DEFAULT_EXECUTOR_LIMIT
    assert naive[semconv.POOL_ANYIO_DEFAULT]["limit"] == ANYIO_LIMIT
    # the default executor saturates at the first step with more users than threads
    first = naive[semconv.POOL_ASYNCIO_DEFAULT]["since_load"]
    assert first == min(s for s in STEPS if s > DEFAULT_EXECUTOR_LIMIT)
    assert ANYIO_LIMIT < naive[semconv.POOL_ANYIO_DEFAULT]["since_load"] <= TOP
    for verdict in naive.values():
        assert verdict["evidence"]["needed_workers"] > verdict["limit"]
    # at 100 users every one of them had a task wanting a seat of the default executor
    assert naive[semconv.POOL_ASYNCIO_DEFAULT]["evidence"]["needed_workers"] > 0.8 * TOP
    # sync LLM calls held the anyio workers; the default executor's also did sync HTTP
    # (/search's requests call), named with its server
    assert naive[semconv.POOL_ANYIO_DEFAULT]["evidence"]["llm_share"] > 0.9
    default = naive[semconv.POOL_ASYNCIO_DEFAULT]["evidence"]
    assert 0.2 < default["llm_share"] < 0.9
    assert 0.1 < default["io_share"] < 0.8
    assert default["llm_share"] + default["io_share"] > 0.9
    assert re.fullmatch(r"requests → 127\.0\.0\.1:\d+", default["io_target"]), default
    assert naive[semconv.POOL_ANYIO_DEFAULT]["evidence"]["io_share"] == 0
    assert demo.results["diagnosis"]["fixed"]["verdicts"] == []
    assert f"naive-llm-app: {semconv.POOL_ASYNCIO_DEFAULT} hit its limit" in demo.stdout
    assert "fixed-llm-app: No pool hit its limit, the process had CPU to spare" in demo.stdout


@pytest.mark.parametrize("app", ["naive", "fixed"])
def test_poolscope_load_gives_each_example_app_the_demos_verdicts(
    demo: Demo, app: str, tmp_path: Path
) -> None:
    # The demo is `poolscope load` run against its two apps: the same apps, the
    # same model and steps, loaded one scenario at a time by the command, get
    # the verdicts the demo gave them.
    model = DemoSettings()
    verdicts: list[dict[str, Any]] = []
    with services(tmp_path) as start:
        llm = start_fake_llm(
            start,
            f"--first-token-ms={model.first_token_ms:g}",
            f"--per-token-ms={model.per_token_ms:g}",
            f"--tokens={model.tokens}",
        )
        metrics_port = free_port()
        url = start_app(
            start,
            f"{app}_app",
            llm_url=llm,
            extra_env={"OTEL_POOLSCOPE_PROMETHEUS_PORT": str(metrics_port)},
        )
        for index, scenario in enumerate(SCENARIOS):
            figures = tmp_path / f"load-{index}.json"
            result = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "poolscope",
                    "load",
                    url,
                    f"--paths={','.join(scenario.paths)}",
                    f"--steps={','.join(map(str, STEPS))}",
                    "--duration=3",  # the demo's default
                    f"--metrics=http://127.0.0.1:{metrics_port}/metrics",
                    f"--output={tmp_path / f'load-{index}.html'}",
                    f"--json={figures}",
                ],
                capture_output=True,
                text=True,
                timeout=400,
                check=False,
            )
            assert result.returncode in (0, 1), result.stderr[-3000:]
            found = json.loads(figures.read_text())
            assert all(not s["failures"] and not s["unfinished"] for s in found["steps"])
            verdicts += found["diagnosis"]["app"]["verdicts"]
            assert result.returncode == (1 if found["diagnosis"]["app"]["verdicts"] else 0)

    def named(found: list[dict[str, Any]]) -> set[tuple[str, str, float]]:
        return {(v["kind"], v["pool"], v["limit"]) for v in found}

    assert named(verdicts) == named(demo.results["diagnosis"][app]["verdicts"]), verdicts
    for verdict in verdicts:  # from the step the demo found too
        if verdict["pool"] == semconv.POOL_ASYNCIO_DEFAULT:
            assert verdict["since_load"] == min(s for s in STEPS if s > DEFAULT_EXECUTOR_LIMIT)
        else:
            assert ANYIO_LIMIT < verdict["since_load"] <= TOP


def test_the_report_renders_its_plots_in_chromium_offline(demo: Demo, tmp_path: Path) -> None:
    chromium = binary("chromium")
    from playwright.sync_api import sync_playwright

    errors: list[str] = []
    requests: list[str] = []
    screenshot = tmp_path / "report.png"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(demo.report.as_uri())
            page.screenshot(path=str(screenshot), full_page=True)
            figures = page.evaluate(
                """() => Object.fromEntries([...document.querySelectorAll('figure')].map(f => [
                    f.id,
                    [...f.querySelectorAll('g.series')].map(g => ({
                        name: g.dataset.series,
                        width: g.getBBox().width,
                        height: g.getBBox().height,
                        points: (g.querySelector('polyline')?.points.numberOfItems) ?? 0,
                        rects: g.querySelectorAll('rect').length,
                    })),
                ]))"""
            )
        finally:
            browser.close()
    assert errors == []
    assert requests == [demo.report.as_uri()]
    assert screenshot.stat().st_size > 50_000

    latency = {s["name"]: s for s in figures["latency"]}
    assert set(latency) == {
        f"{app} · {scenario} p95"
        for app in ("naive", "fixed")
        for scenario in ("async routes", "sync routes")
    }
    assert all(s["points"] == 6 and s["width"] > 100 for s in latency.values())
    busy = {s["name"]: s for s in figures["busy-naive"]}
    for pool in (semconv.POOL_ASYNCIO_DEFAULT, semconv.POOL_ANYIO_DEFAULT):
        assert busy[f"{pool} busy"]["points"] > 20 and busy[f"{pool} busy"]["height"] > 0
        assert busy[f"{pool} limit"]["points"] == 2  # the cap: a flat line
    waits = {s["name"]: s for s in figures["waits"]}
    assert waits[f"naive · {semconv.POOL_ASYNCIO_DEFAULT}"]["rects"] > 0
    assert any(s["name"] == "wait" and s["width"] > 0 for s in figures["waterfall"])


def test_with_otlp_the_apps_telemetry_goes_to_the_bundled_collector(tmp_path: Path) -> None:
    with services(tmp_path) as start:
        collector = start_collector(start, trace_store_port=free_port())
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "poolscope",
                "demo",
                "--steps=1,10",
                "--duration=1",
                f"--output={tmp_path / 'report.html'}",
                f"--otlp=http://127.0.0.1:{collector['grpc']}",
            ],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert result.returncode == 0, result.stderr[-3000:]
        exported = http_get_text(f"http://127.0.0.1:{collector['prometheus']}/metrics")
    for service in ("naive-llm-app", "fixed-llm-app"):
        assert re.search(rf'executor_worker_limit{{[^}}]*job="{service}"', exported), service
    report = (tmp_path / "report.html").read_text()
    assert f"Traces went to http://127.0.0.1:{collector['grpc']}" in report
