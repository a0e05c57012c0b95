"""The collector killed, restarted, then unreachable for minutes: the app does not notice.

Runs the fixed example app (async and sync routes calling the fake LLM server)
under the same closed-loop load twice, on loopback:

* ``baseline``: the app exports nothing (``OTEL_*_EXPORTER=none``);
* ``faults``: it exports OTLP to our collector, which is SIGKILLed at 20% of the
  run, started again at 35%, SIGKILLed again at 50% and left down to the end.

and reports, per phase, throughput and latency against the same stretch of the
baseline, the app's resident memory and CPU per request, the CPU the load
driver (this process) used and how busy the machine was (so that a run says
when the machine, not the app, was the limit), every line the app logged about
export, and whether export resumed by itself once the collector came back
after the run.

    python benchmarks/export_faults.py                 # 300 s per run: 150 s unreachable
    python benchmarks/export_faults.py --seconds 40 --export-timeout 2   # quick look

The stack binaries come from ``POOLSCOPE_COLLECTOR_BIN`` (``collector/build.sh``).
Exits 1 when a request failed, export did not resume, or the faults run is more
than ``--tolerance`` (5%) slower than the baseline overall.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]

from benchmarks._machine import BUSY_MACHINE, busy_jiffies, cores_busy  # noqa: E402
from benchmarks.soak import rss_kb  # noqa: E402
from tools import stack as _stack  # noqa: E402  (the stack runner the tests use too)

PATHS = ("/chat", "/search", "/summary", "/stream")
# (fraction of the run, what happens to the collector)
TIMELINE = ((0.20, "kill"), (0.35, "start"), (0.50, "kill"))
PHASES = (
    ("healthy", 0.0, 0.20),
    ("down", 0.20, 0.35),
    ("restarted", 0.35, 0.50),
    ("unreachable", 0.50, 1.0),
)
EXPORT_LOG_MARKERS = ("poolscope: cannot export", "works again", "Transient error", "Failed to")


@dataclass
class Phase:
    name: str
    requests: int
    throughput: float
    p50_ms: float
    p95_ms: float
    max_rss_mb: float
    app_cpu_ms_per_request: float
    driver_cores: float
    machine_cores: float


@dataclass
class Sample:
    """Readings taken once a second while the load runs."""

    at: float
    rss_mb: float
    app_cpu_s: float
    driver_cpu_s: float
    machine: tuple[int, int]


@dataclass
class Run:
    mode: str
    seconds: float
    failures: int
    phases: list[Phase]
    rss_mb: list[tuple[float, float]] = field(default_factory=list)
    export_log: list[str] = field(default_factory=list)
    resumed: dict[str, bool] = field(default_factory=dict)

    @property
    def requests(self) -> int:
        return sum(p.requests for p in self.phases)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


async def _load(
    url: str, users: int, seconds: float, events: list[tuple[float, Callable[[], None]]]
) -> tuple[list[tuple[float, float]], int]:
    """A closed loop of ``users``; returns (completed at, latency) per request and failures.

    ``events`` run at their offsets, from a thread so that starting a process
    does not stall the load.
    """
    import httpx

    done: list[tuple[float, float]] = []
    failures = 0
    start = time.monotonic()
    end = start + seconds

    async def user(number: int, client: httpx.AsyncClient) -> None:
        nonlocal failures
        path = PATHS[number % len(PATHS)]
        while time.monotonic() < end:
            sent = time.monotonic()
            try:
                response = await client.get(path)
                ok = response.status_code == 200
            except httpx.HTTPError:
                ok = False
            now = time.monotonic()
            if ok:
                done.append((now - start, now - sent))
            else:
                failures += 1
                await asyncio.sleep(0.1)

    async def timeline() -> None:
        for offset, action in events:
            await asyncio.sleep(max(0.0, start + offset - time.monotonic()))
            await asyncio.to_thread(action)

    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        await asyncio.gather(timeline(), *(user(n, client) for n in range(users)))
    return done, failures


def _phases(done: list[tuple[float, float]], seconds: float, samples: list[Sample]) -> list[Phase]:
    phases = []
    for name, begin, finish in PHASES:
        lo, hi = begin * seconds, finish * seconds
        latencies = [latency for at, latency in done if lo <= at < hi]
        inside = [sample for sample in samples if lo <= sample.at < hi]
        peak = max((sample.rss_mb for sample in inside), default=float("nan"))
        app_ms = driver = machine = float("nan")
        if len(inside) >= 2:
            first, last = inside[0], inside[-1]
            took = last.at - first.at
            served = sum(1 for at, _ in done if first.at <= at < last.at)
            app_ms = 1000 * (last.app_cpu_s - first.app_cpu_s) / max(served, 1)
            driver = (last.driver_cpu_s - first.driver_cpu_s) / took
            machine = cores_busy(first.machine, last.machine)
        phases.append(
            Phase(
                name,
                len(latencies),
                round(len(latencies) / (hi - lo), 1),
                round(_percentile(latencies, 0.50) * 1000, 1),
                round(_percentile(latencies, 0.95) * 1000, 1),
                round(peak, 1),
                round(app_ms, 2),
                round(driver, 2),
                round(machine, 2),
            )
        )
    return phases


def _resumed(lines: list[str], what: str) -> bool:
    """The app logged that ``what`` export works again after its last failure."""
    failed = [n for n, line in enumerate(lines) if f"cannot export {what} " in line]
    works = [
        n for n, line in enumerate(lines) if f"{what} export to" in line and "works again" in line
    ]
    return bool(failed) and bool(works) and works[-1] > failed[-1]


def _accepted_spans(telemetry_port: int) -> float:
    url = f"http://127.0.0.1:{telemetry_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("otelcol_receiver_accepted_spans")
    )


def run(mode: str, args: argparse.Namespace, log_dir: Path) -> Run:
    started: dict[str, _stack.Service] = {}
    with _stack.services(log_dir / mode) as start_service:

        def start(name: str, argv: list[str], env: dict[str, str] | None = None) -> Any:
            started[name] = start_service(name, argv, env)
            return started[name]

        (log_dir / mode).mkdir(parents=True, exist_ok=True)
        llm = _stack.start_fake_llm(start)
        events: list[tuple[float, Callable[[], None]]] = []
        ports: dict[str, int] = {}
        extra = {
            "OTEL_SERVICE_NAME": f"faults-{mode}",
            # the SDK's defaults (the test helper raises them to keep every span)
            "OTEL_BSP_MAX_QUEUE_SIZE": "2048",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512",
        }
        if mode == "faults":
            trace_store = _stack.free_port()  # nothing listens: the collector drops traces
            ports = _stack.start_collector(start, trace_store_port=trace_store)
            extra["OTEL_EXPORTER_OTLP_TIMEOUT"] = str(args.export_timeout)

            def kill() -> None:
                os.killpg(started["collector"].process.pid, signal.SIGKILL)
                started["collector"].process.wait(10)

            def restart() -> None:
                _stack.start_collector(start, trace_store_port=trace_store, ports=ports)

            actions = {"kill": kill, "start": restart}
            events = [(at * args.seconds, actions[what]) for at, what in TIMELINE]
        url = _stack.start_app(
            start, "fixed_app", llm_url=llm, otlp_port=ports.get("grpc"), extra_env=extra
        )
        app = started["fixed_app"]
        asyncio.run(_load(url, args.users, min(5.0, args.seconds / 4), []))  # warm up
        samples: list[Sample] = []
        sampling = True

        def sample() -> None:
            origin = time.monotonic()
            while sampling:
                pid = app.process.pid
                samples.append(
                    Sample(
                        time.monotonic() - origin,
                        rss_kb(pid) / 1024,
                        _stack.cpu_seconds(pid),
                        time.process_time(),
                        busy_jiffies(),
                    )
                )
                time.sleep(1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        done, failures = asyncio.run(_load(url, args.users, args.seconds, events))
        sampling = False
        sampler.join()
        resumed: dict[str, bool] = {}
        if mode == "faults":
            restart()
            deadline = time.monotonic() + 3 * args.export_timeout + 30
            while not (resumed and all(resumed.values())) and time.monotonic() < deadline:
                asyncio.run(_load(url, 2, 1.0, []))  # a little traffic to export
                lines = app.log.read_text(errors="replace").splitlines()
                resumed = {what: _resumed(lines, what) for what in ("spans", "metric points")}
                resumed["collector received spans"] = _accepted_spans(ports["telemetry"]) > 0
        export_log = [
            line
            for line in app.log.read_text(errors="replace").splitlines()
            if any(marker in line for marker in EXPORT_LOG_MARKERS)
        ]
        return Run(
            mode,
            args.seconds,
            failures,
            _phases(done, args.seconds, samples),
            [(round(sample.at, 1), round(sample.rss_mb, 1)) for sample in samples],
            export_log,
            resumed,
        )


def report(baseline: Run, faults: Run, tolerance: float) -> tuple[str, bool]:
    lines = [
        f"{'phase':<12} {'baseline req/s':>14} {'faults req/s':>12} {'ratio':>6} "
        f"{'p50 ms b/f':>13} {'p95 ms b/f':>13} {'max RSS MB b/f':>15}"
    ]
    for b, f in zip(baseline.phases, faults.phases, strict=True):
        ratio = f.throughput / b.throughput if b.throughput else float("nan")
        lines.append(
            f"{b.name:<12} {b.throughput:>14.1f} {f.throughput:>12.1f} {ratio:>6.3f} "
            f"{b.p50_ms:>6.0f}/{f.p50_ms:<6.0f} {b.p95_ms:>6.0f}/{f.p95_ms:<6.0f} "
            f"{b.max_rss_mb:>7.1f}/{f.max_rss_mb:<7.1f}"
        )
    lines.append("")
    lines.append(
        f"{'phase':<12} {'app CPU ms/request b/f':>23} {'load driver cores b/f':>22} "
        f"{'machine cores b/f':>18}"
    )
    for b, f in zip(baseline.phases, faults.phases, strict=True):
        lines.append(
            f"{b.name:<12} {b.app_cpu_ms_per_request:>11.2f}/{f.app_cpu_ms_per_request:<11.2f} "
            f"{b.driver_cores:>10.2f}/{f.driver_cores:<11.2f} "
            f"{b.machine_cores:>8.2f}/{f.machine_cores:<9.2f}"
        )
    cores = os.cpu_count() or 1
    busiest = max(p.machine_cores for p in (*baseline.phases, *faults.phases))
    limit = (
        "the machine may have been the limit"
        if busiest > BUSY_MACHINE * cores
        else "the machine was not the limit"
    )
    lines.append(f"the machine's {cores} cores were at most {busiest:.2f} busy: {limit}")
    overall = faults.requests / baseline.requests if baseline.requests else float("nan")
    lines.append(f"overall throughput ratio (faults / baseline): {overall:.3f}")
    lines.append(f"failed requests: baseline {baseline.failures}, faults {faults.failures}")
    lines.append("app log lines about export during the faults run:")
    lines.extend(f"  {line}" for line in faults.export_log)
    lines.append(f"export resumed after the collector came back: {faults.resumed}")
    ok = (
        faults.failures == 0
        and baseline.failures == 0
        and all(faults.resumed.values())
        and overall >= 1 - tolerance
    )
    return "\n".join(lines), ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="load per run")
    parser.add_argument("--users", type=int, default=40, help="closed-loop users")
    parser.add_argument(
        "--export-timeout", type=float, default=10.0, help="OTEL_EXPORTER_OTLP_TIMEOUT, s"
    )
    parser.add_argument("--tolerance", type=float, default=0.05)
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)
    _stack.binary("collector")
    with tempfile.TemporaryDirectory(prefix="poolscope-faults-") as tmp:
        baseline = run("baseline", args, Path(tmp))
        faults = run("faults", args, Path(tmp))
    text, ok = report(baseline, faults, args.tolerance)
    print(text)
    if args.json:
        args.json.write_text(json.dumps([asdict(baseline), asdict(faults)], indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
