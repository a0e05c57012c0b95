"""What a probe run is: its targets, settings and figures, as the reports read them.

``_drive`` fills a :class:`ProbeRun`; ``_report`` renders one. Both import
this module, and it imports neither.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from ... import semconv
from ..._analysis._diagnose import Diagnosis, PoolWindow, ProcessWindow
from ..._analysis._readings import Histogram
from ..._errors import ConfigurationError
from .._loadgen import StepLoad

__all__ = [
    "DEFAULT_STEPS",
    "MACHINE_BUSY",
    "MAX_USERS",
    "POOL_EXPLAINED",
    "SAMPLE_INTERVAL_S",
    "MachineUse",
    "ProbeError",
    "ProbeRun",
    "ProbeSettings",
    "Scenario",
    "StepResult",
    "Target",
    "check_output",
    "results",
]

DEFAULT_STEPS: Final = (1, 5, 10, 25, 50, 100)
SAMPLE_INTERVAL_S: Final = 0.5
MACHINE_BUSY: Final = 0.9
"""Share of the machine's CPU at or above which a step measured the machine, not the app."""
MAX_USERS: Final = 300
"""More would take a starved app minutes per step to drain on a small machine."""


class ProbeError(RuntimeError):
    """The probe could not go on: an app stopped answering, a process did not start."""


@dataclass(frozen=True)
class Scenario:
    """Paths loaded together: user n of a step sends GETs to ``paths[n % len(paths)]``."""

    name: str
    about: str
    paths: tuple[str, ...]


@dataclass(frozen=True)
class Target:
    """One app to load: where it serves and where its pools can be read."""

    key: str
    """Short name, as in ``--json`` (``naive``, ``fixed``, ``app``)."""
    name: str
    """What the tables call it: its ``service.name``, or its URL."""
    url: str
    metrics: str | None
    """Its Prometheus endpoint with poolscope's metrics; None when there is none to read."""
    scenarios: tuple[Scenario, ...]
    blind: str = ""
    """Why its pools cannot be seen (when ``metrics`` is None)."""


def check_output(flag: str, path: Path | None) -> None:
    if path is not None and not path.resolve().parent.is_dir():
        raise ConfigurationError(f"{flag}: directory {path.parent} does not exist")


@dataclass(frozen=True)
class ProbeSettings:
    steps: tuple[int, ...] = DEFAULT_STEPS
    step_seconds: float = 4.0
    output: Path = Path("poolscope-report.html")
    json_output: Path | None = None

    def check(self) -> None:
        if not self.steps or any(s < 1 or s > MAX_USERS for s in self.steps):
            raise ConfigurationError(
                f"--steps must be concurrency levels from 1 to {MAX_USERS}, got {list(self.steps)}"
            )
        if not 0.5 <= self.step_seconds <= 600:
            raise ConfigurationError(
                f"--duration must be 0.5 to 600 seconds per step, got {self.step_seconds:g}"
            )
        check_output("--output", self.output)
        check_output("--json", self.json_output)


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
    """The target's key."""
    scenario: str
    load: StepLoad
    pools: dict[str, PoolWindow]
    process: ProcessWindow | None
    wait_histograms: dict[str, Histogram]
    machine: MachineUse
    pools_visible: bool = True
    """False for an app whose poolscope metrics could not be read: no pool figure is known."""

    @property
    def wait_seconds(self) -> float:
        return sum(w.wait_seconds for w in self.pools.values())

    @property
    def lag_p99(self) -> float | None:
        return self.process.lag_p99 if self.process is not None else None

    @property
    def wait_share(self) -> float | None:
        """Share of the requests' time spent waiting for a worker; None when pools are unseen."""
        if not self.pools_visible:
            return None
        total = self.load.total_latency
        return min(1.0, self.wait_seconds / total) if total else 0.0

    def saturated_pool(self) -> PoolWindow | None:
        saturated = [w for w in self.pools.values() if w.saturated]
        return max(saturated, key=lambda w: w.pending_peak) if saturated else None


@dataclass
class ProbeRun:
    settings: ProbeSettings
    targets: dict[str, Target]
    steps: list[StepResult] = field(default_factory=list)
    busy: dict[str, list[tuple[float, str, float, float]]] = field(default_factory=dict)
    """Target key -> (seconds since start, pool, busy, limit) samples."""
    diagnoses: dict[str, Diagnosis] = field(default_factory=dict)
    spans: list[Any] = field(default_factory=list)
    traces_sent_to: str | None = None
    started: float = 0.0
    elapsed: float = 0.0

    @property
    def services(self) -> dict[str, str]:
        """Target key -> the name the tables give it."""
        return {key: target.name for key, target in self.targets.items()}

    def step(self, app: str, scenario: str, concurrency: int) -> StepResult | None:
        for result in self.steps:
            if (result.app, result.scenario, result.load.concurrency) == (
                app,
                scenario,
                concurrency,
            ):
                return result
        return None


def results(run: ProbeRun) -> dict[str, Any]:
    """The run's figures as plain data (``--json``)."""
    return {
        "elapsed_seconds": run.elapsed,
        "services": run.services,
        "pools_not_visible": {
            key: target.blind for key, target in run.targets.items() if target.metrics is None
        },
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
