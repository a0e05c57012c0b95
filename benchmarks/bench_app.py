"""What a real app pays: CPU per request of the example apps, bare, with OpenTelemetry
alone, with ``poolscope.configure()`` and with the zero-code path, in one run.

The fixed and the naive example apps (``examples/``) call the fake LLM server
and export OTLP to our collector, all on loopback. wrk drives each app at a
concurrency below its pools' sizes and well below the machine's CPU
(``--connections``, default 4, rotating over ``--paths``), so each
configuration serves about the same requests and the figure that moves is the
app's CPU. Every run of an app is a fresh uvicorn process
(``_example_under_bench.py``); rounds interleave the configurations, in an
order rotated each round. Per run: the app process's CPU seconds (from
``/proc``) per request, requests/s and p99 from wrk, and what the rest of the
machine used (the fake LLM, the collector, wrk), so a run where the machine
and not the app was the limit says so.

    export POOLSCOPE_COLLECTOR_BIN=$(collector/build.sh)
    python benchmarks/bench_app.py                      # 5 rounds x 8 runs x 10 s: ~10 min here
    python benchmarks/bench_app.py --rounds 2 --duration 4 --apps fixed_app   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent)]

from tools import stack  # noqa: E402

from _example_under_bench import CONFIGS  # noqa: E402
from _machine import BUSY_MACHINE, busy_jiffies, cores_busy  # noqa: E402
from _spread import spread  # noqa: E402
from _wrk import require_wrk, wrk  # noqa: E402

APPS = ("fixed_app", "naive_app")
BASELINE = "otel"
THOUSANDTHS = "{:.3f}"


@dataclass(frozen=True)
class Run:
    requests: int
    rate: float
    p99: float
    app_cpu: float
    """CPU seconds of the app process over the measured stretch"""
    others_cpu: float
    """CPU seconds of the fake LLM, the collector and wrk"""
    machine_cores: float
    """cores busy on the whole machine, on average"""
    seconds: float

    @property
    def cpu_per_request(self) -> float:
        return self.app_cpu / self.requests


def _children_cpu() -> float:
    usage = os.times()
    return usage.children_user + usage.children_system


def _app_env(config: str, app: str, llm_url: str, otlp_port: int) -> dict[str, str]:
    env = {
        "POOLSCOPE_BENCH_APP": app,
        "POOLSCOPE_BENCH_CONFIG": config,
        "POOLSCOPE_EXAMPLE_LLM_URL": llm_url,
        "OTEL_SERVICE_NAME": f"bench-{app}",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{otlp_port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_LOGS_EXPORTER": "none",
        # poolscope.configure()'s default; the SDK's own would be 60 s: the same for all
        "OTEL_METRIC_EXPORT_INTERVAL": "15000",
    }
    if config == "zero-code":
        # poolscope alone, as in the otel configuration OpenTelemetry's ASGI
        # middleware alone: no client spans of httpx, requests or openai in either
        others = sorted(
            e.name
            for e in entry_points(group="opentelemetry_instrumentor")
            if e.name != "poolscope"
        )
        env["OTEL_PYTHON_DISABLED_INSTRUMENTATIONS"] = ",".join(others)
    return env


def _app_argv(config: str, port: int) -> list[str]:
    serve = [
        sys.executable,
        "-m",
        "uvicorn",
        "_example_under_bench:app",
        "--app-dir",
        str(HERE),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "warning",
        "--no-access-log",
    ]
    if config == "zero-code":
        return [str(Path(sys.executable).parent / "opentelemetry-instrument"), *serve]
    return serve


def _one_run(
    start: Callable[..., stack.Service],
    others: list[int],
    *,
    config: str,
    app: str,
    args: argparse.Namespace,
    llm_url: str,
    otlp_port: int,
) -> Run:
    port = stack.free_port()
    service = start(
        f"{app}-{config}",
        _app_argv(config, port),
        _app_env(config, app, llm_url, otlp_port),
    )
    try:
        service.wait_ready(lambda: stack.tcp_open(port))
        url = f"http://127.0.0.1:{port}"
        wrk(url, args.warmup, args.connections, threads=1, paths=args.paths)
        pid = service.process.pid
        app_cpu = stack.cpu_seconds(pid)
        others_cpu = sum(stack.cpu_seconds(p) for p in others) + _children_cpu()
        busy = busy_jiffies()
        started = time.monotonic()
        result = wrk(url, args.duration, args.connections, threads=1, paths=args.paths)
        seconds = time.monotonic() - started
        busy_after = busy_jiffies()
        app_cpu = stack.cpu_seconds(pid) - app_cpu
        others_cpu = sum(stack.cpu_seconds(p) for p in others) + _children_cpu() - others_cpu
    finally:
        service.stop()
    cores = cores_busy(busy, busy_after)
    return Run(result.requests, result.rate, result.p99, app_cpu, others_cpu, cores, seconds)


def _report(results: dict[tuple[str, str], list[Run]], args: argparse.Namespace) -> None:
    cores = os.cpu_count() or 1
    print(
        f"wrk -t1 -c{args.connections} -d{args.duration}s over {','.join(args.paths)}, "
        f"uvicorn 1 process, {args.rounds} rounds, median (lowest to highest)"
    )
    print(f"Python {sys.version.split()[0]}, {cores} CPUs\n")
    print(
        "| app | configuration | CPU ms/request | CPU vs otel (per round) | requests/s "
        "| p99 ms | machine cores busy (max) |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    busiest = 0.0
    for app in args.apps:
        baseline = results[(app, BASELINE)]
        for config in CONFIGS:
            runs = results[(app, config)]
            per_request = [r.cpu_per_request * 1e3 for r in runs]
            pairs = zip(runs, baseline, strict=True)
            ratios = [r.cpu_per_request / b.cpu_per_request for r, b in pairs]
            machine = max(r.machine_cores for r in runs)
            busiest = max(busiest, machine)
            print(
                f"| {app} | {config} | {spread(per_request, THOUSANDTHS)} "
                f"| {spread(ratios, THOUSANDTHS)} "
                f"| {statistics.median(r.rate for r in runs):.1f} "
                f"| {statistics.median(r.p99 for r in runs) * 1e3:.1f} | {machine:.2f} |"
            )
    others = statistics.median(r.others_cpu / r.seconds for runs in results.values() for r in runs)
    print(
        f"\nThe fake LLM, the collector and wrk used {others:.2f} cores (median run); "
        f"the whole machine at most {busiest:.2f} of {cores}."
    )
    if busiest > BUSY_MACHINE * cores:
        print(
            f"The machine was over {BUSY_MACHINE:.0%} busy in some run: "
            "its CPU, not the app, may have been the limit there."
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--apps", nargs="+", default=list(APPS), choices=APPS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10, help="seconds measured per run")
    parser.add_argument("--warmup", type=float, default=3, help="seconds before measuring")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--paths", type=lambda s: s.split(","), default=["/chat", "/search"])
    parser.add_argument(
        "--llm-latency-ms", type=float, default=20, help="the fake LLM's time to first token"
    )
    args = parser.parse_args()
    require_wrk()
    results: dict[tuple[str, str], list[Run]] = {}
    with tempfile.TemporaryDirectory() as logs, stack.services(Path(logs)) as start:
        helpers: list[stack.Service] = []

        def start_helper(*argv: object, **options: object) -> stack.Service:
            helper = start(*argv, **options)
            helpers.append(helper)
            return helper

        llm_url = stack.start_fake_llm(
            start_helper, "--first-token-ms", str(args.llm_latency_ms), "--per-token-ms", "1"
        )
        # traces go on to a port where nothing listens: only the collector retries
        ports = stack.start_collector(start_helper, trace_store_port=stack.free_port())
        others = [helper.process.pid for helper in helpers]
        runs = [(app, config) for app in args.apps for config in CONFIGS]
        for number in range(args.rounds):
            shift = number % len(runs)
            for app, config in runs[shift:] + runs[:shift]:
                run = _one_run(
                    start,
                    others,
                    config=config,
                    app=app,
                    args=args,
                    llm_url=llm_url,
                    otlp_port=ports["grpc"],
                )
                results.setdefault((app, config), []).append(run)
                print(
                    f"round {number + 1}: {app} {config}: {run.requests} requests, "
                    f"{run.cpu_per_request * 1e3:.2f} ms CPU each, "
                    f"machine {run.machine_cores:.2f} cores",
                    file=sys.stderr,
                    flush=True,
                )
    _report(results, args)


if __name__ == "__main__":
    main()
