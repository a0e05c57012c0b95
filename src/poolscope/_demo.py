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
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TextIO

from . import _readings, semconv
from ._cpu import machine_cpu
from ._diagnose import Diagnosis, PoolWindow, ProcessWindow, diagnose
from ._errors import ConfigurationError
from ._loadgen import StepLoad, run_step
from ._readings import Histogram, Snapshot

__all__ = ["DemoRun", "DemoSettings", "run_demo"]

NAIVE: Final = "naive"
FIXED: Final = "fixed"
APPS: Final = {NAIVE: "naive_app.py", FIXED: "fixed_app.py"}
DEFAULT_STEPS: Final = (1, 5, 10, 25, 50, 100)
SAMPLE_INTERVAL_S: Final = 0.5
MACHINE_BUSY: Final = 0.9
"""Share of the machine's CPU at or above which a step measured the machine, not the app."""
MAX_USERS: Final = 300
"""More would take the naive app minutes per step to drain on a small machine."""
_NEEDS: Final = ("fastapi", "uvicorn", "openai", "httpx", "prometheus_client")


class DemoError(RuntimeError):
    """A part of the demo failed (a process did not start, an app stopped answering)."""


class _Stopped(Exception):
    """SIGTERM or SIGHUP: unwind like Ctrl-C, so every child process is stopped."""


@dataclass(frozen=True)
class Scenario:
    name: str
    about: str
    paths: tuple[str, ...]


SCENARIOS: Final = (
    Scenario(
        "async routes",
        "async def routes that hand a sync SDK call or a sync HTTP fetch to the loop's "
        "default executor",
        ("/chat", "/search"),
    ),
    Scenario(
        "sync routes",
        "def routes, and a sync streaming route, that Starlette runs in anyio's worker threads",
        ("/summary", "/stream"),
    ),
)


@dataclass(frozen=True)
class DemoSettings:
    steps: tuple[int, ...] = DEFAULT_STEPS
    step_seconds: float = 4.0
    output: Path = Path("poolscope-report.html")
    otlp: str | None = None
    json_output: Path | None = None
    llm_port: int = 0
    naive_port: int = 0
    fixed_port: int = 0
    first_token_ms: float = 1000.0
    per_token_ms: float = 25.0
    tokens: int = 16

    def check(self) -> None:
        if not self.steps or any(s < 1 or s > MAX_USERS for s in self.steps):
            raise ConfigurationError(
                f"--steps must be concurrency levels from 1 to {MAX_USERS}, got {list(self.steps)}"
            )
        ports = [p for p in (self.llm_port, self.naive_port, self.fixed_port) if p]
        if len(ports) != len(set(ports)):
            raise ConfigurationError(
                "--llm-port, --naive-port and --fixed-port must be different ports"
            )
        if not 0.5 <= self.step_seconds <= 600:
            raise ConfigurationError(
                f"--duration must be 0.5 to 600 seconds per step, got {self.step_seconds:g}"
            )
        for flag, port in (
            ("--llm-port", self.llm_port),
            ("--naive-port", self.naive_port),
            ("--fixed-port", self.fixed_port),
        ):
            if port and not _port_free(port):
                raise ConfigurationError(
                    f"{flag} {port}: the port is in use on 127.0.0.1; choose another, or "
                    "leave the flag out to use a free one"
                )
        for flag, path in (("--output", self.output), ("--json", self.json_output)):
            if path is not None and not path.resolve().parent.is_dir():
                raise ConfigurationError(f"{flag}: directory {path.parent} does not exist")
        if self.otlp is not None:
            from ._configure import _check_url

            _check_url("--otlp", self.otlp)
        missing = [name for name in _NEEDS if importlib.util.find_spec(name) is None]
        if missing:
            raise ConfigurationError(
                f"poolscope demo needs {', '.join(missing)}: pip install 'poolscope[demo]'"
            )


@dataclass(frozen=True)
class MachineUse:
    """Where the machine's CPU went during a step: cores, averaged over the step."""

    load_generator: float
    """This process: the load generator and the sampler."""
    machine: float | None
    """Every process on the machine; None where the platform cannot tell."""
    cores: int

    @property
    def busy_share(self) -> float | None:
        return None if self.machine is None else self.machine / self.cores

    @property
    def exhausted(self) -> bool:
        """The machine, not the app, was the limit."""
        share = self.busy_share
        return share is not None and share >= MACHINE_BUSY


@dataclass
class StepResult:
    app: str
    scenario: str
    load: StepLoad
    pools: dict[str, PoolWindow]
    process: ProcessWindow | None
    wait_histograms: dict[str, Histogram]
    machine: MachineUse

    @property
    def wait_seconds(self) -> float:
        return sum(w.wait_seconds for w in self.pools.values())

    @property
    def lag_p99(self) -> float | None:
        return self.process.lag_p99 if self.process is not None else None

    @property
    def wait_share(self) -> float:
        total = self.load.total_latency
        return min(1.0, self.wait_seconds / total) if total else 0.0

    def saturated_pool(self) -> PoolWindow | None:
        saturated = [w for w in self.pools.values() if w.saturated]
        return max(saturated, key=lambda w: w.pending_peak) if saturated else None


@dataclass
class DemoRun:
    settings: DemoSettings
    services: dict[str, str] = field(default_factory=dict)
    """App key -> service.name."""
    steps: list[StepResult] = field(default_factory=list)
    busy: dict[str, list[tuple[float, str, float, float]]] = field(default_factory=dict)
    """App key -> (seconds since start, pool, busy, limit) samples."""
    diagnoses: dict[str, Diagnosis] = field(default_factory=dict)
    spans: list[Any] = field(default_factory=list)
    traces_sent_to: str | None = None
    started: float = 0.0
    elapsed: float = 0.0

    def step(self, app: str, scenario: str, concurrency: int) -> StepResult | None:
        for result in self.steps:
            if (result.app, result.scenario, result.load.concurrency) == (
                app,
                scenario,
                concurrency,
            ):
                return result
        return None

    def speedup(self, scenario: str, concurrency: int) -> float | None:
        naive, fixed = (
            self.step(NAIVE, scenario, concurrency),
            self.step(FIXED, scenario, concurrency),
        )
        if naive is None or fixed is None or not naive.load.throughput:
            return None
        return fixed.load.throughput / naive.load.throughput


# --- Processes ---------------------------------------------------------------------


def examples_dir() -> Path:
    """The example apps: shipped inside the package, or the repository's examples/."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "_examples", here.parent.parent / "examples"):
        if (candidate / "fake_llm.py").exists():
            return candidate
    raise ConfigurationError("the example apps are missing from this installation of poolscope")


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Child:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        self._file = log.open("wb")
        self.process = subprocess.Popen(  # noqa: S603 (our own scripts, argv list)
            argv,
            env=env,
            stdout=self._file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)
            except ProcessLookupError:
                pass
        self._file.close()

    def wait_ready(self, port: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise DemoError(f"{self.name} exited at start-up:\n{tail}")
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.1)
        raise DemoError(f"{self.name} did not listen on 127.0.0.1:{port} within {timeout:g} s")


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
            if not _port_free(port):
                raise DemoError(f"port {port} for the {name} was taken before it started")
            child = _Child(name, argv, {**os.environ, **env}, logs / f"{name}.log")
            stack.callback(child.stop)
            child.wait_ready(port)

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


def results(run: DemoRun) -> dict[str, Any]:
    """The run's figures as plain data (``--json``)."""
    return {
        "elapsed_seconds": run.elapsed,
        "services": run.services,
        "steps": [
            {
                "app": step.app,
                "scenario": step.scenario,
                "users": step.load.concurrency,
                "throughput": step.load.throughput,
                "p50": step.load.percentile(0.5),
                "p95": step.load.percentile(0.95),
                "p99": step.load.percentile(0.99),
                "failures": step.load.failures,
                "unfinished": step.load.unfinished,
                "wait_share": step.wait_share,
                "loop_lag_p99": step.lag_p99,
                "app_cpu": step.process.cpu if step.process else None,
                "loop_utilization": step.process.loop_utilization if step.process else None,
                "load_generator_cpu": step.machine.load_generator,
                "machine_cpu": step.machine.machine,
                "machine_exhausted": step.machine.exhausted,
                "pools": {
                    name: {
                        "limit": w.limit,
                        "busy_peak": w.busy_peak,
                        "busy_typical": w.busy_typical,
                        "pending_peak": w.pending_peak,
                        "wait_p95": w.wait_p95,
                        "saturated": w.saturated,
                    }
                    for name, w in step.pools.items()
                },
            }
            for step in run.steps
        ],
        "diagnosis": {
            app: {
                "verdicts": [verdict.to_json() for verdict in diagnosis.verdicts],
                "healthy_pools": list(diagnosis.healthy),
                "summary": diagnosis.summary(),
            }
            for app, diagnosis in run.diagnoses.items()
        },
    }


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


# for the tables: which semconv pool names stand for what
POOL_EXPLAINED: Final = {
    semconv.POOL_ASYNCIO_DEFAULT: "the event loop's default executor",
    semconv.POOL_ANYIO_DEFAULT: "anyio's default thread limiter",
}
