"""The stack as a user meets it: Jaeger, Prometheus and compose's example services, run here."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from tools.stack import ROOT, binary, http_get, services, start_jaeger

pytestmark = pytest.mark.stack


def test_jaeger_lists_no_service_of_its_own_after_being_queried(tmp_path: Path) -> None:
    # Jaeger v2 traces its own query API by default, to an OTLP endpoint that in
    # compose is its own receiver: "jaeger" would then sit in the service list
    # next to the apps. Its config turns that off.
    with services(tmp_path) as start:
        ports = start_jaeger(start)
        api = f"http://127.0.0.1:{ports['query']}/api"
        for _ in range(20):
            http_get(f"{api}/services")
            http_get(f"{api}/traces?service=checkout&limit=5")
        deadline = time.monotonic() + 8  # its batch processor exports every 5 s
        while time.monotonic() < deadline:
            assert http_get(f"{api}/services")["data"] in (None, []), "Jaeger traced itself"
            time.sleep(0.5)


def test_the_documented_prometheus_command_binds_loopback_and_checks_out(tmp_path: Path) -> None:
    # docs/stack.md's commands, as a user pastes them: the local copy of the scrape
    # config is valid, scrapes the collector on loopback, and Prometheus listens there.
    text = (ROOT / "docs" / "stack.md").read_text()
    [block] = [b for b in text.split("```bash\n")[1:] if "prometheus --config.file" in b]
    lines = block.split("```")[0].replace("\\\n", " ").splitlines()
    [copy] = [line for line in lines if line.startswith("sed ")]
    [server] = [line for line in lines if line.startswith("prometheus ")]
    assert "--web.listen-address=127.0.0.1:" in server
    local = tmp_path / "prometheus"
    shutil.copytree(ROOT / "prometheus", local)
    subprocess.run(copy, shell=True, check=True, cwd=tmp_path)  # the doc's own line
    config = local / "local.yml"
    assert "127.0.0.1:8889" in config.read_text()
    assert "collector:8889" not in config.read_text()
    assert config.name in (ROOT / ".gitignore").read_text()
    checked = subprocess.run(
        [binary("promtool"), "check", "config", str(config)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _on(argv: list[str], port: str, free: int) -> list[str]:
    """A compose command on this machine: this interpreter, loopback, a free port."""
    program = {"python": [sys.executable], "uvicorn": [sys.executable, "-m", "uvicorn"]}
    return [*program[argv[0]]] + [
        arg.replace("0.0.0.0", "127.0.0.1").replace(port, str(free)) for arg in argv[1:]
    ]


def test_the_compose_example_services_start_in_order_and_report_healthy(tmp_path: Path) -> None:
    # No Docker engine here: each example service's own command and healthcheck run
    # as plain processes from the layout examples/Dockerfile builds (the repository's),
    # the fake LLM first, as the apps' depends_on conditions order them.
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    fake = compose["fake-llm"]
    for name in ("naive-app", "fixed-app"):
        assert compose[name]["depends_on"]["fake-llm"] == {"condition": "service_healthy"}
        assert compose[name]["build"] == fake["build"]
    ports = {"fake-llm": "8001", "naive-app": "8000", "fixed-app": "8002"}
    free = {name: _free_port() for name in ports}
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("OTEL_")},
        "POOLSCOPE_EXAMPLE_LLM_URL": f"http://127.0.0.1:{free['fake-llm']}",
        "OTEL_TRACES_EXPORTER": "none",
        "OTEL_METRICS_EXPORTER": "none",
    }
    with services(tmp_path) as start:
        for name, port in ports.items():
            service = compose[name]
            [kind, *check] = service["healthcheck"]["test"]
            assert kind == "CMD"
            check = _on(check, port, free[name])
            assert subprocess.run(check, check=False, capture_output=True).returncode != 0
            start(name, _on(service["command"], port, free[name]), env)
            deadline = time.monotonic() + 60
            while subprocess.run(check, check=False, capture_output=True).returncode != 0:
                assert time.monotonic() < deadline, f"{name} never became healthy"
                time.sleep(0.5)
        answer = http_get(f"http://127.0.0.1:{free['naive-app']}/openapi.json")
        assert answer is not None
