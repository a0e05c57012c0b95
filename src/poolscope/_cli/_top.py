"""``poolscope top``: a live view of a running app's pools and processes, refreshed in place.

Per pool and process: busy workers against the limit as a bar, pending
tasks, wait and run p95. Per process: the CPU it used, how busy its event
loop was, the loop's lag and the callbacks that blocked it. Then the
verdicts of :func:`poolscope.diagnose` on what the frame shows.

It reads an app's Prometheus endpoint (``configure(prometheus_port=...)`` or
``OTEL_POOLSCOPE_PROMETHEUS_PORT``), where each frame covers the time since
the one before, or a Prometheus server holding many apps and instances,
where each frame covers the last minute and the server computes the rates:
every frame has figures, however seldom the server scrapes.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Final, TextIO

from .._analysis._diagnose import count, diagnose
from .._analysis._readings import (
    Snapshot,
    SourceError,
    Windows,
    is_prometheus_server,
    read,
    windows,
    windows_from_prometheus,
)

__all__ = ["SERVER_WINDOW", "render", "run_top"]

BAR: Final = 20
SERVER_WINDOW: Final = "1m"
"""What each frame covers when reading a Prometheus server."""
_CLEAR: Final = "\x1b[H\x1b[2J"


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def _bar(busy: float, limit: float) -> str:
    share = min(1.0, busy / limit) if limit else 0.0
    filled = round(share * BAR)
    return "█" * filled + "·" * (BAR - filled)


def _where(service: str, instance: str) -> str:
    return "/".join(part for part in (service, instance) if part)


def render(found: Windows, source: str, covers: str, width: int = 100) -> str:
    """One screen: a row per (service, instance, pool), fullest pool first; then processes."""
    lines = [f"poolscope top: {source}   figures over {covers}   (Ctrl-C to quit)", ""]
    lines.append(
        f"{'service/instance':<28} {'pool':<18} {'busy/limit':<{BAR + 12}} "
        f"{'pending':>7} {'wait p95':>9} {'run p95':>9}"
    )
    rows = []
    for pool in found.pools:
        busy = pool.busy_typical if pool.busy_typical is not None else pool.busy_peak
        full = busy / pool.limit if pool.limit else 0.0
        rows.append(
            (
                -full,
                f"{_where(pool.service, pool.instance)[:28]:<28} {pool.pool[:18]:<18} "
                f"{_bar(busy, pool.limit)} {count(busy):>4}/{pool.limit:<5g} "
                f"{count(pool.pending_peak):>7} {_ms(pool.wait_p95):>9} {_ms(pool.run_p95):>9}"
                + (" SATURATED" if pool.saturated else ""),
            )
        )
    lines += [text for _, text in sorted(rows)]
    if not rows:
        lines.append("no pools yet: poolscope reports a pool once it has been used")
    lines += [
        "",
        f"{'service/instance':<28} {'cpu cores':>9} {'loop busy':>9} {'loop cpu':>9} "
        f"{'lag p99':>9} {'blocked':>8}",
    ]
    for process in found.processes:
        cpu = "-" if process.cpu is None else f"{process.cpu:.2f}"
        loop_cpu = "-" if process.loop_cpu is None else f"{process.loop_cpu:.2f}"
        lines.append(
            f"{_where(process.service, process.instance)[:28] or source[:28]:<28} {cpu:>9} "
            f"{_share(process.loop_utilization):>9} {loop_cpu:>9} {_ms(process.lag_p99):>9} "
            f"{count(process.block_count):>8}"
        )
    diagnosis = diagnose(*found)
    lines += ["", "Verdicts" if not diagnosis.ok else "Verdict: nothing to report"]
    lines += [f"- {verdict.describe()}" for verdict in diagnosis.verdicts]
    return "\n".join(line[:width] for line in lines) + "\n"


def run_top(
    url: str,
    *,
    interval: float = 2.0,
    once: bool = False,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Refresh until Ctrl-C; exit 1 with a message when the source cannot be read."""
    if not 0.1 <= interval <= 3600:
        err.write(f"poolscope top: --interval must be 0.1 to 3600 seconds, got {interval:g}\n")
        return 2
    server = is_prometheus_server(url)
    previous: Snapshot | None = None
    tty = out.isatty()
    try:
        while True:
            try:
                if server:
                    found: Windows | None = windows_from_prometheus(
                        url, SERVER_WINDOW, timeout=max(2.0, interval)
                    )
                    covers = f"the last {SERVER_WINDOW}, rated by the server"
                else:
                    current = read(url, timeout=max(2.0, interval))
                    found = windows(previous, current) if previous is not None else None
                    covers = f"the last {interval:g} s"
                    previous = current
            except SourceError as error:
                err.write(f"poolscope top: {error}\n")
                return 1
            if found is not None:
                width = shutil.get_terminal_size((120, 40)).columns if tty else 200
                out.write((_CLEAR if tty else "") + render(found, url, covers, width))
                out.flush()
                if once:
                    return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        out.write("\n")
        err.write("poolscope top: stopped\n")
        return 0
