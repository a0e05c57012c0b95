"""``poolscope demo``: the naive and the fixed LLM app, side by side, under rising load.

Starts the fake OpenAI-compatible server and both example apps as separate
processes on free loopback ports and probes them as ``poolscope load`` probes
any app (``_probe``): each app's async routes and then its sync routes with
1, 5, 10, 25, 50 and 100 concurrent users (each with its own keep-alive
connection), every pool and the app's CPU and event loop read from the
apps' own Prometheus endpoints meanwhile. It ends with a table per app, the
verdicts of :func:`poolscope.diagnose`, the two apps compared, and a
self-contained HTML report. Nothing leaves 127.0.0.1; no API key is needed.

The model answers like the article's: about a second to the first token,
1.4 s for a whole chat completion. That keeps the fixed app far from its
CPU limit at 100 users on a 2-core machine, where the demo's own load
generator and the fake model share the cores with it; the CPU each step
took (the app's, the load generator's, the machine's) is measured and
printed, and a step where the machine ran out of CPU says so.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..._errors import ConfigurationError
from .._children import Child, ChildFailed
from .._probe._drive import Progress, diagnose_run, drive, stop_on_signals
from .._probe._model import ProbeError, ProbeRun, Target, results
from .._probe._report import print_results
from ._model import APPS, NAIVE, SCENARIOS, DemoSettings, port_free

__all__ = ["DemoSettings", "examples_dir", "run_demo"]


# --- Processes ---------------------------------------------------------------------


def examples_dir() -> Path:
    """The example apps: shipped inside the package, or the repository's examples/."""
    package = Path(__file__).resolve().parents[2]  # poolscope/_cli/_demo/_run.py
    for candidate in (package / "_examples", package.parent.parent / "examples"):
        if (candidate / "fake_llm.py").exists():
            return candidate
    raise ConfigurationError("the example apps are missing from this installation of poolscope")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class _Apps:
    urls: dict[str, str]
    metrics: dict[str, str]
    services: dict[str, str]


@contextmanager
def _processes(settings: DemoSettings, logs: Path, trace_endpoint: str | None) -> Iterator[_Apps]:
    examples = examples_dir()
    with ExitStack() as stack:

        def start(name: str, argv: list[str], env: dict[str, str], port: int) -> None:
            if not port_free(port):
                raise ProbeError(f"port {port} for the {name} was taken before it started")
            child = Child(name, argv, {**os.environ, **env}, logs / f"{name}.log")
            stack.callback(child.stop)
            try:
                child.wait_listening(port)
            except ChildFailed as error:
                raise ProbeError(str(error)) from None

        llm_port = settings.llm_port or _free_port()
        start(
            "fake-llm",
            [
                sys.executable,
                str(examples / "fake_llm.py"),
                f"--port={llm_port}",
                f"--first-token-ms={settings.first_token_ms}",
                f"--per-token-ms={settings.per_token_ms}",
                f"--tokens={settings.tokens}",
            ],
            {},
            llm_port,
        )
        urls, metrics, services = {}, {}, {}
        for app, script in APPS.items():
            port = getattr(settings, f"{app}_port") or _free_port()
            metrics_port = _free_port()
            services[app] = f"{app}-llm-app"  # the apps take their name from the environment
            env = {
                "POOLSCOPE_EXAMPLE_LLM_URL": f"http://127.0.0.1:{llm_port}",
                "OTEL_SERVICE_NAME": services[app],
                "OTEL_POOLSCOPE_PROMETHEUS_PORT": str(metrics_port),
                "OTEL_METRIC_EXPORT_INTERVAL": "5000",
                "OTEL_BSP_SCHEDULE_DELAY": "200",
                "OTEL_BSP_MAX_QUEUE_SIZE": "50000",
            }
            if settings.otlp:
                env["OTEL_EXPORTER_OTLP_ENDPOINT"] = settings.otlp
            else:
                env["OTEL_METRICS_EXPORTER"] = "none"  # read from the app's endpoint instead
                if app == NAIVE and trace_endpoint:
                    env["OTEL_EXPORTER_OTLP_ENDPOINT"] = trace_endpoint
                    env["OTEL_EXPORTER_OTLP_PROTOCOL"] = "http/protobuf"
                else:
                    env["OTEL_TRACES_EXPORTER"] = "none"
            start(app, [sys.executable, str(examples / script), f"--port={port}"], env, port)
            urls[app] = f"http://127.0.0.1:{port}"
            metrics[app] = f"http://127.0.0.1:{metrics_port}/metrics"
        yield _Apps(urls, metrics, services)


def run_demo(
    settings: DemoSettings, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> ProbeRun:
    """Run the whole demo; print the tables and the diagnosis; write the report."""
    from ._otlp_receiver import TraceReceiver
    from ._report import conclusions, write_report

    settings.check()
    progress = Progress(err)
    with ExitStack() as stack, stop_on_signals():
        logs = Path(stack.enter_context(_tempdir()))
        receiver = None if settings.otlp else stack.enter_context(TraceReceiver())
        err.write("poolscope demo: starting the fake LLM server and the two apps on 127.0.0.1\n")
        apps = stack.enter_context(
            _processes(settings, logs, receiver.endpoint if receiver else None)
        )
        targets = {
            app: Target(app, apps.services[app], apps.urls[app], apps.metrics[app], SCENARIOS)
            for app in APPS
        }
        run = ProbeRun(settings, targets, started=time.monotonic())
        asyncio.run(drive(run, progress))
        progress.finish()
        if receiver is not None:
            time.sleep(1.0)  # the last spans: the apps export every 200 ms
            run.spans = receiver.snapshot()
        else:
            run.traces_sent_to = settings.otlp
    run.elapsed = time.monotonic() - run.started
    diagnose_run(run)
    if settings.json_output is not None:
        settings.json_output.write_text(json.dumps(results(run), indent=2) + "\n")
    print_results(run, conclusions(run), out)
    write_report(run, settings, settings.output)
    out.write(f"\nReport: {settings.output.resolve()}\n")
    return run


@contextmanager
def _tempdir() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="poolscope-demo-") as directory:
        yield directory
