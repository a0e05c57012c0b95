"""``poolscope load`` against a real app in its own process: bad input, an app without poolscope.

That the command gives each example app the verdicts the demo gives it is in
``test_demo.py`` (it needs the demo's run).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tools.stack import ROOT, free_port, services, tcp_open

PLAIN_APP = ROOT / "tests" / "apps" / "plain_starlette.py"
DELAY_S = 0.05  # plain_starlette.DELAY_S


def _load(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "poolscope", "load", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )


@pytest.fixture(scope="module")
def plain_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    with services(tmp_path_factory.mktemp("plain")) as start:
        app = start("plain_starlette", [sys.executable, str(PLAIN_APP), str(port)])
        app.wait_ready(lambda: tcp_open(port))
        yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["not-a-url"], "URL must be an http:// or https:// URL"),
        (["http://127.0.0.1:9", "--paths", "chat"], "--paths must be absolute paths"),
        (["http://127.0.0.1:9", "--steps", "0,5"], "--steps must be concurrency levels"),
        (["http://127.0.0.1:9", "--duration", "0.1"], "--duration must be 0.5 to 600"),
        (["http://127.0.0.1:9", "--metrics", "http://127.0.0.1:9/api"], "ending in /metrics"),
        (["http://127.0.0.1:9", "--metrics", "9464"], "--metrics must be an http://"),
        (["http://127.0.0.1:9", "--json", "/no/such/dir/f.json"], "--json: directory /no/such"),
    ],
)
def test_bad_input_gets_one_clear_line_before_any_load(args: list[str], message: str) -> None:
    result = _load(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.stderr


def test_an_app_that_is_not_there_or_a_path_that_fails_is_one_clear_line(
    plain_app: str,
) -> None:
    absent = f"http://127.0.0.1:{free_port()}"
    cases = [
        ([absent], f"cannot reach {absent}/: "),
        ([plain_app, "--paths", "/slow,/missing"], f"GET {plain_app}/missing answered 404"),
        ([plain_app, "--paths", "/boom"], f"GET {plain_app}/boom answered 500"),
        (
            [plain_app, "--paths", "/slow", "--metrics", f"{plain_app}/metrics"],
            f"--metrics: {plain_app}/metrics answers, but without poolscope's metrics",
        ),
        (
            [plain_app, "--paths", "/slow", "--metrics", f"{absent}/metrics"],
            f"--metrics: cannot reach {absent}/metrics",
        ),
    ]
    for args, message in cases:
        started = time.monotonic()
        result = _load(*args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert "users" not in result.stdout  # found before the first step
        assert time.monotonic() - started < 30


@pytest.mark.parametrize("endpoint", ["absent", "not poolscope's"])
def test_an_app_without_poolscope_still_gets_latency_against_concurrency(
    plain_app: str, endpoint: str, tmp_path: Path
) -> None:
    # The default endpoint is the app's host on OTEL_POOLSCOPE_PROMETHEUS_PORT:
    # nothing listens there, or the app's own /metrics does, without poolscope's.
    port = free_port() if endpoint == "absent" else int(plain_app.rsplit(":", 1)[1])
    figures, report = tmp_path / "load.json", tmp_path / "load.html"
    result = _load(
        plain_app,
        "--paths=/slow,/sync",
        "--steps=1,5",
        "--duration=1",
        f"--json={figures}",
        f"--output={report}",
        env={"OTEL_POOLSCOPE_PROMETHEUS_PORT": str(port)},
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(figures.read_text())
    why = found["pools_not_visible"]["app"]
    if endpoint == "absent":
        assert f"no poolscope metrics at http://127.0.0.1:{port}/metrics: cannot reach" in why
    else:
        assert why == f"{plain_app}/metrics answers, but without poolscope's metrics"
    steps = found["steps"]
    assert [s["users"] for s in steps] == [1, 5]
    for step in steps:
        assert step["throughput"] > 0 and not step["failures"] and not step["unfinished"]
        assert step["p50"] >= DELAY_S
        assert step["pools"] == {} and step["wait_share"] is None and step["app_cpu"] is None
    # one user at a time, each request 50 ms: 1/0.05 = 20 requests/s at most
    assert steps[0]["throughput"] <= 1 / DELAY_S
    assert steps[1]["throughput"] > 2 * steps[0]["throughput"]
    assert found["diagnosis"] == {}  # no verdict: what it cannot see, it does not judge
    table = result.stdout.splitlines()
    assert any(line.split()[:1] == ["5"] and "not visible" in line for line in table)
    assert f"{plain_app}: pools are not visible ({why})" in result.stdout
    assert "pools are not visible" in report.read_text()
