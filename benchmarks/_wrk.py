"""One wrk run on loopback, parsed: the driver of bench_asgi.py and bench_app.py."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0}


@dataclass(frozen=True)
class WrkRun:
    requests: int
    rate: float
    """requests per second"""
    p99: float
    """seconds"""


def require_wrk() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")


def wrk(
    url: str, duration: float, connections: int, *, threads: int = 2, paths: list[str] | None = None
) -> WrkRun:
    """Run wrk against ``url`` (its path, or each of ``paths`` in turn); fail on any error."""
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{connections}",
        f"-d{round(duration)}s",
        "--latency",
    ]
    with tempfile.TemporaryDirectory() as directory:
        if paths:
            script = Path(directory) / "paths.lua"
            quoted = ", ".join(f'"{path}"' for path in paths)
            script.write_text(
                f"local paths = {{{quoted}}}\nlocal i = 0\n"
                "request = function()\n  i = i % #paths + 1\n"
                '  return wrk.format("GET", paths[i])\nend\n'
            )
            command += ["-s", str(script)]
        output = subprocess.run([*command, url], check=True, capture_output=True, text=True).stdout
    count = re.search(r"^\s+(\d+) requests in", output, re.MULTILINE)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
    if count is None or rate is None or p99 is None:
        raise SystemExit(f"unexpected wrk output:\n{output}")
    for failure in (r"Non-2xx or 3xx responses: (\d+)", r"Socket errors: (.*)"):
        found = re.search(failure, output)
        if found:
            raise SystemExit(f"{url}: {found.group(0)}")
    value, unit = p99.groups()
    return WrkRun(int(count.group(1)), float(rate.group(1)), float(value) * _UNITS[unit])
