"""What a demo run is: its scenarios, settings and figures, as the report reads them.

``_run`` fills a :class:`DemoRun`; ``_report`` renders one. Both import this
module, and it imports neither.
"""

from __future__ import annotations

import importlib.util
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ... import semconv
from ..._analysis._diagnose import Diagnosis, PoolWindow, ProcessWindow
from ..._analysis._readings import Histogram
from ..._errors import ConfigurationError
from .._loadgen import StepLoad

__all__ = [
    "APPS",
    "FIXED",
    "NAIVE",
    "POOL_EXPLAINED",
    "SAMPLE_INTERVAL_S",
    "SCENARIOS",
    "DemoError",
    "DemoRun",
    "DemoSettings",
    "MachineUse",
    "Scenario",
    "StepResult",
    "port_free",
    "results",
]

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
            if port and not port_free(port):
                raise ConfigurationError(
                    f"{flag} {port}: the port is in use on 127.0.0.1; choose another, or "
                    "leave the flag out to use a free one"
                )
        for flag, path in (("--output", self.output), ("--json", self.json_output)):
            if path is not None and not path.resolve().parent.is_dir():
                raise ConfigurationError(f"{flag}: directory {path.parent} does not exist")
        if self.otlp is not None:
            from ..._sdk._configure import check_url

            check_url("--otlp", self.otlp)
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


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


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


# for the tables: which semconv pool names stand for what
POOL_EXPLAINED: Final = {
    semconv.POOL_ASYNCIO_DEFAULT: "the event loop's default executor",
    semconv.POOL_ANYIO_DEFAULT: "anyio's default thread limiter",
}
