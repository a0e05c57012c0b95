"""The ``poolscope`` command: bad input, Ctrl-C, and ``top`` in a real pseudo-terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tools.stack import (
    LOADGEN,
    ROOT,
    free_port,
    services,
    start_app,
    start_fake_llm,
    tcp_open,
    wait_until,
)

from _helpers import default_executor_limit
from poolscope import semconv

POOLSCOPE = [sys.executable, "-m", "poolscope"]


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*POOLSCOPE, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _processes_with(marker: str) -> list[int]:
    """PIDs whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in command:
            found.append(int(entry.name))
    return found


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["demo", "--bogus"], "unrecognized arguments: --bogus"),
        (["demo", "--steps", "1,x"], "expected comma-separated numbers of users"),
        (["demo", "--steps", "0,5"], "--steps must be concurrency levels from 1 to 300"),
        (["demo", "--duration", "0"], "--duration must be 0.5 to 600 seconds"),
        (["demo", "--otlp", "localhost:4317"], "--otlp must be an http:// or https:// URL"),
        (["demo", "--output", "/no/such/dir/r.html"], "--output: directory /no/such/dir"),
        (["demo", "--naive-port", "8123", "--fixed-port", "8123"], "must be different ports"),
        (["demo", "--steps", "1,500"], "--steps must be concurrency levels from 1 to 300"),
        (["top", "not-a-url"], "expected an http:// URL, got 'not-a-url'"),
        (["top", "--interval", "0"], "--interval must be 0.1 to 3600 seconds"),
        (["diagnose", "not-a-url"], "expected an http:// URL, got 'not-a-url'"),
        (["diagnose", "--duration", "0"], "--duration must be 1 to 86400 seconds"),
        (["diagnose", "http://127.0.0.1:9/", "--duration", "5"], "--duration must be 15 to"),
        (["diagnose", "--json", "/no/such/dir/v.json"], "--json: directory /no/such/dir"),
        (["nonsense"], "invalid choice: 'nonsense'"),
    ],
)
def test_bad_input_gets_one_clear_line_and_a_nonzero_exit(args: list[str], message: str) -> None:
    result = _run(*args)
    assert result.returncode != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_refused_before_anything_starts() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = _run("demo", "--naive-port", str(port))
    assert result.returncode == 2
    assert f"--naive-port {port}: the port is in use on 127.0.0.1" in result.stderr
    assert time.monotonic() - started < 20
    assert not _processes_with(str(ROOT / "examples" / "fake_llm.py"))


def test_diagnose_says_when_the_source_cannot_be_read(tmp_path: Path) -> None:
    port = free_port()
    result = _run("diagnose", f"http://127.0.0.1:{port}/metrics", "--duration", "1")
    assert result.returncode == 2
    assert f"cannot reach http://127.0.0.1:{port}/metrics" in result.stderr
    assert "Traceback" not in result.stderr
    # an endpoint that serves metrics, none of them poolscope's
    (tmp_path / "metrics").write_text("# TYPE up gauge\nup 1\n")
    with subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    ) as server:
        try:
            wait_until(lambda: tcp_open(port), timeout=10, what="the http.server")
            result = _run("diagnose", f"http://127.0.0.1:{port}/metrics", "--duration", "1")
        finally:
            server.kill()
    assert result.returncode == 2
    assert "has no poolscope metrics" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--at", "yesterday"], "expected Unix seconds or an ISO 8601 time"),
        (["--at", "2026-12-01T14:05:00Z"], "--at reads the past from a Prometheus server"),
    ],
)
def test_diagnose_rejects_a_bad_or_misplaced_at(arguments: list[str], message: str) -> None:
    result = _run("diagnose", "http://127.0.0.1:9/metrics", *arguments)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_diagnose_names_the_starved_pool_of_a_running_app_and_exits_1(tmp_path: Path) -> None:
    with services(tmp_path) as start:
        app, url = _naive_app(start)
        with urllib.request.urlopen(f"{app}/chat", timeout=30) as response:  # poolscope reports
            assert response.status == 200  # a process once it has served a request
        idle = _run("diagnose", url, "--duration", "2")
        assert idle.returncode == 0, idle.stdout + idle.stderr
        assert "No pool hit its limit" in idle.stdout
        load = subprocess.Popen(
            [*LOADGEN, app, "14", "/chat:10", "/search:10"],
            stdout=subprocess.DEVNULL,
        )
        try:
            time.sleep(2)
            verdicts = tmp_path / "verdicts.json"
            result = _run("diagnose", url, "--duration", "8", f"--json={verdicts}")
        finally:
            load.kill()
            load.wait()
    assert result.returncode == 1, result.stdout + result.stderr
    found = json.loads(verdicts.read_text())["verdicts"]
    assert [(v["kind"], v["pool"]) for v in found] == [
        ("pool_starvation", semconv.POOL_ASYNCIO_DEFAULT)
    ], result.stdout
    assert found[0]["limit"] == default_executor_limit()
    assert "[pool_starvation] naive-llm-app/" in result.stdout
    # what held the workers, read from the app's endpoint: the LLM calls of /chat and
    # /search's requests call, named with its server
    evidence = found[0]["evidence"]
    assert evidence["llm_share"] > 0.2 and evidence["io_share"] > 0.2, evidence
    assert re.fullmatch(r"requests → 127\.0\.0\.1:\d+", evidence["io_target"]), evidence
    assert "asyncio.default was held by sync" in result.stdout, result.stdout
    assert "sync HTTP calls (requests → 127.0.0.1:" in result.stdout, result.stdout


def test_top_says_when_the_endpoint_is_unreachable() -> None:
    port = free_port()
    result = _run("top", f"http://127.0.0.1:{port}/metrics", "--once")
    assert result.returncode == 1
    assert f"cannot reach http://127.0.0.1:{port}/metrics" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM])
def test_stopping_the_demo_midway_stops_every_process_it_started(
    tmp_path: Path, stop: signal.Signals
) -> None:
    ports = {name: free_port() for name in ("llm", "naive", "fixed")}
    demo = subprocess.Popen(
        [
            *POOLSCOPE,
            "demo",
            f"--output={tmp_path / 'r.html'}",
            *(f"--{name}-port={port}" for name, port in ports.items()),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_until(lambda: tcp_open(ports["fixed"]), timeout=60, what="the demo's apps")
        time.sleep(1.0)  # into the first load step
        demo.send_signal(stop)
        _, err = demo.communicate(timeout=30)
    finally:
        if demo.poll() is None:
            demo.kill()
    assert demo.returncode == 130
    assert "interrupted; stopped" in err
    assert "Traceback" not in err
    for port in ports.values():
        assert not _processes_with(f"--port={port}"), port
        assert not tcp_open(port)
    assert not (tmp_path / "r.html").exists()


class Terminal:
    """A child process on a real pseudo-terminal; its screen output accumulates in ``text``."""

    def __init__(self, argv: list[str], rows: int = 40, columns: int = 160) -> None:
        self.master, slave = pty.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        # the size comes from the terminal, not from COLUMNS/LINES the test runner exports
        env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
        self.process = subprocess.Popen(
            argv, stdin=slave, stdout=slave, stderr=slave, close_fds=True, env=env
        )
        os.close(slave)
        self.text = ""

    def read_until(self, pattern: str, timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            match = re.search(pattern, self.text)
            if match:
                return match
            ready, _, _ = select.select([self.master], [], [], 0.2)
            if ready:
                try:
                    self.text += os.read(self.master, 65536).decode(errors="replace")
                except OSError:  # the child closed the terminal
                    break
        raise AssertionError(f"{pattern!r} never appeared on the terminal:\n{self.text[-3000:]}")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        os.close(self.master)


@pytest.fixture
def terminal() -> Iterator[list[Terminal]]:
    opened: list[Terminal] = []
    yield opened
    for term in opened:
        term.close()


def _naive_app(start: Callable[..., Any]) -> tuple[str, str]:
    """The naive example app serving its metrics; (app URL, metrics URL)."""
    metrics_port = free_port()
    app = start_app(
        start,
        "naive_app",
        llm_url=start_fake_llm(start),
        extra_env={"OTEL_POOLSCOPE_PROMETHEUS_PORT": str(metrics_port)},
    )
    return app, f"http://127.0.0.1:{metrics_port}/metrics"


def test_top_shows_a_starving_app_live_and_quits_on_ctrl_c(
    tmp_path: Path, terminal: list[Terminal]
) -> None:
    with services(tmp_path) as start:
        app, url = _naive_app(start)
        load = subprocess.Popen(
            [*LOADGEN, app, "30", "/chat:20"],
            stdout=subprocess.DEVNULL,
        )
        try:
            top = Terminal([*POOLSCOPE, "top", url, "--interval", "0.5"])
            terminal.append(top)
            row = top.read_until(
                rf"{re.escape(semconv.POOL_ASYNCIO_DEFAULT)}\s+(█+)·*\s+(\d+)/(\d+)\s+(\d+)"
                r".*SATURATED",
                timeout=30,
            )
            bar, busy, limit, pending = row.groups()
            assert int(limit) == default_executor_limit()
            assert int(busy) == int(limit) and len(bar) == 20 and int(pending) > 0
            top.read_until(r"(?s)poolscope top:.*poolscope top:", timeout=10)  # a second frame
            assert "\x1b[2J" in top.text  # redrawn in place, not scrolled
            top.process.send_signal(signal.SIGINT)
            top.read_until("poolscope top: stopped", timeout=10)
            assert top.process.wait(10) == 0
            assert "Traceback" not in top.text
        finally:
            load.kill()
            load.wait()


def test_top_exits_with_a_message_when_the_app_goes_away(
    tmp_path: Path, terminal: list[Terminal]
) -> None:
    with services(tmp_path) as start:
        _, url = _naive_app(start)
        top = Terminal([*POOLSCOPE, "top", url, "--interval", "0.3"])
        terminal.append(top)
        top.read_until("busy/limit", timeout=20)
    # services() stopped the app: top must notice and leave
    top.read_until(f"cannot reach {re.escape(url)}", timeout=15)
    assert top.process.wait(10) == 1
    assert "Traceback" not in top.text
