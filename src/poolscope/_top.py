"""``poolscope top``: a live view of a running app's pools, refreshed in place.

Per pool and process: busy workers against the limit as a bar, pending
tasks, wait and run p95 over the last interval, and the event loop's lag
p99. It reads an app's Prometheus endpoint (``configure(prometheus_port=...)``
or ``OTEL_POOLSCOPE_PROMETHEUS_PORT``) or a Prometheus server holding many
apps and instances; saturated pools are marked per instance.
"""

from __future__ import annotations

import shutil
import sys
import time
from typing import Final, TextIO

from ._diagnose import SATURATION
from ._readings import Snapshot, SourceError, read

__all__ = ["render", "run_top"]

BAR: Final = 20
_CLEAR: Final = "\x1b[H\x1b[2J"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.0f} ms"


def _bar(busy: float, limit: float) -> str:
    share = min(1.0, busy / limit) if limit else 0.0
    filled = round(share * BAR)
    return "█" * filled + "·" * (BAR - filled)


def render(current: Snapshot, previous: Snapshot | None, source: str, width: int = 100) -> str:
    """One screen: a row per (service, instance, pool), fullest pool first."""
    title = f"poolscope top: {source}"
    if previous is not None:
        title += f"   every {current.taken_at - previous.taken_at:.1f} s   (Ctrl-C to quit)"
    header = (
        f"{'service/instance':<28} {'pool':<18} {'busy/limit':<{BAR + 12}} "
        f"{'pending':>7} {'wait p95':>9} {'run p95':>9}"
    )
    lines = [title, "", header]
    rows = []
    for key, reading in current.pools.items():
        before = previous.pools.get(key) if previous else None
        wait = reading.wait.since(before.wait).quantile(0.95) if before else None
        run = reading.run.since(before.run).quantile(0.95) if before else None
        full = reading.busy / reading.limit if reading.limit else 0.0
        saturated = full >= SATURATION and reading.pending > 0
        where = "/".join(part for part in (reading.service, reading.instance) if part)
        rows.append(
            (
                -full,
                f"{where[:28]:<28} {reading.pool[:18]:<18} "
                f"{_bar(reading.busy, reading.limit)} {reading.busy:>4g}/{reading.limit:<5g} "
                f"{reading.pending:>7g} {_ms(wait):>9} {_ms(run):>9}"
                + (" SATURATED" if saturated else ""),
            )
        )
    lines += [text for _, text in sorted(rows)]
    if not rows:
        lines.append("no pools yet: poolscope reports a pool once it has been used")
    lines.append("")
    for loop, lag in current.lag.items():
        before_lag = previous.lag.get(loop) if previous else None
        recent = lag.since(before_lag).quantile(0.99) if before_lag else None
        where = "/".join(part for part in loop if part) or source
        lines.append(f"event loop {where}: lag p99 {_ms(recent)}")
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
    previous: Snapshot | None = None
    tty = out.isatty()
    try:
        while True:
            try:
                current = read(url, timeout=max(2.0, interval))
            except SourceError as error:
                err.write(f"poolscope top: {error}\n")
                return 1
            if previous is not None or not once:
                width = shutil.get_terminal_size((120, 40)).columns if tty else 200
                out.write((_CLEAR if tty else "") + render(current, previous, url, width))
                out.flush()
                if once:
                    return 0
            previous = current
            time.sleep(interval)
    except KeyboardInterrupt:
        out.write("\n")
        err.write("poolscope top: stopped\n")
        return 0
