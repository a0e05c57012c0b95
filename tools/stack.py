"""The real stack as child processes, for the tests and the benchmarks: our collector,
Jaeger, Prometheus, the example apps and the fake LLM.

``scripts/test`` builds the collector and Jaeger and installs Prometheus, and
passes their paths in ``POOLSCOPE_*_BIN``. A missing one raises
:class:`MissingBinary`; the tests turn that into a failure when ``CI`` is set
(a skipped stack test must not pass for a green run) and a skip otherwise
(a developer without Go) (``tests/conftest.py``).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

from poolscope._cli._children import Child, listening

ROOT = Path(__file__).resolve().parent.parent  # the repository
BINARIES = {
    "collector": ("POOLSCOPE_COLLECTOR_BIN", None),
    "jaeger": ("POOLSCOPE_JAEGER_BIN", None),
    "prometheus": ("POOLSCOPE_PROMETHEUS_BIN", "prometheus"),
    "promtool": ("POOLSCOPE_PROMTOOL_BIN", "promtool"),
    "chromium": ("POOLSCOPE_CHROMIUM_BIN", "chromium"),
    "wrk": ("POOLSCOPE_WRK_BIN", "wrk"),
}


LOADGEN = [sys.executable, "-m", "poolscope._cli._loadgen"]
"""The load generator's command (poolscope's own, in a process of its own): add its
arguments, ``[--requests N] URL SECONDS PATH:USERS[:PAUSE] ...``."""


class MissingBinary(RuntimeError):
    """A binary of the stack is not installed or built."""


def binary(name: str) -> str:
    """Path of a stack binary; :class:`MissingBinary` when it is missing."""
    variable, on_path = BINARIES[name]
    path = os.environ.get(variable) or (shutil.which(on_path) if on_path else None)
    if path and os.access(path, os.X_OK):
        return path
    raise MissingBinary(
        f"{name} is not available (set {variable}; scripts/test builds or installs it)"
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def http_get(url: str, timeout: float = 10) -> Any:
    """GET a JSON document."""
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (loopback)
        return json.loads(response.read())


def wait_until(
    check: Callable[[], Any], *, timeout: float, what: str, interval: float = 0.2
) -> Any:
    """Call ``check`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (OSError, urllib.error.URLError, ValueError, KeyError) as error:
            last = error
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}; last: {last!r}")


class Service(Child):
    """A child process of the stack (poolscope's own runner), started from the repository."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        super().__init__(name, argv, {**os.environ, **env}, log_dir / f"{name}.log", cwd=ROOT)

    def wait_ready(self, check: Callable[[], Any], timeout: float = 60) -> None:
        def ready() -> Any:
            if not self.alive():
                raise AssertionError(f"{self.name} exited early:\n{self.output()}")
            return check()

        wait_until(ready, timeout=timeout, what=f"{self.name} to be ready")


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds a live process has used (Linux ``/proc``)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


tcp_open = listening


@contextmanager
def services(log_dir: Path) -> Iterator[Callable[..., Service]]:
    """Start services with the returned function; all are stopped on exit."""
    with ExitStack() as stack:

        def start(name: str, argv: list[str], env: Mapping[str, str] | None = None) -> Service:
            service = Service(name, argv, env or {}, log_dir)
            stack.callback(service.stop)
            return service

        yield start


class Prometheus:
    """The HTTP API of a real Prometheus server."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}"

    def api(self, path: str, **params: Any) -> Any:
        query = urllib.parse.urlencode(params)
        document = http_get(f"{self.url}/api/v1/{path}?{query}")
        assert document["status"] == "success", document
        return document["data"]

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"query": expr}
        if at is not None:
            params["time"] = at
        data = self.api("query", **params)
        result: list[dict[str, Any]] = data["result"]
        return result


def start_collector(
    start: Callable[..., Service],
    *,
    trace_store_port: int,
    config: str = "config.yaml",
    env: Mapping[str, str] | None = None,
    ports: Mapping[str, int] | None = None,
) -> dict[str, int]:
    """Our collector with one of the repository's configs; returns its ports.

    The ports are free ones, or ``ports`` to start it again where it was.
    """
    ports = dict(ports or {n: free_port() for n in ("grpc", "http", "prometheus", "telemetry")})
    name = "collector" if config == "config.yaml" else config.removesuffix(".yaml")
    collector = start(
        name,
        [binary("collector"), "--config", str(ROOT / "collector" / config)],
        {
            "POOLSCOPE_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['grpc']}",
            "POOLSCOPE_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{ports['http']}",
            "POOLSCOPE_PROMETHEUS_EXPORTER_ENDPOINT": f"127.0.0.1:{ports['prometheus']}",
            "POOLSCOPE_TRACE_STORE_ENDPOINT": f"127.0.0.1:{trace_store_port}",
            "POOLSCOPE_GATEWAY_ENDPOINT": f"127.0.0.1:{trace_store_port}",
            "POOLSCOPE_COLLECTOR_METRICS_PORT": str(ports["telemetry"]),
            "POOLSCOPE_SPAN_METRICS_FLUSH_INTERVAL": "1s",
            **(env or {}),
        },
    )
    collector.wait_ready(lambda: tcp_open(ports["grpc"]))
    return ports


def start_jaeger(start: Callable[..., Service]) -> dict[str, int]:
    ports = {name: free_port() for name in ("otlp", "query", "query_grpc")}
    jaeger = start(
        "jaeger",
        [binary("jaeger"), "--config", str(ROOT / "jaeger" / "config.yaml")],
        {
            "POOLSCOPE_JAEGER_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{ports['otlp']}",
            "POOLSCOPE_JAEGER_QUERY_ENDPOINT": f"127.0.0.1:{ports['query']}",
            "POOLSCOPE_JAEGER_QUERY_GRPC_ENDPOINT": f"127.0.0.1:{ports['query_grpc']}",
            # where compose's Jaeger would send spans of its own: its own receiver
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{ports['otlp']}",
        },
    )
    jaeger.wait_ready(
        lambda: (
            tcp_open(ports["otlp"])
            and http_get(f"http://127.0.0.1:{ports['query']}/api/services") is not None
        )
    )
    return ports


def start_app(
    start: Callable[..., Service],
    module: str,
    *,
    llm_url: str,
    otlp_port: int | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> str:
    """An example app under uvicorn in its own process, exporting every second.

    Without ``otlp_port`` it exports nothing (set ``OTEL_POOLSCOPE_PROMETHEUS_PORT``
    in ``extra_env`` to read its metrics).
    """
    port = free_port()
    export = (
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}"}
        if otlp_port
        else {"OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"}
    )
    app = start(
        module,
        [sys.executable, str(ROOT / "examples" / f"{module}.py"), "--port", str(port)],
        {
            "POOLSCOPE_EXAMPLE_LLM_URL": llm_url,
            **export,
            "OTEL_METRIC_EXPORT_INTERVAL": "1000",
            "OTEL_BSP_SCHEDULE_DELAY": "500",
            # every span of a few hundred requests a second, none dropped: the
            # tests look for complete traces (production would sample)
            "OTEL_BSP_MAX_QUEUE_SIZE": "100000",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "4096",
            **(extra_env or {}),
        },
    )
    app.wait_ready(lambda: tcp_open(port))
    return f"http://127.0.0.1:{port}"


def start_fake_llm(start: Callable[..., Service], *options: str) -> str:
    """The fake LLM server; ``options`` are its command-line options (its latency)."""
    port = free_port()
    llm = start(
        "fake_llm",
        [sys.executable, str(ROOT / "examples" / "fake_llm.py"), "--port", str(port), *options],
    )
    llm.wait_ready(lambda: tcp_open(port))
    return f"http://127.0.0.1:{port}"


SCRAPE = "1s"


def _prometheus_config(directory: Path, target: str) -> Path:
    """The repository's prometheus.yml with the test's target and 1 s intervals.

    The rules are the generated file with each ``for:`` cut to 0 s, so that a
    test of a few dozen seconds can see the alerts fire; the real durations
    are covered by the promtool unit tests.
    """
    import yaml

    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": SCRAPE, "evaluation_interval": SCRAPE}
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    rules = yaml.safe_load((ROOT / "prometheus" / "rules" / "poolscope.rules.yaml").read_text())
    for group in rules["groups"]:
        group["interval"] = SCRAPE
        for rule in group["rules"]:
            rule["for"] = "0s"
    (directory / "rules.yaml").write_text(yaml.safe_dump(rules))
    config["rule_files"] = [str(directory / "rules.yaml")]
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


def start_prometheus(start: Callable[..., Service], directory: Path, target: str) -> Prometheus:
    """Debian's Prometheus scraping ``target`` every second, with our rules loaded."""
    port = free_port()
    config = _prometheus_config(directory, target)
    server = start(
        "prometheus",
        [
            binary("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={directory / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--enable-feature=exemplar-storage",
        ],
    )
    prometheus = Prometheus(port)
    server.wait_ready(lambda: http_get(f"{prometheus.url}/api/v1/status/buildinfo"))
    return prometheus
