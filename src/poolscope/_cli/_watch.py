"""``poolscope diagnose URL``: watch a running app (or read Prometheus), say what is wrong.

From an app's Prometheus endpoint it scrapes once a second for
``--duration`` seconds (the gauges' medians need several samples) and
judges the whole span as one window; from a Prometheus server it reads the
last ``--duration`` seconds of every app and instance there (up to ``--at``,
if given). The verdicts of
:func:`poolscope.diagnose` are printed in plain words, and with ``--json``
written as ``{"verdicts": [{"kind", "service", "instance", "pool", "limit",
"evidence", "advice"}, ...]}``.

Exit status: 0 healthy, 1 something found, 2 bad input or a source that
cannot be read (one line on stderr, no traceback).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import sys
import time
from pathlib import Path
from typing import Any, Final, TextIO

from .._analysis._diagnose import Diagnosis, ProcessWindow, diagnose
from .._analysis._readings import (
    SourceError,
    Windows,
    is_prometheus_server,
    read,
    windows,
    windows_from_prometheus,
)

__all__ = [
    "DEFAULT_ENDPOINT_SECONDS",
    "DEFAULT_SERVER_SECONDS",
    "moment",
    "results",
    "run_diagnose",
]

DEFAULT_ENDPOINT_SECONDS: Final = 10.0
DEFAULT_SERVER_SECONDS: Final = 300.0
SCRAPE_INTERVAL_S: Final = 1.0
MAX_SECONDS: Final = 86_400.0


def _watch_endpoint(url: str, seconds: float) -> Windows:
    first = read(url)
    samples = []
    deadline = first.taken_at + seconds
    while (left := deadline - time.monotonic()) > SCRAPE_INTERVAL_S:
        time.sleep(SCRAPE_INTERVAL_S)
        samples.append(read(url, gauges_only=True))
    time.sleep(max(left, 0.0))
    last = read(url)
    return windows(first, last, [*samples, last])


def _check_found(found: Windows, url: str) -> None:
    if not found.pools and all(
        p.cpu is None and p.loop_utilization is None for p in found.processes
    ):
        raise SourceError(
            f"{url} has no poolscope metrics (yet): poolscope reports a process once it has "
            "served a request or used a pool; is poolscope.configure() (or "
            "poolscope.instrument() with a metric reader) running in the app?"
        )


def _figures(process: ProcessWindow) -> str:
    """What a process did, in one line: the figures the verdicts are judged on."""
    parts = []
    if process.cpu is not None:
        parts.append(f"cpu {process.cpu:.2f} cores")
    if process.loop_utilization is not None:
        parts.append(f"event loop busy {process.loop_utilization:.0%}")
    if process.loop_cpu is not None:
        parts.append(f"loop thread {process.loop_cpu:.2f} cores")
    if process.lag_p99 is not None:
        parts.append(f"lag p99 {process.lag_p99 * 1000:.0f} ms")
    if process.late_share is not None:
        parts.append(f"{process.late_share:.0%} of heartbeats late")
    parts.append(f"{process.block_count:g} blocking callbacks")
    where = "/".join(part for part in (process.service, process.instance) if part)
    return f"{where or 'the app'}: {', '.join(parts)}"


def _report(diagnosis: Diagnosis, found: Windows, source: str, covers: str, out: TextIO) -> None:
    out.write(f"poolscope diagnose: {source}, over {covers}\n")
    for process in found.processes:
        out.write(f"  {_figures(process)}\n")
    if diagnosis.ok:
        out.write(f"{diagnosis.summary()}\n")
        return
    for verdict in diagnosis.verdicts:
        out.write(f"- [{verdict.kind}] {verdict.describe()}\n")


def results(diagnosis: Diagnosis, found: Windows, source: str, seconds: float) -> dict[str, Any]:
    """What ``--json`` writes."""
    return {
        "source": source,
        "seconds": seconds,
        "verdicts": [verdict.to_json() for verdict in diagnosis.verdicts],
        "healthy_pools": list(diagnosis.healthy),
        "processes": [dataclasses.asdict(process) for process in found.processes],
    }


def moment(text: str) -> float:
    """``--at``: Unix seconds, or an ISO 8601 time (UTC unless it names its zone)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        parsed = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected Unix seconds or an ISO 8601 time such as 2026-12-01T14:05:00Z, got {text!r}"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def run_diagnose(
    url: str,
    *,
    seconds: float | None = None,
    at: float | None = None,
    json_output: Path | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    server = is_prometheus_server(url)
    if seconds is None:
        seconds = DEFAULT_SERVER_SECONDS if server else DEFAULT_ENDPOINT_SECONDS
    least = 1.0 if not server else 15.0
    if not least <= seconds <= MAX_SECONDS:
        err.write(
            f"poolscope diagnose: --duration must be {least:g} to {MAX_SECONDS:g} seconds "
            f"for {'a Prometheus server' if server else 'an app endpoint'}, got {seconds:g}\n"
        )
        return 2
    if at is not None and not server:
        err.write(
            "poolscope diagnose: --at reads the past from a Prometheus server; "
            f"{url} is an app's own endpoint, which only has the present\n"
        )
        return 2
    if json_output is not None and not json_output.resolve().parent.is_dir():
        err.write(f"poolscope diagnose: --json: directory {json_output.parent} does not exist\n")
        return 2
    try:
        if server:
            found = windows_from_prometheus(url, f"{seconds:.0f}s", at=at)
            covers = f"the last {seconds:.0f} s"
            if at is not None:
                ended = datetime.datetime.fromtimestamp(at, datetime.UTC)
                covers = f"the {seconds:.0f} s up to {ended:%Y-%m-%d %H:%M:%S} UTC"
        else:
            found = _watch_endpoint(url, seconds)
            covers = f"{seconds:g} s of scrapes"
        _check_found(found, url)
    except SourceError as error:
        err.write(f"poolscope diagnose: {error}\n")
        return 2
    except KeyboardInterrupt:
        err.write("poolscope diagnose: interrupted\n")
        return 130
    diagnosis = diagnose(*found)
    _report(diagnosis, found, url, covers, out)
    if json_output is not None:
        document = results(diagnosis, found, url, seconds)
        json_output.write_text(json.dumps(document, indent=2) + "\n")
    return 0 if diagnosis.ok else 1
