"""``poolscope demo``: the naive and the fixed LLM app, side by side, under rising load.

Starts the fake OpenAI-compatible server and both example apps as separate
processes on free loopback ports, drives each app's async routes and then
its sync routes with 1, 5, 10, 25, 50 and 100 concurrent users (each with
its own keep-alive connection), reads every pool and the app's CPU and
event loop from the apps' own Prometheus endpoints while it does, and ends
with a table per app, the verdicts of :func:`poolscope.diagnose`, and a
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
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Final, TextIO

from ..._analysis import _readings
from ..._analysis._diagnose import PoolWindow, ProcessWindow, diagnose
from ..._analysis._readings import Histogram, Snapshot
from ..._core._cpu import machine_cpu
from ..._errors import ConfigurationError
from .._children import Child, ChildFailed
from .._loadgen import run_step
from ._model import (
    APPS,
    NAIVE,
    SAMPLE_INTERVAL_S,
    SCENARIOS,
    DemoError,
    DemoRun,
    DemoSettings,
    MachineUse,
    StepResult,
    port_free,
    results,
)

__all__ = [
    "DemoError",
    "DemoRun",
    "DemoSettings",
    "examples_dir",
    "run_demo",
]


class _Stopped(Exception):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so every child process is stopped."""


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
                raise DemoError(f"port {port} for the {name} was taken before it started")
            child = Child(name, argv, {**os.environ, **env}, logs / f"{name}.log")
            stack.callback(child.stop)
            try:
                child.wait_listening(port)
            except ChildFailed as error:
                raise DemoError(str(error)) from None

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


# --- Measuring ---------------------------------------------------------------------


async def _read(url: str, app: str) -> Snapshot:
    try:
        return await asyncio.to_thread(_readings.read, url)
    except _readings.SourceError as error:
        raise DemoError(f"the {app} app stopped answering: {error}") from None


class _Sampler:
    """Reads an app's pools every 250 ms during a step: peaks, means, the busy series."""

    def __init__(self, url: str, started: float) -> None:
        self.url = url
        self.started = started
        self.samples: list[Snapshot] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        while not self._stop.is_set():
            with suppress(_readings.SourceError):  # a sample missed under load
                self.samples.append(
                    await asyncio.to_thread(_readings.read, self.url, gauges_only=True)
                )
            with suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), SAMPLE_INTERVAL_S)

    def stop(self) -> None:
        self._stop.set()


def _at_most(value: float | None, bound: float | None) -> float | None:
    return value if value is None or bound is None else min(value, bound)


class _CpuMeter:
    """CPU used by this process and by the machine, between ``start()`` and ``stop()``."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.own = time.process_time()
        self.machine = machine_cpu()

    def stop(self) -> MachineUse:
        seconds = max(time.monotonic() - self.started, 1e-9)
        own = (time.process_time() - self.own) / seconds
        now, before = machine_cpu(), self.machine
        busy = None
        if now is not None and before is not None and now[1] > before[1]:
            cores = os.cpu_count() or 1
            busy = (now[0] - before[0]) / (now[1] - before[1]) * cores
        return MachineUse(own, busy, os.cpu_count() or 1)


def _step_windows(
    service: str,
    concurrency: int,
    before: Snapshot,
    after: Snapshot,
    *,
    samples: list[Snapshot],
    longest: float | None,
) -> tuple[dict[str, PoolWindow], ProcessWindow | None, dict[str, Histogram]]:
    found = _readings.windows(before, after, samples, load=concurrency, service=service)
    # a bucket estimate; never longer than the slowest request it was part of
    pools = {w.pool: replace(w, wait_p95=_at_most(w.wait_p95, longest)) for w in found.pools}
    waits = {
        reading.pool: reading.wait.since(before.pools[key].wait if key in before.pools else None)
        for key, reading in after.pools.items()
    }
    return pools, (found.processes[0] if found.processes else None), waits


async def _drive(
    settings: DemoSettings,
    apps: _Apps,
    run: DemoRun,
    progress: Callable[[str, int, int], None],
) -> None:
    import httpx

    total = len(APPS) * len(SCENARIOS) * len(settings.steps)
    done = 0
    for app in APPS:
        users = max(settings.steps)
        # every user keeps its connection: a reconnect per request is load of its own
        limits = httpx.Limits(max_connections=users + 10, max_keepalive_connections=users + 10)
        async with httpx.AsyncClient(base_url=apps.urls[app], limits=limits, timeout=120) as client:
            for path in {p for s in SCENARIOS for p in s.paths}:  # warm up every route
                await client.get(path)
            for scenario in SCENARIOS:
                for concurrency in settings.steps:
                    progress(f"{app} app, {scenario.name}, {concurrency} users", done, total)
                    sampler = _Sampler(apps.metrics[app], run.started)
                    before = await _read(apps.metrics[app], app)
                    meter = _CpuMeter()
                    sampling = asyncio.create_task(sampler.run())
                    window_end = time.monotonic() + settings.step_seconds
                    load = await run_step(
                        client, scenario.paths, concurrency, settings.step_seconds
                    )
                    sampler.stop()
                    await sampling
                    after = await _read(apps.metrics[app], app)
                    machine = meter.stop()
                    # gauges while the load ran; histograms and counters up to the end
                    # of the drain, like the latencies
                    in_window = [s for s in sampler.samples if s.taken_at <= window_end]
                    pools, process, waits = _step_windows(
                        apps.services[app],
                        concurrency,
                        before,
                        after,
                        samples=in_window,
                        longest=max(load.latencies, default=None),
                    )
                    run.steps.append(
                        StepResult(app, scenario.name, load, pools, process, waits, machine)
                    )
                    series = run.busy.setdefault(app, [])
                    for sample in sampler.samples:
                        for reading in sample.pools.values():
                            series.append(
                                (
                                    sample.taken_at - run.started,
                                    reading.pool,
                                    reading.busy,
                                    reading.limit,
                                )
                            )
                    done += 1
    progress("done", total, total)


def _diagnose(run: DemoRun) -> None:
    for app in run.services:
        steps = [s for s in run.steps if s.app == app]
        run.diagnoses[app] = diagnose(
            (w for s in steps for w in s.pools.values()),
            (s.process for s in steps if s.process is not None),
        )


def run_demo(
    settings: DemoSettings, *, out: TextIO = sys.stdout, err: TextIO = sys.stderr
) -> DemoRun:
    """Run the whole demo; print the tables and the diagnosis; write the report."""
    from ._otlp_receiver import TraceReceiver
    from ._report import write_report

    settings.check()
    run = DemoRun(settings, started=time.monotonic())
    progress = _Progress(err)
    with ExitStack() as stack, _stop_on_signals():
        logs = Path(stack.enter_context(_tempdir()))
        receiver = None if settings.otlp else stack.enter_context(TraceReceiver())
        err.write("poolscope demo: starting the fake LLM server and the two apps on 127.0.0.1\n")
        apps = stack.enter_context(
            _processes(settings, logs, receiver.endpoint if receiver else None)
        )
        run.services = dict(apps.services)
        asyncio.run(_drive(settings, apps, run, progress))
        progress.finish()
        if receiver is not None:
            time.sleep(1.0)  # the last spans: the apps export every 200 ms
            run.spans = receiver.snapshot()
        else:
            run.traces_sent_to = settings.otlp
    run.elapsed = time.monotonic() - run.started
    _diagnose(run)
    from ._report import print_results

    if settings.json_output is not None:
        settings.json_output.write_text(json.dumps(results(run), indent=2) + "\n")
    print_results(run, out)
    write_report(run, settings.output)
    out.write(f"\nReport: {settings.output.resolve()}\n")
    return run


@contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM and SIGHUP stop the demo the way Ctrl-C does: children first."""

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def _tempdir() -> Iterator[str]:
    import tempfile

    with tempfile.TemporaryDirectory(prefix="poolscope-demo-") as directory:
        yield directory


class _Progress:
    """One line, rewritten in place on a terminal; a line per step otherwise."""

    WIDTH: Final = 30

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, what: str, done: int, total: int) -> None:
        filled = round(self.WIDTH * done / total) if total else self.WIDTH
        bar = "█" * filled + "░" * (self.WIDTH - filled)
        line = f"  [{bar}] {done}/{total} {what}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
