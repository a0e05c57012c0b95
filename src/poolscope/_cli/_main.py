"""The ``poolscope`` command: ``load``, ``audit``, ``demo``, ``top`` and ``diagnose``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from .._analysis._readings import SourceError
from .._errors import ConfigurationError
from .._sdk._configure import ENV_PROMETHEUS_PORT
from ._load import DEFAULT_METRICS_PORT
from ._probe._model import DEFAULT_STEPS, ProbeError
from ._watch import DEFAULT_ENDPOINT_SECONDS, DEFAULT_SERVER_SECONDS, moment

__all__ = ["main"]


def _steps(text: str) -> tuple[int, ...]:
    try:
        steps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers of users such as 1,10,100, got {text!r}"
        ) from None
    if not steps:
        raise argparse.ArgumentTypeError("expected at least one number of users")
    return tuple(sorted(set(steps)))


def _paths(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _add_probe_options(
    command: argparse.ArgumentParser, steps: tuple[int, ...], seconds: float
) -> None:
    command.add_argument(
        "--duration",
        type=float,
        default=seconds,
        metavar="S",
        help=f"seconds per step (default {seconds:g})",
    )
    command.add_argument(
        "--steps",
        type=_steps,
        default=steps,
        metavar="N,N,...",
        help=f"concurrent users per step (default {','.join(map(str, steps))})",
    )
    command.add_argument(
        "--output",
        type=Path,
        default=Path("poolscope-report.html"),
        metavar="FILE",
        help="where to write the HTML report (default poolscope-report.html)",
    )
    command.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the figures as JSON to FILE"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="poolscope", description="Thread pool starvation, made visible."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    load = commands.add_parser(
        "load",
        help="drive your running app with rising concurrency and say what starved",
        description=(
            "Send closed-loop GETs to PATHS of the app at URL with each number of --steps "
            "concurrent users (each on its own keep-alive connection), read the app's pools "
            "from its poolscope metrics meanwhile, and print latency against concurrency, "
            "the verdicts, and an HTML report. Without poolscope metrics, latency against "
            "concurrency only. Exit 0 when healthy, 1 when something was found, 2 on bad "
            "input or an unreachable app."
        ),
    )
    load.add_argument("url", metavar="URL", help="the app, e.g. http://127.0.0.1:8000")
    load.add_argument(
        "--paths",
        type=_paths,
        default=("/",),
        metavar="/A,/B",
        help="comma-separated paths to GET, shared out among the users (default /)",
    )
    _add_probe_options(load, (1, 10, 50, 100), 5.0)
    load.add_argument(
        "--metrics",
        metavar="URL",
        help=(
            "the app's poolscope Prometheus endpoint (default: the URL's host on "
            f"${ENV_PROMETHEUS_PORT}, else port {DEFAULT_METRICS_PORT}, /metrics)"
        ),
    )

    audit = commands.add_parser(
        "audit",
        help="check an app's routes and code against the thread pool starvation checklist",
        description=(
            "Import the app (TARGET: module:app, a module, a .py file; a directory is read "
            "without importing), read its routes and source, and print the checklist with "
            "file:line for every finding: sync endpoints and dependencies, blocking calls on "
            "the event loop, work on shared pools, unnamed or default-sized executors, sync "
            "streaming and file responses, LLM calls without a semaphore. Exit 0 when every "
            "item passes, 1 when one fails, 2 on bad input."
        ),
    )
    audit.add_argument("target", metavar="TARGET", help="e.g. myapp.main:app or src/app.py")
    audit.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the findings as JSON to FILE"
    )

    demo = commands.add_parser(
        "demo",
        help="run the naive and the fixed LLM app side by side under rising load",
        description=(
            "Start a fake OpenAI-compatible server and two example apps on 127.0.0.1, "
            "load them at rising concurrency, print what starved and why, and write an "
            "HTML report."
        ),
    )
    _add_probe_options(demo, DEFAULT_STEPS, 3.0)
    demo.add_argument(
        "--otlp",
        metavar="ENDPOINT",
        help="send the apps' telemetry to this OTLP endpoint (e.g. the bundled collector, "
        "http://127.0.0.1:4317) instead of the demo's own receiver",
    )
    for name, what in (("llm", "fake LLM server"), ("naive", "naive app"), ("fixed", "fixed app")):
        demo.add_argument(
            f"--{name}-port",
            type=int,
            default=0,
            metavar="PORT",
            help=f"port for the {what} (default: a free one)",
        )

    top = commands.add_parser(
        "top",
        help="watch a running app's pools live",
        description=(
            "Show each pool's busy workers against its limit, pending tasks, wait and run "
            "p95 and event-loop lag, refreshed in place. URL is an app's Prometheus endpoint "
            "(ending in /metrics) or a Prometheus server."
        ),
    )
    top.add_argument(
        "url",
        nargs="?",
        default=f"http://127.0.0.1:{DEFAULT_METRICS_PORT}/metrics",
        help=f"default http://127.0.0.1:{DEFAULT_METRICS_PORT}/metrics",
    )
    top.add_argument(
        "--interval", type=float, default=2.0, metavar="S", help="seconds between refreshes"
    )
    top.add_argument(
        "--once", action="store_true", help="print one reading (after one interval) and exit"
    )

    check = commands.add_parser(
        "diagnose",
        help="say what holds a running app's requests up, and what to change",
        description=(
            "Watch a running app's Prometheus endpoint (URL ending in /metrics) for --duration "
            "seconds, or read the last --duration seconds of every app on a Prometheus server, "
            "and print the verdicts: a starved pool, a process out of CPU, a blocked event "
            "loop, GIL contention. Exit 0 when healthy, 1 when something was found, 2 on bad "
            "input or an unreachable URL."
        ),
    )
    check.add_argument(
        "url",
        nargs="?",
        default=f"http://127.0.0.1:{DEFAULT_METRICS_PORT}/metrics",
        help=f"default http://127.0.0.1:{DEFAULT_METRICS_PORT}/metrics",
    )
    check.add_argument(
        "--duration",
        type=float,
        metavar="S",
        help=(
            f"seconds to watch an app (default {DEFAULT_ENDPOINT_SECONDS:g}) or to read "
            f"from a Prometheus server (default {DEFAULT_SERVER_SECONDS:g})"
        ),
    )
    check.add_argument(
        "--at",
        type=moment,
        metavar="TIME",
        help=(
            "a Prometheus server only: judge the --duration seconds up to TIME (Unix seconds "
            "or ISO 8601, e.g. 2026-12-01T14:05:00Z) instead of up to now"
        ),
    )
    check.add_argument(
        "--json", type=Path, metavar="FILE", help="also write the verdicts as JSON to FILE"
    )
    return parser


def _load(args: argparse.Namespace) -> int:
    from ._load import LoadSettings, run_load

    run = run_load(
        LoadSettings(
            steps=args.steps,
            step_seconds=args.duration,
            output=args.output,
            json_output=args.json,
            url=args.url,
            paths=args.paths,
            metrics=args.metrics,
        )
    )
    return 1 if any(not d.ok for d in run.diagnoses.values()) else 0


def _audit(args: argparse.Namespace) -> int:
    from ._audit._run import run_audit

    return run_audit(args.target, json_output=args.json)


def _demo(args: argparse.Namespace) -> int:
    from ._demo._run import DemoSettings, run_demo

    settings = DemoSettings(
        steps=args.steps,
        step_seconds=args.duration,
        output=args.output,
        otlp=args.otlp,
        json_output=args.json,
        llm_port=args.llm_port,
        naive_port=args.naive_port,
        fixed_port=args.fixed_port,
    )
    run_demo(settings)
    return 0


def _diagnose(args: argparse.Namespace) -> int:
    from ._watch import run_diagnose

    return run_diagnose(args.url, seconds=args.duration, at=args.at, json_output=args.json)


def _top(args: argparse.Namespace) -> int:
    from ._top import run_top

    return run_top(args.url, interval=args.interval, once=args.once)


_COMMANDS: Final = {
    "load": _load,
    "audit": _audit,
    "demo": _demo,
    "diagnose": _diagnose,
    "top": _top,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except ConfigurationError as error:
        print(f"poolscope {args.command}: {error}", file=sys.stderr)
        return 2
    except (ProbeError, SourceError) as error:
        print(f"poolscope {args.command}: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"\npoolscope {args.command}: interrupted; stopped.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
