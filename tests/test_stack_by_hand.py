"""The trace store and Prometheus as a user meets them, run without Docker as docs/stack.md says."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
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
